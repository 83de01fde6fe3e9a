"""Rejection-free vacancy kinetic Monte Carlo on a BCC lattice, with any barrier model.

Law: every vacancy v may exchange with each of its 8 first neighbours t at rate
``k = nu0 * exp(-E_b(v -> t) / (k_B T))`` (s⁻¹, k_B = 8.617333e-5 eV/K); a jump onto another
vacancy has E_b = inf (rate 0). The next event is drawn with probability k / R_tot, the waiting
time is exponential with mean 1 / R_tot (seconds). The simulation of this continuous-time Markov
chain is exact (rejection-free, no time discretisation); what it relaxes to is the barrier
model's business. Only models with E_b(i -> j) − E_b(j -> i) = E_j − E_i for an energy E (KRA
on an energy model, :class:`~matscale.systems.alloy.nnk.ConsistentNNKBarrierModel`) have the
Boltzmann distribution exp(−E / k_B T) as stationary state (detailed balance). The raw NNK
network (:class:`NNKBarrierModel`, symmetrised or not) does not: its barrier sums around closed
loops of hops are not zero (Kolmogorov's criterion fails, see
:mod:`matscale.systems.alloy.balance`), so its stationary state is a non-equilibrium steady
state carrying probability currents around loops, not a detailed-balance (Boltzmann) state.

Cost per step does not grow with the vacancy count:
- each vacancy's 8 rates are cached; a sum tree over the vacancies' total rates selects the
  vacancy in O(log N_vac), then one of its 8 hops linearly;
- after a hop a -> b only the vacancies whose barriers can have changed are recomputed: those
  within ``interaction_range`` of a or b, plus one first-neighbour distance unless the barrier
  model declares ``vacancy_centred = True`` (barriers depend only on the vacancy's own
  surroundings). They are found by scanning a fixed sphere of lattice offsets around a and b
  against a site -> vacancy map (O(1) per step).

With an :class:`NNKBarrierModel` (raw or ``symmetrise=True``) the whole event loop runs inside
numba (``VacancyKMC.fused``, default True); any other barrier model (KRA,
``ConsistentNNKBarrierModel``) is called from a Python loop through ``hop_barriers``.
Both loops consume the random numbers identically and give the same trajectory (rates agree to
float rounding, ~1e-7 relative, as exp and sums are compiled in two contexts).

Random numbers: uniforms are drawn from the caller's ``rng`` in blocks of 2 × 4096 (two per
step); a block left unfinished at the end of ``evolve`` is discarded, so the result is a
deterministic function of the seed and of the sequence of ``evolve`` calls.

``region`` (site indices) restricts the dynamics: only hops with both sites inside move; the
exterior is frozen (boundary "frozen"). Vacancies outside the region never move.

``mobile_vacancies`` (site indices of vacancies; exclusive with ``region``) restricts the
dynamics differently: only the vacancies on those sites at the start of the call move, and
their hops are not confined (any neighbour atom may be exchanged); every other vacancy is
frozen in place (a hop onto it has rate 0, as onto any vacancy).

``tracker`` (a :class:`DisplacementTracker`, optional) follows every atom and vacancy through
the hops: when the vacancy on site a exchanges with the atom on its neighbour b, that atom moves
by the minimum-image vector b -> a and the vacancy by its opposite; the tracker adds these to
unwrapped per-particle displacements (exact integers in doubled coordinates) and hop counts.
It is updated once per block of up to 4096 hops by a compiled replay of the block's (a, b)
pairs, which both event loops record anyway, so the hop kernels themselves are unchanged and a
run without a tracker does exactly what it did before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba as nb
import numpy as np

from matscale.systems.alloy.lattice import SHELL_DISTANCES, BCCLattice, random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel, _nnk_hop_barriers

BOLTZMANN_EV_PER_K = 8.617333e-5
_RANDOM_BLOCK = 4096


# ---------------------------------------------------------------------------------- numba kernels
@nb.njit(cache=True)
def _tree_set(tree: np.ndarray, n_leaves: int, slot: int, value: float) -> None:
    i = n_leaves + slot
    tree[i] = value
    i >>= 1
    while i >= 1:
        tree[i] = tree[2 * i] + tree[2 * i + 1]
        i >>= 1


@nb.njit(cache=True)
def _tree_find(tree: np.ndarray, n_leaves: int, target: float) -> tuple[int, float]:
    """Leaf whose cumulative interval contains ``target`` in [0, tree[1]) and the remainder of
    ``target`` inside that leaf. Empty right subtrees are never entered (round-off guard)."""
    i = 1
    while i < n_leaves:
        left = tree[2 * i]
        if target < left or tree[2 * i + 1] <= 0.0:
            i = 2 * i
        else:
            target -= left
            i = 2 * i + 1
    return i - n_leaves, target


@nb.njit(cache=True)
def _select_and_hop(tree, n_leaves, rates, vac_sites, slot_of_site, species, neighbors1, u,
                    sphere, doubled, box, stamp, stamp_value, affected):
    """Pick the event for the uniform ``u`` in [0, 1), apply it, and collect the vacancy slots
    whose rates must be recomputed into ``affected``. Returns (slot, from_site, to_site,
    direction, n_affected)."""
    slot, local = _tree_find(tree, n_leaves, u * tree[1])
    direction = -1
    cum = 0.0
    for d in range(8):
        if rates[slot, d] > 0.0:
            direction = d  # last allowed hop, the fallback when round-off overshoots
            cum += rates[slot, d]
            if local < cum:
                break
    a = vac_sites[slot]
    b = np.int64(neighbors1[a, direction])
    species[a] = species[b]
    species[b] = 0
    vac_sites[slot] = b
    slot_of_site[a] = -1
    slot_of_site[b] = slot
    n_aff = 0
    for which in range(2):
        center = a if which == 0 else b
        c0, c1, c2 = doubled[center, 0], doubled[center, 1], doubled[center, 2]
        for m in range(sphere.shape[0]):
            d0 = (c0 + sphere[m, 0]) % box[0]
            d1 = (c1 + sphere[m, 1]) % box[1]
            d2 = (c2 + sphere[m, 2]) % box[2]
            p = d0 & 1
            s = 2 * ((((d0 - p) // 2) * (box[1] // 2) + (d1 - p) // 2) * (box[2] // 2) + (d2 - p) // 2) + p
            q = slot_of_site[s]
            if q >= 0 and stamp[q] != stamp_value:
                stamp[q] = stamp_value
                affected[n_aff] = q
                n_aff += 1
    return slot, a, b, direction, n_aff


@nb.njit(cache=True)
def _set_rates(tree, n_leaves, rates, slots, barriers, vac_sites, neighbors1, in_region,
               nu0, beta):
    """rates[slot] = nu0 exp(-beta E_b), zero for hops leaving the region; refresh the tree."""
    for k in range(slots.shape[0]):
        slot = slots[k]
        site = vac_sites[slot]
        total = 0.0
        for d in range(8):
            e = barriers[k, d]
            r = 0.0
            if in_region[site] and in_region[neighbors1[site, d]] and e < np.inf:
                r = nu0 * np.exp(-beta * e)
            rates[slot, d] = r
            total += r
        _tree_set(tree, n_leaves, slot, total)


@nb.njit(cache=True)
def _run_block_nnk(n_max, time, t_end, uniforms, tree, n_leaves, rates, vac_sites, slot_of_site, species,
                   neighbors1, sphere, doubled, box, stamp, stamp_value, affected, in_region, nu0, beta,
                   env_offsets, first_shell, image_sites, w1, b1, w_hidden, b_hidden, w_out, b_out,
                   cache_keys, cache_values, cache_used, stats,
                   log_time, log_from, log_to, log_species, log_rate):
    """Up to ``n_max`` kMC steps with NNK barriers, all in numba; uses uniforms[2 k], [2 k + 1]
    for step k. Returns (steps done, time, status, stamp_value); status 0 = n_max steps done,
    1 = total rate 0, 2 = the next event would pass t_end (time is then t_end)."""
    done = 0
    while done < n_max:
        total = tree[1]
        if not total > 0.0:
            return done, time, 1, stamp_value
        wait = -np.log1p(-uniforms[2 * done + 1]) / total
        if time + wait > t_end:
            return done, t_end, 2, stamp_value
        time += wait
        stamp_value += 1
        slot, a, b, direction, n_aff = _select_and_hop(
            tree, n_leaves, rates, vac_sites, slot_of_site, species, neighbors1, uniforms[2 * done],
            sphere, doubled, box, stamp, stamp_value, affected)
        log_time[done] = time
        log_from[done] = a
        log_to[done] = b
        log_species[done] = species[a]
        log_rate[done] = rates[slot, direction]
        slots = affected[:n_aff]
        sites = np.empty(n_aff, np.int64)
        for k in range(n_aff):
            sites[k] = vac_sites[slots[k]]
        barriers = np.empty((n_aff, 8), np.float64)
        _nnk_hop_barriers(species, doubled, box, sites, env_offsets, first_shell, image_sites, w1, b1, w_hidden,
                          b_hidden, w_out, b_out, cache_keys, cache_values, cache_used, stats, barriers)
        _set_rates(tree, n_leaves, rates, slots, barriers, vac_sites, neighbors1, in_region, nu0, beta)
        done += 1
    return done, time, 0, stamp_value


# ---------------------------------------------------------------------------------- event log
@dataclass
class KMCEventLog:
    """Per-event record of a kMC run (append-only lists; :meth:`as_arrays` for numpy).

    time_s: simulated time of the event, counted from the start of the ``evolve`` call that made
    it plus ``time_offset_s`` (s); from_site / to_site: the vacancy's sites before / after;
    species: code of the atom that moved (to_site -> from_site); barrier_eV: its barrier.
    """

    time_offset_s: float = 0.0
    time_s: list[float] = field(default_factory=list)
    from_site: list[int] = field(default_factory=list)
    to_site: list[int] = field(default_factory=list)
    species: list[int] = field(default_factory=list)
    barrier_eV: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time_s)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "time_s": np.asarray(self.time_s, dtype=np.float64),
            "from_site": np.asarray(self.from_site, dtype=np.int64),
            "to_site": np.asarray(self.to_site, dtype=np.int64),
            "species": np.asarray(self.species, dtype=np.int8),
            "barrier_eV": np.asarray(self.barrier_eV, dtype=np.float64),
        }


@nb.njit(cache=True)
def _replay_hops(from_sites, to_sites, doubled, box, particle_at_site, site_of_particle, displacement, hops):
    """Apply the hops (vacancy from_sites[k] -> to_sites[k]) to the particle bookkeeping: the
    atom on b moves by the minimum image of d(a) - d(b) (doubled coordinates), the vacancy by
    the opposite vector; both hop counts grow by one."""
    for k in range(from_sites.shape[0]):
        a = from_sites[k]
        b = to_sites[k]
        atom = particle_at_site[b]
        vacancy = particle_at_site[a]
        for c in range(3):
            step = np.int64(doubled[a, c]) - np.int64(doubled[b, c])
            half = box[c] // 2
            if step > half:
                step -= box[c]
            elif step < -half:
                step += box[c]
            displacement[atom, c] += step
            displacement[vacancy, c] -= step
        hops[atom] += 1
        hops[vacancy] += 1
        particle_at_site[a] = atom
        particle_at_site[b] = vacancy
        site_of_particle[atom] = a
        site_of_particle[vacancy] = b


class DisplacementTracker:
    """Unwrapped displacements and hop counts of every atom and vacancy of a lattice through the
    hops of :meth:`VacancyKMC.evolve` (pass ``tracker=``).

    Particles are numbered by the site they occupy when the tracker is made (particle p starts on
    site p) and keep that identity while they hop. ``species[p]`` is the fixed species code of
    particle p (0 = vacancy). A hop of the vacancy on site a with the atom on its first neighbour
    b moves that atom by the minimum-image vector b -> a (length λ = √3 a / 2) and the vacancy by
    a -> b. Displacements are accumulated exactly, as integers in doubled coordinates (units of
    a / 2); :attr:`displacement_A` gives them in Å.

    The lattice needs at least 2 cells along every axis (with 1 cell a first-neighbour hop and
    its opposite join the same two sites, so the hop vector is not defined by the sites).
    """

    def __init__(self, lattice: BCCLattice) -> None:
        if not isinstance(lattice, BCCLattice):
            raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
        if min(lattice.cells) < 2:
            raise ValueError(f"DisplacementTracker needs >= 2 cells along every axis, got cells={lattice.cells}")
        n = lattice.n_sites
        self.cells = lattice.cells
        self.lattice_constant = lattice.lattice_constant
        #: species code of each particle (fixed identity; 0 = vacancy), int8 [N]
        self.species = lattice.species.copy()
        #: particle on each site, int64 [N]
        self.particle_at_site = np.arange(n, dtype=np.int64)
        #: site of each particle, int64 [N]
        self.site_of_particle = np.arange(n, dtype=np.int64)
        #: unwrapped displacement of each particle in doubled coordinates (units of a / 2), int64 [N, 3]
        self.displacement_doubled = np.zeros((n, 3), dtype=np.int64)
        #: number of hops of each particle, int64 [N]
        self.hops = np.zeros(n, dtype=np.int64)
        self._doubled = lattice.doubled_coords
        self._box = lattice.doubled_box.astype(np.int64)

    @property
    def displacement_A(self) -> np.ndarray:
        """Unwrapped displacement of each particle since the tracker was made, float64 [N, 3] in Å."""
        return self.displacement_doubled * (0.5 * self.lattice_constant)

    @property
    def squared_displacement_A2(self) -> np.ndarray:
        """|R|² of each particle, float64 [N] in Å²."""
        return np.sum(self.displacement_doubled**2, axis=1) * (0.25 * self.lattice_constant**2)

    def check_follows(self, lattice: BCCLattice) -> None:
        """ValueError unless this tracker was made on ``lattice``'s geometry and its particles
        sit where ``lattice.species`` says (the tracker missed no hop)."""
        if lattice.cells != self.cells or lattice.lattice_constant != self.lattice_constant:
            raise ValueError(f"tracker was made for cells={self.cells}, a={self.lattice_constant} Å, not for "
                             f"cells={lattice.cells}, a={lattice.lattice_constant} Å")
        if not np.array_equal(self.species[self.particle_at_site], lattice.species):
            raise ValueError("tracker does not follow this lattice (its particles are not where lattice.species "
                             "puts them): make it with DisplacementTracker(lattice) and pass it to every evolve call")

    def apply_hops(self, from_sites: np.ndarray, to_sites: np.ndarray) -> None:
        """Record hops of the vacancy from ``from_sites[k]`` to the neighbour ``to_sites[k]``, in order."""
        _replay_hops(np.asarray(from_sites, dtype=np.int64), np.asarray(to_sites, dtype=np.int64), self._doubled,
                     self._box, self.particle_at_site, self.site_of_particle, self.displacement_doubled, self.hops)


# ---------------------------------------------------------------------------------- engine state
class _RateCache:
    """Rates, sum tree and vacancy bookkeeping for one lattice + region or mobile-vacancy set."""

    def __init__(self, kmc: "VacancyKMC", lattice: BCCLattice, region: np.ndarray | None,
                 mobile: np.ndarray | None = None) -> None:
        n = lattice.n_sites
        self.lattice = lattice
        self.in_region = np.ones(n, dtype=np.bool_)
        if region is not None:
            self.in_region[:] = False
            self.in_region[region] = True
        self.region_key = None if region is None else np.unique(region)
        #: True when only the vacancies listed by ``mobile_vacancies`` are held (and move)
        self.mobile_only = mobile is not None
        if mobile is not None:
            self.vac_sites = np.unique(mobile).astype(np.int64)
        else:
            vacancies = lattice.vacancies
            self.vac_sites = vacancies[self.in_region[vacancies]].astype(np.int64)
        n_vac = self.vac_sites.size
        self.n_leaves = 1
        while self.n_leaves < max(n_vac, 1):
            self.n_leaves *= 2
        self.tree = np.zeros(2 * self.n_leaves, dtype=np.float64)
        self.rates = np.zeros((max(n_vac, 1), 8), dtype=np.float64)
        self.slot_of_site = np.full(n, -1, dtype=np.int64)
        self.slot_of_site[self.vac_sites] = np.arange(n_vac)
        self.neighbors1 = lattice.neighbors(1)
        radius = float(kmc.barrier_model.interaction_range)
        if not getattr(kmc.barrier_model, "vacancy_centred", False):
            radius += SHELL_DISTANCES[1] * lattice.lattice_constant
        self.sphere = kmc._sphere(lattice, radius)
        self.stamp = np.zeros(max(n_vac, 1), dtype=np.int64)
        self.stamp_value = 0
        self.affected = np.empty(max(n_vac, 1), dtype=np.int64)
        self.temperature_K = kmc.temperature_K
        self.nu0 = kmc.nu0
        self.barrier_model = kmc.barrier_model
        self.species_snapshot: np.ndarray | None = None
        if n_vac:
            self.refresh(kmc, np.arange(n_vac))

    def refresh(self, kmc: "VacancyKMC", slots: np.ndarray) -> None:
        barriers = np.asarray(kmc.barrier_model.hop_barriers(self.lattice, self.vac_sites[slots]), dtype=np.float64)
        _set_rates(self.tree, self.n_leaves, self.rates, slots, barriers, self.vac_sites,
                   self.neighbors1, self.in_region, kmc.nu0, 1.0 / (BOLTZMANN_EV_PER_K * kmc.temperature_K))

    def valid_for(self, kmc: "VacancyKMC", lattice: BCCLattice, region: np.ndarray | None,
                  mobile: np.ndarray | None = None) -> bool:
        """True when this cache describes ``lattice`` as it is now under the same law and the
        same restriction. For ``mobile`` the held vacancies (at their current sites, after the
        previous call's hops) must be exactly the requested ones."""
        if lattice is not self.lattice or self.species_snapshot is None:
            return False
        if kmc.temperature_K != self.temperature_K or kmc.nu0 != self.nu0 or kmc.barrier_model is not self.barrier_model:
            return False
        if (region is None) != (self.region_key is None) or (mobile is not None) != self.mobile_only:
            return False
        if region is not None and not np.array_equal(np.unique(region), self.region_key):
            return False
        if mobile is not None and not np.array_equal(np.unique(mobile), np.sort(self.vac_sites)):
            return False
        return np.array_equal(lattice.species, self.species_snapshot)


# ---------------------------------------------------------------------------------- public engine
class VacancyKMC:
    """Vacancy kMC for a BCC alloy: ``evolve(lattice, duration=..., region=..., rng=...)``.

    Parameters
    ----------
    lattice : template state (cells, elements, lattice constant, composition and vacancy count
        used by :meth:`random_state`); may be ``None`` if ``random_state`` is not needed.
    barrier_model : a :class:`~matscale.calculators.base.BarrierModel` (``hop_barriers``,
        ``interaction_range``).
    temperature_K : temperature T > 0 in K.
    nu0 : attempt frequency in s⁻¹ (default 1e13).
    """

    def __init__(self, lattice: BCCLattice | None, barrier_model: Any, temperature_K: float, nu0: float = 1e13) -> None:
        if lattice is not None and not isinstance(lattice, BCCLattice):
            raise TypeError(f"lattice must be a BCCLattice or None, got {type(lattice).__name__}")
        if not hasattr(barrier_model, "hop_barriers") or not hasattr(barrier_model, "interaction_range"):
            raise TypeError("barrier_model must implement hop_barriers(lattice, vacancy_sites) and interaction_range")
        if not np.isfinite(temperature_K) or temperature_K <= 0:
            raise ValueError(f"temperature_K must be a finite temperature > 0 K, got {temperature_K}")
        if not np.isfinite(nu0) or nu0 <= 0:
            raise ValueError(f"nu0 must be a finite attempt frequency > 0 s^-1, got {nu0}")
        self.template = lattice
        self.barrier_model = barrier_model
        self.temperature_K = float(temperature_K)
        self.nu0 = float(nu0)
        #: with an NNKBarrierModel, run the whole event loop inside numba (same law, same random
        #: numbers as the generic loop); set False to force the generic loop.
        self.fused = True
        self._cache: _RateCache | None = None
        self._spheres: dict[tuple[float, float], np.ndarray] = {}

    def forget_rates(self) -> None:
        """Drop the rates kept from the previous call. The next call then builds its sum tree
        from scratch, so its hops depend only on the lattice and the random stream, not on the
        calls before it (a kept tree, updated hop by hop, holds the same rates but may round
        differently, which changes which hop a random number selects)."""
        self._cache = None

    @property
    def beta(self) -> float:
        """1 / (k_B T) in 1/eV."""
        return 1.0 / (BOLTZMANN_EV_PER_K * self.temperature_K)

    def random_state(self, rng: np.random.Generator, composition: dict[str, float] | None = None,
                     n_vacancies: int | None = None) -> BCCLattice:
        """A random solid solution shaped like the template lattice (its composition and vacancy
        count unless given)."""
        if self.template is None:
            raise ValueError("random_state needs the template lattice given to VacancyKMC(lattice, ...)")
        t = self.template
        if composition is None:
            composition = t.composition()
        if n_vacancies is None:
            n_vacancies = int(np.sum(t.species == 0))
        return random_solid_solution(composition, t.cells, t.lattice_constant, n_vacancies, rng, t.elements)

    def rates(self, lattice: BCCLattice, vacancy_sites: np.ndarray | None = None) -> np.ndarray:
        """Hop rates [M, 8] in s⁻¹ of the given vacancies (default all), order of neighbors(1)."""
        sites = lattice.vacancies if vacancy_sites is None else np.asarray(vacancy_sites, dtype=np.int64)
        barriers = np.asarray(self.barrier_model.hop_barriers(lattice, sites), dtype=np.float64)
        with np.errstate(over="ignore"):
            return self.nu0 * np.exp(-self.beta * barriers)

    def evolve(
        self,
        lattice: BCCLattice,
        *,
        duration: float | None = None,
        n_events: int | None = None,
        region: np.ndarray | None = None,
        mobile_vacancies: np.ndarray | None = None,
        boundary: str = "frozen",
        rng: np.random.Generator,
        event_log: KMCEventLog | None = None,
        tracker: DisplacementTracker | None = None,
    ) -> tuple[BCCLattice, float]:
        """Advance ``lattice`` in place by ``duration`` seconds and/or ``n_events`` hops
        (whichever comes first). With ``duration`` the run stops exactly at that time (the
        pending exponential wait is cut, which is exact by memorylessness). Returns
        ``(lattice, elapsed_seconds)``; with ``n_events`` only, elapsed is the time of the last
        hop. ``region``: site indices; hops need both sites inside (exterior frozen).
        ``mobile_vacancies``: site indices of vacancies (exclusive with ``region``); only these
        vacancies hop, anywhere (hops not confined), all other vacancies stay put.
        ``tracker``: a :class:`DisplacementTracker` made on ``lattice`` (and passed to every call
        since); it receives every hop's displacements.
        """
        self._check_args(lattice, duration, n_events, boundary, rng)
        if tracker is not None:
            if not isinstance(tracker, DisplacementTracker):
                raise TypeError(f"tracker must be a DisplacementTracker or None, got {type(tracker).__name__}")
            tracker.check_follows(lattice)
        if region is not None and mobile_vacancies is not None:
            raise ValueError("give at most one of region and mobile_vacancies (they are exclusive)")
        if region is not None:
            region = np.asarray(region, dtype=np.int64).ravel()
            if region.size and (region.min() < 0 or region.max() >= lattice.n_sites):
                raise ValueError(f"region site indices must lie in 0..{lattice.n_sites - 1}")
        if mobile_vacancies is not None:
            mobile_vacancies = self._check_mobile(lattice, mobile_vacancies)
        cache = self._cache
        if cache is None or not cache.valid_for(self, lattice, region, mobile_vacancies):
            cache = _RateCache(self, lattice, region, mobile_vacancies)
            self._cache = cache
        elapsed = self._run(cache, duration, n_events, rng, event_log, tracker)
        if event_log is not None:
            event_log.time_offset_s += elapsed
        cache.species_snapshot = lattice.species.copy()
        return lattice, elapsed

    # -------------------------------------------------------------------------- internals
    @staticmethod
    def _check_mobile(lattice: BCCLattice, mobile_vacancies: Any) -> np.ndarray:
        """``mobile_vacancies`` as int64 [M] after checking they are vacancy sites of ``lattice``."""
        mobile = np.asarray(mobile_vacancies)
        if mobile.size and not np.issubdtype(mobile.dtype, np.integer):
            raise TypeError(f"mobile_vacancies must be integer site indices, got dtype {mobile.dtype}")
        mobile = mobile.astype(np.int64).ravel()
        if mobile.size and (mobile.min() < 0 or mobile.max() >= lattice.n_sites):
            raise ValueError(f"mobile_vacancies site indices must lie in 0..{lattice.n_sites - 1}")
        if np.any(lattice.species[mobile] != 0):
            raise ValueError("mobile_vacancies must be sites holding a vacancy (species 0)")
        return mobile

    def _sphere(self, lattice: BCCLattice, radius_A: float) -> np.ndarray:
        """``lattice.offsets_within(radius_A)``, memoised per (lattice constant, radius)."""
        key = (lattice.lattice_constant, float(radius_A))
        sphere = self._spheres.get(key)
        if sphere is None:
            sphere = lattice.offsets_within(radius_A)
            self._spheres[key] = sphere
        return sphere

    @staticmethod
    def _check_args(lattice: Any, duration: float | None, n_events: int | None, boundary: str, rng: Any) -> None:
        if not isinstance(lattice, BCCLattice):
            raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
        if duration is None and n_events is None:
            raise ValueError("evolve needs duration (s) or n_events (or both)")
        if duration is not None and (not np.isfinite(duration) or duration < 0):
            raise ValueError(f"duration must be a finite time >= 0 s, got {duration}")
        if n_events is not None and (int(n_events) != n_events or n_events < 0):
            raise ValueError(f"n_events must be an integer >= 0, got {n_events}")
        if boundary != "frozen":
            raise ValueError(f"boundary must be 'frozen' (the only boundary of the alloy kMC), got {boundary!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")

    def _run(self, cache: _RateCache, duration: float | None, n_events: int | None,
             rng: np.random.Generator, event_log: KMCEventLog | None,
             tracker: DisplacementTracker | None = None) -> float:
        """Event loop. Uniforms come in blocks of 2 * 4096 from ``rng`` (two per step: event,
        waiting time); the fused NNK path and the generic path consume them identically."""
        max_events = np.iinfo(np.int64).max if n_events is None else int(n_events)
        t_end = np.inf if duration is None else float(duration)
        fused = self.fused and isinstance(self.barrier_model, NNKBarrierModel)
        if fused:
            self.barrier_model.check_lattice(cache.lattice)
        time = 0.0
        done = 0
        block = np.empty(0)
        pos = 0
        while done < max_events:
            if pos >= block.size:
                block = rng.random(2 * _RANDOM_BLOCK)
                pos = 0
            n_max = int(min(max_events - done, (block.size - pos) // 2))
            step = self._steps_fused if fused else self._steps_generic
            n_done, time, status = step(cache, n_max, time, t_end, block[pos:pos + 2 * n_max], event_log, tracker)
            done += n_done
            pos += 2 * n_done
            if status == 1:
                if duration is not None:
                    return t_end
                raise RuntimeError("vacancy kMC: no allowed hop (total rate 0: no (mobile) vacancy, or all hops blocked by the region)")
            if status == 2:
                return t_end
        return time

    def _log(self, event_log: KMCEventLog, times, from_sites, to_sites, species, rates) -> None:
        event_log.time_s.extend((event_log.time_offset_s + np.asarray(times)).tolist())
        event_log.from_site.extend(np.asarray(from_sites, dtype=np.int64).tolist())
        event_log.to_site.extend(np.asarray(to_sites, dtype=np.int64).tolist())
        event_log.species.extend(np.asarray(species, dtype=np.int64).tolist())
        event_log.barrier_eV.extend((-np.log(np.asarray(rates) / self.nu0) / self.beta).tolist())

    def _steps_fused(self, cache: _RateCache, n_max: int, time: float, t_end: float, uniforms: np.ndarray,
                     event_log: KMCEventLog | None, tracker: DisplacementTracker | None = None
                     ) -> tuple[int, float, int]:
        lattice = cache.lattice
        logs = [np.empty(n_max), np.empty(n_max, np.int64), np.empty(n_max, np.int64),
                np.empty(n_max, np.int8), np.empty(n_max)]
        n_done, time, status, cache.stamp_value = _run_block_nnk(
            n_max, time, t_end, uniforms, cache.tree, cache.n_leaves, cache.rates, cache.vac_sites,
            cache.slot_of_site, lattice.species, cache.neighbors1, cache.sphere, lattice.doubled_coords,
            lattice.doubled_box.astype(np.int64), cache.stamp, cache.stamp_value, cache.affected, cache.in_region,
            self.nu0, self.beta, *self.barrier_model.kernel_arrays(), *logs,
        )
        if event_log is not None:
            self._log(event_log, *(x[:n_done] for x in logs))
        if tracker is not None:
            tracker.apply_hops(logs[1][:n_done], logs[2][:n_done])
        return n_done, time, status

    def _steps_generic(self, cache: _RateCache, n_max: int, time: float, t_end: float, uniforms: np.ndarray,
                       event_log: KMCEventLog | None, tracker: DisplacementTracker | None = None
                       ) -> tuple[int, float, int]:
        lattice = cache.lattice
        species = lattice.species
        doubled = lattice.doubled_coords
        box = lattice.doubled_box.astype(np.int64)
        hop_barriers = self.barrier_model.hop_barriers
        hop_sites = None if tracker is None else np.empty((2, n_max), dtype=np.int64)
        done, status = n_max, 0
        for k in range(n_max):
            total = cache.tree[1]
            if not total > 0.0:
                done, status = k, 1
                break
            wait = -np.log1p(-uniforms[2 * k + 1]) / total  # uniform in [0, 1) -> exponential
            if time + wait > t_end:
                done, status, time = k, 2, t_end
                break
            time += wait
            cache.stamp_value += 1
            slot, a, b, direction, n_aff = _select_and_hop(
                cache.tree, cache.n_leaves, cache.rates, cache.vac_sites, cache.slot_of_site, species,
                cache.neighbors1, uniforms[2 * k], cache.sphere, doubled, box, cache.stamp, cache.stamp_value,
                cache.affected,
            )
            if event_log is not None:
                self._log(event_log, [time], [a], [b], [species[a]], [cache.rates[slot, direction]])
            if hop_sites is not None:
                hop_sites[0, k] = a
                hop_sites[1, k] = b
            slots = cache.affected[:n_aff]
            barriers = np.asarray(hop_barriers(lattice, cache.vac_sites[slots]), dtype=np.float64)
            _set_rates(cache.tree, cache.n_leaves, cache.rates, slots, barriers, cache.vac_sites,
                       cache.neighbors1, cache.in_region, self.nu0, self.beta)
        if hop_sites is not None:
            tracker.apply_hops(hop_sites[0, :done], hop_sites[1, :done])
        return done, time, status
