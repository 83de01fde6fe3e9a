"""Integrator templates (matscale.sde.templates): likelihood, rollout, fit, save/load, errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matscale.sde import FittedSDE, SymplecticEuler, WalshWave, fit_sde, load_sde
from matscale.sde.templates import site_values, template_from_record
from matscale.sde.trainer import _BatchLoss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scheme_pairs(n: int, dt: float, seed: int, mass: float = 1.0, noise: float = 0.5):
    """Pairs made by the symplectic Euler scheme itself with F = -q - 0.5 p, sigma = noise."""
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(-2.0, 2.0, (n, 2))
    q, p = z0.T
    p1 = p + (-q - 0.5 * p) * dt + noise * math.sqrt(dt) * rng.standard_normal(n)
    return z0, np.stack([q + p1 * dt / mass, p1], axis=1), np.full(n, dt)


@pytest.fixture(scope="module")
def langevin_fit() -> FittedSDE:
    z0, z1, dt = _scheme_pairs(4000, 0.05, seed=0)
    return fit_sde(z0, z1, dt, template=SymplecticEuler(), hidden=(16, 16), epochs=15, progress=False)


def _walsh_covariance(s: np.ndarray, h: float, c: float) -> np.ndarray:
    """The Walsh step covariance built entry by entry: diamond overlaps 1 (same), 1/4 (neighbours)."""
    n = s.size
    cov = np.zeros((n, n))
    for j in range(n):
        for k in range(n):
            gap = min((j - k) % n, (k - j) % n)
            share = 1.0 if gap == 0 else 0.25 if gap == 1 else 0.0
            cov[j, k] = share * s[j] * s[k] * h * h / (2.0 * c)
    return cov


# ---------------------------------------------------------------- likelihood
def test_symplectic_euler_nll_is_the_gaussian_of_the_momentum_increment():
    t = SymplecticEuler(mass=2.0)
    rng = np.random.default_rng(1)
    z0, z1 = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    dt = rng.uniform(0.01, 0.1, 50)
    force, noise = rng.normal(size=50), rng.uniform(0.2, 1.0, 50)
    got = t.nll(torch.as_tensor(z0), torch.as_tensor(z1), torch.as_tensor(dt),
                torch.as_tensor(force).view(50, 1, 1), torch.as_tensor(noise).view(50, 1, 1)).numpy()
    var = noise ** 2 * dt
    expected = 0.5 * (z1[:, 1] - z0[:, 1] - force * dt) ** 2 / var + 0.5 * np.log(2 * np.pi * var)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_walsh_nll_is_the_gaussian_of_the_dalembert_step():
    t = WalshWave(6, length=1.5, speed=2.0)
    h = t.fixed_dt
    rng = np.random.default_rng(2)
    z0, z1 = rng.normal(size=(4, 12)), rng.normal(size=(4, 12))
    force, noise = rng.normal(size=(4, 6)), rng.uniform(0.2, 1.0, (4, 6))
    got = t.nll(torch.as_tensor(z0), torch.as_tensor(z1), torch.full((4,), h),
                torch.as_tensor(force)[..., None], torch.as_tensor(noise)[..., None]).numpy()
    for b in range(4):
        u, prev = z0[b, :6], z0[b, 6:]
        mean = np.roll(u, -1) + np.roll(u, 1) - prev + h * h * force[b]
        cov = _walsh_covariance(noise[b], h, 2.0)
        r = z1[b, :6] - mean
        expected = 0.5 * r @ np.linalg.solve(cov, r) + 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
        assert got[b] == pytest.approx(expected, rel=1e-10)


def test_trainer_loss_takes_mean_and_covariance_from_the_template(langevin_fit):
    z0, z1, dt = _scheme_pairs(64, 0.05, seed=3)
    t = langevin_fit.template
    batch = torch.as_tensor(np.hstack([z0, z1, dt[:, None]]), dtype=langevin_fit.dtype)
    loss = _BatchLoss(langevin_fit.model, "em", 1.0, 1e-6, "euler", t)
    force, noise = site_values(langevin_fit.model, t.features(batch[:, :2]))
    with torch.no_grad():
        expected = t.nll(batch[:, :2], batch[:, 2:4], batch[:, 4], force, noise)
        torch.testing.assert_close(loss.per_sample(batch), expected)


# ---------------------------------------------------------------- rollout
def test_langevin_rollout_is_the_scheme_with_the_learned_functions(langevin_fit):
    z_start, dt, n_steps, n_paths = np.array([0.3, -0.7]), 0.05, 6, 5
    paths = langevin_fit.sample(z_start, n_steps, dt, n_paths=n_paths, seed=11)
    gen = torch.Generator().manual_seed(11)
    z = np.tile(z_start, (n_paths, 1))
    for k in range(n_steps):
        force, noise = (a[:, 0].astype(np.float32).astype(np.float64) for a in langevin_fit.learned_functions(z))
        xi = torch.randn((n_paths, 1), generator=gen, dtype=langevin_fit.dtype).numpy()[:, 0]
        p1 = z[:, 1] + force * dt + noise * math.sqrt(dt) * xi
        z = np.stack([z[:, 0] + p1 * dt, p1], axis=1)
        np.testing.assert_allclose(paths[:, k + 1], z, rtol=1e-5, atol=1e-5)
        z = paths[:, k + 1]   # continue from the model's float32 state


def test_walsh_rollout_is_the_scheme_with_the_learned_functions():
    t = WalshWave(5)
    h = t.fixed_dt
    rng = np.random.default_rng(4)
    u = np.sin(2 * np.pi * np.arange(5) / 5)
    z0 = np.hstack([u, u])[None] + 0.01 * rng.standard_normal((300, 10))
    z1 = np.vstack([np.hstack([2 * 0.5 * (np.roll(z[:5], -1) + np.roll(z[:5], 1)) - z[5:]
                               + 0.05 * h * rng.standard_normal(5), z[:5]]) for z in z0])
    sde = fit_sde(z0, z1, h, template=t, hidden=(8,), epochs=2, progress=False, dtype="float64")
    paths = sde.sample(z0[0], 4, h, n_paths=3, seed=5)
    gen = torch.Generator().manual_seed(5)
    z = np.tile(z0[0], (3, 1))
    for k in range(4):
        ubar = 0.5 * (np.roll(z[:, :5], -1, axis=1) + np.roll(z[:, :5], 1, axis=1))
        force, noise = (a[:, 0].reshape(3, 5) for a in sde.learned_functions(ubar.reshape(-1, 1)))
        xi = torch.randn((3, 5), generator=gen, dtype=torch.float64).numpy()
        new = np.stack([2 * ubar[b] - z[b, 5:] + h * h * force[b]
                        + np.linalg.cholesky(_walsh_covariance(noise[b], h, 1.0)) @ xi[b] for b in range(3)])
        z = np.hstack([new, z[:, :5]])
        np.testing.assert_allclose(paths[:, k + 1], z, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="dt: template 'walsh_wave' steps exactly"):
        sde.sample(z0[0], 4, 0.7 * h)
    assert sde.sample(z0[0], ts=[0.0, 2 * h], seed=1).shape == (1, 2, 10)   # two exact substeps


# ---------------------------------------------------------------- recovery
def test_small_fit_recovers_a_known_force_and_noise(langevin_fit):
    n, dt, sigma = 4000, 0.05, 0.5
    train = 0.9 * n                       # validation_fraction 0.1
    states = np.random.default_rng(7).uniform(-2.0, 2.0, (4000, 2))
    force, noise = (a[:, 0] for a in langevin_fit.learned_functions(states))
    truth = -states[:, 0] - 0.5 * states[:, 1]
    # Least squares of k = 3 linear coefficients on y = dp / dt (noise variance sigma^2 / dt per
    # pair) has E ||F_fit - F||^2 = k sigma^2 / (dt n_train) over the data distribution; the fit
    # (linear start + small networks) is allowed 3x that RMS (chi^2_3 exceeds 9x its mean with
    # probability < 1e-4).
    bound = 3.0 * math.sqrt(3 * sigma ** 2 / (dt * train)) / math.sqrt(np.mean(truth ** 2))
    rel_force = math.sqrt(np.mean((force - truth) ** 2) / np.mean(truth ** 2))
    assert rel_force < bound, (rel_force, bound)
    # sigma from n_train squared residuals: relative standard error 1 / sqrt(2 n_train); 5 SE
    assert np.sqrt(np.mean((noise - sigma) ** 2)) / sigma < 5.0 / math.sqrt(2 * train)


# ---------------------------------------------------------------- persistence
def test_save_load_round_trip_and_unknown_template(langevin_fit, tmp_path):
    path = langevin_fit.save(tmp_path / "sde")
    loaded = load_sde(path)
    assert isinstance(loaded.template, SymplecticEuler) and loaded.template.params() == langevin_fit.template.params()
    assert loaded.dim == 2 and loaded.n_params == 0
    x = np.random.default_rng(0).uniform(-2, 2, (20, 2))
    for a, b in zip(loaded.learned_functions(x), langevin_fit.learned_functions(x)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.sample(x[0], 3, 0.05, n_paths=2, seed=1),
                                  langevin_fit.sample(x[0], 3, 0.05, n_paths=2, seed=1))
    payload = torch.load(path / "model.pt", weights_only=True)
    config = json.loads(payload["config_json"])
    config["template"]["name"] = "leapfrog_of_the_future"
    payload["config_json"] = json.dumps(config)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="template: unknown 'leapfrog_of_the_future'; known: symplectic_euler"):
        load_sde(tmp_path / "bad.pt")
    assert template_from_record(WalshWave(7, 2.0, 0.5).record()).params() == {"n_points": 7, "length": 2.0, "speed": 0.5}


# ---------------------------------------------------------------- errors
def test_bad_inputs_are_one_line_errors(langevin_fit):
    z0, z1, dt = _scheme_pairs(200, 0.05, seed=5)
    quick = dict(hidden=(4,), epochs=1, progress=False)
    with pytest.raises(ValueError, match="do not follow template 'symplectic_euler'"):
        fit_sde(z0, z1, dt, template=SymplecticEuler(mass=3.0), **quick)
    with pytest.raises(ValueError, match="z0: template 'symplectic_euler' needs states of 4 components"):
        fit_sde(z0, z1, dt, template=SymplecticEuler(n_dof=2), **quick)
    with pytest.raises(ValueError, match="loss: a template fit"):
        fit_sde(z0, z1, dt, template=SymplecticEuler(), loss="milstein", **quick)
    with pytest.raises(ValueError, match="diffusion: a template learns"):
        fit_sde(z0, z1, dt, template=SymplecticEuler(), diffusion="cholesky", **quick)
    with pytest.raises(ValueError, match="template: not combined with params"):
        fit_sde(z0, z1, dt, template=SymplecticEuler(), params=np.ones((200, 1)), **quick)
    with pytest.raises(TypeError, match="template: must be an IntegratorTemplate"):
        fit_sde(z0, z1, dt, template="symplectic_euler", **quick)
    wave = np.zeros((10, 8))
    with pytest.raises(ValueError, match="dt: template 'walsh_wave' steps exactly 0.25"):
        fit_sde(wave, wave, 0.1, template=WalshWave(4), **quick)
    with pytest.raises(ValueError, match="n_points: must be an int >= 3"):
        WalshWave(2)
    with pytest.raises(ValueError, match="mass: must be a finite number > 0"):
        SymplecticEuler(mass=0.0)
    with pytest.raises(ValueError, match="learned_functions"):
        langevin_fit.drift(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 2\] \(q, p\)"):
        langevin_fit.learned_functions(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="method: a template SDE rolls out"):
        langevin_fit.sample(np.zeros(2), 2, 0.05, method="milstein")
    plain = fit_sde(z0, z1, dt, **quick)
    with pytest.raises(ValueError, match="learned_functions: this SDE was fitted without a template"):
        plain.learned_functions(np.zeros((1, 2)))
    assert plain.template is None and plain.config["diffusion"] == "cholesky"   # the default path
