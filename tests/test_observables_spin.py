"""Spin observables: definitions, batch shapes, exact patch additivity, structure factor."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.observables import (
    SPIN_OBSERVABLE_NAMES,
    domain_wall_density,
    magnetization,
    patch_shares,
    spin_observables,
    spin_patch_shares,
    structure_factor,
)
from matscale.systems.base import patch_origin


def _random_spins(shape, seed=0):
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=shape)


def _dw_by_loops(state):
    L = state.shape[0]
    broken = 0
    for r in range(L):
        for c in range(L):
            broken += state[r, c] != state[r, (c + 1) % L]
            broken += state[r, c] != state[(r + 1) % L, c]
    return broken / (2 * L * L)


def test_known_configurations():
    up = np.ones((8, 8), dtype=np.int8)
    assert magnetization(up) == 1.0 and domain_wall_density(up) == 0.0
    checker = np.where(np.add.outer(np.arange(8), np.arange(8)) % 2 == 0, 1, -1).astype(np.int8)
    assert magnetization(checker) == 0.0 and domain_wall_density(checker) == 1.0
    stripes = np.repeat(np.array([1, 1, -1, -1], dtype=np.int8)[None], 4, axis=0)  # columns
    # horizontal bonds: 2 of 4 per row broken; vertical bonds: none -> 8 / 32
    assert domain_wall_density(stripes) == 0.25
    assert SPIN_OBSERVABLE_NAMES == ("m", "rho_dw")


def test_matches_loop_definition_and_batches():
    states = _random_spins((3, 4, 12, 12), seed=1)
    m = magnetization(states)
    dw = domain_wall_density(states)
    assert m.shape == dw.shape == (3, 4)
    for idx in np.ndindex(3, 4):
        assert m[idx] == pytest.approx(states[idx].mean())
        assert dw[idx] == pytest.approx(_dw_by_loops(states[idx]))
    both = spin_observables(states)
    assert both.shape == (3, 4, 2)
    assert np.array_equal(both[..., 0], m) and np.array_equal(both[..., 1], dw)


@pytest.mark.parametrize("L, p", [(16, 2), (16, 4), (16, 8), (16, 16), (64, 16), (64, 8)])
def test_patch_shares_average_to_global_exactly(L, p):
    states = _random_spins((5, L, L), seed=L + p)
    glob = spin_observables(states)
    K = (L // p) ** 2
    for j, name in enumerate(SPIN_OBSERVABLE_NAMES):
        shares = patch_shares(states, p, name)
        assert shares.shape == (5, K)
        assert np.array_equal(shares.mean(axis=-1), glob[..., j])  # bit-exact (powers of two)
    stacked = spin_patch_shares(states, p)
    assert stacked.shape == (5, K, 2)


def test_patch_shares_non_power_of_two_to_rounding():
    states = _random_spins((4, 12, 12), seed=3)
    for j, name in enumerate(SPIN_OBSERVABLE_NAMES):
        np.testing.assert_allclose(patch_shares(states, 3, name).mean(-1),
                                   spin_observables(states)[..., j], rtol=0, atol=1e-15)


def test_patch_share_geometry_and_bond_ownership():
    """Share k is computed on patch k's sites (origin from systems.base); a site's right and
    down bonds belong to its patch even when they cross into the neighbouring patch."""
    L, p = 8, 4
    state = np.ones((L, L), dtype=np.int8)
    state[4, 0] = -1  # first site of patch 2 (origin (4, 0))
    assert patch_origin(2, L, p) == (4, 0)
    m_shares = patch_shares(state, p, "m")
    assert np.array_equal(m_shares, [1.0, 1.0, 1.0 - 2 / 16, 1.0])
    dw = patch_shares(state, p, "rho_dw")
    # broken bonds: (4,0)-right, (4,0)-down [owned by patch 2], (3,0)-down [patch 0],
    # (4,7)-right wraps to (4,0) [owned by (4,7), patch 3]
    assert np.array_equal(dw, [1 / 32, 0.0, 2 / 32, 1 / 32])
    assert dw.mean() == domain_wall_density(state)


def test_bad_arguments():
    states = _random_spins((2, 8, 8))
    with pytest.raises(ValueError, match="divisor"):
        patch_shares(states, 3, "m")
    with pytest.raises(ValueError, match="observable"):
        patch_shares(states, 4, "energy")
    with pytest.raises(TypeError):
        patch_shares(states, 4.0, "m")
    with pytest.raises(ValueError, match="shape"):
        magnetization(np.ones((8, 4)))


def test_structure_factor():
    L = 16
    # random spins: S(k) = 1 for k != 0 in expectation (uncorrelated); per-shell average over
    # many states has s.e. ~ 1/sqrt(n_modes * n_states) -> tolerance 0.1 is > 5 s.e.
    states = _random_spins((200, L, L), seed=7)
    k, S = structure_factor(states)
    assert k[0] == 0.0 and np.all(np.diff(k) > 0)
    assert S.shape == (200, k.size)
    np.testing.assert_allclose(S[:, 0], L * L * magnetization(states) ** 2)
    assert np.all(np.abs(S.mean(0)[1:] - 1.0) < 0.1)
    # sum rule: mean over all modes of S equals 1 (Parseval with s^2 = 1)
    freq = np.fft.fftfreq(L, 1 / L)
    counts = np.bincount(np.rint(np.hypot(*np.meshgrid(freq, freq))).astype(int).ravel())
    counts = counts[counts > 0]
    np.testing.assert_allclose((S * counts).sum(-1) / (L * L), 1.0)
    # ordered state: all weight at k = 0
    k, S = structure_factor(np.ones((L, L), dtype=np.int8))
    assert S[0] == L * L and np.allclose(S[1:], 0.0)
    # stripes of period 8: the peak is in the shell |n| = 2 (k = 2 pi n / L, shells by
    # round(|n|), k reported as the shell's mean |k|)
    stripes = np.tile(np.array([1, 1, 1, 1, -1, -1, -1, -1] * 2, dtype=np.int8), (L, 1))
    k, S = structure_factor(stripes)
    peak = np.argmax(S)
    assert peak == 2 and 1.5 <= k[peak] * L / (2 * np.pi) < 2.5


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 16, 16), (16, 16), (5, 2, 2)])
def test_compiled_int8_path_equals_the_numpy_definitions(shape):
    """int8 states go through the compiled counting kernel; float states through numpy. Both
    give the same numbers bit for bit, for batches of any rank, views and a non-±1 entry."""
    rng = np.random.default_rng(4)
    states = rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)
    states.reshape(-1)[0] = 0                                   # sign() semantics at a zero
    expected = np.stack([magnetization(states), domain_wall_density(states)], axis=-1)
    np.testing.assert_array_equal(spin_observables(states), expected)
    np.testing.assert_array_equal(spin_observables(states.astype(np.float64)), expected)
    view = states[..., ::-1, :]                                 # not C-contiguous
    np.testing.assert_array_equal(spin_observables(view),
                                  np.stack([magnetization(view), domain_wall_density(view)], axis=-1))
