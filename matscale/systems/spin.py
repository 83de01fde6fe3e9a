"""Lattice spin systems with exact continuous-time Glauber dynamics.

Both systems live on an ``L x L`` array of spins s = +-1 (``int8``), in reduced units
(k_B = 1, energies in units of J). The dynamics is heat-bath Glauber: site i flips with rate
``1 / (1 + exp(beta * dE_i))`` (unit attempt rate per spin), so time is measured in Glauber
units (one attempt per spin per unit). Events are drawn rejection-free from the exact rates
(n-fold way, O(1) per event; see :mod:`matscale.systems._glauber`).

* :class:`CurieWeiss` -- all-to-all coupling J/N, N = L**2:
  H = -(J / 2N) (sum s)^2 - h sum s,  dE_i = 2 s_i [J (S - s_i) / N + h].
* :class:`Ising2D` -- nearest-neighbour square lattice, periodic:
  H = -J sum_<ij> s_i s_j - h sum s,  dE_i = 2 s_i (J sum_nn s_j + h).

Measured choices of the pipeline for these models
--------------------------------------------------
* Partial evolution uses a short duration δt, not the paper's p**2 events: a rejection-free
  chain stopped after n events is distributed as π·R/<R>, which biases the increment (Ising
  T=2.5, h=0.1, L=32, p=8, 3000 equilibrium samples: n_events=64 gives E[delta] =
  (−0.035, +0.017) ± (0.003, 0.0015) for (m, ρ_dw); duration=6, the same mean δt, gives
  (−0.003, −0.0004), zero within noise; tests/test_partial.py). Curie–Weiss: the patch
  magnetization relaxes in the frozen global field within τ ≈ 1, so δt = 0.05 keeps the bias at
  2.5 % (the paper's one-sweep step, δt ≈ 2.6, underestimates the drift by ~60 %). Ising: m
  relaxes slowly (τ ≈ 20) and ρ_dw near its quasi-equilibrium in τ ≈ 2, so δt = 0.2 is short
  for both (the decay of ρ_dw right after a random start, τ ≈ 0.8, comes out ~12 % slow); the
  longer step gives 4x less noise per pair than δt = 0.05.
* LocalRelax windows run for a fixed time, not a fixed event count (Ising T=2.5, 8x8 windows:
  m drops from 0.705 to 0.664 with window**2 events).
* Tiling, not the paper's duplication: on Ising T=2.5, h=0.1, 16^2 -> 64^2 with the default
  relaxation, tiling reproduces the direct 64^2 means of m and ρ_dw within noise and S(k) within
  ~10 %, while duplication leaves m low by ~0.09 and S(k) at small k several times too large
  (tests/test_upsampling.py).

Regions and boundaries follow :mod:`matscale.systems.base`: a region is
``(row0, col0, height, width)`` with indices wrapping modulo L. ``boundary="frozen"`` keeps the
exterior fixed (Curie-Weiss: the exterior keeps contributing to the global field, normalised by
the whole N); ``"periodic"`` evolves the window as an isolated periodic box.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numba as nb
import numpy as np

from matscale.systems import _glauber
from matscale.systems._rng import seed_from_generator, check_seeds as _check_seeds
from matscale.systems.base import Region

BOUNDARIES = ("frozen", "periodic")
_NO_EVENT_LIMIT = np.int64(2**62)
_THREADING_MIN_SITES = 1 << 16


# --------------------------------------------------------------------------------------------
# Argument validation (one-line errors naming the field and the allowed range)
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _all_plus_minus_one(flat: np.ndarray) -> bool:
    """True when every entry of the int8 array is +1 or -1 (one pass, no temporaries: the
    check runs on every call of the kernels, on batches of 1024² states). As bytes, +1 and -1
    are 1 and 255: adding 1 gives 2 and 0, the only bytes with no bit set outside bit 1, so
    OR-ing (byte + 1) & 0xFD over a block is zero exactly when the block is all ±1 (a loop
    without branches that the compiler vectorises)."""
    data = flat.view(np.uint8)
    block = 1 << 16
    for start in range(0, data.size, block):
        acc = np.uint8(0)
        for i in range(start, min(start + block, data.size)):
            acc |= np.uint8(data[i] + np.uint8(1)) & np.uint8(0xFD)
        if acc != 0:
            return False
    return True


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_real(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0.0):
        allowed = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def _check_budget(duration, n_events) -> tuple[np.int64, float]:
    """Exactly one of duration / n_events -> (max_events, t_end) for the kernels."""
    if (duration is None) == (n_events is None):
        raise ValueError("give exactly one of duration (time >= 0) or n_events (integer >= 0)")
    if n_events is not None:
        return np.int64(_check_int("n_events", n_events, 0)), math.inf
    if isinstance(duration, bool) or not isinstance(duration, Real):
        raise TypeError(f"duration must be a finite real number >= 0, got {duration!r}")
    duration = float(duration)
    if not math.isfinite(duration) or duration < 0.0:
        raise ValueError(f"duration must be a finite real number >= 0, got {duration}")
    return _NO_EVENT_LIMIT, duration


def _check_not_frozen(system, elapsed: np.ndarray, n_events, states: np.ndarray) -> None:
    """Under an event budget, a window whose total flip rate reached 0 (every rate underflowed:
    a ground state at tiny T, or a field |h| that pins every spin) returns an infinite elapsed
    time from the kernels. That is an error, as in the alloy kMC: the event budget cannot be
    spent. With a duration a frozen state simply waits (elapsed = duration)."""
    if n_events is None:
        return
    bad = np.argwhere(~np.isfinite(elapsed))
    if bad.size == 0:
        return
    b, w = (int(i) for i in bad[0])
    where = f"configuration {b}" + (f", window {w}" if elapsed.shape[1] > 1 else "")
    m = float(np.asarray(states[b], dtype=np.float64).mean())
    raise RuntimeError(f"{type(system).__name__} evolve: no spin can flip ({where}, m = {m:+.4f}; total flip rate "
                       f"0 at T={system.T:g}, h={system.h:g}, J={system.J:g}) before n_events={int(n_events)} "
                       f"were done; use duration= (a frozen state then waits) or a higher T / smaller |h|")


def _check_boundary(boundary) -> bool:
    """Returns True for "periodic"."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    return boundary == "periodic"


def _use_threads(states: np.ndarray, height: int, width: int) -> bool:
    """Parallel kernel only for batches big enough to amortise waking the thread pool
    (on a loaded machine an OpenMP start costs up to ~10 ms). Results are identical either way.
    """
    return states.shape[0] >= 2 and states.shape[0] * height * width >= _THREADING_MIN_SITES




# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------
class _GlauberSpinSystem:
    """Common parameters, validation, the serial/batched evolve front ends and the
    :class:`~matscale.systems.base.MicroscopicSystem` protocol (states ``int8 [L, L]``)."""

    grid_dim = 2
    cell_shape: tuple[int, ...] = ()
    state_dtype = np.int8
    time_unit = "Glauber time"
    site_unit = "spin (+1/-1)"
    parameter_name = None
    observable_names: tuple[str, ...] = ("m", "rho_dw")
    observable_units: tuple[str, ...] = ("1", "1")

    def __init__(self, L: int, T: float, h: float = 0.0, J: float = 1.0) -> None:
        self.L = _check_int("L", L, 2)
        self.T = _check_real("T", T, positive=True)
        self.h = _check_real("h", h)
        self.J = _check_real("J", J)
        self.beta = 1.0 / self.T
        self.n_sites = self.L * self.L

    def __repr__(self) -> str:
        return f"{type(self).__name__}(L={self.L}, T={self.T}, h={self.h}, J={self.J})"

    # -- the system protocol -------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Sites per axis (the protocol's cells per grid axis)."""
        return self.L

    def resized(self, size: int) -> "_GlauberSpinSystem":
        """The same model (T, h, J) on an ``size x size`` box."""
        return self if size == self.L else type(self)(size, self.T, h=self.h, J=self.J)

    def at(self, parameter: float) -> "_GlauberSpinSystem":
        """Spin models are not parameter-conditioned in the pipeline."""
        raise ValueError(f"{type(self).__name__} has no conditioning parameter")

    #: the paper's test errors (arXiv 2511.12842, 20 paths, L = 64, h = 0.1, J = 1) at its
    #: temperature, per n_s: (ours, naive); set by the subclasses
    _PUBLISHED: tuple[float, dict[int, tuple[float, float]]] | None = None

    def published_results(self) -> str | None:
        """The published test errors of this exact setting, as one sentence (None elsewhere)."""
        if self._PUBLISHED is None:
            return None
        T, table = self._PUBLISHED
        if (self.L, self.T, self.h, self.J) != (64, T, 0.1, 1.0):
            return None
        cells = "; ".join(f"n_s = {n}: {ours:.2e} (ours), {naive:.2e} (naive)"
                          for n, (ours, naive) in sorted(table.items()))
        return (f"Published test errors at this setting (arXiv 2511.12842, 20 paths per side): "
                f"{cells}.")

    def metadata(self) -> dict:
        """Class name and (L, T, h, J)."""
        # the first matscale class of the MRO: a user subclass that only instruments a
        # matscale system records the physics it runs
        cls = next(c for c in type(self).__mro__ if c.__module__.startswith("matscale."))
        return {"class": cls.__name__, "L": self.L, "T": self.T, "h": self.h, "J": self.J}

    def random_states(self, n: int, rng: np.random.Generator, condition: float | None = None
                      ) -> np.ndarray:
        """``n`` states from :meth:`random_state` drawn in turn from ``rng``; ``condition`` is
        the initial magnetization (None: each m0 ~ U(-1, 1))."""
        return np.stack([self.random_state(rng, magnetization=condition)
                         for _ in range(int(n))]).astype(np.int8)

    def observables(self, states: np.ndarray) -> np.ndarray:
        """``float64 [B, d]``: (m, rho_dw) for Ising2D, (m,) for CurieWeiss."""
        from matscale.observables import spin_observables

        phi = np.asarray(spin_observables(states), dtype=np.float64)
        return phi[..., : len(self.observable_names)]

    def block_observable_sums(self, states: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
        """``float64 [B, d]``: L² times the shares of the observables that involve a site of the
        block of side ``size`` at ``origins [B, 2]`` (periodic): the spins of the block for m,
        and half of every broken bond with an end in the block for rho_dw. Changing only the
        block's spins changes the observables by the change of these sums over L²; the partial
        evolution of a 1024² box then costs its patch, not the box."""
        from matscale import geometry

        states = np.asarray(states)
        L, d = states.shape[1], len(self.observable_names)
        if size + 2 > L:  # a halo that wraps onto the block itself: take the whole box
            return self.observables(states) * float(L * L)
        halo = np.sign(geometry.extract_blocks(states, np.asarray(origins) - 1, size + 2, 2)).astype(np.int8)
        inner = halo[:, 1:-1, 1:-1]
        sums = [inner.sum(axis=(1, 2), dtype=np.int64).astype(np.float64)]
        if d > 1:
            across = (halo[:, 1:-1, :-1] != halo[:, 1:-1, 1:]).sum(axis=(1, 2), dtype=np.int64)
            down = (halo[:, :-1, 1:-1] != halo[:, 1:, 1:-1]).sum(axis=(1, 2), dtype=np.int64)
            sums.append(0.5 * (across + down))
        return np.stack(sums, axis=1)

    def order_parameter(self, states: np.ndarray) -> np.ndarray:
        """The magnetization of each state ``float64 [B]`` (tiles are matched on it)."""
        states = np.asarray(states)
        return states.reshape(len(states), -1).mean(axis=1, dtype=np.float64)

    def conserve(self, states: np.ndarray, rng: np.random.Generator) -> None:
        """Glauber dynamics conserves nothing: tiled states need no repair."""

    site_classes = 2

    def site_class_index(self, states: np.ndarray) -> np.ndarray:
        """Site classes ``int64`` (same shape) of spin states: −1 -> 0, +1 -> 1 (ValueError
        for any other value)."""
        states = np.asarray(states)
        if np.any((states != 1) & (states != -1)):
            raise ValueError("spin states must hold +1 or -1 only")
        return (states > 0).astype(np.int64)

    @staticmethod
    def structure_factor(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radially averaged S(k) of spin states (upsampling diagnostics)."""
        from matscale.observables import structure_factor

        return structure_factor(states)

    # -- states --------------------------------------------------------------------------------
    def random_state(self, rng: np.random.Generator, magnetization: float | None = None
                     ) -> np.ndarray:
        """A random ``int8 [L, L]`` configuration.

        With ``magnetization`` m0 in [-1, 1], exactly floor((1 + m0) N / 2) spins are up, at
        uniformly shuffled sites; with None, m0 is first drawn from U(-1, 1).
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if magnetization is None:
            m0 = rng.uniform(-1.0, 1.0)
        else:
            m0 = _check_real("magnetization", magnetization)
            if not -1.0 <= m0 <= 1.0:
                raise ValueError(f"magnetization must be in [-1, 1], got {m0}")
        n_up = int(math.floor((1.0 + m0) * self.n_sites / 2.0))
        flat = np.full(self.n_sites, -1, dtype=np.int8)
        flat[:n_up] = 1
        rng.shuffle(flat)
        return flat.reshape(self.L, self.L)

    def _check_spins(self, state, name: str, ndim: int | None, expected: str) -> np.ndarray:
        """int8 array of shape (..., L, L) (exactly ``ndim`` axes unless None) holding ±1."""
        if not isinstance(state, np.ndarray) or state.dtype != np.int8:
            got = f"{type(state).__name__} {getattr(state, 'dtype', '')}".strip()
            raise TypeError(f"{name} must be an int8 numpy array of shape (..., {self.L}, "
                            f"{self.L}), got {got}")
        if (state.ndim < 2 or (ndim is not None and state.ndim != ndim)
                or state.shape[-2:] != (self.L, self.L)):
            raise ValueError(f"{name} must have shape {expected}, got {state.shape}")
        if not _all_plus_minus_one(state.reshape(-1) if state.flags.c_contiguous else state.ravel()):
            raise ValueError(f"{name} entries must be +1 or -1")
        return state

    def _check_state(self, state, name: str = "state", batched: bool = False) -> np.ndarray:
        expected = f"(B, {self.L}, {self.L})" if batched else f"({self.L}, {self.L})"
        self._check_spins(state, name, 3 if batched else 2, expected)
        if not state.flags.c_contiguous or not state.flags.writeable:
            raise ValueError(f"{name} must be a writeable C-contiguous array (evolved in place)")
        return state

    def generator_moments(self, states) -> tuple[np.ndarray, np.ndarray]:
        """Exact instantaneous drift and diffusion of the macroscopic observables.

        For a microstate x the Glauber generator gives b(x) = Σ_i w_i Δz_i (the drift d⟨z⟩/dt,
        in observable units per Glauber time) and a(x) = Σ_i w_i Δz_i Δz_iᵀ (the diffusion
        matrix σσᵀ, per Glauber time), summed over all single flips i with rate w_i and change
        Δz_i of the observables z (Ising2D: (m, ρ_dw); CurieWeiss: (m,)). No sampling noise: the
        reference against which partial-evolution data and a fitted SDE can be checked (a fitted
        μ(z) estimates the mean of b over the microstates with that z).

        ``states`` int8 [..., L, L]; returns ``(drift [..., d], diffusion [..., d, d])``.
        """
        states = self._check_spins(states, "states", None, f"(..., {self.L}, {self.L})")
        batch, lead = states.reshape(-1, self.L, self.L), states.shape[:-2]
        rates, changes = self._flip_rates_and_changes(batch)          # [B, N], [B, N, d]
        drift = np.einsum("bn,bnk->bk", rates, changes)
        diffusion = np.einsum("bn,bnk,bnl->bkl", rates, changes, changes)
        d = changes.shape[-1]
        return drift.reshape(*lead, d), diffusion.reshape(*lead, d, d)

    def _flip_rates_and_changes(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check_region(self, region) -> Region:
        if region is None:
            return (0, 0, self.L, self.L)
        if not isinstance(region, (tuple, list, np.ndarray)) or len(region) != 4:
            raise ValueError(f"region must be (row0, col0, height, width), got {region!r}")
        row0, col0, height, width = region
        for name, value in (("region row0", row0), ("region col0", col0)):
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"{name} must be an integer (wrapped modulo L), got {value!r}")
        row0, col0 = int(row0) % self.L, int(col0) % self.L
        height = _check_int("region height", height, 1)
        width = _check_int("region width", width, 1)
        if height > self.L or width > self.L:
            raise ValueError(f"region height/width must be in [1, L={self.L}], got "
                             f"{height}x{width}")
        return (row0, col0, height, width)

    def _check_size(self, size, periodic: bool) -> tuple[int, int]:
        if isinstance(size, Integral) and not isinstance(size, bool):
            size = (size, size)
        if not isinstance(size, (tuple, list, np.ndarray)) or len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        height = _check_int("size height", size[0], 1)
        width = _check_int("size width", size[1], 1)
        if height > self.L or width > self.L:
            raise ValueError(f"size must be within [1, L={self.L}] per axis, got "
                             f"{height}x{width}")
        return height, width

    # -- public evolve API -----------------------------------------------------------------------
    def evolve(self, state: np.ndarray, *, duration: float | None = None,
               n_events: int | None = None, region: Region | None = None,
               boundary: str = "frozen", rng: np.random.Generator
               ) -> tuple[np.ndarray, float]:
        """Exact Glauber evolution of ``state`` in place; returns ``(state, elapsed_time)``.

        Exactly one of ``duration`` (Glauber time units) or ``n_events`` (number of flips).
        With ``duration`` the elapsed time equals the duration. ``region`` = (row0, col0,
        height, width) restricts the dynamics (see the module docstring for ``boundary``).
        One uint64 stream seed is drawn from ``rng``. Raises RuntimeError (one line) when
        ``n_events`` cannot be spent because no spin can flip any more (every flip rate 0).
        """
        state = self._check_state(state)
        max_events, t_end = _check_budget(duration, n_events)
        periodic = _check_boundary(boundary)
        row0, col0, height, width = self._check_region(region)
        self._check_size((height, width), periodic)
        seed = seed_from_generator(rng)
        origins = np.array([[[row0, col0]]], dtype=np.int64)
        elapsed = self._run_windows(state[None], origins, height, width, periodic,
                                    max_events, t_end, np.array([seed], dtype=np.uint64))
        _check_not_frozen(self, elapsed, n_events, state[None])
        return state, float(elapsed[0, 0])

    def evolve_windows(self, states: np.ndarray, origins, size, *, n_events: int | None = None,
                       duration: float | None = None, boundary: str = "frozen", seeds
                       ) -> np.ndarray:
        """Batched window evolution in one compiled call; returns elapsed float64 [B, W].

        ``states`` int8 [B, L, L] is modified in place. ``origins`` int [B, W, 2] holds the
        (row0, col0) of W windows of shape ``size`` = (height, width) per configuration; they
        run sequentially in the given order, each for ``n_events`` events or ``duration``.
        Configurations run in parallel; configuration b uses the stream of ``seeds[b]``
        (uint64), so results do not depend on the thread count. With ``n_events``, a window in
        which no spin can flip any more raises RuntimeError (the states are evolved as far as
        they got).
        """
        states = self._check_state(states, "states", batched=True)
        max_events, t_end = _check_budget(duration, n_events)
        periodic = _check_boundary(boundary)
        height, width = self._check_size(size, periodic)
        origins = np.asarray(origins)
        n_conf = states.shape[0]
        if (origins.ndim != 3 or origins.shape[0] != n_conf or origins.shape[2] != 2
                or not np.issubdtype(origins.dtype, np.integer)):
            raise ValueError(f"origins must be an integer array of shape ({n_conf}, W, 2), got "
                             f"{origins.dtype} {origins.shape}")
        origins = np.ascontiguousarray(origins % self.L, dtype=np.int64)
        seeds = _check_seeds(seeds, n_conf)
        elapsed = self._run_windows(states, origins, height, width, periodic, max_events, t_end,
                                    seeds)
        _check_not_frozen(self, elapsed, n_events, states)
        return elapsed

    def evolve_batch(self, states: np.ndarray, *, n_events: int | None = None,
                     duration: float | None = None, seeds) -> np.ndarray:
        """Evolve B independent replicas of the whole box; returns elapsed float64 [B]."""
        n_conf = states.shape[0] if isinstance(states, np.ndarray) and states.ndim == 3 else 0
        origins = np.zeros((n_conf, 1, 2), dtype=np.int64)
        elapsed = self.evolve_windows(states, origins, (self.L, self.L), n_events=n_events,
                                      duration=duration, boundary="frozen", seeds=seeds)
        return elapsed[:, 0]

    def _run_windows(self, states, origins, height, width, periodic, max_events, t_end, seeds):
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# The two systems
# --------------------------------------------------------------------------------------------
class CurieWeiss(_GlauberSpinSystem):
    """Curie-Weiss (mean-field) Ising model of N = L**2 spins with all-to-all coupling J/N.

    H = -(J / 2N) (sum s)^2 - h sum s. Parameters: ``L`` (int >= 2, side of the index grid; the
    geometry is irrelevant to the energy), ``T`` (temperature, > 0), ``h`` (field), ``J``.
    Attributes ``L, T, h, J, beta, n_sites``.
    """

    observable_names = ("m",)
    observable_units = ("1",)
    _PUBLISHED = (1.1, {64: (4.38e-3, 1.26e-2), 256: (1.06e-3, 2.53e-3), 1024: (7.85e-4, 1.01e-3),
                        4096: (4.05e-4, 4.08e-4)})

    def __init__(self, L: int, T: float, h: float = 0.0, J: float = 1.0) -> None:
        super().__init__(L, T, h, J)
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rate_tables(self, n_field: int) -> tuple[np.ndarray, np.ndarray]:
        """(rate_up, rate_down) by total up count 0..n_field, cached per field population."""
        if n_field not in self._tables:
            self._tables[n_field] = _glauber.cw_rate_tables(self.beta, self.J, self.h, n_field)
        return self._tables[n_field]

    def flip_rates(self, total_spin: int, n_field: int | None = None) -> tuple[float, float]:
        """Exact rates (up spin, down spin) at total spin S of a field population n_field."""
        n_field = self.n_sites if n_field is None else n_field
        de_up = 2.0 * (self.J * (total_spin - 1) / n_field + self.h)
        de_down = -2.0 * (self.J * (total_spin + 1) / n_field + self.h)
        rates = _glauber._heat_bath(self.beta * np.array([de_up, de_down]))
        return float(rates[0]), float(rates[1])

    def _flip_rates_and_changes(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rates [B, N] of every single flip and the change of m it makes [B, N, 1]."""
        spins = batch.reshape(len(batch), -1).astype(np.float64)
        n = self.n_sites
        up_count = (spins > 0).sum(axis=1)
        rate_up, rate_down = self.rate_tables(n)
        rates = np.where(spins > 0, rate_up[up_count][:, None], rate_down[up_count][:, None])
        return rates, (-2.0 * spins / n)[..., None]

    def _run_windows(self, states, origins, height, width, periodic, max_events, t_end, seeds):
        n_field = height * width if periodic else self.n_sites
        rate_up, rate_down = self.rate_tables(n_field)
        kernel = (_glauber.cw_evolve_windows if _use_threads(states, height, width)
                  else _glauber.cw_evolve_windows_serial)
        return kernel(states, origins, height, width, not periodic, rate_up, rate_down,
                      max_events, t_end, seeds)


class Ising2D(_GlauberSpinSystem):
    """Nearest-neighbour Ising model on a periodic ``L x L`` square lattice.

    H = -J sum_<ij> s_i s_j - h sum s. Parameters: ``L`` (int >= 2), ``T`` (> 0), ``h``, ``J``.
    Attributes ``L, T, h, J, beta, n_sites``.
    """

    _PUBLISHED = (2.5, {64: (2.84e-2, 1.31e-1), 256: (7.98e-4, 3.20e-2), 1024: (4.50e-4, 1.29e-3),
                        4096: (1.95e-3, 2.09e-3)})

    #: a window's frozen-boundary dynamics reads one cell of its exterior (nearest neighbours)
    window_halo = 1

    def __init__(self, L: int, T: float, h: float = 0.0, J: float = 1.0) -> None:
        super().__init__(L, T, h, J)
        self.class_rates = _glauber.ising_class_rates(self.beta, self.J, self.h)
        self._topologies: dict[tuple[int, int, bool], np.ndarray] = {}

    def evolve_windows_torch(self, states: np.ndarray, origins, size: int, *, duration: float,
                             seed: int = 0, device: str = "cuda") -> np.ndarray:
        """Frozen-exterior window evolution of many states at once with torch on ``device``
        (a GPU path for batched partial evolution; CPU stays :meth:`evolve_windows`).

        ``states`` int8 [B, L, L] (modified in place), ``origins`` int [B, 2] (one square window
        of side ``size`` per state), ``duration`` in Glauber time. Exact in law, by
        uniformisation: every window site attempts flips at rate 1 (a Poisson number of
        attempts with mean size²·duration per state, each at a uniformly drawn window site),
        and an attempt flips the spin with the Glauber probability 1 / (1 + exp(β ΔE)) ≤ 1,
        so each spin flips at its Glauber rate. The random numbers come from one torch
        generator seeded with ``seed``: the law is the numba kernel's, the paths are not.
        """
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
        states = self._check_state(states, "states", batched=True)
        side = _check_int("size", size, 1)
        if side > self.L:
            raise ValueError(f"size must be within [1, L={self.L}], got {side}")
        origins = np.asarray(origins)
        if origins.shape != (len(states), 2) or not np.issubdtype(origins.dtype, np.integer):
            raise ValueError(f"origins must be an integer array of shape ({len(states)}, 2), got {origins.shape}")
        if not float(duration) > 0:
            raise ValueError(f"duration must be > 0, got {duration}")
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        spins = torch.as_tensor(states, device=dev).to(torch.float32)
        B, L = spins.shape[0], self.L
        rows0 = torch.as_tensor(origins[:, 0] % L, device=dev)
        cols0 = torch.as_tensor(origins[:, 1] % L, device=dev)
        n_attempts = torch.poisson(torch.full((B,), side * side * float(duration), device=dev), generator=gen)
        batch = torch.arange(B, device=dev)
        for k in range(int(n_attempts.max().item()) if B else 0):
            active = n_attempts > k
            r = (rows0 + torch.randint(0, side, (B,), device=dev, generator=gen)) % L
            c = (cols0 + torch.randint(0, side, (B,), device=dev, generator=gen)) % L
            s_i = spins[batch, r, c]
            field = (spins[batch, (r + 1) % L, c] + spins[batch, (r - 1) % L, c]
                     + spins[batch, r, (c + 1) % L] + spins[batch, r, (c - 1) % L])
            delta_e = 2.0 * s_i * (self.J * field + self.h)
            flip = active & (torch.rand(B, device=dev, generator=gen) < torch.sigmoid(-self.beta * delta_e))
            spins[batch, r, c] = torch.where(flip, -s_i, s_i)
        states[:] = spins.to(torch.int8).cpu().numpy()
        return states

    def _check_size(self, size, periodic: bool) -> tuple[int, int]:
        height, width = super()._check_size(size, periodic)
        if periodic and min(height, width) < 2:
            raise ValueError(f"a periodic Ising window needs height, width >= 2, got "
                             f"{height}x{width}")
        return height, width

    def _neighbours(self, height: int, width: int, periodic: bool) -> np.ndarray:
        key = (height, width, periodic)
        if key not in self._topologies:
            self._topologies[key] = _glauber.window_neighbours(self.L, height, width, periodic)
        return self._topologies[key]

    def _flip_rates_and_changes(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rates [B, N] of every single flip and the changes of (m, ρ_dw) it makes [B, N, 2]:
        Δm = −2 s_i / N, Δρ_dw = s_i n_i / 2N (n_i = neighbour sum; 2N bonds)."""
        s = batch.astype(np.int64)
        nsum = (np.roll(s, 1, -1) + np.roll(s, -1, -1) + np.roll(s, 1, -2) + np.roll(s, -1, -2))
        classes = 5 * (s > 0) + (nsum + 4) // 2
        n = self.n_sites
        rates = self.class_rates[classes].reshape(len(batch), -1)
        changes = np.stack([-2.0 * s / n, s * nsum / (2.0 * n)], axis=-1)
        return rates, changes.reshape(len(batch), n, 2)

    def _run_windows(self, states, origins, height, width, periodic, max_events, t_end, seeds):
        nbr = self._neighbours(height, width, periodic)
        kernel = (_glauber.ising_evolve_windows if _use_threads(states, height, width)
                  else _glauber.ising_evolve_windows_serial)
        return kernel(states, origins, height, width, nbr, self.class_rates, max_events, t_end,
                      seeds)


# --------------------------------------------------------------------------------------------
# Straightforward O(N)-per-event reference (tests and benchmark baseline)
# --------------------------------------------------------------------------------------------
def reference_evolve(system: CurieWeiss | Ising2D, state: np.ndarray, *,
                     duration: float | None = None, n_events: int | None = None,
                     region: Region | None = None, boundary: str = "frozen",
                     seed: int = 0) -> tuple[np.ndarray, float]:
    """Same law as ``system.evolve`` with the obvious O(N)-per-event algorithm.

    Every event recomputes all rates of the active sites, forms their cumulative sum and
    searches it. Slow on purpose; used to check the n-fold kernels statistically and as the
    benchmark baseline. ``seed`` opens a stream of :mod:`matscale.systems._rng`.
    """
    state = system._check_state(state)
    max_events, t_end = _check_budget(duration, n_events)
    periodic = _check_boundary(boundary)
    row0, col0, height, width = system._check_region(region)
    rows = (row0 + np.arange(height)) % system.L
    cols = (col0 + np.arange(width)) % system.L
    beta, J, h = system.beta, system.J, system.h
    seed = np.uint64(seed)
    if periodic:  # isolated periodic window
        box = np.ascontiguousarray(state[np.ix_(rows, cols)])
        active = np.ones_like(box, dtype=np.bool_)
        if isinstance(system, Ising2D):
            t = _glauber.ising_reference(box, active, beta, J, h, max_events, t_end, seed)
        else:
            flat = box.ravel()
            t = _glauber.cw_reference(flat, active.ravel(), beta, J, h, max_events, t_end, seed)
            box = flat.reshape(box.shape)
        state[np.ix_(rows, cols)] = box
        _check_not_frozen(system, np.array([[t]]), n_events, state[None])
        return state, float(t)
    active = np.zeros(state.shape, dtype=np.bool_)
    active[np.ix_(rows, cols)] = True
    if isinstance(system, Ising2D):
        t = _glauber.ising_reference(state, active, beta, J, h, max_events, t_end, seed)
    else:
        t = _glauber.cw_reference(state.reshape(-1), active.ravel(), beta, J, h, max_events,
                                  t_end, seed)
    _check_not_frozen(system, np.array([[t]]), n_events, state[None])
    return state, float(t)
