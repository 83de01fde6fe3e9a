"""Finite-size-scaling analysis: exact small-box moments, and the fits on data of known law."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from matscale.critical import (ONSAGER_TC, Estimate, binder_crossing, fss_exponents, moments,
                               power_law_exponent)
from matscale.systems import Ising2D


def _exact_moments(L: int, T: float) -> tuple[float, float, float]:
    """⟨|M|⟩, ⟨M²⟩, ⟨M⁴⟩ per site of the periodic L×L Ising model at h = 0 by enumeration."""
    n = L * L
    spins = np.array(list(itertools.product((-1, 1), repeat=n)), dtype=np.int8).reshape(-1, L, L)
    bonds = (spins * np.roll(spins, 1, axis=1)).sum(axis=(1, 2)) + (spins * np.roll(spins, 1, axis=2)).sum(axis=(1, 2))
    w = np.exp(bonds / T - (bonds / T).max())
    m = spins.mean(axis=(1, 2))
    w /= w.sum()
    return float(w @ np.abs(m)), float(w @ m ** 2), float(w @ m ** 4)


def test_moments_of_simulated_runs_match_exact_enumeration():
    """L = 4 at T = 2.27 (2^16 states enumerated) against 200 Glauber runs × 60 samples spaced by
    one time unit after 30 units of relaxation. Tolerance: 4 bootstrap standard errors (the
    bootstrap resamples whole runs, so correlated samples within a run do not shrink it)."""
    L, T = 4, 2.27
    abs_m, m2, m4 = _exact_moments(L, T)
    exact = {"abs_m": abs_m, "chi": L * L / T * (m2 - abs_m ** 2), "binder": 1 - m4 / (3 * m2 ** 2)}
    system = Ising2D(L, T)
    rng = np.random.default_rng(0)
    R, S = 200, 60
    states = system.random_states(R, rng)
    system.evolve_batch(states, duration=30.0, seeds=np.arange(R, dtype=np.uint64))
    samples = np.empty((R, S))
    for s in range(S):
        system.evolve_batch(states, duration=1.0, seeds=np.arange(R, dtype=np.uint64) + 1000 * (s + 1))
        samples[:, s] = states.mean(axis=(1, 2))
    est = moments(samples, L, T)
    for key, value in exact.items():
        assert abs(est[key].value - value) <= 4 * est[key].error, (key, est[key], value)
        assert est[key].error < 0.08 * abs(value)  # and the test has resolving power


def test_power_law_exponent_recovers_a_known_slope_with_honest_errors():
    """value = 3 L^(-0.125) with 1 % Gaussian noise at 4 sizes: the fitted slope's error covers the
    truth in about 68 % of 400 repetitions (binomial: 68 ± 2.3 %, so 60–76 % is > 3 σ wide)."""
    rng = np.random.default_rng(1)
    sizes = np.array([16, 32, 48, 64])
    hits = 0
    for _ in range(400):
        v = 3 * sizes ** -0.125 * (1 + 0.01 * rng.normal(size=4))
        est = power_law_exponent(sizes, v, 0.01 * v)
        hits += abs(est.value + 0.125) <= est.error
    assert 0.60 <= hits / 400 <= 0.76


def test_binder_crossing_of_two_lines():
    T = np.array([2.25, 2.26, 2.27, 2.28, 2.29])
    small = [Estimate(0.60 - 2.0 * (t - 2.27), 0.002) for t in T]
    large = [Estimate(0.60 - 4.0 * (t - 2.27), 0.002) for t in T]
    cross = binder_crossing(T, small, large)
    assert cross.value == pytest.approx(2.27, abs=1e-9)
    assert 0 < cross.error < 0.01


def test_fss_exponents_on_data_with_the_ising_scaling_forms():
    """Moments built from the 2-D Ising scaling forms (⟨|M|⟩ ∝ L^-1/8, χ ∝ L^7/4, U a function of
    (T − T_c) L^(1/ν) with ν = 1) give back the exponents."""
    sizes, temps = (16, 32, 64), (2.25, 2.26, 2.27, 2.28, 2.29)
    results = {}
    for L in sizes:
        results[L] = {}
        for t in temps:
            x = (t - ONSAGER_TC) * L
            results[L][t] = {"abs_m": Estimate(1.1 * L ** -0.125, 1e-4), "chi": Estimate(0.04 * L ** 1.75, 1e-3),
                             "binder": Estimate(0.61 - 0.3 * x, 1e-4)}
    exps = fss_exponents(results)
    assert exps["beta_over_nu"].value == pytest.approx(0.125, abs=1e-3)
    assert exps["gamma_over_nu"].value == pytest.approx(1.75, abs=1e-3)
    assert exps["one_over_nu"].value == pytest.approx(1.0, abs=1e-3)


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match="m:"):
        moments(np.ones((1, 5)), 4, 2.0)
    with pytest.raises(ValueError, match="NaN"):
        moments(np.full((3, 5), np.nan), 4, 2.0)


def test_cluster_bootstrap_error_covers_the_spread_between_clusters():
    """8 clusters of 6 runs whose level differs by cluster (sd 0.02) with small noise within: the
    error of ⟨|M|⟩ from resampling clusters is the standard error of the 8 cluster means
    (sample sd / √8; the √(c/(c−1)) factor makes the bootstrap match the unbiased value, up to
    its Monte Carlo error ≈ 1/√(2 n_boot) ≈ 3.5 % for n_boot = 400, so 15 % is a wide margin),
    while resampling single runs sees only a part of it."""
    rng = np.random.default_rng(3)
    c, per, S = 8, 6, 50
    level = 0.5 + 0.02 * rng.standard_normal(c)
    m = np.repeat(level, per)[:, None] + 0.002 * rng.standard_normal((c * per, S))
    labels = np.repeat(np.arange(c), per)
    clustered = moments(m, 16, 2.3, clusters=labels)["abs_m"]
    expected = m.reshape(c, per * S).mean(axis=1).std(ddof=1) / np.sqrt(c)
    assert clustered.error == pytest.approx(expected, rel=0.15)
    assert moments(m, 16, 2.3)["abs_m"].error < 0.5 * clustered.error
    assert clustered.value == moments(m, 16, 2.3)["abs_m"].value
    with pytest.raises(ValueError, match="clusters"):
        moments(m, 16, 2.3, clusters=np.zeros(c * per))
    with pytest.raises(ValueError, match="clusters"):
        moments(m, 16, 2.3, clusters=labels[:-1])
