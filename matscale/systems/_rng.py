"""A counter-based random number generator usable inside numba ``prange`` loops.

Each independent stream is a single ``uint64`` counter. A draw advances the counter by the
golden-ratio increment and returns the SplitMix64 finaliser of the new counter (Steele, Lea &
Flood 2014; passes BigCrush). Because the whole state of a stream is one integer held in a
local variable, every configuration of a batch owns its own stream and the result does not
depend on how ``prange`` distributes configurations over threads.

A stream is opened from a user seed with :func:`stream_from_seed`, which scrambles the seed so
that neighbouring seeds (0, 1, 2, ...) give unrelated streams.

Numba pitfall: mixing ``uint64`` with Python ``int`` promotes
to ``float64`` inside numba, so every constant and shift count here is an explicit
``np.uint64``.
"""
from __future__ import annotations

import numba as nb
import numpy as np

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_MULT_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MULT_2 = np.uint64(0x94D049BB133111EB)
_STREAM_SALT = np.uint64(0x5DEECE66D1F2A3B7)
_SHIFT_30 = np.uint64(30)
_SHIFT_27 = np.uint64(27)
_SHIFT_31 = np.uint64(31)
_SHIFT_11 = np.uint64(11)
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2**-53


@nb.njit(cache=True, inline="always")
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a bijective avalanche mixer of one 64-bit word."""
    z = (z ^ (z >> _SHIFT_30)) * _MIX_MULT_1
    z = (z ^ (z >> _SHIFT_27)) * _MIX_MULT_2
    return z ^ (z >> _SHIFT_31)


@nb.njit(cache=True, inline="always")
def stream_from_seed(seed: np.uint64) -> np.uint64:
    """Initial counter of the stream belonging to ``seed`` (scrambled so seeds 0, 1, ... differ)."""
    return mix64(np.uint64(seed) ^ _STREAM_SALT)


@nb.njit(cache=True, inline="always")
def next_u64(counter: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Advance ``counter`` by one draw; returns ``(new_counter, 64 random bits)``."""
    counter = counter + GOLDEN_GAMMA
    return counter, mix64(counter)


@nb.njit(cache=True, inline="always")
def next_uniform(counter: np.uint64) -> tuple[np.uint64, float]:
    """Uniform float64 on [0, 1) with 53 random bits; returns ``(new_counter, u)``."""
    counter, bits = next_u64(counter)
    return counter, float(bits >> _SHIFT_11) * _TWO_POW_M53


@nb.njit(cache=True, inline="always")
def next_uniform_open0(counter: np.uint64) -> tuple[np.uint64, float]:
    """Uniform float64 on (0, 1] (safe for ``-log(u)``); returns ``(new_counter, u)``."""
    counter, bits = next_u64(counter)
    return counter, (float(bits >> _SHIFT_11) + 1.0) * _TWO_POW_M53


def seed_from_generator(rng: np.random.Generator) -> np.uint64:
    """Draw one ``uint64`` stream seed from a numpy Generator (the serial API's entry point)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return np.uint64(rng.integers(0, 2**64, dtype=np.uint64))


def seeds_from_generator(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` independent ``uint64`` stream seeds from a numpy Generator."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.integers(0, 2**64, size=n, dtype=np.uint64)


@nb.njit(cache=True)
def uniforms(seed: np.uint64, n: int) -> np.ndarray:
    """The first ``n`` draws on [0, 1) of the stream of ``seed`` (for tests and inspection)."""
    out = np.empty(n, dtype=np.float64)
    counter = stream_from_seed(seed)
    for k in range(n):
        counter, out[k] = next_uniform(counter)
    return out


def check_seeds(seeds, n_states: int) -> np.ndarray:
    """``seeds`` as uint64 [n_states] (one stream per state); one-line ValueError otherwise."""
    seeds = np.asarray(seeds)
    if seeds.shape != (n_states,) or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be an integer array of shape ({n_states},), got "
                         f"{seeds.dtype} {seeds.shape}")
    if np.issubdtype(seeds.dtype, np.signedinteger) and np.any(seeds < 0):
        raise ValueError("seeds must be non-negative integers (uint64 range)")
    return seeds.astype(np.uint64)
