"""drift_scheme = "heun": with a step not short against the relaxation rate r, the Euler mean
learns the drift averaged over the step, (1 - exp(-r dt)) / (r dt) of the true one; the Heun
mean recovers it to second order. Exact Ornstein–Uhlenbeck transitions, r dt = 0.4."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matscale.sde import fit_sde

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE, SIGMA, DT, N = 2.0, 0.3, 0.2, 20_000


@pytest.fixture(scope="module")
def ou_pairs():
    """Exact OU steps dz = -RATE z dt + SIGMA dW from z0 spread over [-1, 1]."""
    rng = np.random.default_rng(0)
    z0 = rng.uniform(-1.0, 1.0, size=(N, 1))
    decay = np.exp(-RATE * DT)
    sd = SIGMA * np.sqrt((1 - decay**2) / (2 * RATE))
    z1 = z0 * decay + sd * rng.standard_normal((N, 1))
    return z0, z1


def _fitted_rate(z0, z1, scheme: str) -> float:
    sde = fit_sde(z0, z1, DT, loss="em", diffusion="constant_diagonal", hidden=(16, 16),
                  epochs=30, batch_size=1000, seed=0, progress=False, drift_scheme=scheme)
    grid = np.linspace(-0.8, 0.8, 17)[:, None]
    drift = np.asarray(sde.drift(grid))[:, 0]
    return float(-np.polyfit(grid[:, 0], drift, 1)[0])


def test_heun_mean_removes_the_step_averaging_bias(ou_pairs):
    # Standard error of the fitted slope: SIGMA sqrt(DT) / (DT std(z0) sqrt(N)) ~ 0.03 (1.5 %).
    euler = _fitted_rate(*ou_pairs, "euler")
    heun = _fitted_rate(*ou_pairs, "heun")
    x = RATE * DT
    assert euler == pytest.approx(RATE * (1 - np.exp(-x)) / x, rel=0.05)   # 0.824 RATE
    # Heun solves 1 - a dt + (a dt)^2 / 2 = exp(-x): a = 1.029 RATE at x = 0.4
    a_heun = (1 - np.sqrt(1 - 2 * (1 - np.exp(-x)))) / DT
    assert heun == pytest.approx(a_heun, rel=0.05)
    assert abs(heun - RATE) < abs(euler - RATE) / 3


def test_heun_is_rejected_where_undefined(ou_pairs):
    z0, z1 = ou_pairs
    with pytest.raises(ValueError, match="drift_scheme"):
        fit_sde(z0[:100], z1[:100], DT, loss="em", drift_scheme="rk4", progress=False)
    with pytest.raises(ValueError, match="drift_scheme"):
        fit_sde(z0[:100], z1[:100], DT, loss="milstein", diffusion="diagonal",
                drift_scheme="heun", progress=False)
    with pytest.raises(ValueError, match="drift_scheme"):
        fit_sde(z0[:100], z1[:100], DT, drift_scheme="heun", progress=False,
                drift_prior=lambda z, p: torch.zeros_like(z))


@pytest.mark.parametrize("kind", ["cholesky", "diagonal", "constant_diagonal"])
def test_drift_only_evaluation_equals_the_joint_one(kind):
    """The Heun end point evaluates the drift network alone; it is the drift of the joint pass."""
    from matscale.sde.models import SDEModel

    torch.manual_seed(0)
    model = SDEModel(3, 1, diffusion=kind, hidden=(8, 8))
    u, p = torch.randn(6, 3), torch.randn(6, 1)
    torch.testing.assert_close(model.standardized_drift(u, p), model.standardized(u, p)[0])
