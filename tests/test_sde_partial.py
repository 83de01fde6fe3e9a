"""The "partial" loss L_p: lam = K recovers the large-system (mu, Sigma) from patch increments
whose covariance is K times too large; lam = 1 on the same data returns K Sigma."""
from __future__ import annotations

import pytest

from matscale.datasets import patch_increments, recovery_errors
from matscale.sde import fit_sde


pytestmark = pytest.mark.usefixtures("one_torch_thread")


K = 16


@pytest.fixture(scope="module")
def increments():
    return patch_increments("linear_3d", n_pairs=20_000, n_patches=K, seed=0)


def _fit(data, lam):
    return fit_sde(data.z0, data.z1, data.dt, loss="partial", lam=lam, diffusion="cholesky",
                   hidden=(32, 32), epochs=25, batch_size=1000, seed=0, progress=False)


def test_partial_with_lam_k_recovers_large_system(increments):
    err = recovery_errors(_fit(increments, K), increments)
    # Sigma: relative error of a covariance from 18 000 pairs, ~sqrt(2 dof / N) ~ 3 % for ~100 effective
    # dof of the network, plus optimisation error after 25 epochs; 15 % is a loose bound.
    assert err["covariance"] < 0.15
    # drift: noise std is sqrt(K) = 4x the large system's, SE ~ sqrt(K Sigma dof / sum dt) / |mu| ~ 12 %
    # for ~10 dof per component; 30 % bounds it.
    assert err["drift"] < 0.30


def test_partial_with_lam_one_is_k_times_too_noisy(increments):
    sde = _fit(increments, 1.0)
    err = recovery_errors(sde, increments)
    # lam = 1 fits Cov[increment] / dt = K Sigma: relative error ~ K - 1 = 15
    assert err["covariance"] > 0.5 * (K - 1)
    ratio = sde.covariance(increments.z0[:500]).trace(axis1=1, axis2=2) / \
        increments.covariance(increments.z0[:500]).trace(axis1=1, axis2=2)
    assert abs(ratio.mean() / K - 1) < 0.15
