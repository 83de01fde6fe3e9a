"""The Langevin oscillator and stochastic wave systems, and the "identify" study that uses them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matscale.config import ConfigError
from matscale.pipeline.identify import STUDY, IdentifyConfig
from matscale.pipeline.runner import StageRunner
from matscale.sde import WalshWave
from matscale.systems.langevin import LangevinOscillator
from matscale.systems.wave import StochasticWave

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_langevin_one_step_moments_match_the_true_coefficients():
    system = LangevinOscillator()
    n, dt = 20000, 1e-3
    z0 = np.tile([1.5, -0.5], (n, 1))
    z1 = system.simulate(z0, 1, dt, np.random.default_rng(0))[:, 1]
    dp = z1[:, 1] - z0[:, 1]
    sigma = system.noise(1.5)
    # mean of dp / dt: standard error sigma / sqrt(n dt); 5 SE plus the O(dt) drift change in the step
    assert np.mean(dp) / dt == pytest.approx(system.force(1.5, -0.5), abs=5 * sigma / math.sqrt(n * dt) + 0.01)
    # variance: relative standard error sqrt(2 / n); 5 SE
    assert np.var(dp) / (sigma ** 2 * dt) == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    same = system.pairs(50, 0.02, np.random.default_rng(3))
    again = system.pairs(50, 0.02, np.random.default_rng(3))
    for a, b in zip(same, again):
        np.testing.assert_array_equal(a, b)
    assert same[0].min() >= -2 and same[0].max() <= 2
    np.testing.assert_allclose(system.drift(same[0])[:, 0], same[0][:, 1])
    with pytest.raises(ValueError, match="q_range: must be"):
        LangevinOscillator(q_range=(1.0, -1.0))


def test_wave_coarse_data_follow_dalembert_exactly_without_forcing():
    # f = 0 and a negligible noise: a coarse Walsh step of the fine data is exact (a coarse
    # diamond is a union of fine ones), whatever the stride
    system = StochasticWave(n_fine=48, stiffness=0.0, cubic=0.0, noise0=1e-12, noise2=0.0)
    for r in (2, 4, 6):
        dt = r * system.fine_dt
        z0, z1, _ = system.pairs(20, dt, np.random.default_rng(r))
        t = WalshWave(system.coarse_points(dt), system.length, system.speed)
        mean, _ = t.step_mean_cov(torch.as_tensor(z0), torch.full((20,), dt), torch.zeros(20, t.n_points, 1),
                                  torch.ones(20, t.n_points, 1))
        np.testing.assert_allclose(z1[:, :t.n_points], mean.numpy(), atol=1e-9)
        np.testing.assert_array_equal(z1[:, t.n_points:], z0[:, :t.n_points])


def test_wave_coarse_noise_has_the_walsh_template_covariance():
    # constant s, f = 0: the coarse residual has variance s^2 dt^2 / (2c) and neighbour
    # correlation 1/4 (overlapping diamonds), zero beyond
    system = StochasticWave(n_fine=64, stiffness=0.0, cubic=0.0, noise0=0.3, noise2=0.0, speed=1.0)
    dt = 4 * system.fine_dt
    z0, z1, _ = system.pairs(3000, dt, np.random.default_rng(1))
    n = system.coarse_points(dt)
    u, prev = z0[:, :n], z0[:, n:]
    r = z1[:, :n] - (np.roll(u, -1, 1) + np.roll(u, 1, 1) - prev)
    var = 0.3 ** 2 * dt ** 2 / 2.0
    samples = r.size  # 48000 residuals (neighbours correlated: the SE below are conservative by ~1.2x)
    assert np.mean(r ** 2) / var == pytest.approx(1.0, abs=5 * math.sqrt(2 / samples) * 1.5)
    corr1 = np.mean(r * np.roll(r, -1, 1)) / var
    corr2 = np.mean(r * np.roll(r, -2, 1)) / var
    assert corr1 == pytest.approx(0.25, abs=5 * 1.5 / math.sqrt(samples))
    assert corr2 == pytest.approx(0.0, abs=5 * 1.5 / math.sqrt(samples))


def test_wave_step_and_stride_checks():
    system = StochasticWave(n_fine=32)
    with pytest.raises(ValueError, match="dt: must be an even multiple r of the fine step"):
        system.stride(3 * system.fine_dt)
    with pytest.raises(ValueError, match="n_fine: must be an even int >= 6"):
        StochasticWave(n_fine=7)
    z0, z1, dt = system.pairs(5, 2 * system.fine_dt, np.random.default_rng(0))
    assert z0.shape == (5, 32) and np.all(dt == 2 * system.fine_dt)


def _tiny(**changes) -> IdentifyConfig:
    base = dict(system="langevin", n_pairs=1500, n_test=500, dt=0.02, hidden=(8,), epochs=2, inner_steps=5)
    return IdentifyConfig(**{**base, **changes})


def test_identify_study_runs_resumes_and_reports(tmp_path):
    cfg = _tiny()
    cfg.check()
    summary = STUDY.run(cfg, StageRunner(out=tmp_path), tmp_path)
    assert summary["workflow"] == "identify" and summary["template_force_rel_l2"] > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"template", "plain"}
    report = (tmp_path / "report.md").read_text()
    assert "| template |" in report and "| plain |" in report and (tmp_path / "identify.png").is_file()
    runner = StageRunner(out=tmp_path)
    assert STUDY.run(cfg, runner, tmp_path) == summary and runner.executed == []   # resumed: nothing recomputed
    wave = _tiny(system="stochastic_wave", n_pairs=60, n_test=64, dt=4 / 64, n_fine=64, methods=("template", "plain"))
    wave.check()
    out = tmp_path / "wave"
    out.mkdir()
    STUDY.run(wave, StageRunner(out=out), out)
    assert "f is only" in (out / "report.md").read_text()
    assert "identify stochastic_wave" in STUDY.describe(wave)


@pytest.mark.parametrize("changes, message", [
    (dict(system="ising"), "identify.system='ising' out of range"),
    (dict(seed=-1), "identify.seed=-1 out of range"),
    (dict(methods=("template", "magic")), r"identify.methods\[1\]='magic' out of range"),
    (dict(system="stochastic_wave", dt=0.01), "identify.dt: dt: must be an even multiple"),
    (dict(hidden=(8, 0)), r"identify.hidden\[1\]=0 out of range"),
])
def test_identify_config_errors_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        _tiny(**changes).check()
