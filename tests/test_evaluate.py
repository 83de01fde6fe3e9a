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
