"""The NbMoTa-type BCC alloy (vacancy kMC) as a microscopic system of the matscale pipeline.

State convention
----------------
A state of a box of ``c`` cubic cells per side is an ``int8`` array ``[c, c, c, 2]``: the site
(i, j, k, b) (b = 0 corner, 1 body centre) holds a species code, 0 = vacancy and k >= 1 =
``elements[k - 1]``. The C-order flattening is exactly the site order of
:class:`~matscale.systems.alloy.lattice.BCCLattice` (``index = 2 ((i c + j) c + k) + b``), so
``state.reshape(-1)`` is ``BCCLattice.species``. Batches are ``[B, c, c, c, 2]``; tiling, patch
extraction and windows are plain slicing on the three grid axes.

Scaled clock
------------
Times given to and returned by :class:`AlloySystem` are in the dimensionless scaled time

    τ = t · c_v · ν0 · exp(−E_clock / (k_B T)),        c_v = n_vacancies / n_sites,

t in seconds, ν0 the attempt frequency (s⁻¹) and E_clock = ``clock_barrier_eV``.
:meth:`AlloySystem.seconds` and :meth:`AlloySystem.tau` convert exactly. The vacancy
concentration enters linearly (dilute vacancies act independently), so boxes with different
vacancy counts share the clock. The default E_clock = 1.77 eV is the mean NNK barrier of all 8
hops of the vacancy in random equimolar NbMoTa (measured: 1.7722 ± 0.0007 eV, sd 0.253 eV, over
20 000 random 1024-site states). Because hops run mostly over the low barriers, the number of
hops per site per unit τ is Σ_d exp(−(E_d − E_clock)/(k_B T)) averaged over vacancy
environments: about 520 at 900 K, 55 at 1400 K and 22 at 2000 K over random equimolar
environments; along kMC runs (1024 sites, one vacancy) from the random start to the ordered
state it falls from about 240 to 43 at 900 K, 47 to 29 at 1400 K and 20 to 18 at 2000 K. So τ
is proportional to, not equal to, the number of hops per site, with a factor that depends on T
and on the state.

Partial evolution: owned vacancies
----------------------------------
:meth:`AlloySystem.evolve_windows` evolves one window (a box of cells, wrapping periodically)
of each state at a time. The vacancies on the window's sites at the start of that window's run
are the *mobile* ones; every other vacancy is frozen. The mobile vacancies' hops are NOT
confined to the window: a vacancy reaching the edge keeps moving, and any atom may be exchanged
with a mobile vacancy. Rationale: in a large dilute system over a short δt each vacancy moves
independently, so the global increment of the pair counts is the sum over vacancies of their
own contributions. Assigning each vacancy to the patch it starts in makes K·Δz_I (I uniform
among the K patches) an unbiased estimate of the global increment, E_I[K·Δz_I] = Σ_I Δz_I (up
to vacancy–vacancy encounters within δt, negligible when dilute), whereas a reflecting edge
(hops confined to the window) removes the boundary hops and biases it; a patch without a
vacancy correctly contributes 0. Measured (tests/test_alloy_system.py, 8192 sites, 8
vacancies, K = 8, δt ≈ 4 hops per vacancy): owned vacancies agree with whole-box kMC to ~1.5 %
of the drift; a reflecting edge is off by 8–10 standard errors in some components.
``boundary`` accepts only ``"frozen"`` (the exterior's vacancies are frozen). With
``n_events`` a window runs that many hops in total among its mobile vacancies.

Observables
-----------
The global Warren–Cowley α_ab^(k) of the unlike pairs a < b of the requested shells (default
first shell), in element order, shell-major (names ``alpha1_NbMo, alpha1_NbTa, alpha1_MoTa``),
equal to
:func:`matscale.systems.alloy.sro.warren_cowley`; patch shares follow
:func:`matscale.systems.alloy.sro.warren_cowley_patch_shares` (global normalisers, pairs owned
by their first site, mean over patches = global value). The like pairs are not independent
(:meth:`AlloySystem.like_pair_alpha`): for a ternary the six α span three dimensions.

Randomness: state b of a batch uses ``numpy.random.default_rng(int(seeds[b]))`` for all of its
windows in order, so its result depends only on its own seed and state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numba as nb
import numpy as np

from matscale.systems._rng import check_seeds as _check_seeds
from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, VacancyKMC
from matscale.systems.alloy.lattice import (
    DEFAULT_ELEMENTS,
    NEIGHBOR_OFFSETS,
    BCCLattice,
    _integer_counts,
    validate_elements,
)
from matscale.systems.alloy.nnk import NNKBarrierModel
from matscale.systems.alloy.sro import COORDINATION

__all__ = ["AlloySystem", "DEFAULT_CLOCK_BARRIER_EV"]

#: Mean NNK hop barrier (eV) over random equimolar NbMoTa, rounded to 0.01 eV (see module doc).
DEFAULT_CLOCK_BARRIER_EV = 1.77


# ---------------------------------------------------------------------------------- numba kernels
@nb.njit(cache=True)
def _code_counts(states: np.ndarray, n_codes: int) -> np.ndarray:
    """Number of sites holding each code, int64 [B, n_codes], of states int8 [B, N]."""
    out = np.zeros((states.shape[0], n_codes), np.int64)
    for b in range(states.shape[0]):
        for i in range(states.shape[1]):
            out[b, states[b, i]] += 1
    return out


@nb.njit(cache=True)
def _bond_counts(states: np.ndarray, half_table: np.ndarray, n_codes: int) -> np.ndarray:
    """M[b, s_i, s_j] over sites i and the half-shell neighbours j (one of each ±offset pair),
    int64 [B, n_codes, n_codes]; the ordered pair counts are M + Mᵀ."""
    out = np.zeros((states.shape[0], n_codes, n_codes), np.int64)
    for b in range(states.shape[0]):
        s = states[b]
        for i in range(s.shape[0]):
            a = s[i]
            for m in range(half_table.shape[1]):
                out[b, a, s[half_table[i, m]]] += 1
    return out


@nb.njit(cache=True)
def _patch_bond_counts(states: np.ndarray, table: np.ndarray, patch_of_site: np.ndarray, n_patches: int,
                       n_codes: int) -> np.ndarray:
    """Ordered pair counts owned by each patch (pair (i, j) belongs to i's patch),
    int64 [B, n_patches, n_codes, n_codes]."""
    out = np.zeros((states.shape[0], n_patches, n_codes, n_codes), np.int64)
    for b in range(states.shape[0]):
        s = states[b]
        for i in range(s.shape[0]):
            a = s[i]
            p = patch_of_site[i]
            for m in range(table.shape[1]):
                out[b, p, a, s[table[i, m]]] += 1
    return out


# ---------------------------------------------------------------------------------- validation
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, allowed: str, low: float, low_inclusive: bool) -> float:
    """Finite real >= low (or > low); ValueError naming ``name`` and ``allowed`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if value < low or (value == low and not low_inclusive):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _check_composition(composition: Mapping[str, float] | None, elements: tuple[str, ...]) -> dict[str, float]:
    """Fractions per element (all elements, each in (0, 1], summing to 1 within 1e-6)."""
    if composition is None:
        return {el: 1.0 / len(elements) for el in elements}
    if not isinstance(composition, Mapping):
        raise ValueError(f"composition must be a dict element -> fraction or None, got {type(composition).__name__}")
    unknown = [el for el in composition if el not in elements]
    if unknown:
        raise ValueError(f"composition has element {unknown[0]!r} not in elements {elements}")
    fractions = {el: composition.get(el, 0.0) for el in elements}
    for el, f in fractions.items():
        if isinstance(f, bool) or not isinstance(f, Real) or not 0.0 < float(f) <= 1.0:
            raise ValueError(f"composition fractions must lie in (0, 1] for every element, got {el}: {f!r}")
    total = sum(float(f) for f in fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"composition fractions must sum to 1, got {total:.6g}")
    return {el: float(f) for el, f in fractions.items()}


def _check_shells(shells: Any) -> tuple[int, ...]:
    message = f"shells must be a non-empty tuple of distinct shells from (1, 2, 3), got {shells!r}"
    try:
        values = tuple(shells)
    except TypeError:
        raise ValueError(message) from None
    if (not values or len(set(values)) != len(values)
            or any(isinstance(s, bool) or not isinstance(s, Integral) or s not in COORDINATION for s in values)):
        raise ValueError(message)
    return tuple(int(s) for s in values)


def _check_budget(duration: Any, n_events: Any) -> tuple[float | None, int | None]:
    """Exactly one of duration (scaled time >= 0) or n_events (integer >= 0)."""
    if (duration is None) == (n_events is None):
        raise ValueError("give exactly one of duration (scaled time tau >= 0) or n_events (integer >= 0)")
    if n_events is not None:
        return None, _check_int("n_events", n_events, 0)
    return _check_real("duration", duration, "a finite scaled time tau >= 0", 0.0, True), None




def _half_offsets(shell: int) -> np.ndarray:
    """Column indices of ``NEIGHBOR_OFFSETS[shell]`` whose first non-zero entry is positive
    (one offset of each ± pair)."""
    offsets = NEIGHBOR_OFFSETS[shell]
    keep = [m for m, o in enumerate(offsets) if o[np.flatnonzero(o)[0]] > 0]
    return np.array(keep, dtype=np.int64)


class _Shared:
    """Geometry tables shared by all systems derived from one another (``resized``, ``at``):
    one :class:`BCCLattice` per box size (neighbour tables cached on it), half-shell
    neighbour tables and patch maps."""

    def __init__(self, lattice_constant: float, elements: tuple[str, ...]) -> None:
        self.lattice_constant = lattice_constant
        self.elements = elements
        self._lattices: dict[int, BCCLattice] = {}
        self._half_tables: dict[tuple[int, int], np.ndarray] = {}
        self._patch_maps: dict[tuple[int, int], np.ndarray] = {}

    def lattice(self, cells: int) -> BCCLattice:
        lattice = self._lattices.get(cells)
        if lattice is None:
            lattice = BCCLattice(cells, self.lattice_constant, self.elements)
            self._lattices[cells] = lattice
        return lattice

    def half_table(self, cells: int, shell: int) -> np.ndarray:
        key = (cells, shell)
        table = self._half_tables.get(key)
        if table is None:
            table = np.ascontiguousarray(self.lattice(cells).neighbors(shell)[:, _half_offsets(shell)])
            self._half_tables[key] = table
        return table

    def patch_of_site(self, cells: int, p: int) -> np.ndarray:
        """Patch index int64 [N] of every site; patch k has origin unravel_index(k, (c/p,)*3) * p."""
        key = (cells, p)
        table = self._patch_maps.get(key)
        if table is None:
            n = cells // p
            r = np.arange(cells) // p
            per_cell = (r[:, None, None] * n + r[None, :, None]) * n + r[None, None, :]
            table = np.repeat(per_cell.reshape(-1), 2).astype(np.int64)
            self._patch_maps[key] = table
        return table


# ---------------------------------------------------------------------------------- the system
class AlloySystem:
    """Vacancy-kMC BCC alloy (default NbMoTa with NNK barriers) implementing the system protocol.

    Parameters
    ----------
    cells : cubic cells per box side c (state ``[c, c, c, 2]``, ``2 c³`` sites).
    temperature_K : temperature T in K (> 0).
    barrier_model : vacancy-hop barrier model (``hop_barriers``, ``interaction_range``); default
        a new :class:`NNKBarrierModel`. Shared (same object) by :meth:`resized` and :meth:`at`.
    elements : chemical symbols of the codes 1, 2, ... (default Nb, Mo, Ta).
    composition : atomic fraction per element (dict, each in (0, 1], sum 1); default equimolar.
    vacancy_fraction : vacancies per site; the box holds round(vacancy_fraction · n_sites)
        vacancies, which must be 1 .. n_sites − 1.
    lattice_constant : cubic lattice constant a in Å.
    nu0 : attempt frequency ν0 in s⁻¹.
    clock_barrier_eV : E_clock of the scaled clock (module docstring), in eV.
    shells : neighbour shells of the Warren–Cowley observables (subset of (1, 2, 3)).
    """

    grid_dim: int = 3
    cell_shape: tuple[int, ...] = (2,)
    state_dtype = np.int8
    parameter_name: str = "temperature_K"

    def __init__(
        self,
        cells: int,
        temperature_K: float,
        *,
        barrier_model: Any = None,
        elements: Sequence[str] = DEFAULT_ELEMENTS,
        composition: Mapping[str, float] | None = None,
        vacancy_fraction: float = 1.0 / 1024.0,
        lattice_constant: float = 3.24,
        nu0: float = 1e13,
        clock_barrier_eV: float = DEFAULT_CLOCK_BARRIER_EV,
        shells: tuple[int, ...] = (1,),
        _shared: _Shared | None = None,
    ) -> None:
        self.size = _check_int("cells", cells, 1)
        self.temperature_K = _check_real("temperature_K", temperature_K, "a finite temperature > 0 K", 0.0, False)
        if isinstance(elements, str):
            raise ValueError(f"elements must be a sequence of chemical symbols, got the string {elements!r}")
        try:
            self.elements = validate_elements(elements)
        except TypeError as error:
            raise ValueError(str(error)) from None
        self.composition = _check_composition(composition, self.elements)
        self.vacancy_fraction = _check_real("vacancy_fraction", vacancy_fraction, "a fraction in (0, 1)", 0.0, False)
        if self.vacancy_fraction >= 1.0:
            raise ValueError(f"vacancy_fraction must be a fraction in (0, 1), got {vacancy_fraction!r}")
        self.lattice_constant = _check_real("lattice_constant", lattice_constant, "a finite length > 0 Å", 0.0, False)
        self.nu0 = _check_real("nu0", nu0, "a finite attempt frequency > 0 s^-1", 0.0, False)
        self.clock_barrier_eV = _check_real("clock_barrier_eV", clock_barrier_eV, "a finite energy >= 0 eV", 0.0, True)
        self.shells = _check_shells(shells)
        n_sites = 2 * self.size**3
        self.n_vacancies = int(round(self.vacancy_fraction * n_sites))
        if not 1 <= self.n_vacancies <= n_sites - 1:
            raise ValueError(
                f"vacancy_fraction={self.vacancy_fraction:g} gives {self.n_vacancies} vacancies in {n_sites} sites "
                f"(cells={self.size}); it must give 1..{n_sites - 1}"
            )
        self.barrier_model = NNKBarrierModel() if barrier_model is None else barrier_model
        if not hasattr(self.barrier_model, "hop_barriers") or not hasattr(self.barrier_model, "interaction_range"):
            raise ValueError("barrier_model must implement hop_barriers(lattice, vacancy_sites) and interaction_range")
        if _shared is None or _shared.lattice_constant != self.lattice_constant or _shared.elements != self.elements:
            _shared = _Shared(self.lattice_constant, self.elements)
        self._shared = _shared
        if hasattr(self.barrier_model, "check_lattice"):
            self.barrier_model.check_lattice(self._lattice)
        self._kmc = VacancyKMC(None, self.barrier_model, self.temperature_K, self.nu0)
        self._atom_counts = _integer_counts(self.composition, self.elements, n_sites - self.n_vacancies)
        if np.any(self._atom_counts == 0):
            raise ValueError(f"composition gives no atom of some element in {n_sites} sites (cells={self.size}); "
                             "every element needs at least one atom")

    # ----------------------------------------------------------------- description
    @property
    def state_shape(self) -> tuple[int, int, int, int]:
        """Shape (c, c, c, 2) of one state."""
        return (self.size, self.size, self.size, 2)

    @property
    def n_sites(self) -> int:
        """Lattice sites 2 c³."""
        return 2 * self.size**3

    @property
    def site_unit(self) -> str:
        names = ", ".join(f"{k + 1} = {el}" for k, el in enumerate(self.elements))
        return f"species code (int8): 0 = vacancy, {names}"

    @property
    def time_unit(self) -> str:
        return (f"scaled time tau = t[s] * c_v * nu0 * exp(-E_clock / (k_B T)), c_v = n_vacancies / n_sites, "
                f"nu0 = {self.nu0:g} s^-1, E_clock = {self.clock_barrier_eV:g} eV")

    @property
    def observable_names(self) -> tuple[str, ...]:
        """``alpha{shell}_{AB}`` for the unlike pairs A < B in element order (the independent
        Warren–Cowley parameters, see :meth:`like_pair_alpha`)."""
        rows, cols = np.triu_indices(len(self.elements), k=1)
        return tuple(f"alpha{shell}_{self.elements[a]}{self.elements[b]}"
                     for shell in self.shells for a, b in zip(rows, cols))

    def like_pair_alpha(self, z: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
        """The like-pair parameters α_AA of each shell from the unlike ones ``z [..., d]``.

        Every a-atom has z_k shell-k sites, so Σ_b c_b α_ab = x_a (the fraction of those sites that
        are vacant), hence α_aa = −Σ_{b≠a} c_b α_ab / c_a up to x_a ≈ c_v (measured ~1e-3 for one
        vacancy per 1024 sites). That linear constraint is why the observables are the unlike
        pairs only: the six α of a ternary span three dimensions, and an SDE in all six would put
        noise along directions the dynamics never visits. Returns (names, values [..., n_el·shells]).
        """
        z = np.asarray(z, dtype=np.float64)
        n = len(self.elements)
        c = self._atom_counts / self._atom_counts.sum()
        rows, cols = np.triu_indices(n, k=1)
        m = len(rows)
        names, values = [], []
        for i, shell in enumerate(self.shells):
            block = z[..., i * m:(i + 1) * m]
            full = np.zeros(z.shape[:-1] + (n, n))
            full[..., rows, cols] = block
            full[..., cols, rows] = block
            for a in range(n):
                names.append(f"alpha{shell}_{self.elements[a]}{self.elements[a]}")
                values.append(-(full[..., a, :] * c).sum(-1) / c[a])
        return tuple(names), np.stack(values, axis=-1)

    @property
    def observable_units(self) -> tuple[str, ...]:
        return ("1",) * len(self.observable_names)

    @property
    def clock_rate(self) -> float:
        """dτ/dt = c_v ν0 exp(−E_clock / (k_B T)) in s⁻¹."""
        c_v = self.n_vacancies / self.n_sites
        return c_v * self.nu0 * math.exp(-self.clock_barrier_eV / (BOLTZMANN_EV_PER_K * self.temperature_K))

    def seconds(self, tau: float | np.ndarray) -> float | np.ndarray:
        """Physical time in s of the scaled time ``tau``."""
        return tau / self.clock_rate

    def tau(self, seconds: float | np.ndarray) -> float | np.ndarray:
        """Scaled time of the physical time ``seconds`` (s)."""
        return seconds * self.clock_rate

    def clock_note(self) -> str:
        """One sentence for reports: the scaled clock and its conversion to seconds at this T."""
        return (f"Scaled time τ = t·c_v·ν0·exp(−E_clock/k_B T) with c_v = {self.n_vacancies}/{self.n_sites}, "
                f"ν0 = {self.nu0:g} s⁻¹, E_clock = {self.clock_barrier_eV:g} eV: one unit of τ is "
                f"{self.seconds(1.0):.3e} s at T = {self.temperature_K:g} K (scales as exp(E_clock/k_B T)).")

    def metadata(self) -> dict[str, Any]:
        """JSON scalars describing the system (elements comma-joined, one composition_<el> key
        per element, shells comma-joined)."""
        meta: dict[str, Any] = {
            "class": type(self).__name__,
            "cells": self.size,
            "n_sites": self.n_sites,
            "n_vacancies": self.n_vacancies,
            "temperature_K": self.temperature_K,
            "elements": ",".join(self.elements),
        }
        meta.update({f"composition_{el}": f for el, f in self.composition.items()})
        meta.update({
            "vacancy_fraction": self.vacancy_fraction,
            "lattice_constant_A": self.lattice_constant,
            "nu0_per_s": self.nu0,
            "clock_barrier_eV": self.clock_barrier_eV,
            "barrier_model": type(self.barrier_model).__name__,
            "shells": ",".join(str(s) for s in self.shells),
        })
        return meta

    def __repr__(self) -> str:
        return (f"AlloySystem(cells={self.size}, temperature_K={self.temperature_K}, elements={self.elements}, "
                f"n_vacancies={self.n_vacancies}, barrier_model={type(self.barrier_model).__name__})")

    # ----------------------------------------------------------------- derived systems
    def _replace(self, cells: int, temperature_K: float) -> "AlloySystem":
        return AlloySystem(
            cells, temperature_K, barrier_model=self.barrier_model, elements=self.elements,
            composition=self.composition, vacancy_fraction=self.vacancy_fraction,
            lattice_constant=self.lattice_constant, nu0=self.nu0, clock_barrier_eV=self.clock_barrier_eV,
            shells=self.shells, _shared=self._shared,
        )

    def resized(self, size: int) -> "AlloySystem":
        """The same physics (same barrier model object, shared caches) in a box of ``size`` cells;
        the vacancy count follows from the same vacancy_fraction."""
        return self._replace(size, self.temperature_K)

    def at(self, temperature_K: float) -> "AlloySystem":
        """The same system at another temperature (K)."""
        return self._replace(self.size, temperature_K)

    # ----------------------------------------------------------------- states
    @property
    def _lattice(self) -> BCCLattice:
        """The one lattice of this box size (its species array is scratch space for kMC)."""
        return self._shared.lattice(self.size)

    def _check_states(self, states: Any, name: str, *, any_size: bool = False, writeable: bool = False,
                      allow_single: bool = False) -> tuple[np.ndarray, bool]:
        """``states`` as int8 [B, c, c, c, 2] (and whether a single state [c, c, c, 2] was given).
        ``any_size``: c is inferred from the shape instead of being this system's size."""
        if not isinstance(states, np.ndarray) or states.dtype != np.int8:
            got = f"{type(states).__name__} {getattr(states, 'dtype', '')}".strip()
            raise TypeError(f"{name} must be an int8 numpy array of shape (B, c, c, c, 2), got {got}")
        single = allow_single and states.ndim == 4
        batch = states[None] if single else states
        c = batch.shape[1] if batch.ndim == 5 else -1
        expected = "(B, c, c, c, 2)" if any_size else f"(B, {self.size}, {self.size}, {self.size}, 2)"
        if allow_single:
            expected += " or " + expected.replace("(B, ", "(")
        if batch.ndim != 5 or batch.shape[1:] != (c, c, c, 2) or c < 1 or (not any_size and c != self.size):
            raise ValueError(f"{name} must have shape {expected}, got {states.shape}")
        if writeable and (not states.flags.c_contiguous or not states.flags.writeable):
            raise ValueError(f"{name} must be a writeable C-contiguous array (evolved in place)")
        if batch.size and (batch.min() < 0 or batch.max() > len(self.elements)):
            raise ValueError(f"{name} codes must lie in 0..{len(self.elements)} (0 = vacancy), "
                             f"got {batch.min()}..{batch.max()}")
        return batch, single

    def random_states(self, n: int, rng: np.random.Generator, condition: Any = None) -> np.ndarray:
        """``n`` independent random solid solutions, int8 [n, c, c, c, 2]: exact integer
        composition (largest-remainder rounding) and exactly ``n_vacancies`` vacancies, each state
        a uniform permutation of the codes. Same random stream use as
        :func:`~matscale.systems.alloy.lattice.random_solid_solution`, state after state.
        ``condition`` must be None (the alloy has no initial-condition parameter)."""
        n = _check_int("n", n, 0)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if condition is not None:
            raise ValueError(f"condition must be None for the alloy (random solid solutions only), got {condition!r}")
        counts = np.concatenate([[self.n_vacancies], self._atom_counts])
        codes = np.repeat(np.arange(len(self.elements) + 1, dtype=np.int8), counts)
        out = np.empty((n, *self.state_shape), dtype=np.int8)
        for b in range(n):
            out[b] = rng.permutation(codes).astype(np.int8).reshape(self.state_shape)
        return out

    def conserve(self, states: np.ndarray, rng: np.random.Generator) -> None:
        """Repair ``states`` (int8 [B, c, c, c, 2] or one [c, c, c, 2]) in place so that each holds
        exactly the target atom counts and ``n_vacancies`` vacancies. Codes are treated alike:
        for every over-represented code, uniformly chosen sites of that code are collected, and
        these sites receive the missing codes in random order (the fewest possible changes).
        A state whose counts are already right is left untouched and consumes no randomness."""
        batch, _ = self._check_states(states, "states", writeable=True, allow_single=True)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        target = np.concatenate([[self.n_vacancies], self._atom_counts])
        flat = batch.reshape(batch.shape[0], 2 * batch.shape[1] ** 3)
        counts = _code_counts(flat, len(target))
        for b in np.flatnonzero(np.any(counts != target, axis=1)):
            self._repair(flat[b], counts[b], target, rng)

    @staticmethod
    def _repair(species: np.ndarray, counts: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> None:
        surplus = counts - target
        sites = [rng.choice(np.flatnonzero(species == code), size=int(surplus[code]), replace=False)
                 for code in np.flatnonzero(surplus > 0)]
        sites = np.concatenate(sites)
        new_codes = np.repeat(np.arange(len(target), dtype=np.int8), np.maximum(-surplus, 0))
        species[sites] = rng.permutation(new_codes)

    # ----------------------------------------------------------------- observables
    @property
    def site_classes(self) -> int:
        """Distinct site values: the vacancy and one per element."""
        return len(self.elements) + 1

    def site_class_index(self, states: np.ndarray) -> np.ndarray:
        """Site classes ``int64`` (same shape): the species code itself, 0 = vacancy
        (ValueError for a code outside 0..n_elements)."""
        classes = np.asarray(states).astype(np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= self.site_classes):
            raise ValueError(f"species codes must lie in 0..{self.site_classes - 1} (0 = vacancy), "
                             f"got {classes.min()}..{classes.max()}")
        return classes

    def order_parameter(self, states: np.ndarray) -> np.ndarray:
        """The magnitude of the short-range order, sqrt(Σ α²) over the observables, ``[B]``
        (grows monotonically on average as a random solution orders; tiles are matched on it)."""
        return np.sqrt(np.square(self.observables(states)).sum(axis=-1))

    def observables(self, states: np.ndarray) -> np.ndarray:
        """Global Warren–Cowley α of the unlike pairs of each state, float64 [B, d] for states
        int8 [B, c, c, c, 2] (any c) or [d] for one state [c, c, c, 2]; order of
        :attr:`observable_names` (like pairs: :meth:`like_pair_alpha`)."""
        batch, single = self._check_states(states, "states", any_size=True, allow_single=True)
        c = batch.shape[1]
        flat = np.ascontiguousarray(batch.reshape(batch.shape[0], 2 * batch.shape[1] ** 3))
        n_codes = len(self.elements) + 1
        n_a, c_b = self._normalisers(flat, n_codes)
        rows, cols = np.triu_indices(len(self.elements), k=1)
        out = []
        for shell in self.shells:
            half = _bond_counts(flat, self._shared.half_table(c, shell), n_codes)[:, 1:, 1:]
            pairs = half + np.swapaxes(half, 1, 2)
            alpha = 1.0 - pairs / (COORDINATION[shell] * n_a[:, :, None] * c_b[:, None, :])
            out.append(alpha[:, rows, cols])
        result = np.concatenate(out, axis=1)
        return result[0] if single else result

    def patch_shares(self, states: np.ndarray, p: int) -> np.ndarray:
        """Patch shares of the observables, float64 [B, K, d] (or [K, d] for one state): the
        pairs owned by patch k's sites (k row-major over the (c/p)³ patches of side ``p`` cells),
        scaled by K, with the global normalisers; their mean over k is :meth:`observables`."""
        batch, single = self._check_states(states, "states", any_size=True, allow_single=True)
        c = batch.shape[1]
        if isinstance(p, bool) or not isinstance(p, Integral) or p < 1 or c % p:
            raise ValueError(f"p must be a positive divisor of the box side c={c} (cells), got {p!r}")
        flat = np.ascontiguousarray(batch.reshape(batch.shape[0], 2 * batch.shape[1] ** 3))
        n_codes = len(self.elements) + 1
        n_a, c_b = self._normalisers(flat, n_codes)
        n_patches = (c // p) ** 3
        patch_of_site = self._shared.patch_of_site(c, int(p))
        rows, cols = np.triu_indices(len(self.elements), k=1)
        out = []
        for shell in self.shells:
            table = self._shared.lattice(c).neighbors(shell)
            pairs = _patch_bond_counts(flat, table, patch_of_site, n_patches, n_codes)[:, :, 1:, 1:]
            denominator = COORDINATION[shell] * n_a[:, None, :, None] * c_b[:, None, None, :]
            alpha = 1.0 - n_patches * pairs / denominator
            out.append(alpha[:, :, rows, cols])
        result = np.concatenate(out, axis=2)
        return result[0] if single else result

    @staticmethod
    def _normalisers(flat: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
        """(N_a float [B, n_el], c_b float [B, n_el]) of states int8 [B, N]."""
        n_a = _code_counts(flat, n_codes)[:, 1:].astype(np.float64)
        if np.any(n_a == 0):
            raise ValueError("every element needs at least one atom in each state for the SRO normalisation")
        return n_a, n_a / n_a.sum(axis=1, keepdims=True)

    # ----------------------------------------------------------------- dynamics
    def evolve_batch(self, states: np.ndarray, *, duration: float | None = None, n_events: int | None = None,
                     seeds: Any) -> np.ndarray:
        """Whole-box vacancy kMC of each state of int8 [B, c, c, c, 2], in place, for ``duration``
        (scaled time τ) or ``n_events`` hops (exactly one). State b uses
        ``default_rng(int(seeds[b]))``. Returns the elapsed scaled time, float64 [B] (equal to
        ``duration`` when given; the time of the last hop with ``n_events``)."""
        batch, _ = self._check_states(states, "states", writeable=True)
        duration, n_events = _check_budget(duration, n_events)
        seeds = _check_seeds(seeds, batch.shape[0])
        lattice = self._lattice
        elapsed = np.empty(batch.shape[0])
        for b in range(batch.shape[0]):
            lattice.species[:] = batch[b].reshape(-1)
            rng = np.random.default_rng(int(seeds[b]))
            self._kmc.forget_rates()  # a state's path depends on (state, seed) only, not on the batch
            elapsed[b] = self._run(lattice, duration, n_events, rng, None)
            batch[b] = lattice.species.reshape(self.state_shape)
        return elapsed

    def evolve_windows(self, states: np.ndarray, origins: Any, size: int | Sequence[int], *,
                       duration: float | None = None, n_events: int | None = None, boundary: str = "frozen",
                       seeds: Any) -> np.ndarray:
        """Partial evolution with owned vacancies (module docstring), in place.

        ``states`` int8 [B, c, c, c, 2]; ``origins`` int [B, W, 3] first cell (i, j, k) of each
        window (wrapping periodically); ``size`` the window side in cells, an int or 3 ints in
        1..c. For each state the W windows run in order; in each, the vacancies on the window's
        sites at its start hop for ``duration`` (scaled time τ) or ``n_events`` hops in total,
        not confined to the window, all other vacancies frozen. State b uses one stream
        ``default_rng(int(seeds[b]))`` across its windows. Returns elapsed τ, float64 [B, W]; a
        window holding no vacancy does no work and returns ``duration`` (0 with ``n_events``).
        """
        batch, _ = self._check_states(states, "states", writeable=True)
        duration, n_events = _check_budget(duration, n_events)
        if boundary != "frozen":
            raise ValueError(f"boundary must be 'frozen' (the only boundary of the alloy), got {boundary!r}")
        origins = self._check_origins(origins, batch.shape[0])
        extent = self._check_window_size(size)
        seeds = _check_seeds(seeds, batch.shape[0])
        lattice = self._lattice
        elapsed = np.empty(origins.shape[:2])
        for b in range(batch.shape[0]):
            lattice.species[:] = batch[b].reshape(-1)
            rng = np.random.default_rng(int(seeds[b]))
            self._kmc.forget_rates()
            for w in range(origins.shape[1]):
                mobile = self._vacancies_in_window(lattice.species, origins[b, w], extent)
                if mobile.size == 0:
                    elapsed[b, w] = 0.0 if duration is None else duration
                    continue
                elapsed[b, w] = self._run(lattice, duration, n_events, rng, mobile)
            batch[b] = lattice.species.reshape(self.state_shape)
        return elapsed

    def _check_origins(self, origins: Any, n_states: int) -> np.ndarray:
        origins = np.asarray(origins)
        if (origins.ndim != 3 or origins.shape[0] != n_states or origins.shape[2] != 3
                or not np.issubdtype(origins.dtype, np.integer)):
            raise ValueError(f"origins must be an integer array of shape ({n_states}, W, 3), got "
                             f"{origins.dtype} {origins.shape}")
        return np.mod(origins.astype(np.int64), self.size)

    def _check_window_size(self, size: Any) -> np.ndarray:
        values = (size,) * 3 if isinstance(size, Integral) and not isinstance(size, bool) else size
        try:
            values = tuple(values)
        except TypeError:
            values = ()
        if (len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, Integral) for v in values)
                or any(not 1 <= v <= self.size for v in values)):
            raise ValueError(f"size must be an int or 3 ints in 1..{self.size} (window side in cells), got {size!r}")
        return np.array(values, dtype=np.int64)

    def _vacancies_in_window(self, species: np.ndarray, origin: np.ndarray, extent: np.ndarray) -> np.ndarray:
        """Sites (int64, ascending) of the vacancies inside the window [origin, origin + extent)."""
        vacancies = np.flatnonzero(species == 0)
        c = self.size
        cell = vacancies // 2
        coords = np.stack([cell // (c * c), (cell // c) % c, cell % c], axis=1)
        inside = np.all((coords - origin) % c < extent, axis=1)
        return vacancies[inside].astype(np.int64)

    def _run(self, lattice: BCCLattice, duration: float | None, n_events: int | None, rng: np.random.Generator,
             mobile: np.ndarray | None) -> float:
        """One kMC call on ``lattice``; returns the elapsed scaled time."""
        if duration is not None:
            self._kmc.evolve(lattice, duration=self.seconds(duration), rng=rng, mobile_vacancies=mobile)
            return duration
        _, seconds = self._kmc.evolve(lattice, n_events=n_events, rng=rng, mobile_vacancies=mobile)
        return float(self.tau(seconds))
