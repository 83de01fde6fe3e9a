"""Metrics on known inputs: the paper's test error, moment errors, stationary stats, MMD²."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.evaluate import (compare_paths, mmd2_unbiased, mmd2_with_ci, moment_errors,
                               paper_test_error, stationary_statistics)


def test_paper_test_error_formula_by_hand():
    # true paths: mean curve (1, 2); predicted: mean curve (1.5, 2) -> e = 0.25 / 5
    true = np.array([[[0.0], [1.0]], [[2.0], [3.0]]])        # [2 paths, 2 times, 1]
    pred = np.array([[[1.5], [2.0]]])                         # [1 path, 2 times, 1]
    assert paper_test_error(pred, true) == pytest.approx(0.25 / 5.0)
    # two conditions are averaged; two observables are summed inside one ratio
    true2 = np.concatenate([true, 2 * true], axis=-1)          # means (1,2) and (2,4)
    pred2 = np.concatenate([pred, 2 * true.mean(0, keepdims=True)], axis=-1)
    e2 = 0.25 / (1 + 4 + 4 + 16)
    both = paper_test_error(np.stack([pred, pred]), np.stack([true, true]))
    assert both == pytest.approx(0.05)
    assert paper_test_error(pred2, true2) == pytest.approx(e2)
    assert paper_test_error(true, true) == 0.0


def test_paper_test_error_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="time grid"):
        paper_test_error(np.zeros((3, 5, 1)) + 1, np.ones((3, 4, 1)))
    with pytest.raises(ValueError, match="NaN"):
        paper_test_error(np.full((3, 4, 1), np.nan), np.ones((3, 4, 1)))


def test_moment_errors_and_stationary_statistics():
    rng = np.random.default_rng(1)
    true = 1.0 + 0.5 * rng.standard_normal((4000, 3, 1))
    pred = 1.1 + 1.0 * rng.standard_normal((4000, 3, 1))
    err = moment_errors(pred, true, ["m"])["m"]
    # mean 1.1 vs 1.0 -> 0.1; std 1.0 vs 0.5 -> 1.0; sampling error ~ 1/sqrt(4000) ~ 0.016 (x4 slack)
    assert err["rel_mean_error"] == pytest.approx(0.1, abs=0.04)
    assert err["rel_std_error"] == pytest.approx(1.0, abs=0.08)
    st = stationary_statistics(true, ["m"], fraction=1.0)["m"]
    assert st["mean"] == pytest.approx(1.0, abs=0.03) and st["std"] == pytest.approx(0.5, abs=0.02)


def test_mmd_identical_distributions_vs_shifted():
    rng = np.random.default_rng(2)
    n = 300
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    shifted = rng.standard_normal((n, 2)) + np.array([1.0, 0.0])
    same = mmd2_with_ci(x, y, n_boot=200, rng=np.random.default_rng(3))
    diff = mmd2_with_ci(x, shifted, n_boot=200, rng=np.random.default_rng(3))
    # Under H0 the unbiased MMD² has mean 0 and sd O(1/n) for the kernel sum (5 kernels, each
    # <= 1) -> |MMD²| < 5 * 5/n; a unit shift gives MMD² of order 0.1 per kernel.
    assert abs(same["mmd2"]) < 25.0 / n
    assert same["ci_low"] <= 0.0 <= same["ci_high"] + 25.0 / n
    assert diff["mmd2"] > 10 * abs(same["mmd2"])
    assert diff["ci_low"] > 0.0
    assert mmd2_unbiased(x, shifted) == pytest.approx(diff["mmd2"])


def test_mmd_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="n >= 2"):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))


def test_compare_paths_structure():
    rng = np.random.default_rng(4)
    true = 0.5 + 0.1 * rng.standard_normal((2, 40, 6, 2))
    pred = 0.5 + 0.1 * rng.standard_normal((2, 60, 6, 2))
    res = compare_paths(pred, true, ["m", "rho_dw"], paper_paths=20, mmd_bootstrap=20,
                        conditions=[0.0, 0.5])
    assert res["test_error_paper_paths"] == 20
    assert res["test_error_paper"] >= 0 and res["test_error_all"] >= 0
    assert set(res["moments"]) == {"m", "rho_dw"}
    assert len(res["mmd_final_time"]) == 2 and res["conditions"] == [0.0, 0.5]


def test_noise_floor_is_the_expected_error_of_an_exact_model():
    """Two independent samples of one law: the paper's error averages to the floor.

    Paths are Gaussian with a time-dependent mean and std (3 conditions, 20 paths per side, 30
    times, d = 2). The error of one repetition is a weighted sum of 180 squared Gaussians, so its
    relative std is ~sqrt(2/180) ≈ 0.11 (fewer effective terms: the weights vary, ~0.15); the
    mean of 300 repetitions then has a relative standard error ≈ 0.15 / sqrt(300) ≈ 0.009, and a
    5 % tolerance is > 5 standard errors. The floor itself comes from a 2000-path sample (its own
    relative error ~sqrt(2/2000) per term, well below 1 %)."""
    from matscale.evaluate import paper_error_noise_floor, paper_test_error

    rng = np.random.default_rng(11)
    t = np.linspace(0.0, 3.0, 30)
    mean = np.stack([np.stack([c + np.exp(-t), 0.5 + 0.1 * c * t], -1) for c in (0.5, 1.0, 2.0)])
    std = np.stack([np.stack([0.3 + 0.1 * t, 0.2 * np.ones_like(t)], -1) for _ in range(3)])

    def draw(n):
        return mean[:, None] + std[:, None] * rng.normal(size=(3, n, 30, 2))

    errors = [paper_test_error(draw(20), draw(20)) for _ in range(300)]
    floor = paper_error_noise_floor(draw(2000), 20, 20)
    assert np.mean(errors) == pytest.approx(floor, rel=0.05)
    # a model whose mean is off by 3 standard errors of a 20-path mean scores well above it
    biased = paper_test_error(draw(20) + 3 * std[:, None] / np.sqrt(20), draw(20))
    assert biased > 3 * floor


# ------------------------------------------------------------------------------------------------
# Path-resampled confidence intervals
# ------------------------------------------------------------------------------------------------
def _ar1_paths(rng, n_paths, n_times, rho, shift=0.0, d=1):
    """Stationary AR(1) paths (an OU process sampled on a grid): N(shift, 1) at every time,
    correlation rho^|s-t| between times of one path; paths independent."""
    z = np.empty((n_paths, n_times, d))
    z[:, 0] = rng.standard_normal((n_paths, d))
    noise = np.sqrt(1.0 - rho ** 2) * rng.standard_normal((n_paths, n_times, d))
    for t in range(1, n_times):
        z[:, t] = rho * z[:, t - 1] + noise[:, t]
    return z + shift


def test_path_mmd_with_one_time_is_the_ordinary_mmd_and_groups_pair_paths():
    from matscale.evaluate import median_bandwidths, path_mmd2_with_ci

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 2)), rng.standard_normal((30, 2)) + 0.5
    one = path_mmd2_with_ci(x[:, None], y[:, None], n_boot=0)
    assert one["mmd2"] == pytest.approx(mmd2_unbiased(x, y), rel=1e-9)
    fixed = path_mmd2_with_ci(x[:, None], y[:, None], n_boot=0, bandwidths=median_bandwidths(x, y))
    assert fixed["mmd2"] == pytest.approx(one["mmd2"], rel=1e-9)  # the fast default kernel is the same
    # several times per path: the path kernel averages over all time pairs of two paths
    xs, ys = rng.standard_normal((6, 3, 1)), rng.standard_normal((5, 2, 1))
    bw = [0.7]
    k = lambda a, b: np.exp(-np.subtract.outer(a.ravel(), b.ravel()) ** 2 / (2 * 0.49))
    kx = np.array([[k(a, b).mean() for b in xs] for a in xs])
    ky = np.array([[k(a, b).mean() for b in ys] for a in ys])
    kxy = np.array([[k(a, b).mean() for b in ys] for a in xs])
    off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))
    assert path_mmd2_with_ci(xs, ys, n_boot=0, bandwidths=bw)["mmd2"] == pytest.approx(
        off(kx) + off(ky) - 2 * kxy.mean(), rel=1e-9)
    # a predicted path started from a direct path's state is not independent of it: with
    # pred = a copy of direct and each copy in its original's unit, only independent pairs
    # remain and the estimate is exactly 0 (without the pairing the copies look too alike)
    paths = rng.standard_normal((20, 4, 2))
    paired = path_mmd2_with_ci(paths, paths.copy(), groups_x=np.arange(20), groups_y=np.arange(20),
                               n_boot=20)
    assert paired["mmd2"] == pytest.approx(0.0, abs=1e-12)
    assert path_mmd2_with_ci(paths, paths.copy(), n_boot=0)["mmd2"] < -0.01  # ≈ -0.05 here


def test_path_bootstrap_covers_zero_for_one_law_and_pooled_points_do_not():
    """Two samples of one law of strongly time-correlated paths (AR(1), rho = 0.95: the
    correlation time, ~20 steps, exceeds the 15 late times, so a path carries about one
    independent late point). The 95 % CIs of the stationary MMD² (late half, paths resampled)
    and of the time-averaged MMD²(t) (paths resampled, whole curve recomputed) must cover 0 in
    at least 90 of 100 repetitions: the number of covering intervals of a valid 95 % CI is
    Binomial(100, 0.95), whose 1st percentile is ~90 (P(X <= 89) ≈ 1.1 %), so a correct method
    fails this bound in ~1 % of seeds while a CI whose true coverage is 85 % fails it 90 % of
    the time (the percentile bootstrap of a U-statistic is conservative at MMD² = 0; these
    seeds give 100 and 99 of 100). The old pooled-time-point bootstrap (all late points of all paths as
    independent samples, :func:`mmd2_with_ci`) covers 0 in fewer than half of the first 20
    repetitions (7 with these seeds; a valid 95 % CI would give <= 10 with probability < 1e-5):
    a path of 15 points counts as 15 samples, the interval is ~3.5 times too narrow and, as
    points of one path are alike, its estimate is biased upwards."""
    from matscale.evaluate import mmd2_over_time, path_mmd2_with_ci

    n_paths, n_times, rho = 50, 30, 0.95
    late = slice(n_times // 2, None)
    covered_stationary = covered_average = covered_pooled = 0
    estimates, pooled_estimates = [], []
    for rep in range(100):
        rng = np.random.default_rng(1000 + rep)
        x, y = _ar1_paths(rng, n_paths, n_times, rho), _ar1_paths(rng, n_paths, n_times, rho)
        st = path_mmd2_with_ci(x[:, late], y[:, late], n_boot=200, rng=np.random.default_rng(rep))
        ot = mmd2_over_time(x, y, n_boot=200, rng=np.random.default_rng(rep))
        covered_stationary += st["ci_low"] <= 0.0 <= st["ci_high"]
        covered_average += ot["mean_ci_low"] <= 0.0 <= ot["mean_ci_high"]
        estimates.append(st["mmd2"])
        if rep < 20:
            old = mmd2_with_ci(x[:, late].reshape(-1, 1), y[:, late].reshape(-1, 1), n_boot=100,
                               rng=np.random.default_rng(rep))
            covered_pooled += old["ci_low"] <= 0.0 <= old["ci_high"]
            pooled_estimates.append(old["mmd2"])
    assert covered_stationary >= 90, covered_stationary
    assert covered_average >= 90, covered_average
    assert covered_pooled <= 10, covered_pooled
    # the path U-statistic is unbiased (mean of 100 estimates within ~3 standard errors of 0)
    assert abs(np.mean(estimates)) < 3 * np.std(estimates) / np.sqrt(100)
    assert np.mean(pooled_estimates) > np.mean(estimates)


def test_path_bootstrap_has_power_against_a_shift_of_one_std():
    """Same paths, one sample shifted by one stationary std: the CIs exclude 0 in most
    repetitions (30 of 30 for both statistics with these seeds; ~97 % in 100 other runs)."""
    from matscale.evaluate import mmd2_over_time, path_mmd2_with_ci

    excluded_stationary = excluded_average = 0
    for rep in range(30):
        rng = np.random.default_rng(2000 + rep)
        x, y = _ar1_paths(rng, 50, 30, 0.95), _ar1_paths(rng, 50, 30, 0.95, shift=1.0)
        st = path_mmd2_with_ci(x[:, 15:], y[:, 15:], n_boot=200, rng=np.random.default_rng(rep))
        ot = mmd2_over_time(x, y, n_boot=200, rng=np.random.default_rng(rep))
        excluded_stationary += st["ci_low"] > 0.0
        excluded_average += ot["mean_ci_low"] > 0.0
    assert excluded_stationary >= 25 and excluded_average >= 25, (excluded_stationary, excluded_average)


def test_stationary_statistics_path_bootstrap_covers_the_true_moments():
    """Late mean and std of AR(1) paths (true values 0 and 1): the path-bootstrap CI of the mean
    covers 0 in >= 90 of 100 repetitions (the binomial bound above). The percentile interval of
    a std from ~50 effectively independent paths under-covers a little (≈ 90 % in 600 runs at
    these settings, ≈ 94 % with 200 paths), so its bound is 85. Treating the pooled late points
    as independent covers far less (the 750 points are worth ~60 independent ones). Per
    condition the std is the within-condition one; pooled it includes the spread between the
    conditions."""
    from matscale.evaluate import stationary_statistics_per_condition

    covered_mean = covered_std = covered_points = 0
    for rep in range(100):
        rng = np.random.default_rng(3000 + rep)
        paths = _ar1_paths(rng, 50, 30, 0.95)
        st = stationary_statistics(paths, ["m"], n_boot=200, rng=np.random.default_rng(rep))["m"]
        covered_mean += st["mean_ci"][0] <= 0.0 <= st["mean_ci"][1]
        covered_std += st["std_ci"][0] <= 1.0 <= st["std_ci"][1]
        late = paths[:, 15:].ravel()  # the same mean with the standard error of independent points
        covered_points += abs(late.mean()) <= 1.96 * late.std(ddof=1) / np.sqrt(late.size)
    assert covered_mean >= 90 and covered_std >= 85, (covered_mean, covered_std)
    assert covered_points <= 60, covered_points
    rng = np.random.default_rng(6)
    two = np.stack([_ar1_paths(rng, 200, 30, 0.5), _ar1_paths(rng, 200, 30, 0.5, shift=2.0)])
    per = stationary_statistics_per_condition(two, ["m"], n_boot=50)
    pooled = stationary_statistics(two, ["m"], n_boot=50)["m"]
    assert [p["m"]["mean"] for p in per] == pytest.approx([0.0, 2.0], abs=0.15)
    assert [p["m"]["std"] for p in per] == pytest.approx([1.0, 1.0], abs=0.1)
    assert pooled["std"] == pytest.approx(np.sqrt(2.0), abs=0.1)  # mixture: 1 + (2/2)² = 2
    assert pooled["mean_ci"][0] < 1.0 < pooled["mean_ci"][1]
    late = two[:, :, 15:].reshape(-1)
    assert pooled["mean"] == pytest.approx(late.mean()) and pooled["std"] == pytest.approx(late.std(ddof=1))


def test_mmd_over_time_curve_and_compare_paths_keys():
    from matscale.evaluate import mmd2_over_time, standardize_pair

    rng = np.random.default_rng(7)
    ref = rng.standard_normal((30, 5, 2)) * np.array([1.0, 3.0])
    other = rng.standard_normal((25, 5, 2)) * np.array([1.0, 3.0]) + np.linspace(0, 1, 5)[:, None]
    ot = mmd2_over_time(ref, other, times=[1, 3, 4], n_boot=50)
    assert ot["time_index"] == [1, 3, 4] and len(ot["mmd2"]) == len(ot["ci_low"]) == 3
    assert ot["mmd2"][1] == pytest.approx(mmd2_unbiased(*standardize_pair(ref[:, 3], other[:, 3])), rel=1e-9)
    assert ot["mean"] == pytest.approx(np.mean(ot["mmd2"]))
    assert all(lo <= hi for lo, hi in zip(ot["ci_low"], ot["ci_high"]))
    assert ot["mean_ci_low"] <= ot["mean"] <= ot["mean_ci_high"]

    true = rng.standard_normal((3, 40, 12, 2))
    pred = rng.standard_normal((3, 60, 12, 2))
    res = compare_paths(pred, true, ["m", "e"], mmd_bootstrap=30, mmd_time_points=5,
                        pred_sources=np.arange(60) % 40)
    assert len(res["mmd_over_time"]) == 3 and res["mmd_over_time"][0]["time_index"] == [1, 4, 6, 8, 11]
    assert len(res["mmd_stationary_per_condition"]) == 3 and len(res["stationary_per_condition"]) == 3
    for key in ("mmd_stationary", *res["mmd_stationary_per_condition"], *res["mmd_final_time"]):
        entry = res["mmd_stationary"] if key == "mmd_stationary" else key
        assert entry["ci_low"] <= entry["ci_high"]
    assert set(res["stationary"]["direct"]["m"]) == {"mean", "std", "mean_ci", "std_ci"}
    assert res["ci"]["paired_by_initial_state"]
    with pytest.raises(ValueError, match="pred_sources"):
        compare_paths(pred, true, ["m", "e"], mmd_bootstrap=0, pred_sources=np.arange(60))
