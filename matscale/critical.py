"""Finite-size scaling near a critical point, from stationary samples of the order parameter.

For each box side L and temperature T the input is an array ``m [R, S]`` of magnetisation
(order parameter per site) samples: R independent runs (rows), S successive stationary samples
each (correlated in time). Every statistic's error comes from resampling whole runs (the runs
are independent; the samples within a run are not), so correlated samples never make an error
bar too small. Definitions (2-D Ising conventions, k_B = 1, n = L² sites):

* ⟨|M|⟩ — the mean absolute magnetisation per site;
* χ = (n / T)(⟨M²⟩ − ⟨|M|⟩²) — the susceptibility per site from |M| (finite boxes at h = 0 have
  ⟨M⟩ = 0 by symmetry, so the connected χ uses |M|);
* U = 1 − ⟨M⁴⟩ / (3⟨M²⟩²) — the Binder cumulant (2/3 in the ordered phase, 0 for a Gaussian).

At T_c: ⟨|M|⟩ ∝ L^(−β/ν), χ ∝ L^(γ/ν), dU/dT ∝ L^(1/ν), and U(L) curves of different L cross at
T_c up to corrections to scaling. For the 2-D Ising model β/ν = 1/8, γ/ν = 7/4, ν = 1 and
T_c = 2/ln(1 + √2) ≈ 2.269185 (Onsager).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ONSAGER_TC = 2.0 / math.log(1.0 + math.sqrt(2.0))
ISING_2D_EXPONENTS = {"beta_over_nu": 0.125, "gamma_over_nu": 1.75, "one_over_nu": 1.0}

__all__ = ["ONSAGER_TC", "ISING_2D_EXPONENTS", "Estimate", "moments", "binder_crossing",
           "power_law_exponent", "binder_slope", "fss_exponents", "integrated_autocorrelation_time"]


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error (from resampling independent runs)."""

    value: float
    error: float

    def __repr__(self) -> str:
        return f"{self.value:.6g} ± {self.error:.2g}"


def _check_samples(m: np.ndarray, name: str = "m") -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 1:
        raise ValueError(f"{name}: expected samples [R >= 2 runs, S samples], got shape {list(m.shape)}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: contains NaN or inf")
    return m


def _statistics(m: np.ndarray, n_sites: int, T: float) -> np.ndarray:
    """(⟨|M|⟩, χ, U) of the pooled samples of runs ``m [R, S]``."""
    a = np.abs(m)
    m1, m2, m4 = a.mean(), (a ** 2).mean(), (a ** 4).mean()
    return np.array([m1, n_sites / T * (m2 - m1 ** 2), 1.0 - m4 / (3.0 * m2 ** 2)])


def _run_bootstrap(m: np.ndarray, stat, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    R = m.shape[0]
    picks = rng.integers(0, R, size=(n_boot, R))
    return np.array([stat(m[idx]) for idx in picks])


def _cluster_bootstrap(m: np.ndarray, clusters: np.ndarray, stat, n_boot: int,
                       rng: np.random.Generator) -> np.ndarray:
    """``stat`` of ``n_boot`` resamples of whole clusters of runs (each resample draws as many
    clusters, with replacement, as there are)."""
    rows = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    picks = rng.integers(0, len(rows), size=(n_boot, len(rows)))
    return np.array([stat(m[np.concatenate([rows[k] for k in idx])]) for idx in picks])


def moments(m: np.ndarray, L: int, T: float, *, n_sites: int | None = None, n_boot: int = 400,
            seed: int = 0, clusters: np.ndarray | None = None) -> dict[str, Estimate]:
    """⟨|M|⟩, χ and U (module docstring) with standard errors from a bootstrap over runs.

    ``m [R, S]``: R independent runs of S stationary samples; ``n_sites`` defaults to L².
    ``clusters [R]``: labels of groups of runs that share a source of error (e.g. the rollouts of
    one of several independently fitted SDEs). The bootstrap then resamples whole clusters, so
    the errors include the spread between them, scaled by √(c / (c − 1)) for c clusters (the
    bootstrap variance of a mean of c independent values is (c − 1)/c of the unbiased one, which
    matters for few clusters). At least 2 clusters are needed.
    """
    m = _check_samples(m)
    n = int(n_sites or L * L)
    value = _statistics(m, n, T)
    rng = np.random.default_rng(seed)
    if clusters is None:
        err = _run_bootstrap(m, lambda x: _statistics(x, n, T), n_boot, rng).std(axis=0, ddof=1)
    else:
        clusters = np.asarray(clusters)
        c = len(np.unique(clusters)) if clusters.shape == (len(m),) else 0
        if c < 2:
            raise ValueError(f"clusters: expected one label per run ({len(m)}) with >= 2 distinct labels, "
                             f"got shape {list(clusters.shape)} with {c} labels")
        boot = _cluster_bootstrap(m, clusters, lambda x: _statistics(x, n, T), n_boot, rng)
        err = boot.std(axis=0, ddof=1) * math.sqrt(c / (c - 1))
    return {key: Estimate(float(v), float(e)) for key, v, e in zip(("abs_m", "chi", "binder"), value, err)}


def power_law_exponent(sizes: Sequence[float], values: Sequence[float], errors: Sequence[float]) -> Estimate:
    """Slope of log(value) against log(L), weighted least squares (σ_log = error / value), with
    its standard error (from the weights; multiplied by √(χ²/dof) when the fit is worse than the
    errors say, so an inconsistent set of points never gives a too-small error)."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    if len(x) < 2 or len(x) != len(v) or np.any(v <= 0):
        raise ValueError("power_law_exponent needs >= 2 sizes with positive values")
    s = np.asarray(errors, dtype=np.float64) / v
    s = np.where(s > 0, s, np.min(s[s > 0]) if np.any(s > 0) else 1.0)
    w = 1.0 / s ** 2
    A = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))
    coef = cov @ (A.T @ (w * np.log(v)))
    dof = len(x) - 2
    scale = 1.0
    if dof > 0:
        chi2 = float(np.sum(w * (np.log(v) - A @ coef) ** 2))
        scale = max(1.0, math.sqrt(chi2 / dof))
    return Estimate(float(coef[1]), float(math.sqrt(cov[1, 1]) * scale))


def binder_slope(temperatures: Sequence[float], binder: Sequence[Estimate]) -> Estimate:
    """dU/dT from a weighted straight-line fit of U(T) over a narrow window of temperatures."""
    T = np.asarray(temperatures, dtype=np.float64)
    u = np.array([b.value for b in binder])
    s = np.array([max(b.error, 1e-12) for b in binder])
    w = 1.0 / s ** 2
    A = np.stack([np.ones_like(T), T - T.mean()], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))
    coef = cov @ (A.T @ (w * u))
    return Estimate(float(coef[1]), float(math.sqrt(cov[1, 1])))


def binder_crossing(temperatures: Sequence[float], u_small: Sequence[Estimate],
                    u_large: Sequence[Estimate], *, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Temperature where the Binder cumulants of two sizes cross: the root of the difference of
    their straight-line fits in T; the error propagates the points' errors by a parametric
    bootstrap (Gaussian, independent points)."""
    T = np.asarray(temperatures, dtype=np.float64)
    a = np.array([[e.value, e.error] for e in u_small])
    b = np.array([[e.value, e.error] for e in u_large])

    def root(ua: np.ndarray, ub: np.ndarray) -> float:
        slope, icept = np.polyfit(T, ua - ub, 1)
        return -icept / slope if slope != 0 else float("nan")

    value = root(a[:, 0], b[:, 0])
    rng = np.random.default_rng(seed)
    boot = [root(a[:, 0] + a[:, 1] * rng.normal(size=len(T)), b[:, 0] + b[:, 1] * rng.normal(size=len(T)))
            for _ in range(n_boot)]
    boot = np.asarray(boot)
    boot = boot[np.isfinite(boot)]
    # a robust spread: half the 16-84 % range (a near-parallel pair of lines gives heavy tails)
    err = 0.5 * float(np.subtract(*np.percentile(boot, [84, 16]))) if len(boot) > 10 else float("nan")
    return Estimate(float(value), err)


def fss_exponents(results: Mapping[int, Mapping[float, Mapping[str, Estimate]]],
                  T_c: float = ONSAGER_TC) -> dict[str, Estimate]:
    """β/ν, γ/ν (at the temperature of the grid closest to ``T_c``) and 1/ν (from dU/dT over the
    whole grid), from ``results[L][T] = moments(...)`` for several sizes L."""
    sizes = sorted(results)
    temps = sorted(next(iter(results.values())))
    t0 = min(temps, key=lambda t: abs(t - T_c))
    abs_m = [results[L][t0]["abs_m"] for L in sizes]
    chi = [results[L][t0]["chi"] for L in sizes]
    slopes = [binder_slope(temps, [results[L][t]["binder"] for t in temps]) for L in sizes]
    beta = power_law_exponent(sizes, [e.value for e in abs_m], [e.error for e in abs_m])
    gamma = power_law_exponent(sizes, [e.value for e in chi], [e.error for e in chi])
    # U decreases with T: fit |dU/dT|
    nu = power_law_exponent(sizes, [abs(e.value) for e in slopes], [e.error for e in slopes])
    return {"beta_over_nu": Estimate(-beta.value, beta.error), "gamma_over_nu": gamma,
            "one_over_nu": nu, "T_grid_point": Estimate(t0, 0.0)}


def integrated_autocorrelation_time(x: np.ndarray, *, window_factor: float = 6.0) -> float:
    """Integrated autocorrelation time τ_int (in samples) of the rows of ``x [R, S]`` (R
    independent runs of S successive samples), with Sokal's automatic window: the run-averaged
    normalised autocorrelation ρ(t) is summed, τ = 1/2 + Σ_{t=1}^{W} ρ(t), up to the first W with
    W ≥ ``window_factor`` · τ. The error of a mean of S correlated samples is √(2τ/S) times that
    of independent ones. Runs are centred on their own means (no cross-run mixing). A 1-D ``x``
    is one run."""
    x = np.asarray(x, dtype=np.float64)
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected samples [R runs, S samples] or one series, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x: contains NaN or inf")
    S = x.shape[1]
    if S < 4:
        raise ValueError(f"x: need >= 4 samples per run for an autocorrelation time, got {S}")
    y = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(y, n=2 * S, axis=1)
    acf = np.fft.irfft(f * np.conj(f), n=2 * S, axis=1)[:, :S].mean(axis=0)
    if acf[0] <= 0:
        return 0.5  # constant samples: no correlation to measure
    rho = acf / acf[0]
    tau = 0.5
    for w in range(1, S):
        tau += float(rho[w])
        if w >= window_factor * tau:
            break
    return max(tau, 0.5)
