"""Metrics that compare predicted SDE paths with direct large-system trajectories.

All functions take paths on a *common time grid*: arrays ``[n_paths, n_times, d]`` (or with a
leading condition axis ``[C, n_paths, n_times, d]`` where said). Values are in the units of the
observables (dimensionless for m and ρ_dw); times are not needed by the metrics themselves.

- :func:`paper_test_error` — the test error of arXiv 2511.12842 (its spin-model evaluations):
  e = Σ_{t,k} (m̄_pred,k(t) − m̄_true,k(t))² / Σ_{t,k} m̄_true,k(t)², bars = averages over paths,
  averaged over the initial conditions. Its Monte-Carlo floor shrinks like 1/n_paths, which is why
  it is reported for the paper's 20 paths *and* for many paths.
- :func:`moment_errors` — relative L2 errors of the mean and of the std curves per observable.
- :func:`stationary_statistics` — mean/std over the late part of the paths (pooled over
  paths, late times and conditions), optionally with path-bootstrap CIs;
  :func:`stationary_statistics_per_condition` — the same for every condition.
- :func:`mmd2_unbiased`, :func:`mmd2_with_ci` — unbiased multi-bandwidth Gaussian-kernel MMD²
  with a percentile bootstrap confidence interval, for samples of *independent* points.
- :func:`path_mmd2_with_ci` — MMD² between the distributions of the points of two sets of
  paths (e.g. their late, stationary part), with the paths as the independent units.
- :func:`mmd2_over_time` — MMD²(t) at each grid time and its time average, with CIs from one
  bootstrap over whole paths.

Confidence intervals and correlated samples. Points along one path are correlated in time,
so they are not independent samples: a bootstrap that resamples pooled time points treats a
path of T correlated points as T independent ones and gives intervals that are far too narrow
(and the usual unbiased MMD², which only leaves out pairs of a point with itself, is biased
upwards, since two points of one path are more alike than points of different paths). Every
statistic of paths here is therefore a U-statistic over *paths*: pairs of points from the same
path (more generally, from the same resampling unit) are left out, and the percentile
bootstrap resamples whole paths — all time points of a path together: a block bootstrap
(Künsch, Ann. Stat. 17 (1989)) with the independent paths as the blocks, applied to the
unbiased MMD² of Gretton et al., JMLR 13 (2012). A CI of a
time average (of MMD²(t), of the late-time mean) comes from resampling paths once and
recomputing the whole average, never from per-time intervals. When a statistic pools several
conditions, paths are resampled within their own condition (a stratified bootstrap).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

DEFAULT_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # ascending, ratio 2 (_gram relies on it)


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


def _late_start(n_t: int, fraction: float) -> int:
    """First grid index of the last ``fraction`` of ``n_t`` times (at least one time)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} out of range (allowed: 0 < fraction <= 1)")
    return n_t - max(1, int(round(fraction * n_t)))


def _percentile_ci(boot: np.ndarray, level: float, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along ``axis`` (NaN replicates ignored)."""
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lo, hi


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level={level} out of range (allowed: 0 < level < 1)")


def _path_moments(paths: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-path mean and sum of squared deviations from it over the late times:
    paths [..., n, n_t, d] -> ([..., n, d], [..., n, d], number of late times)."""
    a = np.asarray(paths, dtype=np.float64)
    if a.ndim < 3:
        raise ValueError(f"paths must have shape [..., n_paths, n_t, d], got {a.shape}")
    late = a[..., _late_start(a.shape[-2], fraction):, :]
    mu = late.mean(axis=-2)
    return mu, np.sum((late - mu[..., None, :]) ** 2, axis=-2), late.shape[-2]


def _moment_statistics(mu: np.ndarray, ss: np.ndarray, n_late: int, names: Sequence[str], n_boot: int,
                       level: float, rng: np.random.Generator | None) -> dict[str, dict]:
    """Pooled late mean and std from per-path means ``mu [S, n, d]`` and sums of squares ``ss``
    (S strata, e.g. conditions), with a path bootstrap within each stratum if n_boot > 0."""
    S, n, d = mu.shape
    mu, ss = mu.reshape(S * n, d), ss.reshape(S * n, d)
    centre = mu.mean(0)
    dev = mu - centre                                   # pooled variance without cancellation
    n_pts = S * n * n_late
    std = np.sqrt((ss.sum(0) + n_late * np.sum(dev ** 2, 0)) / max(n_pts - 1, 1))
    out = {name: {"mean": float(centre[k]), "std": float(std[k])} for k, name in enumerate(names)}
    if n_boot > 0:
        counts, _ = _unit_counts(np.arange(S * n), np.zeros(0, np.int64), np.repeat(np.arange(S), n),
                                 np.zeros(0, np.int64), n_boot, rng if rng is not None else np.random.default_rng(0))
        w = counts.sum(1)[:, None]                                       # paths per replicate
        m = counts @ dev / w
        var = (counts @ ss + n_late * (counts @ dev ** 2 - w * m ** 2)) / np.maximum(n_late * w - 1, 1)
        mlo, mhi = _percentile_ci(m + centre, level, axis=0)
        slo, shi = _percentile_ci(np.sqrt(np.maximum(var, 0.0)), level, axis=0)
        for k, name in enumerate(names):
            out[name]["mean_ci"] = [float(mlo[k]), float(mhi[k])]
            out[name]["std_ci"] = [float(slo[k]), float(shi[k])]
    return out


def stationary_statistics(paths: np.ndarray, names: Sequence[str], *, fraction: float = 0.5,
                          n_boot: int = 0, level: float = 0.95,
                          rng: np.random.Generator | None = None) -> dict[str, dict]:
    """Mean and std of each observable pooled over paths (and conditions) and the last
    ``fraction`` of the grid times. paths: [..., n_paths, n_t, d].

    With ``n_boot > 0`` each entry also holds ``mean_ci`` and ``std_ci`` ([low, high], percentile
    intervals at ``level``) from a bootstrap over whole paths: each replicate draws paths with
    replacement (within each leading index, i.e. within each condition) and recomputes the
    pooled mean and std from all late time points of the drawn paths, so the time correlation
    along a path is kept. With leading condition axes the pooled std is that of the mixture of
    the conditions (it includes the spread between their means); see
    :func:`stationary_statistics_per_condition` for the std within each condition.
    """
    _check_level(level)
    mu, ss, n_late = _path_moments(paths, fraction)
    shape = (-1,) + mu.shape[-2:]
    return _moment_statistics(mu.reshape(shape), ss.reshape(shape), n_late, names, n_boot, level, rng)


def stationary_statistics_per_condition(paths: np.ndarray, names: Sequence[str], *,
                                        fraction: float = 0.5, n_boot: int = 0, level: float = 0.95,
                                        rng: np.random.Generator | None = None) -> list[dict[str, dict]]:
    """:func:`stationary_statistics` of every condition of ``paths [C, n_paths, n_t, d]`` (the
    late mean and the std within that condition, with path-bootstrap CIs if ``n_boot > 0``)."""
    _check_level(level)
    if np.ndim(paths) != 4:
        raise ValueError(f"paths must have shape [C, n_paths, n_t, d], got {np.shape(paths)}")
    mu, ss, n_late = _path_moments(paths, fraction)
    return [_moment_statistics(mu[c:c + 1], ss[c:c + 1], n_late, names, n_boot, level, rng)
            for c in range(mu.shape[0])]


# ----------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a @ b.T
    d *= -2.0
    d += np.sum(a ** 2, 1)[:, None]
    d += np.sum(b ** 2, 1)[None, :]
    return np.maximum(d, 0.0, out=d)


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

    The rows of x and y must be independent samples (e.g. one point per path); for correlated
    points such as all time points of a set of paths use :func:`path_mmd2_with_ci`, which
    resamples whole paths — this bootstrap would treat them as independent and give a CI far
    too narrow.

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


# ----------------------------------------------------------------------------------------------
# MMD with whole paths as the independent units
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _upper(n: int) -> np.ndarray:
    """Read-only boolean mask of the strict upper triangle of an n × n matrix."""
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    mask.flags.writeable = False
    return mask


def _median_distance(sq: np.ndarray) -> float:
    """Median of the positive distances whose squares are ``sq`` (1 if there are none), equal
    to ``np.median(np.sqrt(sq[sq > 0]))`` without the square root of every entry."""
    pos = sq[sq > 0]
    if not pos.size:
        return 1.0
    k = pos.size // 2
    if pos.size % 2:
        return float(np.sqrt(np.partition(pos, k)[k]))
    part = np.partition(pos, [k - 1, k])
    return float((np.sqrt(part[k - 1]) + np.sqrt(part[k])) / 2.0)


def _grams(z: np.ndarray, bandwidths: Sequence[float] | None = None) -> np.ndarray:
    """Multi-bandwidth Gaussian Gram matrices of point sets ``z [T, N, d]`` → [T, N, N]
    (bandwidths: the median heuristic of :func:`median_bandwidths` per set when None)."""
    sq = np.matmul(z, np.swapaxes(z, -1, -2))
    sq *= -2.0
    norms = np.sum(z ** 2, axis=-1)
    sq += norms[:, :, None]
    sq += norms[:, None, :]
    np.maximum(sq, 0.0, out=sq)
    if bandwidths is not None:
        return _kernel(sq, np.asarray(bandwidths, dtype=np.float64))
    mask = _upper(z.shape[1])
    med = np.array([_median_distance(s[mask]) for s in sq])
    # the default bandwidths grow by factors of 2, so each Gaussian is the 4th power of the next
    # wider one: one exp and repeated squaring instead of five exps (the evaluation's main cost)
    sq *= (-0.5 / (med * DEFAULT_BANDWIDTH_FACTORS[-1]) ** 2)[:, None, None]
    e = np.exp(sq, out=sq)
    total = e.copy()
    for _ in DEFAULT_BANDWIDTH_FACTORS[:-1]:
        e *= e
        e *= e
        total += e
    return total


def _units(gx: np.ndarray, gy: np.ndarray, sx: np.ndarray, sy: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resampling units of two sets of paths: paths with equal (stratum, group) labels form one
    unit. Returns the unit id of every x and y path and each unit's resampling stratum (its
    stratum label combined with whether it holds paths of x only, of y only or of both)."""
    keys = np.concatenate([np.stack([np.asarray(sx, np.int64), np.asarray(gx, np.int64)], 1),
                           np.stack([np.asarray(sy, np.int64), np.asarray(gy, np.int64)], 1)])
    if np.any(keys[:, 0] < 0):
        raise ValueError("strata labels must be non-negative integers")
    units, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    ux, uy = inv[:len(gx)], inv[len(gx):]
    in_x = np.bincount(ux, minlength=len(units)) > 0
    in_y = np.bincount(uy, minlength=len(units)) > 0
    return ux, uy, units[:, 0] * 4 + in_x + 2 * in_y


def _draw_counts(ux: np.ndarray, uy: np.ndarray, kind: np.ndarray, n_boot: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap multiplicities of every x and y path, [n_boot, n_x] and [n_boot, n_y]: the units
    are drawn with replacement within their stratum, as many as it holds, and every path of a
    unit gets the unit's count (all its time points move together)."""
    counts = np.zeros((n_boot, len(kind)))
    for key in np.unique(kind):
        members = np.flatnonzero(kind == key)
        size = len(members)
        draws = rng.integers(0, size, size=(n_boot, size)) + size * np.arange(n_boot)[:, None]
        counts[:, members] = np.bincount(draws.ravel(), minlength=n_boot * size).reshape(n_boot, size)
    return counts[:, ux], counts[:, uy]


def _unit_counts(gx, gy, sx, sy, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_draw_counts` for group labels ``gx, gy`` and stratum labels ``sx, sy``."""
    return _draw_counts(*_units(gx, gy, sx, sy), n_boot, rng)


def _mmd2_counts(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, ux: np.ndarray, uy: np.ndarray,
                 cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Unbiased MMD² with path multiplicities ``cx [B, n]``, ``cy [B, m]`` from path-level kernel
    matrices ``kxx [..., n, n]``, ``kyy [..., m, m]``, ``kxy [..., n, m]`` (leading axes, e.g.
    times, are kept): → [..., B]. Pairs of paths of the same unit (``ux``, ``uy``) are left out of
    every sum, within and across the two sets, so each term averages independent pairs only."""
    def term(k: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        num = np.sum(np.matmul(a, k * mask) * b, axis=-1)
        den = np.sum((a @ mask) * b, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / den  # NaN for a resample with a single unit

    mxx = (ux[:, None] != ux[None, :]).astype(np.float64)
    myy = (uy[:, None] != uy[None, :]).astype(np.float64)
    mxy = (ux[:, None] != uy[None, :]).astype(np.float64)
    return term(kxx, mxx, cx, cx) + term(kyy, myy, cy, cy) - 2.0 * term(kxy, mxy, cx, cy)


def _labels(labels: Sequence[int] | None, n: int, default: np.ndarray, name: str) -> np.ndarray:
    out = default if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(out)}")
    return out


def _mmd2_and_boot(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, groups_x, groups_y,
                   strata_x, strata_y, n_boot: int, rng: np.random.Generator | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Point estimate [...] and path-bootstrap replicates [..., n_boot] (None if n_boot = 0)."""
    n, m = kxx.shape[-1], kyy.shape[-1]
    gx = _labels(groups_x, n, np.arange(n), "groups_x")
    gy = _labels(groups_y, m, n + np.arange(m), "groups_y")  # default: every path its own unit
    sx = _labels(strata_x, n, np.zeros(n, np.int64), "strata_x")
    sy = _labels(strata_y, m, np.zeros(m, np.int64), "strata_y")
    ux, uy, kind = _units(gx, gy, sx, sy)
    value = _mmd2_counts(kxx, kyy, kxy, ux, uy, np.ones((1, n)), np.ones((1, m)))[..., 0]
    if n_boot <= 0:
        return value, None
    cx, cy = _draw_counts(ux, uy, kind, n_boot, rng if rng is not None else np.random.default_rng(0))
    return value, _mmd2_counts(kxx, kyy, kxy, ux, uy, cx, cy)


def path_mmd2_with_ci(x: np.ndarray, y: np.ndarray, *, n_boot: int = 200, level: float = 0.95,
                      rng: np.random.Generator | None = None,
                      bandwidths: Sequence[float] | None = None,
                      groups_x: Sequence[int] | None = None, groups_y: Sequence[int] | None = None,
                      strata_x: Sequence[int] | None = None, strata_y: Sequence[int] | None = None
                      ) -> dict[str, float]:
    """MMD² between the distributions of the points of two sets of paths, with whole paths as the
    independent units.

    x [n, T_x, d] and y [m, T_y, d]: n and m paths of T_x and T_y points each (e.g. the late,
    stationary part of every path, or any times drawn independently of the path). The target
    is MMD²(μ̄_x, μ̄_y), μ̄ = the law of the point at a uniformly chosen one of the path's times.
    The estimate is the U-statistic over paths with the path kernel
    K(i, j) = mean_{s,t} k(x_i(s), x_j(t)) (Gaussian kernel sum, median-heuristic bandwidths of
    the pooled points unless ``bandwidths``): pairs of points from the same path are left out,
    so it is unbiased whatever the correlation along a path (the pooled-point estimate is not:
    points of one path are closer than points of independent paths). With T = 1 it is the
    ordinary unbiased MMD² of :func:`mmd2_unbiased`, and the bootstrap below is the ordinary one.

    CI: percentile bootstrap over paths — each replicate draws whole paths with replacement
    (a block bootstrap with the path as the block) and recomputes the statistic, pairs of copies
    of one path still left out. ``groups_x``/``groups_y`` (integer labels, shared between the two
    sets) merge paths into one resampling unit, e.g. a direct path and the predicted paths
    started from its state: they are drawn together and pairs within a unit are left out.
    ``strata_x``/``strata_y`` (non-negative integers, e.g. the condition) make the bootstrap
    draw units within each stratum. Defaults: every path its own unit, one stratum.

    Returns {"mmd2", "ci_low", "ci_high", "n_x", "n_y", "points_x", "points_y"} (n = paths);
    with n_boot = 0 the CI is NaN.
    """
    x, y = _paths(x, "x"), _paths(y, "y")
    _check_level(level)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[-1]} and {y.shape[-1]}")
    (n, tx, d), (m, ty, _) = x.shape, y.shape
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 paths per set, got {n} and {m}")
    k = _grams(np.concatenate([x.reshape(-1, d), y.reshape(-1, d)])[None], bandwidths)[0]
    nx = n * tx
    kxx = k[:nx, :nx].reshape(n, tx, n, tx).mean(axis=(1, 3))
    kyy = k[nx:, nx:].reshape(m, ty, m, ty).mean(axis=(1, 3))
    kxy = k[:nx, nx:].reshape(n, tx, m, ty).mean(axis=(1, 3))
    value, boot = _mmd2_and_boot(kxx, kyy, kxy, groups_x, groups_y, strata_x, strata_y, n_boot, rng)
    lo = hi = float("nan")
    if boot is not None:
        lo, hi = (float(v) for v in _percentile_ci(boot, level))
    return {"mmd2": float(value), "ci_low": lo, "ci_high": hi, "n_x": n, "n_y": m,
            "points_x": n * tx, "points_y": m * ty}


def _scale(reference: np.ndarray) -> np.ndarray:
    """Per-dimension std of reference points [..., d] (1 where it vanishes), as in
    :func:`standardize_pair`."""
    a = np.asarray(reference, dtype=np.float64)
    s = a.reshape(-1, a.shape[-1]).std(0)
    return np.where(s > 1e-12, s, 1.0)


def mmd2_over_time(reference: np.ndarray, other: np.ndarray, *, times: Sequence[int] | None = None,
                   n_boot: int = 200, level: float = 0.95, rng: np.random.Generator | None = None,
                   standardize: bool = True, groups_reference: Sequence[int] | None = None,
                   groups_other: Sequence[int] | None = None) -> dict:
    """MMD²(t) between two ensembles of paths at each grid time, and its time average.

    reference [n, n_t, d], other [m, n_t, d] on one grid; ``times``: the grid indices to use
    (default all). At each time the points are scaled by the reference's std at that time (as
    :func:`standardize_pair`, if ``standardize``) and compared by the unbiased multi-bandwidth
    MMD² (median-heuristic bandwidths per time). Each path gives one point per time, so at a
    single time the paths are independent samples; across times they are not, hence one
    bootstrap over whole paths serves all times: every replicate draws paths with replacement
    (the same draw at every time) and recomputes the whole curve and its average. The per-time
    CIs are the pointwise percentiles of these curves; the CI of the time average is the
    percentile interval of the replicates' averages (not a combination of per-time intervals,
    which would ignore the correlation between times). ``groups_reference``/``groups_other``:
    shared integer labels that merge paths into one resampling unit, as in
    :func:`path_mmd2_with_ci`.

    Returns {"time_index", "mmd2", "ci_low", "ci_high" (lists over ``times``), "mean",
    "mean_ci_low", "mean_ci_high", "n_reference", "n_other"}; with n_boot = 0 the CIs are NaN.
    """
    r, o = _paths(reference, "reference"), _paths(other, "other")
    _same_grid(r, o)
    _check_level(level)
    n, m = len(r), len(o)
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 paths per ensemble, got {n} and {m}")
    idx = np.arange(r.shape[1]) if times is None else np.asarray(times, dtype=np.int64).reshape(-1)
    if idx.size == 0 or np.any(idx < 0) or np.any(idx >= r.shape[1]):
        raise ValueError(f"times must be non-empty grid indices in [0, {r.shape[1]}), got {idx.tolist()}")
    z = np.concatenate([r[:, idx], o[:, idx]]).transpose(1, 0, 2)        # [T, n + m, d]
    if standardize:
        std = r[:, idx].std(axis=0)                                      # [T, d], as _scale
        z = z / np.where(std > 1e-12, std, 1.0)[:, None, :]
    k = _grams(z)                                                        # [T, n + m, n + m]
    value, boot = _mmd2_and_boot(k[:, :n, :n], k[:, n:, n:], k[:, :n, n:], groups_reference,
                                 groups_other, None, None, n_boot, rng)
    nan = np.full(len(idx), np.nan)
    lo, hi, mlo, mhi = nan, nan, float("nan"), float("nan")
    if boot is not None:
        lo, hi = _percentile_ci(boot, level)
        mlo, mhi = (float(v) for v in _percentile_ci(boot.mean(axis=0), level))
    return {"time_index": idx.tolist(), "mmd2": value.tolist(), "ci_low": np.asarray(lo).tolist(),
            "ci_high": np.asarray(hi).tolist(), "mean": float(value.mean()),
            "mean_ci_low": mlo, "mean_ci_high": mhi, "n_reference": n, "n_other": m}


def _late_blocks(paths: np.ndarray, start: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_points`` late points of ``paths [n, n_t, d]`` as blocks [n_used, k, d]: the
    first min(n, max_points) paths (more paths beat more correlated times of one path) and k
    times per path, evenly spaced over the late times ``start..n_t-1`` (cyclically) from a
    random offset per path, so every late time is equally likely and the blocks are an
    unbiased sample of the late-time distribution (all late times when they fit)."""
    n, n_t = paths.shape[:2]
    n_late = n_t - start
    n_used = min(n, max(2, max_points))
    k = min(n_late, max(1, max_points // n_used))
    offsets = rng.integers(0, n_late, size=n_used)
    idx = start + (offsets[:, None] + (n_late // k) * np.arange(k)[None, :]) % n_late
    return np.take_along_axis(paths[:n_used], idx[..., None], axis=1)


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
                  mmd_bootstrap: int = 200, mmd_max_samples: int = 500, mmd_time_paths: int = 100,
                  mmd_time_points: int = 40, level: float = 0.95,
                  rng: np.random.Generator | None = None,
                  conditions: Sequence[float] | None = None,
                  pred_sources: Sequence[int] | None = None) -> dict:
    """All metrics for predicted vs direct paths on one grid.

    pred: [C, n_pred, n_t, d], true: [C, n_true, n_t, d] (physical observables only, in
    ``names`` order); C initial conditions (e.g. initial magnetizations ``conditions``).
    The paper's error uses the first ``paper_paths`` paths of each set (the first predicted paths
    start from the first direct runs' initial states) and all paths.

    Distributions (unbiased multi-bandwidth MMD², observables scaled by the direct std; every CI
    is a ``level`` percentile bootstrap over whole paths with ``mmd_bootstrap`` replicates, see
    the module notes):

    - ``mmd_final_time`` (per condition): the two ensembles at the last grid time, at most
      ``mmd_max_samples`` paths per side. Each path gives one point there, so the points are
      independent and the ordinary bootstrap over points already is the bootstrap over paths.
    - ``mmd_stationary_per_condition`` (per condition) and ``mmd_stationary`` (all conditions
      pooled, paths resampled within their condition): the distributions of the points of the
      late half of the grid, by :func:`path_mmd2_with_ci` with whole paths as units (at most
      ``mmd_max_samples`` late points per side; for the pooled one a 1/C share per condition).
    - ``mmd_over_time`` (per condition): :func:`mmd2_over_time` at up to ``mmd_time_points``
      grid times evenly spaced after t = 0 (at t = 0 both ensembles start from the same direct
      states, which says nothing about the dynamics), on the first ``mmd_time_paths`` paths of
      each side: MMD²(t) with pointwise CIs, and its time average ``mean`` with the CI from
      resampling paths once for the whole curve.
    - ``stationary``: late-half mean and std per observable pooled over paths, times and
      conditions (the pooled std includes the spread between the conditions' means), and
      ``stationary_per_condition``: the same within each condition; both with path-bootstrap
      ``mean_ci``/``std_ci`` (pooled: paths resampled within their condition). The report's
      main table shows the pooled values; its per-condition table the per-condition ones.

    ``pred_sources`` [n_pred] (optional): the index of the direct path whose initial state each
    predicted path starts from (the same for every condition). A direct path and the predicted
    paths started from its state are then one resampling unit and their pairs are left out of
    the MMD sums, as they are not independent; without it all paths count as independent.
    """
    pred, true = _paths(pred, "pred", 4), _paths(true, "true", 4)
    _same_grid(pred, true)
    _check_level(level)
    if mmd_max_samples < 2 or mmd_time_paths < 2 or mmd_time_points < 1:
        raise ValueError(f"mmd_max_samples={mmd_max_samples}, mmd_time_paths={mmd_time_paths} and "
                         f"mmd_time_points={mmd_time_points} out of range (allowed: >= 2, >= 2, >= 1)")
    rng = rng if rng is not None else np.random.default_rng(0)
    C, n_pred, n_t, _ = pred.shape
    n_true = true.shape[1]
    n20 = min(paper_paths, n_pred, n_true)
    boot = {"n_boot": mmd_bootstrap, "level": level, "rng": rng}
    result: dict = {
        "observables": list(names),
        "n_conditions": int(C),
        "n_times": int(n_t),
        "n_paths_pred": int(n_pred),
        "n_paths_true": int(n_true),
        "test_error_paper_paths": n20,
        "test_error_paper": paper_test_error(pred[:, :n20], true[:, :n20]),
        "test_error_all": paper_test_error(pred, true),
        "test_error_paper_floor": paper_error_noise_floor(true, n20, n20),
        "test_error_all_floor": paper_error_noise_floor(true, n_pred),
        "per_condition_test_error_all": [paper_test_error(pred[c], true[c]) for c in range(C)],
        "moments": moment_errors(pred, true, names),
        "stationary": {"direct": stationary_statistics(true, names, **boot),
                       "predicted": stationary_statistics(pred, names, **boot)},
        "stationary_per_condition": [
            {"direct": d, "predicted": p} for d, p in zip(stationary_statistics_per_condition(true, names, **boot),
                                                          stationary_statistics_per_condition(pred, names, **boot))],
        "ci": {"method": "percentile bootstrap over whole paths", "level": level, "n_boot": mmd_bootstrap,
               "paired_by_initial_state": pred_sources is not None},
    }
    result["per_condition"] = per_condition_moments(pred, true, names)
    if conditions is not None:
        result["conditions"] = [float(c) for c in conditions]
    g_true = np.arange(n_true)
    if pred_sources is None:
        g_pred = n_true + np.arange(n_pred)        # every path its own unit
    else:
        g_pred = _labels(pred_sources, n_pred, g_true, "pred_sources")
        if np.any(g_pred < 0) or np.any(g_pred >= n_true):
            raise ValueError(f"pred_sources must index the {n_true} direct paths")

    nt, npd = min(n_true, mmd_max_samples), min(n_pred, mmd_max_samples)
    final = []
    for c in range(C):  # one point per path: the ordinary two-sample bootstrap is the path one
        scale = _scale(true[c, :nt, -1])
        final.append(path_mmd2_with_ci(true[c, :nt, -1:] / scale, pred[c, :npd, -1:] / scale,
                                       groups_x=g_true[:nt], groups_y=g_pred[:npd], **boot))
    result["mmd_final_time"] = final

    start = _late_start(n_t, 0.5)
    share = max(2, mmd_max_samples // C)
    per_condition, pooled_t, pooled_p = [], [], []
    for c in range(C):
        scale = _scale(true[c, :, start:])
        bt, bp = (_late_blocks(a[c], start, mmd_max_samples, rng) / scale for a in (true, pred))
        per_condition.append(path_mmd2_with_ci(bt, bp, groups_x=g_true[:len(bt)], groups_y=g_pred[:len(bp)], **boot))
        pooled_t.append(_late_blocks(true[c], start, share, rng))
        pooled_p.append(_late_blocks(pred[c], start, share, rng))
    scale = _scale(true[:, :, start:])
    result["mmd_stationary_per_condition"] = per_condition
    result["mmd_stationary"] = path_mmd2_with_ci(
        np.concatenate(pooled_t) / scale, np.concatenate(pooled_p) / scale,
        groups_x=np.concatenate([g_true[:len(b)] for b in pooled_t]),
        groups_y=np.concatenate([g_pred[:len(b)] for b in pooled_p]),
        strata_x=np.repeat(np.arange(C), [len(b) for b in pooled_t]),
        strata_y=np.repeat(np.arange(C), [len(b) for b in pooled_p]), **boot)

    times = np.arange(1, n_t) if n_t > 1 else np.zeros(1, np.int64)
    if len(times) > mmd_time_points:
        times = np.unique(np.round(np.linspace(1, n_t - 1, mmd_time_points)).astype(np.int64))
    nt, npd = min(n_true, mmd_time_paths), min(n_pred, mmd_time_paths)
    result["mmd_over_time"] = [
        mmd2_over_time(true[c, :nt], pred[c, :npd], times=times, groups_reference=g_true[:nt],
                       groups_other=g_pred[:npd], **boot) for c in range(C)]
    return result


__all__ = [
    "paper_test_error", "paper_error_noise_floor", "moment_errors", "stationary_statistics",
    "stationary_statistics_per_condition", "mmd2_unbiased", "mmd2_with_ci", "path_mmd2_with_ci",
    "mmd2_over_time", "median_bandwidths", "standardize_pair", "compare_paths", "per_condition_moments",
]
