"""Exact generator moments of the spin systems: b(x) = Σ w_i Δz_i and a(x) = Σ w_i Δz_i Δz_iᵀ
against simulated short-time increments, the mean-field limit and stationarity."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.observables import spin_observables
from matscale.systems import CurieWeiss, Ising2D

T, H = 2.5, 0.1


def _replicas(state: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(state[None], n, axis=0))


@pytest.mark.parametrize("m0", [0.0, 0.6])
def test_ising_moments_match_short_time_increments(m0):
    """From one microstate, R replicas evolved for δt: mean(Δz)/δt -> b(x), Cov(Δz)/δt -> a(x).
    Tolerances: 4 standard errors of the replica mean (sqrt(a δt / R) / δt) plus the O(δt)
    bias δt/2·|Lb| ≲ 2e-3 at δt = 0.01; 12 % on the covariance (4 x sqrt(2/R) = 4 %, + O(δt)) plus 4 standard
    errors sqrt(a_kk a_ll / R) for the small cross term."""
    system, R, dt = Ising2D(32, T, H), 20_000, 0.01
    state = system.random_state(np.random.default_rng(1), magnetization=m0)
    drift, diffusion = system.generator_moments(state)
    assert drift.shape == (2,) and diffusion.shape == (2, 2)
    batch = _replicas(state, R)
    system.evolve_batch(batch, duration=dt, seeds=np.arange(R, dtype=np.uint64))
    dz = spin_observables(batch) - spin_observables(state)
    se = np.sqrt(np.diag(diffusion) * dt / R) / dt
    assert np.all(np.abs(dz.mean(axis=0) / dt - drift) <= 4 * se + 2e-3), (dz.mean(axis=0) / dt, drift, se)
    var = np.diag(diffusion)
    cov_se = np.sqrt(np.outer(var, var) / R)          # standard error of a sample covariance
    assert np.all(np.abs(np.cov(dz.T) / dt - diffusion) <= 0.12 * np.abs(diffusion) + 4 * cov_se)


def test_ising_drift_vanishes_on_average_at_equilibrium():
    """E_eq[b] = d<z>/dt = 0 in the stationary state; 400 states after t = 40 (τ_m ≈ 20 at
    T = 2.5, h = 0.1, started near equilibrium); tolerance 4 standard errors of the mean."""
    system, n = Ising2D(32, T, H), 400
    rng = np.random.default_rng(2)
    states = np.stack([system.random_state(rng, magnetization=0.72) for _ in range(n)])
    system.evolve_batch(states, duration=40.0, seeds=rng.integers(0, 2**63, n).astype(np.uint64))
    drift, _ = system.generator_moments(states)
    se = drift.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(drift.mean(axis=0)) <= 4 * se), (drift.mean(axis=0), se)
    # away from equilibrium it does not vanish: a random state's domain walls decay
    random_drift, _ = system.generator_moments(system.random_state(rng, magnetization=0.0))
    assert random_drift[1] < -0.2


def test_curie_weiss_moments_are_the_mean_field_formulas_up_to_1_over_N():
    """b = tanh(β(m + h)) − m and N a = 2 (1 − m tanh β(m + h)) + O(1/N); batch shape kept."""
    system = CurieWeiss(64, 1.1, 0.1)
    rng = np.random.default_rng(3)
    states = np.stack([[system.random_state(rng, magnetization=m0) for m0 in (-0.6, 0.0, 0.5)]] * 2)
    drift, diffusion = system.generator_moments(states)
    assert drift.shape == (2, 3, 1) and diffusion.shape == (2, 3, 1, 1)
    m = spin_observables(states)[..., 0]
    field = np.tanh((m + 0.1) / 1.1)
    N = system.n_sites
    np.testing.assert_allclose(drift[..., 0], field - m, atol=5 / N)
    np.testing.assert_allclose(N * diffusion[..., 0, 0], 2 * (1 - m * field), atol=5 / N)


def test_generator_moments_reject_bad_states():
    system = Ising2D(8, T, H)
    with pytest.raises(TypeError, match="int8"):
        system.generator_moments(np.ones((8, 8)))
    with pytest.raises(ValueError, match="shape"):
        system.generator_moments(np.ones((4, 8), dtype=np.int8))
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        system.generator_moments(np.zeros((8, 8), dtype=np.int8))
