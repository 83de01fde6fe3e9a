"""Metrics that compare predicted SDE paths with direct large-system trajectories.

All functions take paths on a *common time grid*: arrays ``[n_paths, n_times, d]`` (or with a
leading condition axis ``[C, n_paths, n_times, d]`` where said). Values are in the units of the
observables (dimensionless for m and ρ_dw); times are not needed by the metrics themselves.

- :func:`paper_test_error` — the test error of arXiv 2511.12842 (its spin-model evaluations):
  e = Σ_{t,k} (m̄_pred,k(t) − m̄_true,k(t))² / Σ_{t,k} m̄_true,k(t)², bars = averages over paths,
  averaged over the initial conditions. Its Monte-Carlo floor shrinks like 1/n_paths, which is why
  it is reported for the paper's 20 paths *and* for many paths.
- :func:`moment_errors` — relative L2 errors of the mean and of the std curves per observable.
- :func:`stationary_statistics` — mean/std over the late part of the paths (pooled).
- :func:`mmd2_unbiased`, :func:`mmd2_with_ci` — unbiased multi-bandwidth Gaussian-kernel MMD²
  with a percentile bootstrap confidence interval.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _paths(x: np.ndarray, name: str, ndim: int = 3) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == ndim - 1:
        a = a[..., None]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes (..., n_paths, n_times, d), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _same_grid(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape[-2:] != true.shape[-2:] or pred.shape[:-3] != true.shape[:-3]:
        raise ValueError(
            f"pred and true must share the time grid and observables, got {pred.shape} vs {true.shape}"
        )


def paper_test_error(pred: np.ndarray, true: np.ndarray) -> float:
    """The paper's test error for one initial condition, or averaged over conditions.

    pred [n_pred, n_t, d] and true [n_true, n_t, d] (or both with a leading condition axis C):
    e = Σ_{t,k}(mean_pred − mean_true)² / Σ_{t,k} mean_true², averaged over C.
    """
    pred = np.asarray(pred, dtype=np.float64)
    ndim = 4 if pred.ndim == 4 else 3
    pred, true = _paths(pred, "pred", ndim), _paths(true, "true", ndim)
    _same_grid(pred, true)
    if ndim == 3:
        pred, true = pred[None], true[None]
    mp, mt = pred.mean(axis=1), true.mean(axis=1)  # [C, n_t, d]
    denom = np.sum(mt ** 2, axis=(1, 2))
    if np.any(denom <= 0):
        raise ValueError("true mean path is identically zero; the paper's relative error is undefined")
    return float(np.mean(np.sum((mp - mt) ** 2, axis=(1, 2)) / denom))


def paper_error_noise_floor(true: np.ndarray, n_pred: int, n_true: int | None = None) -> float:
    """Expected :func:`paper_test_error` of a model that reproduces the direct law exactly.

    With n_pred predicted and n_true direct paths the two mean curves differ only by sampling
    noise of variance σ²(t, k)(1/n_pred + 1/n_true), so the metric's expectation is
    Σ_{t,k} σ²(1/n_pred + 1/n_true) / Σ_{t,k} mean², averaged over conditions, with σ² and the
    mean estimated from all direct paths ``true [C, n, n_t, d]``. A test error near this floor is
    as good as these path counts can tell.
    """
    true = _paths(np.asarray(true, dtype=np.float64), "true", 4)
    n_true = true.shape[1] if n_true is None else int(n_true)
    var = true.var(axis=1, ddof=1)
    mean = true.mean(axis=1)
    per_condition = np.sum(var, axis=(1, 2)) * (1.0 / n_pred + 1.0 / n_true) / np.sum(mean ** 2, axis=(1, 2))
    return float(np.mean(per_condition))


def moment_errors(pred: np.ndarray, true: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Relative L2 errors of the mean and std curves, per observable.

    pred/true: [C, n_paths, n_t, d] (or [n_paths, n_t, d]). For observable k:
    rel_mean_error = ||m̄_pred − m̄_true|| / ||m̄_true||, rel_std_error = ||s_pred − s_true|| / ||s_true||,
    norms over all conditions and grid times (std with ddof=1).
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim == 3:
        pred, true = pred[None], np.asarray(true, dtype=np.float64)[None]
    pred, true = _paths(pred, "pred", 4), _paths(true, "true", 4)
    _same_grid(pred, true)
    if len(names) != pred.shape[-1]:
        raise ValueError(f"names must have {pred.shape[-1]} entries, got {len(names)}")
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        mp, mt = pred[..., k].mean(1), true[..., k].mean(1)
        sp, st = pred[..., k].std(1, ddof=1), true[..., k].std(1, ddof=1)
        out[name] = {
            "rel_mean_error": float(np.linalg.norm(mp - mt) / max(np.linalg.norm(mt), 1e-300)),
            "rel_std_error": float(np.linalg.norm(sp - st) / max(np.linalg.norm(st), 1e-300)),
        }
    return out


def stationary_statistics(paths: np.ndarray, names: Sequence[str], *, fraction: float = 0.5) -> dict[str, dict[str, float]]:
    """Mean and std of each observable pooled over paths (and conditions) and the last
    ``fraction`` of the grid times. paths: [..., n_paths, n_t, d]."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} out of range (allowed: 0 < fraction <= 1)")
    a = np.asarray(paths, dtype=np.float64)
    n_t = a.shape[-2]
    late = a[..., n_t - max(1, int(round(fraction * n_t))):, :].reshape(-1, a.shape[-1])
    return {name: {"mean": float(late[:, k].mean()), "std": float(late[:, k].std(ddof=1))}
            for k, name in enumerate(names)}


# ----------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a ** 2, 1)[:, None] + np.sum(b ** 2, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidths(x: np.ndarray, y: np.ndarray,
                      factors: Sequence[float] = DEFAULT_BANDWIDTH_FACTORS) -> np.ndarray:
    """Gaussian bandwidths = factors × median pairwise distance of the pooled sample."""
    z = np.concatenate([x, y])
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), 1)])
    med = np.median(d[d > 0]) if np.any(d > 0) else 1.0
    return med * np.asarray(factors, dtype=np.float64)


def _kernel(sq: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    return sum(np.exp(-sq / (2.0 * bw * bw)) for bw in bandwidths)


def _samples(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must have shape [n >= 2, d], got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _mmd2_weighted(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray,
                   cx: np.ndarray, cy: np.ndarray) -> float:
    """Unbiased MMD² with sample multiplicities cx, cy; pairs of the *same* original point are
    excluded from the within-sample sums (so bootstrap duplicates add no self-similarity bias)."""
    def within(k: np.ndarray, c: np.ndarray) -> float:
        num = c @ k @ c - np.sum(c * c * np.diag(k))
        den = c.sum() ** 2 - np.sum(c * c)
        return num / den if den > 0 else float("nan")  # a resample of one distinct point

    return float(within(kxx, cx) + within(kyy, cy) - 2.0 * (cx @ kxy @ cy) / (cx.sum() * cy.sum()))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased MMD² between samples x [n, d] and y [m, d] with a sum of Gaussian kernels
    (default bandwidths: median heuristic × (0.25, 0.5, 1, 2, 4)). Can be slightly negative."""
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    bw = median_bandwidths(x, y) if bandwidths is None else np.asarray(bandwidths, dtype=np.float64)
    kxx, kyy, kxy = (_kernel(_sq_dists(a, b), bw) for a, b in ((x, x), (y, y), (x, y)))
    return _mmd2_weighted(kxx, kyy, kxy, np.ones(len(x)), np.ones(len(y)))


def mmd2_with_ci(x: np.ndarray, y: np.ndarray, *, n_boot: int = 200, level: float = 0.95,
                 rng: np.random.Generator | None = None,
                 bandwidths: Sequence[float] | None = None) -> dict[str, float]:
    """Unbiased MMD² and a percentile bootstrap CI (both samples resampled with replacement).

    Returns {"mmd2", "ci_low", "ci_high", "n_x", "n_y"}; with n_boot = 0 the CI is NaN.
    """
    x, y = _samples(x, "x"), _samples(y, "y")
    if not 0 < level < 1:
        raise ValueError(f"level={level} out of range (allowed: 0 < level < 1)")
    bw = median_bandwidths(x, y) if bandwidths is None else np.asarray(bandwidths, dtype=np.float64)
    kxx, kyy, kxy = (_kernel(_sq_dists(a, b), bw) for a, b in ((x, x), (y, y), (x, y)))
    value = _mmd2_weighted(kxx, kyy, kxy, np.ones(len(x)), np.ones(len(y)))
    lo = hi = float("nan")
    if n_boot > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        boot = np.empty(n_boot)
        for b in range(n_boot):
            cx = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x))).astype(np.float64)
            cy = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y))).astype(np.float64)
            boot[b] = _mmd2_weighted(kxx, kyy, kxy, cx, cy)
        lo, hi = (float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return {"mmd2": value, "ci_low": lo, "ci_high": hi, "n_x": len(x), "n_y": len(y)}


def standardize_pair(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both samples by the per-dimension std of ``reference`` (so each observable weighs
    alike in the kernel distance); the scale comes from the reference sample only."""
    scale = np.asarray(reference, dtype=np.float64).std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return np.asarray(reference) / scale, np.asarray(other) / scale


def per_condition_moments(pred: np.ndarray, true: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Mean and std curves per condition and observable, predicted against direct.

    pred [C, n_pred, n_t, d], true [C, n_true, n_t, d]. For each condition and observable:
    ``max_abs_mean_error`` (max over time of |mean_pred − mean_direct|), ``rel_mean_error``
    (that error divided by max |mean_direct| over time), ``direct_sem`` (the largest standard
    error of the direct mean over time, the resolution of the comparison), ``std_ratio``
    (time-averaged predicted std over time-averaged direct std, first grid point excluded as
    every path starts from its own direct state) and ``final_mean_pred``/``final_mean_direct``.
    """
    out = []
    for c in range(pred.shape[0]):
        row = {}
        for k, name in enumerate(names):
            mp, mt = pred[c, :, :, k].mean(0), true[c, :, :, k].mean(0)
            sp, st = pred[c, :, 1:, k].std(0, ddof=1), true[c, :, 1:, k].std(0, ddof=1)
            err = float(np.max(np.abs(mp - mt)))
            row[name] = {"max_abs_mean_error": err,
                         "rel_mean_error": err / max(float(np.max(np.abs(mt))), 1e-300),
                         "direct_sem": float(np.max(true[c, :, :, k].std(0, ddof=1))) / np.sqrt(true.shape[1]),
                         "std_ratio": float(sp.mean() / st.mean()) if st.mean() > 0 else float("nan"),
                         "final_mean_pred": float(mp[-1]), "final_mean_direct": float(mt[-1])}
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# The full comparison used by the pipeline
# ----------------------------------------------------------------------------------------------
def compare_paths(pred: np.ndarray, true: np.ndarray, names: Sequence[str], *, paper_paths: int = 20,
                  mmd_bootstrap: int = 200, mmd_max_samples: int = 500,
                  rng: np.random.Generator | None = None,
                  conditions: Sequence[float] | None = None) -> dict:
    """All metrics for predicted vs direct paths on one grid.

    pred: [C, n_pred, n_t, d], true: [C, n_true, n_t, d] (physical observables only, in
    ``names`` order); C initial conditions (e.g. initial magnetizations ``conditions``).
    The paper's error uses the first ``paper_paths`` paths of each set (the first predicted paths
    start from the first direct runs' initial states) and all paths. MMD² compares the two
    distributions at the last grid time per condition (standardised by the direct std,
    at most ``mmd_max_samples`` per side) and, pooled over conditions, in the stationary half.
    """
    pred, true = _paths(pred, "pred", 4), _paths(true, "true", 4)
    _same_grid(pred, true)
    rng = rng if rng is not None else np.random.default_rng(0)
    n20 = min(paper_paths, pred.shape[1], true.shape[1])
    result: dict = {
        "observables": list(names),
        "n_conditions": int(pred.shape[0]),
        "n_times": int(pred.shape[2]),
        "n_paths_pred": int(pred.shape[1]),
        "n_paths_true": int(true.shape[1]),
        "test_error_paper_paths": n20,
        "test_error_paper": paper_test_error(pred[:, :n20], true[:, :n20]),
        "test_error_all": paper_test_error(pred, true),
        "test_error_paper_floor": paper_error_noise_floor(true, n20, n20),
        "test_error_all_floor": paper_error_noise_floor(true, pred.shape[1]),
        "per_condition_test_error_all": [paper_test_error(pred[c], true[c]) for c in range(len(pred))],
        "moments": moment_errors(pred, true, names),
        "stationary": {"direct": stationary_statistics(true, names),
                       "predicted": stationary_statistics(pred, names)},
    }
    result["per_condition"] = per_condition_moments(pred, true, names)
    if conditions is not None:
        result["conditions"] = [float(c) for c in conditions]
    mmd_final = []
    for c in range(len(pred)):
        t_ref, t_pred = standardize_pair(true[c, :mmd_max_samples, -1], pred[c, :mmd_max_samples, -1])
        mmd_final.append(mmd2_with_ci(t_ref, t_pred, n_boot=mmd_bootstrap, rng=rng))
    result["mmd_final_time"] = mmd_final
    n_t = true.shape[2]
    late_true = true[:, :, n_t // 2:].reshape(-1, true.shape[-1])
    late_pred = pred[:, :, n_t // 2:].reshape(-1, pred.shape[-1])
    pick_t = rng.choice(len(late_true), size=min(mmd_max_samples, len(late_true)), replace=False)
    pick_p = rng.choice(len(late_pred), size=min(mmd_max_samples, len(late_pred)), replace=False)
    t_ref, t_pred = standardize_pair(late_true[pick_t], late_pred[pick_p])
    result["mmd_stationary"] = mmd2_with_ci(t_ref, t_pred, n_boot=mmd_bootstrap, rng=rng)
    return result


__all__ = [
    "paper_test_error", "paper_error_noise_floor", "moment_errors", "stationary_statistics", "mmd2_unbiased", "mmd2_with_ci",
    "median_bandwidths", "standardize_pair", "compare_paths", "per_condition_moments",
]
