"""The stochastic predator–prey system (arXiv 2511.12842, its predator–prey example): the
Euler–Maruyama step, the noise, frozen windows, per-sample streams, refine, config and pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matscale.config import ConfigError, loads_config
from matscale.systems import Ising2D
from matscale.systems.base import check_system
from matscale.systems.registry import build_system
from matscale.systems.spde import PredatorPrey, standard_normals
from matscale.upsampling import hierarchical_upsample


def _state(system, seed=0, batch=1):
    """A rough state near coexistence: the smooth initial pattern plus site noise."""
    rng = np.random.default_rng(seed)
    states = system.random_states(batch, rng)
    return np.ascontiguousarray(states + 0.05 * rng.standard_normal(states.shape))


def _reference_step(state, system, dt=None):
    """One noise-free EM step of a whole state [n, 2], written from the equations."""
    dt = system.dt if dt is None else dt
    u, v = state[:, 0], state[:, 1]
    up, vp = np.pad(u, 1, mode="edge"), np.pad(v, 1, mode="edge")   # Neumann: replicate the edge
    lap_u, lap_v = up[:-2] - 2 * u + up[2:], vp[:-2] - 2 * v + vp[2:]
    du = u * (1 - u - v) + system.D * lap_u
    dv = system.a * v * (u - system.b) + lap_v
    return np.stack([u + dt * du, v + dt * dv], axis=-1)


# ----------------------------------------------------------------------------------------------
# Dynamics
# ----------------------------------------------------------------------------------------------
def test_one_step_drift_is_the_equations():
    """σ = 0: one EM step at the two edges (Neumann) and in the interior, by hand."""
    s = PredatorPrey(12, a=2.5, b=0.35, D=0.3, sigma=0.0, dt=0.02)
    x0 = _state(s, seed=1)[0]
    x = x0[None].copy()
    s.evolve_batch(x, n_events=1, seeds=np.array([7], dtype=np.uint64))
    u, v = x0[:, 0], x0[:, 1]
    a, b, D, dt = 2.5, 0.35, 0.3, 0.02

    def expected(i, left, right):
        du = u[i] * (1 - u[i] - v[i]) + D * (u[left] - 2 * u[i] + u[right])
        dv = a * v[i] * (u[i] - b) + (v[left] - 2 * v[i] + v[right])
        return u[i] + dt * du, v[i] + dt * dv

    for i, left, right in [(0, 0, 1), (1, 0, 2), (5, 4, 6), (10, 9, 11), (11, 10, 11)]:
        np.testing.assert_allclose(x[0, i], expected(i, left, right), rtol=0, atol=1e-14)
    np.testing.assert_allclose(x[0], _reference_step(x0, s), rtol=0, atol=1e-14)


def test_duration_ends_with_a_shorter_step():
    """duration = 2.5 dt: two steps of dt and one of dt/2 (σ = 0), elapsed = duration."""
    s = PredatorPrey(20, sigma=0.0, dt=0.01)
    x0 = _state(s, seed=2)[0]
    x = x0[None].copy()
    elapsed = s.evolve_batch(x, duration=0.025, seeds=np.zeros(1, dtype=np.uint64))
    ref = _reference_step(_reference_step(_reference_step(x0, s), s), s, dt=0.005)
    np.testing.assert_allclose(x[0], ref, rtol=0, atol=1e-14)
    assert elapsed.tolist() == [0.025]


def test_noise_has_variance_sigma2_dt_per_site_and_species():
    """The step minus its noise-free counterpart is σ√dt ξ with ξ ~ N(0, 1) independent per site
    and species. N = 64 x 200 = 12800 draws per species: the sample mean of ξ has sd 1/√N =
    0.009 and the sample variance sd √(2/N) = 0.0125; tolerances are 5 sd (4.5 sd for the u–v
    correlation, sd 1/√N)."""
    noisy, quiet = PredatorPrey(200, sigma=0.02, dt=0.01), PredatorPrey(200, sigma=0.0, dt=0.01)
    x0 = _state(noisy, seed=3, batch=64)
    x, y = x0.copy(), x0.copy()
    seeds = np.arange(64, dtype=np.uint64)
    noisy.evolve_batch(x, n_events=1, seeds=seeds)
    quiet.evolve_batch(y, n_events=1, seeds=seeds)
    xi = (x - y).reshape(-1, 2) / (0.02 * np.sqrt(0.01))
    N = len(xi)
    assert np.all(np.abs(xi.mean(axis=0)) < 5 / np.sqrt(N))
    assert np.all(np.abs(xi.var(axis=0) - 1) < 5 * np.sqrt(2 / N))
    assert abs(np.corrcoef(xi.T)[0, 1]) < 4.5 / np.sqrt(N)
    # neighbouring sites are independent too
    lagged = (x - y)[:, 1:, 0].ravel(), (x - y)[:, :-1, 0].ravel()
    assert abs(np.corrcoef(*lagged)[0, 1]) < 4.5 / np.sqrt(N)


def test_standard_normals_tail_and_shape():
    """Ziggurat normals: P(|z| > 3.6541528853610088) (the tail layer) and the 4th moment. With
    N = 10^6 the tail fraction p = 2.58e-4 has sd √(p/N) = 1.6e-5 (5 sd allowed) and the sample
    kurtosis sd √(24/N) = 0.005 (5 sd allowed)."""
    from scipy import stats

    z = standard_normals(11, 1_000_000)
    p = 2 * stats.norm.sf(3.6541528853610088)
    assert abs(np.mean(np.abs(z) > 3.6541528853610088) - p) < 5 * np.sqrt(p / len(z))
    assert abs(np.mean(z ** 4) / np.mean(z ** 2) ** 2 - 3) < 5 * np.sqrt(24 / len(z))
    assert stats.kstest(z[:100_000], "norm").pvalue > 1e-4


# ----------------------------------------------------------------------------------------------
# Windows: frozen ghost cells
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin, width", [(50, 40), (0, 40), (160, 40), (180, 40)])
def test_window_moves_only_its_points(origin, width):
    s = PredatorPrey(200)
    x0 = _state(s, seed=4, batch=3)
    x = x0.copy()
    origins = np.full((3, 1, 1), origin)
    elapsed = s.evolve_windows(x, origins, width, duration=0.3, seeds=np.arange(3, dtype=np.uint64))
    inside = np.zeros(200, dtype=bool)
    inside[(origin + np.arange(width)) % 200] = True
    np.testing.assert_array_equal(x[:, ~inside], x0[:, ~inside])
    assert np.all(x[:, inside] != x0[:, inside])
    np.testing.assert_allclose(elapsed, 0.3)


@pytest.mark.parametrize("origin, width", [(50, 40), (0, 40), (160, 40), (180, 40), (0, 200)])
def test_window_equals_full_steps_with_the_exterior_held(origin, width):
    """σ = 0, 10 steps: the window's evolution is the full-system step restricted to the window,
    the exterior reset to its values after every step (at the domain edge: Neumann)."""
    s = PredatorPrey(200, D=0.2, sigma=0.0)
    x0 = _state(s, seed=5)[0]
    x = x0[None].copy()
    s.evolve_windows(x, np.array([[[origin]]]), width, n_events=10, seeds=np.zeros(1, dtype=np.uint64))
    inside = np.zeros(200, dtype=bool)
    inside[(origin + np.arange(width)) % 200] = True
    ref = x0.copy()
    for _ in range(10):
        ref[inside] = _reference_step(ref, s)[inside]
    np.testing.assert_allclose(x[0], ref, rtol=0, atol=1e-13)


def test_results_depend_only_on_each_states_seed():
    """Same seeds, any batch split: identical results (whole box and windows)."""
    s = PredatorPrey(100)
    x0 = _state(s, seed=6, batch=6)
    x0[5] = x0[4]
    seeds = np.array([3, 99, 2**63 + 5, 0, 17, 17], dtype=np.uint64)
    origins = np.array([[[10], [70], [95]]] * 6)
    whole = x0.copy()
    s.evolve_batch(whole, duration=0.2, seeds=seeds)
    s.evolve_windows(whole, origins, 20, n_events=7, seeds=seeds)
    for split in ([0, 2, 6], [0, 1, 2, 3, 4, 5, 6]):
        parts = []
        for lo, hi in zip(split[:-1], split[1:]):
            part = x0[lo:hi].copy()
            s.evolve_batch(part, duration=0.2, seeds=seeds[lo:hi])
            s.evolve_windows(part, origins[lo:hi], 20, n_events=7, seeds=seeds[lo:hi])
            parts.append(part)
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(whole[4], whole[5])   # same state, same seed
    assert not np.array_equal(whole[0] - x0[0], whole[3] - x0[3])


# ----------------------------------------------------------------------------------------------
# refine, protocol, configuration, pipeline
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 5])
def test_refine_is_exact_on_linear_profiles_and_keeps_the_mean(factor):
    s = PredatorPrey(40)
    x = s.x
    linear = np.stack([0.3 + 0.2 * x, 0.7 - 0.45 * x], axis=-1)[None]
    fine = s.refine(linear, factor)
    xf = (np.arange(40 * factor) + 0.5) / (40 * factor)
    np.testing.assert_allclose(fine[0], np.stack([0.3 + 0.2 * xf, 0.7 - 0.45 * xf], axis=-1), atol=1e-14)
    rough = _state(s, seed=7, batch=4)
    fine = s.refine(rough, factor)
    assert fine.shape == (4, 40 * factor, 2) and fine.dtype == np.float64
    np.testing.assert_allclose(s.observables(fine), s.observables(rough), rtol=0, atol=1e-14)
    # every old cell keeps its value as the mean of its new points (so patch means are kept)
    np.testing.assert_allclose(fine.reshape(4, 40, factor, 2).mean(axis=2), rough, rtol=0, atol=1e-14)


def test_protocol_and_interpolate_capability():
    s = check_system(PredatorPrey(200))
    assert (s.grid_dim, s.cell_shape, s.size, s.parameter_name) == (1, (2,), 200, None)
    assert s.observable_names == ("u_mean", "v_mean") and s.resized(40).size == 40
    states = s.random_states(3, np.random.default_rng(0), condition=(0.45, 0.1))
    np.testing.assert_allclose(states[:, :, 0] + states[:, :, 1], 1.0)
    np.testing.assert_allclose(s.observables(states), [[0.45, 0.55]] * 3, atol=1e-12)
    with pytest.raises(ValueError, match="has no conditioning parameter"):
        s.at(1.0)
    small = s.resized(40)
    pool = small.random_states(6, np.random.default_rng(1))
    big = hierarchical_upsample(s, pool, 200, 4, factor=5, mode="interpolate", duration=0.0, seed=0,
                                progress=False)
    assert big.shape == (4, 200, 2)
    with pytest.raises(ValueError, match="needs the system capability 'refine'"):
        hierarchical_upsample(Ising2D(16, 2.5), np.ones((2, 8, 8), dtype=np.int8), 16, 2,
                              mode="interpolate", progress=False)


TINY = """
name = "tiny predator-prey"
[system]
kind = "predator_prey"
n = 40
{system_extra}

[small]
p = 8
n_runs = 8
n_sweeps = 10
sweep_time = 0.2

[upsampling]
mode = "{mode}"
factor = 5
n_configs = 64
duration = 0.1

[partial]
duration = 0.05
n_draws = 2

[train]
method = "both"
epochs = 2
batch_size = 64
hidden = [8, 8]

[reference]
m = [0.45, 0.55]
k = [0.1, 0.05]
n_runs = 6
duration = 1.0
grid_dt = 0.2

[evaluate]
n_paths = 12
paper_paths = 6
mmd_bootstrap = 5
"""


def tiny(mode="interpolate", system_extra=""):
    return loads_config(TINY.format(mode=mode, system_extra=system_extra))


@pytest.mark.parametrize("extra, field", [("dt = 0.6", "system.dt"), ("sigma = -1.0", "system.sigma"),
                                          ("m_range = [0.6, 0.5]", "system.m_range")])
def test_config_errors_name_the_field(extra, field):
    with pytest.raises(ConfigError) as info:
        tiny(system_extra=extra)
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message


def test_config_checks_reference_pairs_and_interpolate_mode():
    with pytest.raises(ConfigError, match=r"^reference.m and reference.k have 2 and 1 values"):
        loads_config(TINY.format(mode="interpolate", system_extra="").replace("k = [0.1, 0.05]", "k = [0.1]"))
    spin = '[system]\nkind = "ising"\nL = 16\nT = 2.5\n[small]\np = 8\n[upsampling]\nmode = "interpolate"\n'
    with pytest.raises(ConfigError) as info:
        loads_config(spin)
    assert str(info.value) == ("upsampling.mode='interpolate' is not allowed for system.kind='ising' "
                               "(allowed: duplicate, tile, tile_matched, tile_time, replicate)")
    cfg = tiny()
    assert cfg.closure.dim == 0 and cfg.n_patches(8) == 5
    assert isinstance(build_system(cfg.system), PredatorPrey)
    assert cfg.reference.conditions == ((None, (0.45, 0.1)), (None, (0.55, 0.05)))


def test_shipped_input_validates():
    from pathlib import Path

    from matscale.config import load_config

    path = Path(__file__).resolve().parents[1] / "inputs" / "predator_prey.toml"
    cfg, quick = load_config(path), load_config(path, quick=True)
    assert cfg.system.kind == "predator_prey" and cfg.system.n == 200 and cfg.n_patches(40) == 5
    assert cfg.upsampling.mode == "interpolate" and len(cfg.reference.conditions) == 9
    assert quick.small.n_runs < cfg.small.n_runs


def test_tiny_pipeline_end_to_end(tmp_path):
    from matscale.pipeline import run_pipeline

    cfg = tiny()
    run_pipeline(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    res = metrics["results"]["p8"]
    assert res["K"] == 5 and res["n_s"] == 16
    for method in ("ours", "naive"):
        assert np.isfinite(res[method]["test_error_all"])
    assert (tmp_path / "report.md").is_file()
