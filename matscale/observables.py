"""Spin observables, additive over square patches by construction.

All functions take configurations ``states`` of shape ``[..., L, L]`` with entries +-1 (any
numeric dtype) and are vectorised over the leading batch dimensions. Observables are
dimensionless.

* magnetization m = (1/N) sum_i s_i.
* domain-wall density rho_dw = (1/2N) sum_i [(1 - s_i s_right(i))/2 + (1 - s_i s_down(i))/2],
  the fraction of unsatisfied nearest-neighbour bonds of the periodic lattice (2 bonds per
  site: each site owns its right and its down bond).

Patch shares. For p dividing L the box splits into K = (L/p)^2 patches (patch k has its origin
at ((k // (L/p)) p, (k % (L/p)) p), see :mod:`matscale.systems.base`). The share of patch k is
the observable's per-site density averaged over the patch's sites, a site's bond density being
the unsatisfied fraction of the two bonds it owns (its right and down bonds may reach into the
next patch, they still belong to this site). Hence the global value is the mean of the K
shares. Shares are built from integer counts; when p is a power of two the identity holds
bit-for-bit in float64.
"""
from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np

from matscale.systems.base import n_patches

SPIN_OBSERVABLE_NAMES = ("m", "rho_dw")


def _as_states(states) -> np.ndarray:
    states = np.asarray(states)
    if states.ndim < 2 or states.shape[-1] != states.shape[-2] or states.shape[-1] < 2:
        raise ValueError(f"states must have shape [..., L, L] with L >= 2, got {states.shape}")
    return states


def _up_count(states: np.ndarray) -> np.ndarray:
    """Per-site 1 for an up spin, 0 for a down spin (int64)."""
    return (states > 0).astype(np.int64)


def _broken_bond_count(states: np.ndarray) -> np.ndarray:
    """Per-site number (0, 1, 2) of unsatisfied bonds among its right and down bonds."""
    s = np.sign(states).astype(np.int8)
    right = s != np.roll(s, -1, axis=-1)
    down = s != np.roll(s, -1, axis=-2)
    return right.astype(np.int64) + down.astype(np.int64)


def magnetization(states) -> np.ndarray:
    """Mean spin m in [-1, 1], shape ``[...]``."""
    states = _as_states(states)
    n = states.shape[-1] * states.shape[-2]
    return (2 * _up_count(states).sum(axis=(-2, -1)) - n) / n


def domain_wall_density(states) -> np.ndarray:
    """Fraction of unsatisfied nearest-neighbour bonds (periodic), in [0, 1], shape ``[...]``."""
    states = _as_states(states)
    n = states.shape[-1] * states.shape[-2]
    return _broken_bond_count(states).sum(axis=(-2, -1)) / (2 * n)


@nb.njit(cache=True, parallel=True)
def _spin_counts_int8(states: np.ndarray) -> np.ndarray:
    """Up-spin and unsatisfied-bond counts ``int64 [B, 2]`` of int8 states [B, L, L] (periodic;
    each site owns its right and down bonds). The same integers as the numpy path, no temporaries."""
    B, L = states.shape[0], states.shape[1]
    out = np.zeros((B, 2), dtype=np.int64)
    for b in nb.prange(B):
        up = 0
        broken = 0
        for r in range(L):
            down_row = r + 1 if r + 1 < L else 0
            for c in range(L):
                right_col = c + 1 if c + 1 < L else 0
                s = states[b, r, c]
                sign = (s > 0) - (s < 0)
                up += s > 0
                sr = states[b, r, right_col]
                sd = states[b, down_row, c]
                broken += (sign != (sr > 0) - (sr < 0)) + (sign != (sd > 0) - (sd < 0))
        out[b, 0] = up
        out[b, 1] = broken
    return out


def spin_observables(states) -> np.ndarray:
    """(m, rho_dw) stacked on a last axis: shape ``[..., 2]`` (order = SPIN_OBSERVABLE_NAMES).

    int8 states (the simulators' dtype) go through a compiled, threaded counting kernel; the
    values equal those of :func:`magnetization` and :func:`domain_wall_density` bit for bit."""
    states = _as_states(states)
    if states.dtype != np.int8:
        return np.stack([magnetization(states), domain_wall_density(states)], axis=-1)
    L = states.shape[-1]
    n = L * L
    counts = _spin_counts_int8(np.ascontiguousarray(states.reshape(-1, L, L)))
    m = (2 * counts[:, 0] - n) / n
    rho = counts[:, 1] / (2 * n)
    return np.stack([m, rho], axis=-1).reshape(*states.shape[:-2], 2)


# per-site integer counts and their normalisation per site, by observable name
def _site_counts(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], int, int]:
    """(counts(states), scale, offset): per-site density = (scale * count + offset) / norm."""
    if name == "m":
        return _up_count, 2, -1
    if name == "rho_dw":
        return _broken_bond_count, 1, 0
    raise ValueError(f"observable must be one of {SPIN_OBSERVABLE_NAMES}, got {name!r}")


def patch_shares(states, p: int, observable: str) -> np.ndarray:
    """Patch shares ``[..., K]`` of ``observable`` ("m" or "rho_dw") for p x p patches.

    ``magnetization(states) == patch_shares(states, p, "m").mean(-1)`` (and likewise for
    "rho_dw"), exactly for power-of-two p; see the module docstring for the bond ownership.
    """
    states = _as_states(states)
    L = states.shape[-1]
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"p must be an integer divisor of L={L}, got {p!r}")
    n_patch = n_patches(L, int(p))
    counts_fn, scale, offset = _site_counts(observable)
    per_side = L // p
    counts = counts_fn(states)
    blocks = counts.reshape(*counts.shape[:-2], per_side, p, per_side, p)
    block_sum = blocks.sum(axis=(-3, -1)).reshape(*counts.shape[:-2], n_patch)
    n_s = p * p
    if observable == "m":
        return (scale * block_sum + offset * n_s) / n_s
    return block_sum / (2 * n_s)


def spin_patch_shares(states, p: int) -> np.ndarray:
    """Patch shares of (m, rho_dw) stacked on a last axis: shape ``[..., K, 2]``."""
    return np.stack([patch_shares(states, p, name) for name in SPIN_OBSERVABLE_NAMES], axis=-1)


def structure_factor(states) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged static structure factor S(k) = |sum_r s_r e^{-i k.r}|^2 / N.

    Wave vectors k = 2 pi (n_x, n_y) / L with n in the first Brillouin zone are binned by the
    integer shell round(|n|); bin 0 is k = 0 (S(0) = N m^2). Returns ``(k, S)``: k float64 [n_bins]
    (mean |k| of the shell), S float64 [..., n_bins], averaged within each shell and kept per
    configuration (average over the batch yourself for a diagnostic curve).
    """
    states = _as_states(states)
    L = states.shape[-1]
    n = L * L
    amplitude = np.fft.fft2(states.astype(np.float64), axes=(-2, -1))
    power = (amplitude.real ** 2 + amplitude.imag ** 2) / n
    freq = np.fft.fftfreq(L, d=1.0 / L)  # integer wave numbers in [-L/2, L/2)
    nx, ny = np.meshgrid(freq, freq, indexing="ij")
    radius = np.sqrt(nx ** 2 + ny ** 2)
    shell = np.rint(radius).astype(np.int64).ravel()
    n_bins = shell.max() + 1
    members = np.bincount(shell, minlength=n_bins)
    keep = members > 0
    k_mean = np.bincount(shell, weights=2.0 * np.pi * radius.ravel() / L, minlength=n_bins)
    order = np.argsort(shell, kind="stable")
    starts = np.searchsorted(shell[order], np.flatnonzero(keep))
    flat_power = power.reshape(*power.shape[:-2], n)[..., order]
    s_sum = np.add.reduceat(flat_power, starts, axis=-1)
    return (k_mean[keep] / members[keep]), (s_sum / members[keep])


# --- Alloy chemical short-range order (BCC lattices) -------------------------------------------
# Defined next to the alloy engine, re-exported here so that every observable of the package is
# reachable from one module. All of them are additive over patches (see their docstrings).
from matscale.systems.alloy.sro import (  # noqa: E402
    pair_labels,
    sro_delta,
    sro_delta_patch_shares,
    warren_cowley,
    warren_cowley_patch_shares,
)
