"""FittedSDE: evaluation, rollouts (EM / Milstein), save/load, gray-box prior, checkpoints, NaN stop."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matscale.sde import FittedSDE, SDEModel, TrainingDivergedError, fit_sde, load_sde
from matscale.sde.integrators import milstein
from matscale.sde.trainer import CHECKPOINT_FILE


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ou_pairs(n=4000, seed=0, theta=1.0, noise=0.4):
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(-2, 2, (n, 2))
    dt = rng.uniform(0.01, 0.03, n)
    z1 = z0 - theta * z0 * dt[:, None] + noise * np.sqrt(dt)[:, None] * rng.standard_normal((n, 2))
    return z0, z1, dt


QUICK = dict(epochs=3, hidden=(16, 16), progress=False)


@pytest.fixture(scope="module")
def small_sde() -> FittedSDE:
    z0, z1, dt = _ou_pairs()
    return fit_sde(z0, z1, dt, **QUICK)


def test_shapes_types_and_seeding(small_sde):
    z = np.zeros((5, 2))
    assert small_sde.drift(z).shape == (5, 2) and isinstance(small_sde.drift(z), np.ndarray)
    assert small_sde.diffusion(z).shape == (5, 2, 2)
    cov = small_sde.covariance(z)
    sig = small_sde.diffusion(z)
    np.testing.assert_allclose(cov, sig @ np.swapaxes(sig, 1, 2), rtol=1e-6)
    assert isinstance(small_sde.drift(torch.zeros(5, 2)), torch.Tensor)
    one = small_sde.sample(np.array([0.5, -0.5]), 7, 0.01, n_paths=3, seed=1)
    assert one.shape == (3, 8, 2)
    np.testing.assert_allclose(one[:, 0], np.tile([0.5, -0.5], (3, 1)))
    many = small_sde.sample(np.zeros((4, 2)), 7, 0.01, n_paths=3, seed=1)
    assert many.shape == (4, 3, 8, 2)
    np.testing.assert_array_equal(small_sde.sample(np.zeros(2), 5, 0.01, n_paths=4, seed=3),
                                  small_sde.sample(np.zeros(2), 5, 0.01, n_paths=4, seed=3))
    assert not np.array_equal(small_sde.sample(np.zeros(2), 5, 0.01, n_paths=4, seed=3),
                              small_sde.sample(np.zeros(2), 5, 0.01, n_paths=4, seed=4))
    assert isinstance(small_sde.sample(torch.zeros(2), 2, 0.01, seed=0), torch.Tensor)
    assert small_sde.dim == 2 and small_sde.n_params == 0 and small_sde.config["loss"] == "em"
    assert len(small_sde.history["train"]) == len(small_sde.history["val"]) == 3


def _exact_ou_model(theta: float, noise: float) -> FittedSDE:
    """A FittedSDE whose drift is exactly -theta z (gray-box prior, network output layer zeroed)
    and whose diffusion is exactly noise * I (constant_diagonal)."""
    model = SDEModel(1, diffusion="constant_diagonal", hidden=(4,))
    with torch.no_grad():
        model.drift_net.out.weight.zero_()
        model.drift_net.out.bias.zero_()
        model.sigma_const.fill_(math.log(noise))
    config = {"dim": 1, "n_params": 0, "diffusion": "constant_diagonal", "hidden": [4], "activation": "silu",
              "floor": 1e-4, "loss": "em", "lam": 1.0, "dtype": "float32", "drift_prior": "ou"}
    return FittedSDE(model, config, drift_prior=lambda z, p: -theta * z)


@pytest.mark.parametrize("method", ["em", "milstein"])
def test_rollout_moments_match_the_euler_recursion(method):
    theta, noise, dt, n_steps, n_paths = 1.0, 0.5, 0.02, 50, 20000
    sde = _exact_ou_model(theta, noise)
    paths = sde.sample(np.array([2.0]), n_steps, dt, n_paths=n_paths, seed=0, method=method)[:, -1, 0]
    a = 1 - theta * dt  # EM (and Milstein, constant sigma) recursion z <- a z + noise dW
    mean = a**n_steps * 2.0
    var = noise**2 * dt * (1 - a ** (2 * n_steps)) / (1 - a**2)
    # 5 standard errors: SE(mean) = sqrt(var / n), SE(var) = var sqrt(2 / (n - 1)) for Gaussian data
    assert abs(paths.mean() - mean) < 5 * math.sqrt(var / n_paths)
    assert abs(paths.var() - var) < 5 * var * math.sqrt(2 / (n_paths - 1))


def test_milstein_integrator_step_moments_of_gbm():
    """dz = a z dt + b z dW from z0 = 1, one step: the Milstein increment
    D = a dt + b dW + b^2 (dW^2 - dt) / 2 has E[D] = a dt and E[D^2] = a^2 dt^2 + b^2 dt + b^4 dt^2 / 2
    (Euler-Maruyama lacks the last term)."""
    a, b, dt, n = -0.5, 1.0, 0.5, 200_000
    gen = torch.Generator().manual_seed(0)
    z0 = torch.ones(n, 1, dtype=torch.float64)
    step = milstein(lambda z: a * z, lambda z: b * z, z0, 1, dt, gen)[:, -1, 0] - 1.0
    # 5 standard errors of the sample means, the SE estimated from the sample itself
    assert abs(step.mean().item() - a * dt) < 5 * step.std().item() / math.sqrt(n)
    m2 = step.square()
    want = a**2 * dt**2 + b**2 * dt + 0.5 * b**4 * dt**2
    se = m2.std().item() / math.sqrt(n)
    assert abs(m2.mean().item() - want) < 5 * se
    assert 0.5 * b**4 * dt**2 > 20 * se  # the check tells Milstein from Euler-Maruyama


def test_save_and_load_directory_and_file(tmp_path, small_sde):
    z = np.random.default_rng(1).standard_normal((10, 2))
    for target in (tmp_path / "sde_dir", tmp_path / "sde.pt"):
        where = small_sde.save(target)
        file = where / "model.pt" if where.is_dir() else where
        payload = torch.load(file, weights_only=True)  # no pickled modules inside
        assert json.loads(payload["config_json"])["diffusion"] == "cholesky"
        if where.is_dir():
            assert json.loads((where / "config.json").read_text())["dim"] == 2
        loaded = load_sde(target)
        np.testing.assert_array_equal(loaded.drift(z), small_sde.drift(z))
        np.testing.assert_array_equal(loaded.diffusion(z), small_sde.diffusion(z))
        assert loaded.history["train"] == small_sde.history["train"]
        np.testing.assert_array_equal(loaded.sample(z[0], 4, 0.01, seed=2), small_sde.sample(z[0], 4, 0.01, seed=2))


def test_gray_box_prior_and_reload(tmp_path):
    z0, z1, dt = _ou_pairs()

    def ou_prior(z, p):
        return -z

    sde = fit_sde(z0, z1, dt, drift_prior=ou_prior, **QUICK)
    grid = np.random.default_rng(2).uniform(-2, 2, (200, 2))
    # the network only learns a residual around 0; with the exact prior the drift stays close to -z.
    # A residual drift estimate from 3600 pairs has std ~ noise / sqrt(sum dt / K) ~ 0.4 / sqrt(72 / 10)
    # ~ 0.15 in the worst case, so 0.3 absolute RMS is a loose bound against an RMS drift of 1.15.
    assert np.sqrt(np.mean((sde.drift(grid) + grid) ** 2)) < 0.3
    assert sde.config["drift_prior"] == "ou_prior"
    sde.save(tmp_path / "g")
    with pytest.raises(ValueError, match="^drift_prior"):
        load_sde(tmp_path / "g")
    np.testing.assert_array_equal(load_sde(tmp_path / "g", drift_prior=ou_prior).drift(grid), sde.drift(grid))


def test_checkpoint_resume_continues_exactly(tmp_path):
    z0, z1, dt = _ou_pairs(n=3000)
    opts = dict(hidden=(16, 16), progress=False, patience=100, checkpoint_every=1)
    straight = fit_sde(z0, z1, dt, epochs=4, **opts)
    first = fit_sde(z0, z1, dt, epochs=2, checkpoint_dir=tmp_path, **opts)
    assert len(first.history["train"]) == 2 and (tmp_path / CHECKPOINT_FILE).exists()
    resumed = fit_sde(z0, z1, dt, epochs=4, checkpoint_dir=tmp_path, **opts)
    assert len(resumed.history["train"]) == 4
    np.testing.assert_allclose(resumed.history["train"], straight.history["train"], rtol=1e-6)
    grid = z0[:50]
    np.testing.assert_allclose(resumed.drift(grid), straight.drift(grid), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="^checkpoint_dir"):
        fit_sde(z0 + 1.0, z1, dt, epochs=4, checkpoint_dir=tmp_path, **opts)  # other data: refuse


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    z0, z1, dt = _ou_pairs(n=2000)

    def poison(epoch, model, history):  # a corrupted update after the 3rd epoch (and its checkpoint)
        if epoch == 2:
            with torch.no_grad():
                model.net.out_a.weight.fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match="non-finite loss at epoch 3") as ei:
        fit_sde(z0, z1, dt, epochs=10, hidden=(8,), progress=False, checkpoint_dir=tmp_path,
                checkpoint_every=1, callback=poison, patience=100)
    result = ei.value.result
    assert np.isfinite(result.drift(z0[:20])).all()
    assert result.config["stop_reason"] == "diverged" and len(result.history["train"]) == 3
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_params_conditioning_and_per_start_params():
    rng = np.random.default_rng(3)
    n = 6000
    p = rng.choice([0.5, 2.0], n)[:, None]
    z0 = rng.uniform(-2, 2, (n, 1))
    dt = rng.uniform(0.01, 0.03, n)
    z1 = z0 - p * z0 * dt[:, None] + 0.2 * np.sqrt(dt)[:, None] * rng.standard_normal((n, 1))
    sde = fit_sde(z0, z1, dt, params=p, epochs=20, batch_size=500, hidden=(32, 32), progress=False)
    zq = np.array([[1.5]])
    slow, fast = sde.drift(zq, params=[[0.5]])[0, 0], sde.drift(zq, params=[[2.0]])[0, 0]
    # true -0.75 and -3.0. Per value of p there are ~2700 training pairs, sum(dt) ~ 54, noise 0.2.
    # Even a drift fitted only on the half z in [0, 2] next to z = 1.5 (sum(dt) ~ 27, Var z = 1/3,
    # 0.5 from its mean) predicts there with SE = 0.2 sqrt(1/27 + 0.5^2 / (27/3)) ~ 0.05: 0.25 is 5 SE.
    # It fails a drift that ignores p (-1.9 at both) or has half the restoring force (-0.375).
    assert slow == pytest.approx(-0.75, abs=0.25) and fast == pytest.approx(-3.0, abs=0.25)
    paths = sde.sample(np.array([[1.5], [1.5]]), 30, 0.02, n_paths=200, params=[[0.5], [2.0]], seed=0)
    assert paths.shape == (2, 200, 31, 1)
    assert paths[1, :, -1].mean() < paths[0, :, -1].mean()  # stronger restoring force at p = 2
