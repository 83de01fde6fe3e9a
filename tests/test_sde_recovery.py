"""Recovery of the seed-000 benchmark SDEs at test size (the full table is benchmarks/bench_sde_recovery.py).

Tolerances are twice the benchmark targets (5 % "em", 10 % "milstein") because the tests use
20 000 instead of 50 000 pairs and ~40 epochs: the statistical error of the drift scales as
1 / sqrt(N sum(dt)) -> x1.6, the rest is the shorter training.
"""
from __future__ import annotations

import pytest

from matscale.datasets import recovery_errors, simulate_pairs
from matscale.sde import fit_sde


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("system,loss,diffusion,tol", [
    ("ornstein_uhlenbeck", "em", "cholesky", 0.10),
    ("double_well", "milstein", "diagonal", 0.20),
    ("nonsmooth_2d", "em", "diagonal", 0.10),
    ("linear_3d", "em", "cholesky", 0.10),
    ("langevin_oscillator", "em", "constant_diagonal", 0.10),
])
def test_recovers_benchmark_sde(system, loss, diffusion, tol):
    data = simulate_pairs(system, 20_000, seed=1)
    sde = fit_sde(data.z0, data.z1, data.dt, loss=loss, diffusion=diffusion, epochs=40, batch_size=500,
                  schedule="cosine", patience=1000, seed=1, progress=False)
    err = recovery_errors(sde, data)
    assert err["drift"] < tol, err
    assert err["covariance"] < tol, err
