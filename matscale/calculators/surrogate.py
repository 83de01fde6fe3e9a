"""A fast on-lattice surrogate of any energy model: a cluster expansion fitted to it.

Why: an MLIP evaluated on a local cluster costs seconds per vacancy hop (CHGNet: 4–9 s), so
practitioners fit a cluster expansion (CE) to the expensive calculator and run swap Monte Carlo
and kinetic Monte Carlo on the CE [Sanchez, Ducastelle & Gratias, Physica A 128, 334 (1984);
icet: Ångqvist et al., Adv. Theory Simul. 2, 1900015 (2019); for alloys with vacancies and
kMC, e.g. Van der Ven et al., Phys. Rev. B 64, 184307 (2001)].

Model
-----
Species codes σ_i ∈ {0 (vacancy), 1..n} on the ideal BCC lattice (M = n + 1 species). For every
orbit α of clusters (points, pairs up to the pair cutoff, triplets whose three distances are all
within the triplet cutoff) and every cluster instance (i, t) — anchor site i, ordered offset
template t of α with its first site at the anchor — the energy collects one effective
interaction J_α(σ_{i+o_t0}, σ_{i+o_t1}, ...):

    E(σ) = N J_0 + Σ_α Σ_i Σ_{t ∈ α} J_α(σ_{i+o_t0}, …)                               (eV)

Triplet vertices are ordered by the length of their opposite edge (ties in both orders), so the
interaction distinguishes symmetry-inequivalent vertices (the apex of an isosceles triangle) and
nothing else. This is a cluster expansion written in the occupation (indicator) basis: it spans
exactly the functions of icet's orthogonal cluster functions on the same orbits (checked when a
CE fitted by icet is converted, see below).

Swap energies are local: ΔE of exchanging σ_a and σ_b sums the changes of the cluster
instances that contain a or b (an instance holding both is counted once), ~O(10²–10³)
table look-ups in numba, no state cached (always exact for the current ``lattice.species``).
``interaction_range`` = the largest cluster diameter: a species change farther than that from a
and b does not change their swap ΔE.

Fitting
-------
:func:`fit_surrogate` samples configurations (random solid solutions and swap-MC snapshots at
several temperatures, with and without vacancies), labels them with the reference energy model
(any ``LocalEnergyModel`` of the package with a whole-cell energy, or any ASE calculator), fits
the CE on a training split and reports, on held-out configurations, the energy RMSE per site and
the errors of swap and vacancy-hop ΔE against the reference. Backends:

* ``"icet"`` — icet's :class:`ClusterSpace` (orthogonal trigonometric cluster functions)
  computes the cluster vectors and the effective cluster interactions are fitted by ridge least
  squares on them; the fitted ``icet.ClusterExpansion`` is then converted exactly into the
  occupation basis above by solving for the interactions that reproduce its predictions on
  random probe configurations (the conversion is refused if the largest residual exceeds
  1e-8 eV per site);
* ``"numpy"`` — the same ridge least squares directly on the occupation-basis correlation counts
  computed here (same physics, no icet needed).

Units: eV, Å, K.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numba
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matscale.systems.alloy.lattice import BCCLattice

__all__ = ["ClusterExpansionEnergy", "ReferenceEnergy", "SurrogateFit", "bcc_orbits",
           "fit_surrogate", "sample_configurations"]

_ROUND = 6  # decimals of Å used to compare distances
_RANGE_MARGIN = 0.01  # Å added to the largest cluster diameter for interaction_range
_CONVERSION_TOLERANCE = 1e-8  # eV per site: largest residual of the icet -> occupation conversion


# ------------------------------------------------------------------------------------------
# orbits of the BCC lattice
# ------------------------------------------------------------------------------------------
def _offsets_within(radius_doubled: float) -> np.ndarray:
    """Nonzero BCC offsets (doubled coordinates) with |d| ≤ radius (doubled units)."""
    reach = int(math.floor(radius_doubled + 1e-9))
    g = np.arange(-reach, reach + 1)
    d = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    same = (d % 2 == d[:, :1] % 2).all(axis=1)
    r2 = (d.astype(np.int64) ** 2).sum(axis=1)
    keep = same & (r2 > 0) & (r2 <= radius_doubled**2 * (1 + 1e-12))
    return d[keep].astype(np.int64)


def bcc_orbits(lattice_constant: float, cutoffs: Sequence[float]) -> list[dict[str, Any]]:
    """Cluster orbits of the BCC lattice: the point, pairs with distance ≤ ``cutoffs[0]`` (Å) and,
    when given, triplets with all three distances ≤ ``cutoffs[1]``.

    Each orbit is a dict with ``order``, ``radius`` (largest distance, Å), ``label`` and
    ``templates`` int64 [T, order, 3]: ordered offsets in doubled coordinates, first site at the
    origin (vertex order of a triplet: by opposite-edge length, ties in both orders)."""
    if not 1 <= len(cutoffs) <= 2:
        raise ValueError(f"cutoffs must hold 1 (pairs) or 2 (pairs, triplets) distances in Å, got {tuple(cutoffs)}")
    half = 0.5 * float(lattice_constant)
    orbits: list[dict[str, Any]] = [{"order": 1, "radius": 0.0, "label": "point",
                                      "templates": np.zeros((1, 1, 3), dtype=np.int64)}]
    pair_offsets = _offsets_within(float(cutoffs[0]) / half)
    dist = np.round(np.sqrt((pair_offsets**2).sum(axis=1)) * half, _ROUND)
    for k, r in enumerate(np.unique(dist)):
        sel = pair_offsets[dist == r]
        templates = np.stack([np.zeros_like(sel), sel], axis=1)
        orbits.append({"order": 2, "radius": float(r), "label": f"pair{k + 1} {r:.3f} A", "templates": templates})
    if len(cutoffs) == 2:
        tri = _offsets_within(float(cutoffs[1]) / half)
        groups: dict[tuple[float, float, float], list[np.ndarray]] = {}
        for o1, o2 in itertools.permutations(tri, 2):
            e01 = round(float(np.sqrt((o1**2).sum())) * half, _ROUND)
            e02 = round(float(np.sqrt((o2**2).sum())) * half, _ROUND)
            e12 = round(float(np.sqrt(((o1 - o2) ** 2).sum())) * half, _ROUND)
            if e12 > cutoffs[1] + 1e-9:
                continue
            if not (e12 <= e02 <= e01):  # opposite-edge lengths of vertices 0, 1, 2 ascending
                continue
            groups.setdefault(tuple(sorted((e01, e02, e12))), []).append(np.stack([np.zeros(3, np.int64), o1, o2]))
        for k, key in enumerate(sorted(groups)):
            orbits.append({"order": 3, "radius": float(max(key)),
                           "label": "triplet{} {:.3f}-{:.3f}-{:.3f} A".format(k + 1, *key),
                           "templates": np.stack(groups[key])})
    return orbits


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _param_index(species, sites, t, order, base, n_species):
    idx = base[t]
    stride = 1
    for q in range(order[t]):
        idx += species[sites[q]] * stride
        stride *= n_species
    return idx


@numba.njit(cache=True)
def _counts(species, table, order, base, n_species, n_params):
    """Occupation-basis correlation counts [n_params] (index 0: number of sites)."""
    out = np.zeros(n_params)
    n = species.shape[0]
    out[0] = n
    for i in range(n):
        for t in range(table.shape[1]):
            out[_param_index(species, table[i, t], t, order, base, n_species)] += 1.0
    return out


@numba.njit(cache=True)
def _swap_deltas(species, table, reverse, order, base, n_species, params, pairs):
    """ΔE of exchanging species[a] and species[b] for each pair (a, b): sum over the cluster
    instances (i, t) containing a or b of J(after) − J(before); an instance generated h times
    (it contains a or b h times) gets weight 1/h."""
    out = np.zeros(pairs.shape[0])
    after = np.empty(8, dtype=np.int64)
    for p in range(pairs.shape[0]):
        a = pairs[p, 0]
        b = pairs[p, 1]
        sa = species[a]
        sb = species[b]
        if sa == sb:
            continue
        d = 0.0
        for x in (a, b):
            for t in range(table.shape[1]):
                k = order[t]
                for q in range(k):
                    i = reverse[x, t, q]
                    sites = table[i, t]
                    hits = 0
                    idx_before = base[t]
                    idx_after = base[t]
                    stride = 1
                    for r in range(k):
                        s = sites[r]
                        sp = species[s]
                        if s == a:
                            hits += 1
                            after[r] = sb
                        elif s == b:
                            hits += 1
                            after[r] = sa
                        else:
                            after[r] = sp
                        idx_before += sp * stride
                        idx_after += after[r] * stride
                        stride *= n_species
                    d += (params[idx_after] - params[idx_before]) / hits
        out[p] = d
    return out


# ------------------------------------------------------------------------------------------
@dataclass
class _Tables:
    table: np.ndarray  # int64 [N, T, kmax] sites of instance (i, t)
    reverse: np.ndarray  # int64 [N, T, kmax] anchor i of the instances where site x is vertex q


class ClusterExpansionEnergy:
    """Cluster-expansion energy model on the BCC lattice (implements ``LocalEnergyModel``).

    ``elements``: chemical symbols of the species codes 1..n (code 0, the vacancy, is the extra
    CE species); ``lattice_constant`` (Å) the lattice the CE was fitted on; ``cutoffs`` (Å) pair
    and optional triplet cutoffs; ``params``: interactions (eV) in the layout of
    :meth:`parameter_labels` (index 0: energy per site). Build it with :func:`fit_surrogate` or
    :meth:`load`. ``swap_delta``/``swap_deltas`` are exact local differences of
    :meth:`total_energy` (numba, no cached state); use it in ``SwapMCEnsemble`` and in
    ``KRABarrierModel`` like ``LatticeEAM``.
    """

    def __init__(self, elements: Sequence[str], lattice_constant: float, cutoffs: Sequence[float],
                 params: np.ndarray | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        from matscale.systems.alloy.lattice import validate_elements

        self.elements = validate_elements(elements)
        if not (math.isfinite(lattice_constant) and lattice_constant > 0):
            raise ValueError(f"lattice_constant must be a positive length in Å, got {lattice_constant}")
        self.lattice_constant = float(lattice_constant)
        self.cutoffs = tuple(float(c) for c in cutoffs)
        if any(not (math.isfinite(c) and c > 0) for c in self.cutoffs):
            raise ValueError(f"cutoffs must be positive distances in Å, got {self.cutoffs}")
        self.orbits = bcc_orbits(self.lattice_constant, self.cutoffs)
        self.n_species = len(self.elements) + 1
        templates = [t for orb in self.orbits for t in orb["templates"]]
        self._kmax = max(orb["order"] for orb in self.orbits)
        self._offsets = np.zeros((len(templates), self._kmax, 3), dtype=np.int64)
        self._order = np.zeros(len(templates), dtype=np.int64)
        self._base = np.zeros(len(templates), dtype=np.int64)
        self._orbit_base = []
        start = 1
        t = 0
        for orb in self.orbits:
            self._orbit_base.append(start)
            for tmpl in orb["templates"]:
                self._offsets[t, : orb["order"]] = tmpl
                self._order[t] = orb["order"]
                self._base[t] = start
                t += 1
            start += self.n_species ** orb["order"]
        self.n_params = start
        self.interaction_range = max(orb["radius"] for orb in self.orbits) + _RANGE_MARGIN
        if params is None:
            params = np.zeros(self.n_params)
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (self.n_params,):
            raise ValueError(f"params must have shape ({self.n_params},) for these cutoffs and elements, "
                             f"got {params.shape}")
        self.params = params
        self.metadata = dict(metadata or {})
        self._tables: dict[tuple[int, int, int], _Tables] = {}

    # -- tables --------------------------------------------------------------------------------
    def parameter_labels(self) -> list[str]:
        """Name of every parameter: 'E0' then '<orbit label> (<species of the vertices>)'."""
        symbols = ("X",) + self.elements
        labels = ["E0"]
        for orb in self.orbits:
            for combo in itertools.product(range(self.n_species), repeat=orb["order"]):
                labels.append(f"{orb['label']} ({'-'.join(symbols[c] for c in reversed(combo))})"
                              if orb["order"] > 1 else f"point ({symbols[combo[0]]})")
        return labels

    def _check(self, lattice: "BCCLattice") -> None:
        if tuple(lattice.elements) != self.elements:
            raise ValueError(f"lattice.elements={tuple(lattice.elements)} differ from the surrogate's {self.elements}")
        if abs(lattice.lattice_constant - self.lattice_constant) > 1e-6 * self.lattice_constant:
            raise ValueError(f"lattice.lattice_constant={lattice.lattice_constant} Å differs from the "
                             f"{self.lattice_constant} Å the surrogate was fitted on")

    def _geometry(self, lattice: "BCCLattice") -> _Tables:
        key = tuple(lattice.cells)
        tab = self._tables.get(key)
        if tab is None:
            self._check(lattice)
            dc = np.asarray(lattice.doubled_coords, dtype=np.int64)
            table = lattice.site_index(dc[:, None, None, :] + self._offsets[None, :, :, :]).astype(np.int64)
            reverse = lattice.site_index(dc[:, None, None, :] - self._offsets[None, :, :, :]).astype(np.int64)
            tab = _Tables(table=np.ascontiguousarray(table), reverse=np.ascontiguousarray(reverse))
            self._tables[key] = tab
        return tab

    def _species(self, lattice: "BCCLattice", species: np.ndarray | None) -> np.ndarray:
        s = lattice.species if species is None else np.asarray(species)
        if s.shape != (lattice.n_sites,):
            raise ValueError(f"species must have shape ({lattice.n_sites},), got {s.shape}")
        return s

    # -- energies ------------------------------------------------------------------------------
    def correlations(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> np.ndarray:
        """Occupation-basis cluster counts [n_params] of a configuration (E = counts · params)."""
        tab = self._geometry(lattice)
        if lattice.elements != self.elements:
            self._check(lattice)
        return _counts(self._species(lattice, species), tab.table, self._order, self._base,
                       self.n_species, self.n_params)

    def total_energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        """Energy (eV) of the whole periodic lattice."""
        return float(self.correlations(lattice, species) @ self.params)

    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), in eV."""
        n = lattice.n_sites
        a, b = int(site_a), int(site_b)
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"site indices must lie in [0, {n - 1}], got ({a}, {b})")
        tab = self._geometry(lattice)
        return float(_swap_deltas(lattice.species, tab.table, tab.reverse, self._order, self._base,
                                  self.n_species, self.params, np.array([[a, b]], dtype=np.int64))[0])

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) of independent swaps [M, 2], each on the unchanged current lattice."""
        from matscale.calculators.ase_local import check_pairs

        p = check_pairs(lattice, pairs)
        tab = self._geometry(lattice)
        return _swap_deltas(lattice.species, tab.table, tab.reverse, self._order, self._base,
                            self.n_species, self.params, p)

    # -- disk ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to ``.npz`` (parameters + a JSON header with units)."""
        import matscale

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"surrogate path must end in .npz, got {path.name!r}")
        header = {"elements": list(self.elements), "lattice_constant_A": self.lattice_constant,
                  "cutoffs_A": list(self.cutoffs), "units": {"params": "eV", "cutoffs": "Å"},
                  "matscale_version": matscale.__version__, "metadata": self.metadata}
        np.savez(path, header=np.array(json.dumps(header)), params=self.params)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ClusterExpansionEnergy":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"surrogate file not found: {path}")
        with np.load(path) as f:
            header = json.loads(str(f["header"]))
            params = f["params"]
        return cls(header["elements"], header["lattice_constant_A"], header["cutoffs_A"], params,
                   header.get("metadata"))


# ------------------------------------------------------------------------------------------
# the expensive reference
# ------------------------------------------------------------------------------------------
class ReferenceEnergy:
    """Whole-cell energies and swap ΔE of the "expensive" energy source.

    ``source``: a package energy model with ``total_energy(lattice, species)`` (``LatticeEAM``)
    or ``cell_energy(lattice, species)`` (``ASELocalEnergy``, ``LammpsEngine``), or a bare ASE
    calculator (whole periodic cell, vacancies left out). Swap ΔE come from the model's own
    ``swap_deltas`` when it has one, else from two whole-cell energies (the unchanged one once).
    ``n_energy_calls`` counts whole-cell evaluations.
    """

    def __init__(self, source: Any) -> None:
        if hasattr(source, "total_energy"):
            self._energy = source.total_energy
        elif hasattr(source, "cell_energy"):
            self._energy = source.cell_energy
        elif hasattr(source, "get_potential_energy"):
            from matscale.calculators.ase_local import lattice_atoms

            def energy(lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
                atoms = lattice_atoms(lattice, species)
                atoms.calc = source
                return float(atoms.get_potential_energy())

            self._energy = energy
        else:
            raise TypeError("reference must be an energy model with total_energy/cell_energy "
                            "(LatticeEAM, ASELocalEnergy, LammpsEngine) or an ASE calculator")
        self.source = source
        self.name = type(source).__name__
        self.n_energy_calls = 0

    def energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        self.n_energy_calls += 1
        return float(self._energy(lattice, species))

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        if hasattr(self.source, "swap_deltas"):
            return np.asarray(self.source.swap_deltas(lattice, pairs), dtype=float)
        e0 = self.energy(lattice)
        out = np.empty(len(pairs))
        for k, (a, b) in enumerate(pairs):
            s = lattice.species.copy()
            s[[a, b]] = s[[b, a]]
            out[k] = self.energy(lattice, s) - e0
        return out


# ------------------------------------------------------------------------------------------
# sampling, fitting, reporting
# ------------------------------------------------------------------------------------------
def sample_configurations(template: "BCCLattice", composition: Mapping[str, float], n_random: int,
                          temperatures_K: Sequence[float], n_per_temperature: int,
                          mc_energy: Any | None, rng: np.random.Generator,
                          vacancies: Sequence[int] = (0, 1), sweeps: float = 20.0) -> list[tuple[str, np.ndarray]]:
    """Training configurations: (tag, species [N]) pairs.

    ``n_random`` random solid solutions of ``composition`` per vacancy count in ``vacancies``,
    then ``n_per_temperature`` snapshots of canonical swap MC (first-shell swaps, Metropolis
    with ``mc_energy``'s ``swap_delta``) per temperature and vacancy count, one snapshot every
    ``sweeps`` trials per atom from a fresh random start (the first ``sweeps`` discarded).
    """
    from matscale.systems.alloy.lattice import random_solid_solution
    from matscale.systems.alloy.swap import SwapMCEnsemble

    out: list[tuple[str, np.ndarray]] = []
    kw = dict(cells=template.cells, lattice_constant=template.lattice_constant, elements=template.elements)
    for n_vac in vacancies:
        for _ in range(int(n_random)):
            lat = random_solid_solution(composition, rng=rng, n_vacancies=int(n_vac), **kw)
            out.append((f"random v={n_vac}", lat.species.copy()))
    if mc_energy is None or n_per_temperature <= 0:
        return out
    for n_vac in vacancies:
        for temperature in temperatures_K:
            lat = random_solid_solution(composition, rng=rng, n_vacancies=int(n_vac), **kw)
            ensemble = SwapMCEnsemble(lat, mc_energy, float(temperature), rng, neighbor_shell=1)
            steps = max(1, int(round(sweeps * lat.n_sites)))
            ensemble.run(steps)
            for _ in range(int(n_per_temperature)):
                ensemble.run(steps)
                out.append((f"mc T={float(temperature):g} K v={n_vac}", lat.species.copy()))
    return out


@dataclass
class SurrogateFit:
    """A fitted surrogate and its held-out errors against the reference (eV, meV in the names)."""

    model: ClusterExpansionEnergy
    metrics: dict[str, Any] = field(default_factory=dict)
    train_tags: list[str] = field(default_factory=list)
    test_tags: list[str] = field(default_factory=list)
    icet_expansion: Any = None  # the fitted icet.ClusterExpansion (icet backend), else None

    def summary(self) -> str:
        m = self.metrics
        return (f"CE surrogate ({m['backend']}, {m['n_params']} parameters, {m['n_train']} train / {m['n_test']} "
                f"held-out configurations of {m['n_sites']} sites): energy RMSE {m['energy_rmse_meV_per_site']:.2f} "
                f"meV/site; swap ΔE RMSE {m['swap_rmse_meV']:.2f} meV (max {m['swap_max_meV']:.1f}); "
                f"hop ΔE RMSE {m['hop_rmse_meV']:.2f} meV (max {m['hop_max_meV']:.1f})")


def _ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """argmin ||X J − y||² + alpha ||J||² with columns scaled to unit RMS (minimum norm)."""
    scale = np.sqrt((features**2).mean(axis=0))
    scale[scale == 0] = 1.0
    x = features / scale
    if alpha > 0:
        x = np.vstack([x, math.sqrt(alpha) * np.eye(x.shape[1])])
        targets = np.concatenate([targets, np.zeros(features.shape[1])])
    coef, *_ = np.linalg.lstsq(x, targets, rcond=None)
    return coef / scale


def _icet_fit(model: ClusterExpansionEnergy, template: "BCCLattice", configs: np.ndarray,
              energies: np.ndarray, alpha: float, rng: np.random.Generator,
              moves: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
              delta_weight: float = 0.1) -> tuple[np.ndarray, Any]:
    """Fit icet's CE on per-site energies, then convert it to the occupation basis exactly."""
    from ase.build import bulk
    from icet import ClusterExpansion, ClusterSpace

    from matscale.systems.alloy.lattice import BCCLattice

    primitive = bulk(model.elements[0], "bcc", a=model.lattice_constant)
    space = ClusterSpace(primitive, cutoffs=list(model.cutoffs),
                         chemical_symbols=[list(model.elements) + ["X"]])
    lat = template.copy()

    def atoms_of(species: np.ndarray):
        lat.species[:] = species
        return lat.to_atoms()

    n = template.n_sites
    vectors = np.array([space.get_cluster_vector(atoms_of(s)) for s in configs])
    x, y = vectors, energies / n
    if moves is not None:  # icet cluster vectors are per site: ΔE rows scale by n
        dx, dy = _move_rows(lambda s: n * space.get_cluster_vector(atoms_of(s)), template, configs, moves)
        x, y = np.vstack([x, delta_weight * dx]), np.concatenate([y, delta_weight * dy])
    ecis = _ridge(x, y, alpha)
    expansion = ClusterExpansion(space, ecis)
    # conversion: random probe configurations of random composition (vacancies included)
    probe_lat = BCCLattice(template.cells, model.lattice_constant, model.elements)
    n_probe = 2 * model.n_params
    counts = np.empty((n_probe, model.n_params))
    values = np.empty(n_probe)
    for k in range(n_probe):
        fractions = rng.dirichlet(np.ones(model.n_species))
        probe_lat.species[:] = rng.choice(model.n_species, size=n, p=fractions).astype(np.int8)
        counts[k] = model.correlations(probe_lat)
        values[k] = expansion.predict(probe_lat.to_atoms()) * n
    params, *_ = np.linalg.lstsq(counts, values, rcond=None)
    residual = float(np.max(np.abs(counts @ params - values)) / n)
    if residual > _CONVERSION_TOLERANCE:
        raise RuntimeError(f"icet cluster expansion not representable in the occupation basis "
                           f"(residual {residual:.2e} eV/site): use backend='numpy'")
    return params, expansion


def _errors(model: ClusterExpansionEnergy, reference: ReferenceEnergy, template: "BCCLattice",
            configs: Sequence[np.ndarray], energies: np.ndarray, n_swaps: int,
            rng: np.random.Generator) -> dict[str, float]:
    lat = template.copy()
    n = template.n_sites
    predicted = np.empty(len(configs))
    swap_ref, swap_ce, hop_ref, hop_ce = [], [], [], []
    for k, s in enumerate(configs):
        lat.species[:] = s
        predicted[k] = model.total_energy(lat)
        atoms = np.flatnonzero(lat.species > 0)
        a = rng.choice(atoms, size=n_swaps)
        b = lat.neighbors(1)[a, rng.integers(0, 8, size=n_swaps)]
        pairs = np.stack([a, b], axis=1)
        pairs = pairs[(lat.species[pairs[:, 0]] != lat.species[pairs[:, 1]]) & (lat.species[pairs[:, 1]] > 0)]
        if len(pairs):
            swap_ref.append(reference.swap_deltas(lat, pairs))
            swap_ce.append(model.swap_deltas(lat, pairs))
        for v in lat.vacancies:
            t = lat.neighbors(1)[v]
            hops = np.stack([np.full(8, v), t], axis=1)[lat.species[t] > 0].astype(np.int64)
            hop_ref.append(reference.swap_deltas(lat, hops))
            hop_ce.append(model.swap_deltas(lat, hops))
    err = (predicted - energies) / n
    out = {"energy_rmse_meV_per_site": 1e3 * float(np.sqrt(np.mean(err**2))),
           "energy_max_meV_per_site": 1e3 * float(np.max(np.abs(err)))}
    for name, ref, ce in (("swap", swap_ref, swap_ce), ("hop", hop_ref, hop_ce)):
        if ref:
            d = np.concatenate(ce) - np.concatenate(ref)
            out[f"{name}_rmse_meV"] = 1e3 * float(np.sqrt(np.mean(d**2)))
            out[f"{name}_max_meV"] = 1e3 * float(np.max(np.abs(d)))
            out[f"{name}_spread_meV"] = 1e3 * float(np.std(np.concatenate(ref)))
            out[f"n_{name}"] = int(d.size)
        else:
            out.update({f"{name}_rmse_meV": float("nan"), f"{name}_max_meV": float("nan"),
                        f"{name}_spread_meV": float("nan"), f"n_{name}": 0})
    return out


def _label_moves(ref: ReferenceEnergy, template: "BCCLattice", configs: Sequence[np.ndarray], n_swaps: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(config index [K], pairs [K, 2], reference ΔE [K]) of every vacancy hop and ``n_swaps``
    first-shell swaps per configuration."""
    lat = template.copy()
    index, pairs, deltas = [], [], []
    for k, s in enumerate(configs):
        lat.species[:] = s
        v = lat.vacancies
        hops = np.stack([np.repeat(v, 8), lat.neighbors(1)[v].ravel()], axis=1).astype(np.int64)
        a = rng.choice(np.flatnonzero(s > 0), size=n_swaps)
        swaps = np.stack([a, lat.neighbors(1)[a, rng.integers(0, 8, size=n_swaps)]], axis=1).astype(np.int64)
        p = np.vstack([hops, swaps])
        p = p[(s[p[:, 0]] != s[p[:, 1]]) & ((s[p[:, 0]] == 0) | (s[p[:, 1]] > 0))]
        if len(p):
            index.append(np.full(len(p), k))
            pairs.append(p)
            deltas.append(ref.swap_deltas(lat, p))
    return np.concatenate(index), np.vstack(pairs), np.concatenate(deltas)


def _move_rows(features, template: "BCCLattice", configs: np.ndarray,
               moves: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Feature differences [K, P] (after − before) and ΔE [K] of labelled moves."""
    index, pairs, deltas = moves
    rows = np.empty((len(index), len(features(configs[0]))))
    for r, (k, (a, b)) in enumerate(zip(index, pairs)):
        s = configs[k].copy()
        before = features(s)
        s[[a, b]] = s[[b, a]]
        rows[r] = features(s) - before
    return rows, deltas


def fit_surrogate(reference: Any, composition: Mapping[str, float], *, cells: int | tuple[int, int, int] = 4,
                  lattice_constant: float = 3.24, elements: Sequence[str] | None = None,
                  cutoffs: Sequence[float] = (7.0, 4.0), temperatures_K: Sequence[float] = (800.0, 1500.0, 3000.0),
                  n_random: int = 40, n_per_temperature: int = 10, vacancies: Sequence[int] = (0, 1),
                  mc_with: str = "surrogate", test_fraction: float = 0.25, alpha: float = 1e-6,
                  backend: str = "auto", n_swaps: int = 20, n_moves_per_config: int = 8,
                  delta_weight: float = 0.1, rng: np.random.Generator | int = 0) -> SurrogateFit:
    """Sample, label, fit and validate a cluster-expansion surrogate of ``reference``.

    ``reference``: ``LatticeEAM``, ``ASELocalEnergy``, ``LammpsEngine`` or a bare ASE calculator
    (see :class:`ReferenceEnergy`). Configurations live on a periodic BCC cell of ``cells``
    (cells per side) and ``lattice_constant`` Å holding ``composition`` (fractions summing to 1)
    and, for each entry of ``vacancies``, that many vacancies. ``mc_with``: which energy drives
    the swap-MC snapshots at ``temperatures_K`` (K): "surrogate" (a first CE fitted to the random
    configurations: only the labels need the reference, the right choice for an expensive MLIP)
    or "reference" (the reference's own ``swap_delta``). A random ``test_fraction`` of all
    configurations is held out; on it the energy RMSE per site and the ΔE errors of ``n_swaps``
    first-shell swaps per configuration and of every vacancy hop are reported. ``alpha``: ridge
    strength on unit-scaled correlations. ``n_moves_per_config``: besides the energies, fit the
    reference ΔE of every vacancy hop and of this many random first-shell swaps per training
    configuration (rows weighted by ``delta_weight`` against energies per site; each costs the
    reference one ΔE evaluation). ``backend``: "icet", "numpy" or "auto" (icet when it
    is importable). Returns a :class:`SurrogateFit`.
    """
    from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution

    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
    if mc_with not in ("surrogate", "reference"):
        raise ValueError(f"mc_with must be 'surrogate' or 'reference', got {mc_with!r}")
    if backend not in ("auto", "icet", "numpy"):
        raise ValueError(f"backend must be 'auto', 'icet' or 'numpy', got {backend!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if any(int(v) < 0 for v in vacancies) or not vacancies:
        raise ValueError(f"vacancies must list vacancy counts >= 0, got {tuple(vacancies)}")
    if backend == "auto":
        try:
            import icet  # noqa: F401

            backend = "icet"
        except ImportError:
            backend = "numpy"
    template = random_solid_solution(composition, cells, lattice_constant, n_vacancies=0, rng=0, elements=elements)
    template = BCCLattice(template.cells, template.lattice_constant, template.elements)
    ref = ReferenceEnergy(reference)
    model = ClusterExpansionEnergy(template.elements, template.lattice_constant, cutoffs)
    started = time.perf_counter()

    def label(samples: list[tuple[str, np.ndarray]]) -> np.ndarray:
        lat = template.copy()
        out = np.empty(len(samples))
        for k, (_, s) in enumerate(samples):
            lat.species[:] = s
            out[k] = ref.energy(lat)
        return out

    def fit(samples: list[tuple[str, np.ndarray]], energies: np.ndarray,
            moves: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, Any]:
        configs = np.array([s for _, s in samples])
        if backend == "icet":
            return _icet_fit(model, template, configs, energies, alpha, rng, moves, delta_weight)
        lat = template.copy()
        counts = np.empty((len(configs), model.n_params))
        for k, s in enumerate(configs):
            lat.species[:] = s
            counts[k] = model.correlations(lat)
        n = template.n_sites
        x, y = counts / n, energies / n
        if moves is not None:
            dx, dy = _move_rows(lambda s: model.correlations(lat, s), template, configs, moves)
            x, y = np.vstack([x, delta_weight * dx]), np.concatenate([y, delta_weight * dy])
        return _ridge(x, y, alpha), None

    samples = sample_configurations(template, composition, n_random, temperatures_K, 0, None, rng, vacancies)
    energies = label(samples)
    if mc_with == "surrogate":
        model.params = fit(samples, energies)[0]
        mc_energy = model
    else:
        mc_energy = reference
    extra = sample_configurations(template, composition, 0, temperatures_K, n_per_temperature, mc_energy, rng,
                                  vacancies)
    samples += extra
    energies = np.concatenate([energies, label(extra)])
    order = rng.permutation(len(samples))
    n_test = max(1, int(round(test_fraction * len(samples))))
    test, train = order[:n_test], order[n_test:]
    moves = None
    if n_moves_per_config > 0:
        moves = _label_moves(ref, template, [samples[k][1] for k in train], n_moves_per_config, rng)
    label_seconds = time.perf_counter() - started
    params, expansion = fit([samples[k] for k in train], energies[train], moves)
    model.params = params
    model.metadata = {"reference": ref.name, "backend": backend, "cells": list(template.cells),
                      "composition": {k: float(v) for k, v in composition.items()},
                      "temperatures_K": [float(t) for t in temperatures_K], "vacancies": [int(v) for v in vacancies],
                      "n_train": int(len(train)), "alpha": alpha}
    metrics = {"backend": backend, "reference": ref.name, "n_params": model.n_params, "n_train": int(len(train)),
               "n_test": int(len(test)), "n_sites": template.n_sites, "cutoffs_A": list(model.cutoffs),
               "interaction_range_A": model.interaction_range, "sample_and_label_s": label_seconds}
    metrics.update(_errors(model, ref, template, [samples[k][1] for k in test], energies[test], n_swaps, rng))
    metrics["fit_s"] = time.perf_counter() - started - label_seconds
    metrics["reference_energy_calls"] = ref.n_energy_calls
    fitted = SurrogateFit(model=model, metrics=metrics, train_tags=[samples[k][0] for k in train],
                          test_tags=[samples[k][0] for k in test], icet_expansion=expansion)
    return fitted


def fit_report_json(fit: SurrogateFit) -> str:
    """The metrics of a :class:`SurrogateFit` as JSON."""
    return json.dumps(fit.metrics, indent=2, default=float)


