"""Rollouts on a user's time grid: automatic substeps from the training δt, clear errors instead of
NaN paths, and the torchsde interface (f, g, noise_type, sde_type, conditioned)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matscale.config import loads_config
from matscale.pipeline.model import MacroModel
from matscale.sde import FittedSDE, NonFiniteRolloutError, SDEModel, fit_sde
from matscale.sde.models import _SOFTPLUS_ONE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_DT = 0.2  # the δt of the (notional) training pairs; safe step = 2 x 0.2 = 0.4


def _linear_sde(theta: float, noise: float, *, dim: int = 1, loc: float = 0.0, scale: float = 1.0,
                diffusion: str = "constant_diagonal", n_params: int = 0, drift_prior=None) -> FittedSDE:
    """A FittedSDE with drift exactly -theta (z - loc) (+ theta p per conditioning input; plus
    ``drift_prior`` if given) and constant diffusion noise * I, in float32, recording training
    δt TRAIN_DT. Standardisation z_loc = loc, z_scale = scale, time_scale = TRAIN_DT, so the
    fallback training support is loc +- 5 scale."""
    tau = TRAIN_DT
    model = SDEModel(dim, n_params, diffusion=diffusion, hidden=(4,), floor=0.0)
    with torch.no_grad():
        model.z_loc.fill_(loc)
        model.z_scale.fill_(scale)
        model.time_scale.fill_(tau)
        # physical mu = scale * mu_u / tau with mu_u = [u, p] @ L: L_zz = -theta tau, L_pz = theta tau / scale
        lin = torch.zeros(dim + n_params, dim)
        lin[:dim, :dim] = -theta * tau * torch.eye(dim)
        lin[dim:, :] = theta * tau / scale
        model.drift_linear.copy_(lin)
        model.drift_offset.zero_()
        # physical sigma = scale * diff_scale * (1 or exp(0)) / sqrt(tau)
        model.diff_scale.fill_(noise * math.sqrt(tau) / scale)
        if model.net is None:
            model.drift_net.out.weight.zero_()
            model.drift_net.out.bias.zero_()
            model.sigma_const.zero_()
        else:  # cholesky: zero network outputs, softplus(diag) = 1, no off-diagonal
            model.net.out_a.weight.zero_()
            model.net.out_a.bias.zero_()
            model.net.out_b.weight.zero_()
            model.net.out_b.bias.zero_()
            diag = (model.tril_rows == model.tril_cols).nonzero().squeeze(1)
            model.net.out_b.bias[diag] = _SOFTPLUS_ONE
    config = {"dim": dim, "n_params": n_params, "diffusion": diffusion, "hidden": [4], "activation": "silu",
              "floor": 0.0, "loss": "em", "lam": 1.0, "dtype": "float32",
              "drift_prior": None if drift_prior is None else "prior", "min_dt": tau, "median_dt": tau}
    return FittedSDE(model, config, drift_prior=drift_prior)


def _em_law(z0: float, m: float, theta: float, noise: float, h: float, k: np.ndarray):
    """Exact mean and variance after k Euler-Maruyama steps h of dz = -theta (z - m) dt + noise dW:
    z <- m + a (z - m) + noise sqrt(h) xi, a = 1 - theta h."""
    a = 1.0 - theta * h
    return m + (z0 - m) * a**k, noise**2 * h * (1 - a ** (2 * k)) / (1 - a**2)


def _ou_law(z0: float, m: float, theta: float, noise: float, t: np.ndarray):
    return m + (z0 - m) * np.exp(-theta * t), noise**2 / (2 * theta) * (1 - np.exp(-2 * theta * t))


def _check_moments(x: np.ndarray, mean: np.ndarray, var: np.ndarray, extra_mean: np.ndarray | float = 0.0,
                   extra_var: np.ndarray | float = 0.0):
    """x [n, T]: sample mean / variance within 5 standard errors of the law, for Gaussian data
    SE(mean) = sqrt(var / n) and SE(var) = var sqrt(2 / (n - 1)); ``extra_*`` add known bias bounds."""
    n = x.shape[0]
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * np.sqrt(var / n) + extra_mean + 1e-12)
    np.testing.assert_array_less(np.abs(x.var(0, ddof=1) - var), 5 * var * math.sqrt(2 / (n - 1)) + extra_var + 1e-12)


# ---------------------------------------------------------------------------------------------
def test_coarse_grid_is_substepped_and_matches_the_law():
    """A grid 30x the training δt (like one sweep vs δt 0.2): the default rollout substeps to
    0.4 and reproduces the law of that scheme; one step per grid interval would diverge."""
    theta, noise, m, z0, n = 0.5, 0.6, 1.0, 3.0, 20000
    sde = _linear_sde(theta, noise, loc=m)
    assert sde.training_dt == (TRAIN_DT, TRAIN_DT) and sde.safe_step == pytest.approx(0.4)
    coarse = 30 * TRAIN_DT
    ts = coarse * np.arange(4)
    paths = sde.sample(np.array([z0]), ts=ts, n_paths=n, seed=0)
    assert paths.shape == (n, 4, 1) and np.isfinite(paths).all()
    np.testing.assert_array_equal(paths[:, 0, 0], z0)
    x = paths[:, 1:, 0]
    k = np.arange(1, 4) * 15  # 15 substeps of 0.4 per grid interval of 6
    _check_moments(x, *_em_law(z0, m, theta, noise, 0.4, k))
    # against the continuous OU law, allowing the discretisation bias of steps h = 0.4: the EM
    # variance approaches noise^2 / (theta (2 - theta h)) instead of noise^2 / (2 theta) (0.04 more
    # here), the EM mean decays as (1 - theta h)^(t / h) instead of exp(-theta t)
    ou_mean, ou_var = _ou_law(z0, m, theta, noise, ts[1:])
    var_bias = noise**2 / (theta * (2 - theta * 0.4)) - noise**2 / (2 * theta)
    mean_bias = abs(z0 - m) * np.abs(np.exp(-theta * ts[1:]) - (1 - theta * 0.4) ** k)
    _check_moments(x, ou_mean, ou_var, extra_mean=mean_bias, extra_var=var_bias)
    # the old signature goes through the same machinery: same grid, same seed -> same paths
    np.testing.assert_array_equal(sde.sample(np.array([z0]), 3, coarse, n_paths=n, seed=0), paths)


def test_uneven_grid_and_explicit_max_step():
    theta, noise, m, z0, n = 0.5, 0.6, 1.0, 3.0, 20000
    sde = _linear_sde(theta, noise, loc=m)
    ts = torch.tensor([0.0, 0.1, 4.1, 10.1])  # intervals 0.1 (1 step), 4.0 (20 x 0.2), 6.0 (30 x 0.2)
    paths = sde.sample(torch.tensor([z0]), ts=ts, n_paths=n, seed=1, max_step=0.2)
    assert isinstance(paths, torch.Tensor) and paths.shape == (n, 4, 1)
    x = paths[:, :, 0].double().numpy()
    a1, a2 = 1 - theta * 0.1, 1 - theta * 0.2
    mean1, var1 = m + (z0 - m) * a1, noise**2 * 0.1
    for k in (20, 30):  # propagate mean and variance through k steps of 0.2
        mean1 = m + (mean1 - m) * a2**k
        var1 = var1 * a2 ** (2 * k) + noise**2 * 0.2 * (1 - a2 ** (2 * k)) / (1 - a2**2)
    _check_moments(x[:, 3:], np.array([mean1]), np.array([var1]))
    # equal steps no longer than max_step: the fine grid (max_step 0.2) gives the same paths
    fine = sde.sample(torch.tensor([z0]), ts=np.r_[0.0, 0.1, 0.1 + 0.2 * np.arange(1, 51)], n_paths=n, seed=1,
                      max_step=None)
    torch.testing.assert_close(fine[:, [0, 1, 21, 51]], paths)


def test_forced_coarse_step_raises_instead_of_nan():
    """A Ginzburg-Landau drift z - z^3 (the shape of a fitted Ising magnetisation drift): Euler
    steps of 6 overshoot to inf/NaN within a few steps. Forcing the step is a clear one-line error;
    the default substeps and stays finite and inside [-1.5, 1.5]."""
    sde = _linear_sde(0.0, 0.3, scale=0.7, drift_prior=lambda z, p: z - z**3)
    ts = 30 * TRAIN_DT * np.arange(6)
    good = sde.sample(np.array([0.2]), ts=ts, n_paths=500, seed=0)
    assert np.isfinite(good).all() and np.abs(good).max() < 2.0
    with pytest.raises(NonFiniteRolloutError) as info:
        sde.sample(np.array([0.2]), ts=ts, n_paths=500, seed=0, max_step=None)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sample: non-finite paths from t=")
    assert "integration step 6 is 30x the shortest training dt 0.2" in msg and "max_step='auto'" in msg
    with pytest.raises(FloatingPointError, match="step 6 is 30x"):  # old signature, forced step
        sde.sample(np.array([0.2]), 5, 6.0, n_paths=500, seed=0, max_step=None)
    kept = sde.sample(np.array([0.2]), ts=ts, n_paths=500, seed=0, max_step=None, nonfinite="keep")
    assert not np.isfinite(kept).all()  # what the old sampler returned silently


def test_leaving_the_training_support_is_named():
    """An unstable drift +z with safe steps: the paths leave the support (loc +- 5 scale = [-5, 5])
    long before they overflow float32; the error names the first grid time outside and the range."""
    sde = _linear_sde(-1.0, 0.1)
    with pytest.raises(NonFiniteRolloutError) as info:
        sde.sample(np.array([1.0]), ts=[0.0, 30.0, 60.0, 90.0, 120.0], n_paths=50, seed=0)
    msg = str(info.value)
    assert "\n" not in msg and "from t=120 on with step 0.4" in msg
    assert "left the training support first at t=30" in msg and "support [-5, 5]" in msg


def test_fitted_sde_on_a_grid_30x_its_training_dt():
    """A real fit (OU, theta = 1, δt ~ U(0.05, 0.15)); the safe step is 2 x the shortest training
    δt (2 x the median while the fit's config does not record the shortest). On a grid of 3.0
    (30x the median) the default rollout is finite with the stationary OU variance
    noise^2 / (2 theta) = 0.08 (a 3-epoch fit: a factor-2 band); one Euler step of 3.0 per
    interval (|1 - 3 theta| = 2) overflows."""

    rng = np.random.default_rng(0)
    n, theta, noise = 4000, 1.0, 0.4
    z0 = rng.uniform(-1, 1, (n, 1))
    dt = rng.uniform(0.05, 0.15, n)
    z1 = z0 * np.exp(-theta * dt)[:, None] + noise * np.sqrt((1 - np.exp(-2 * theta * dt)) / (2 * theta))[:, None] \
        * rng.standard_normal((n, 1))
    sde = fit_sde(z0, z1, dt, epochs=3, hidden=(16, 16), progress=False, diffusion="diagonal")
    shortest, median = sde.training_dt  # the shortest falls back to the median when not recorded
    assert median == pytest.approx(np.median(dt), rel=0.05) and 0.05 <= shortest <= median
    assert sde.safe_step == pytest.approx(2 * shortest)
    ts = 3.0 * np.arange(150)
    paths = sde.sample(np.array([0.5]), ts=ts, n_paths=200, seed=0)
    assert np.isfinite(paths).all()
    assert 0.04 < paths[:, 10:, 0].var() < 0.16
    with pytest.raises(NonFiniteRolloutError, match=r"integration step 3 is \d+(\.\d+)?x the shortest training dt"):
        sde.sample(np.array([0.5]), ts=ts, n_paths=200, seed=0, max_step=None)


def test_time_grid_argument_errors():
    sde = _linear_sde(0.5, 0.6)
    cases = [(dict(ts=[0.0, 1.0], n_steps=2, dt=0.1), "ts"), (dict(ts=[0.0, 1.0, 1.0]), "ts"),
             (dict(ts=[[0.0, 1.0]]), "ts"), (dict(ts=[0.0, np.nan]), "ts"), (dict(), "n_steps"),
             (dict(n_steps=2), "n_steps"), (dict(ts=[0.0, 1.0], max_step=0.0), "max_step"),
             (dict(ts=[0.0, 1.0], max_step="fine"), "max_step"), (dict(ts=[0.0, 1.0], nonfinite="nan"), "nonfinite")]
    for kwargs, field in cases:
        with pytest.raises(ValueError) as info:
            sde.sample(np.zeros(1), **kwargs)
        assert str(info.value).startswith(f"{field}:") and "\n" not in str(info.value)
    assert sde.sample(np.zeros(1), ts=[2.5], n_paths=3).shape == (3, 1, 1)


def test_training_dt_falls_back_to_the_time_scale():
    sde = _linear_sde(0.5, 0.6)
    del sde.config["min_dt"], sde.config["median_dt"]
    assert sde.training_dt == pytest.approx((TRAIN_DT, TRAIN_DT)) and sde.safe_step == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------
def _torchsde_paths(module, y0: torch.Tensor, ts: torch.Tensor, h: float, seed: int) -> np.ndarray:
    """torchsde.sdeint(method="euler", fixed step h) on a seeded Brownian interval: [T, B, d].
    (torchsde is in the test extra; skipped, not failed, where it is missing.)"""
    torchsde = pytest.importorskip("torchsde")
    bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=(y0.shape[0], module_noise(module, y0)),
                                   dtype=y0.dtype, entropy=seed)
    with torch.no_grad():
        ys = torchsde.sdeint(module, y0, ts, bm=bm, method="euler", dt=h)
    return ys.numpy()  # [T, B, d]


def module_noise(module, y0: torch.Tensor) -> int:
    """Brownian channels: d for diagonal noise ([B, d]), m for general noise ([B, d, m])."""
    return module.g(0.0, y0).shape[-1]


@pytest.mark.parametrize("diffusion", ["constant_diagonal", "cholesky"])
def test_torchsde_euler_matches_own_sampler(diffusion):
    """Same SDE, same Euler step h = 0.4: torchsde.sdeint(method="euler") and FittedSDE.sample
    give the same mean and variance at the grid times. Each is an average over n independent
    paths, so each deviates from the exact Euler law by ~SE (SE(mean) = sqrt(var / n),
    SE(var) = var sqrt(2 / (n - 1)) for Gaussian data) and their difference by sqrt(2) SE;
    5 sqrt(2) SE bounds it. Both are also checked against the exact Euler law (5 SE)."""
    theta, noise, m, z0, n, h = 0.5, 0.6, 1.0, 3.0, 8000, 0.4
    dim = 1 if diffusion == "constant_diagonal" else 2
    sde = _linear_sde(theta, noise, dim=dim, loc=m, diffusion=diffusion)
    assert sde.sde_type == "ito" and sde.noise_type == ("diagonal" if dim == 1 else "general")
    ts = torch.tensor([0.0, 2.0, 6.0], dtype=torch.float64)
    y0 = torch.full((n, dim), z0, dtype=torch.float64)
    theirs = _torchsde_paths(sde, y0, ts, h, seed=3)[1:].transpose(1, 0, 2)   # [n, 2, d]
    ours = sde.sample(np.full(dim, z0), ts=ts.numpy(), n_paths=n, seed=3, max_step=h)[:, 1:]
    mean, var = _em_law(z0, m, theta, noise, h, np.array([5, 15]))
    for c in range(dim):
        _check_moments(theirs[:, :, c], mean, var)
        _check_moments(ours[:, :, c], mean, var)
        np.testing.assert_array_less(np.abs(theirs[:, :, c].mean(0) - ours[:, :, c].mean(0)),
                                     5 * math.sqrt(2) * np.sqrt(var / n))
        np.testing.assert_array_less(np.abs(theirs[:, :, c].var(0) - ours[:, :, c].var(0)),
                                     5 * math.sqrt(2) * var * math.sqrt(2 / (n - 1)))


def test_torchsde_conditioned_parameters():
    """Drift -theta (z - p): the bound parameter is the mean the paths relax to."""
    theta, noise, n, h = 0.5, 0.6, 4000, 0.4
    sde = _linear_sde(theta, noise, n_params=1)
    with pytest.raises(ValueError, match="^params: .*conditioned"):
        sde.f(0.0, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="^params"):
        sde.conditioned(None)
    p = torch.cat([torch.full((n, 1), 1.0), torch.full((n, 1), -1.0)])
    module = sde.conditioned(p)
    assert isinstance(module, torch.nn.Module) and module.noise_type == "diagonal" and module.sde_type == "ito"
    ts = torch.tensor([0.0, 6.0])
    y0 = torch.zeros(2 * n, 1)
    theirs = _torchsde_paths(module, y0, ts, h, seed=5)[-1, :, 0].reshape(2, n)
    ours = sde.sample(np.zeros((2, 1)), ts=[0.0, 6.0], n_paths=n, params=[[1.0], [-1.0]], seed=5, max_step=h)
    for c, target in enumerate((1.0, -1.0)):
        mean, var = _em_law(0.0, target, theta, noise, h, np.array([15]))
        _check_moments(theirs[c][:, None], mean, var)
        _check_moments(ours[c, :, -1, 0][:, None], mean, var)
    # a shared [q] parameter broadcasts over any batch; noise_scale scales g only
    shared = sde.conditioned([2.0], noise_scale=0.5)
    y = torch.tensor([[0.0], [2.0]])
    torch.testing.assert_close(shared.f(0.0, y), torch.tensor([[theta * 2.0], [0.0]]))
    torch.testing.assert_close(shared.g(0.0, y), torch.full((2, 1), 0.5 * noise))


# ---------------------------------------------------------------------------------------------
def test_macro_model_sample_on_a_coarse_grid(tmp_path):
    """MacroModel.sample takes ts= and substeps from the training δt of the fit stage's
    model.json when the SDE's config lacks it."""
    cfg = loads_config('name = "x"\n[system]\nkind = "curie_weiss"\nL = 16\nT = 2.5\nh = 0.1\n[small]\np = 8\n')
    sde = _linear_sde(0.5, 0.02, loc=0.3, scale=0.2, drift_prior=None)
    del sde.config["min_dt"], sde.config["median_dt"]
    with torch.no_grad():
        sde.model.time_scale.fill_(1.0)  # fallback alone would allow steps of 2.0
        sde.model.drift_linear.mul_(1.0 / TRAIN_DT)
        sde.model.diff_scale.mul_(1.0 / math.sqrt(TRAIN_DT))
    record = tmp_path / "fit" / "ours" / "model.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"min_dt": 0.1, "median_dt": 0.2}))
    model = MacroModel(sde, cfg, None, 8, "ours", folder=tmp_path)
    assert sde.training_dt == (0.1, 0.2) and sde.safe_step == pytest.approx(0.2)
    paths = model.sample(np.array([0.3]), ts=[0.0, 6.2, 12.4], n_paths=4, seed=0)
    assert paths.shape == (4, 3, 1) and np.isfinite(paths).all()
    np.testing.assert_array_equal(model.sample(np.array([0.3]), 2, 6.2, n_paths=4, seed=0), paths)
    fast = _linear_sde(3.0, 0.02, loc=0.3, scale=0.2)  # theta * 6.2 >> 2: one step per interval diverges
    fast_model = MacroModel(fast, cfg, None, 8, "ours")
    assert np.isfinite(fast_model.sample(np.array([0.3]), ts=6.2 * np.arange(50), n_paths=4, seed=0)).all()
    with pytest.raises(NonFiniteRolloutError, match="integration step 6.2 is 31x"):
        fast_model.sample(np.array([0.3]), ts=6.2 * np.arange(50), n_paths=4, seed=0, max_step=None)
