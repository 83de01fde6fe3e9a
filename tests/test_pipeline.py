"""End-to-end spin pipeline on tiny configurations: outputs, resume, config checks, load()."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import matscale
from matscale.config import ConfigError, load_config, loads_config
from matscale.pipeline import run_pipeline

TINY = """
name = "tiny"
[system]
kind = "{kind}"
L = 16
T = {T}
h = 0.1

[small]
p = {p}
n_runs = 20
n_sweeps = 10
sweep_time = 2.0

[upsampling]
n_configs = 300
n_random = 60

[closure]
epochs = {closure_epochs}
batch_size = 64
max_train = 200

[train]
method = "{method}"
epochs = {train_epochs}
batch_size = 128
hidden = [16, 16]

[reference]
magnetizations = [0.0, 0.5]
n_runs = 20
duration = 12.0
grid_dt = 3.0

[evaluate]
n_paths = 30
paper_paths = 10
mmd_bootstrap = 10
"""


def tiny(kind="ising", T=2.5, p="8", method="ours", closure_epochs=1, train_epochs=2):
    text = TINY.format(kind=kind, T=T, p=p, method=method, closure_epochs=closure_epochs,
                       train_epochs=train_epochs)
    if kind == "curie_weiss":
        text = text.replace("[closure]\nepochs", "[closure]\ndim = 0\nepochs")
    return loads_config(text)


def _log(out: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()[1:3]) for line in (out / "stages.log").read_text().splitlines()]


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ising")
    cfg = tiny(method="both")
    summary = run_pipeline(cfg, out)
    return cfg, out, summary


def test_end_to_end_outputs(ising_run):
    cfg, out, summary = ising_run
    metrics = json.loads((out / "metrics.json").read_text())
    res = metrics["results"]["p8"]
    assert res["K"] == 4 and res["n_s"] == 64
    for method in ("ours", "naive"):
        r = res[method]
        assert np.isfinite(r["test_error_paper"]) and np.isfinite(r["test_error_all"])
        assert r["test_error_paper_paths"] == 10 and r["n_paths_pred"] + r["n_paths_diverged"] == 30
        assert set(r["moments"]) == {"m", "rho_dw"}
    assert (out / "report.md").read_text().count("| 64 | 4 |") == 2
    assert (out / "plots" / "mean_std_vs_time_p8.png").is_file()
    assert (out / "p8" / "fit" / "ours" / "sde").exists()
    assert load_config(out / "config.toml").to_dict() == cfg.to_dict()
    for stage in ("small_sim", "upsample", "partial", "closure", "encode", "fit", "evaluate", "plots"):
        assert (out / "p8" / stage / "stage.json").is_file()
        assert (out / "p8" / stage / "config.toml").is_file()  # every folder says how it was made
    assert not list(out.rglob(".*.partial"))  # atomic: no temporaries left behind


def test_load_encode_and_sample(ising_run):
    cfg, out, _ = ising_run
    model = matscale.load(out)
    assert model.observable_names == ("m", "rho_dw", "closure_1", "closure_2")
    rng = np.random.default_rng(0)
    configs = np.where(rng.uniform(size=(5, 16, 16)) < 0.7, 1, -1).astype(np.int8)
    z = model.encode(configs)
    assert z.shape == (5, 4)
    np.testing.assert_allclose(z[:, 0], configs.mean(axis=(1, 2)))
    paths = model.sample(z[0], 7, 1.5, n_paths=3, seed=1)
    assert paths.shape == (3, 8, 4)
    np.testing.assert_array_equal(paths, model.sample(z[0], 7, 1.5, n_paths=3, seed=1))
    naive = matscale.load(out / "p8", method="naive")
    assert naive.method == "naive"
    with pytest.raises(ValueError, match="method"):
        matscale.load(out, method="other")


def test_rerun_skips_everything_and_changed_config_is_refused(ising_run):
    cfg, out, summary = ising_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")}
    again = run_pipeline(cfg, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")} == before
    assert again["results"] == summary["results"]
    changed = tiny(method="both", closure_epochs=2)
    with pytest.raises(ConfigError, match="closure") as info:
        run_pipeline(changed, out)
    assert "\n" not in str(info.value)
    # the refused run wrote nothing: the folder still describes the original run
    assert load_config(out / "config.toml").to_dict() == cfg.to_dict()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")} == before


def test_interrupted_run_resumes_without_recomputing(tmp_path, ising_run):
    """Stop after 'partial', resume: finished stages are skipped, results equal a straight run."""
    cfg, straight_out, straight = ising_run
    out = tmp_path / "resumed"
    assert run_pipeline(cfg, out, stop_after="partial") == {}
    assert not (out / "p8" / "closure").exists()
    first = {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")}
    resumed = run_pipeline(cfg, out)
    assert {p: p.stat().st_mtime_ns for p in first} == first  # not rewritten
    log = _log(out)
    for stage in ("small_sim", "upsample", "partial"):
        assert log.count((f"p8/{stage}", "ran")) == 1
        assert (f"p8/{stage}", "skipped") in log
    assert resumed["results"] == straight["results"]  # same seeds -> identical metrics


def test_force_stage_recomputes_it_and_its_dependents(tmp_path):
    cfg = tiny(kind="curie_weiss", T=1.1, p="[4, 8]")
    out = tmp_path / "cw"
    summary = run_pipeline(cfg, out)
    assert set(summary["results"]) == {"p4", "p8"}
    assert (out / "plots" / "test_error_vs_ns.png").is_file()
    model = matscale.load(out, p=4)
    assert model.observable_names == ("m",) and model.closure is None
    with pytest.raises(ValueError, match="p must be given"):
        matscale.load(out)
    n_lines = len(_log(out))
    changed = tiny(kind="curie_weiss", T=1.1, p="[4, 8]", train_epochs=3)
    with pytest.raises(ConfigError, match="train"):
        run_pipeline(changed, out)
    run_pipeline(changed, out, force_stages=["fit"])  # dependents (evaluate, plots) follow
    log = _log(out)[n_lines:]
    ran = {label for label, action in log if action == "ran"}
    assert {"p4/fit", "p4/evaluate", "p4/plots", "p8/fit", "p8/evaluate", "p8/plots"} <= ran
    assert "p4/partial" not in ran and "reference" not in ran


def test_fit_workflow(tmp_path):
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(2000, 1))
    dt = rng.uniform(0.01, 0.05, 2000)
    z1 = z0 - z0 * dt[:, None] + 0.5 * np.sqrt(dt)[:, None] * rng.normal(size=(2000, 1))
    np.savez(tmp_path / "pairs.npz", z0=z0, z1=z1, dt=dt)
    (tmp_path / "fit.toml").write_text(
        'workflow = "fit"\n[fit]\npairs = "pairs.npz"\nepochs = 2\nhidden = [8]\n')
    cfg = load_config(tmp_path / "fit.toml")
    run_pipeline(cfg, tmp_path / "out")
    from matscale.sde import load_sde

    sde = load_sde(tmp_path / "out" / "fit_pairs" / "sde")
    assert sde.sample(np.zeros(1), 3, 0.01, n_paths=2, seed=0).shape == (2, 4, 1)
    bad = tmp_path / "bad.npz"
    np.savez(bad, z0=z0, dt=dt)
    (tmp_path / "bad.toml").write_text('workflow = "fit"\n[fit]\npairs = "bad.npz"\n')
    with pytest.raises(ConfigError, match="z1"):
        run_pipeline(load_config(tmp_path / "bad.toml"), tmp_path / "out2")


def test_pairs_per_config_draws_independent_patches(tmp_path):
    """pairs_per_config = 3: three pairs per upsampled configuration, same z0, own patch draws;
    the naive pairs use the paper's one-sweep budget (p² events, so a longer δt)."""
    import dataclasses
    import h5py

    cfg = tiny(method="both")
    cfg = dataclasses.replace(cfg, partial=dataclasses.replace(cfg.partial, pairs_per_config=3))
    run_pipeline(cfg, tmp_path, stop_after="encode")
    with h5py.File(tmp_path / "p8" / "encode" / "pairs.h5", "r") as f:
        z0, dt, dt_naive = f["z0"][:], f["dt"][:], f["dt_naive"][:]
    with h5py.File(tmp_path / "p8" / "partial" / "pairs.h5", "r") as f:
        patch_index = f["patch_index"][:]
    n_configs = cfg.upsampling.n_configs + cfg.upsampling.n_random
    assert len(z0) == 3 * n_configs
    np.testing.assert_array_equal(z0[0::3], z0[1::3])          # same configuration, same z0
    np.testing.assert_array_equal(z0[0::3], z0[2::3])
    triples = patch_index.reshape(-1, 3)
    assert (triples != triples[:, :1]).any(axis=1).mean() > 0.5  # K = 4: P(all equal) = 1/16
    np.testing.assert_allclose(dt, cfg.partial.duration)
    assert dt_naive.mean() > 10 * cfg.partial.duration


def test_averaged_draws_quenched_random_states_and_heun(tmp_path):
    """partial.n_draws = 3: one pair per configuration whose increment (physical and closure
    parts) averages three patch evolutions, fitted with lam = K / 3 and the Heun mean;
    upsampling.random_relax > 0: 7 of 8 random configurations are quenched (fewer domain walls),
    the first group stays uncorrelated."""
    import dataclasses
    import h5py

    from matscale.closure import ClosureModel
    from matscale.observables import spin_observables

    cfg = tiny(method="ours")
    assert cfg.closure.dim > 0
    cfg = dataclasses.replace(
        cfg, partial=dataclasses.replace(cfg.partial, n_draws=3),
        upsampling=dataclasses.replace(cfg.upsampling, random_relax=1.0),
        train=dataclasses.replace(cfg.train, drift_scheme="heun"))
    run_pipeline(cfg, tmp_path, stop_after="fit")
    p8 = tmp_path / "p8"
    with h5py.File(p8 / "upsample" / "configs.h5", "r") as f:
        configs, is_random = f["configs"][:], f["is_random"][:]
    with h5py.File(p8 / "partial" / "pairs.h5", "r") as f:
        patch_index, before, after = f["patch_index"][:], f["patch_before"][:], f["patch_after"][:]
    with h5py.File(p8 / "encode" / "pairs.h5", "r") as f:
        z0, delta = f["z0"][:], f["delta"][:]
    n = len(configs)
    assert patch_index.shape == (n, 3) and before.shape == (n, 3, 8, 8) and len(z0) == n
    closure = ClosureModel.load(p8 / "closure")
    codes = [closure.encode_patches(a[:, r]) - closure.encode_patches(b[:, r])
             for a, b, r in ((after, before, r) for r in range(3))]
    np.testing.assert_allclose(delta[:, 2:], np.mean(codes, axis=0), rtol=1e-5, atol=1e-6)
    model = json.loads((p8 / "fit" / "ours" / "model.json").read_text())
    assert model["lam"] == pytest.approx(4 / 3)
    sde_config = json.loads((p8 / "fit" / "ours" / "sde" / "config.json").read_text())
    assert sde_config["drift_scheme"] == "heun"
    rho = spin_observables(configs[is_random])[:, 1]
    unrelaxed, quenched = rho[0::8], np.delete(rho, np.s_[0::8])
    assert abs(unrelaxed.mean() - 0.5 * (1 - spin_observables(configs[is_random][0::8])[:, 0] ** 2).mean()) < 0.03
    assert quenched.mean() < unrelaxed.mean() - 0.05
