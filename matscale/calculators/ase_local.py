"""Local-cluster energy differences of lattice swaps, for any ASE calculator.

A swap of the species on sites a and b of a periodic :class:`BCCLattice` changes the energy of
the atoms within the potential cutoff ``r_c`` of (any periodic copy of) a or b. Those atoms
form the *core*; their energies depend on everything within ``r_c`` of them, so a non-periodic
cluster of the sites within ``2 r_c`` (+ margin) of a and b contains every environment needed:

    ΔE = Σ_{sites i in core, each site once} [e_i(after) − e_i(before)]      (per-atom energies)

Periodic copies are handled exactly: the cluster is built from unwrapped positions, every copy of
a and b is swapped, and a site that appears more than once in the core is counted once.
When the calculator has no per-atom energies, the total cluster energy difference is used; it is
exact when the cluster holds no periodic copy of a or b other than the central ones (cell edges
longer than the cluster radius); otherwise the whole periodic cell is evaluated (still exact, and
then no more expensive than a cluster).

Vacancies (species code 0) are empty sites: they are left out of the cluster.
Units: eV, Å.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import Calculator

    from matscale.systems.alloy.lattice import BCCLattice

__all__ = ["LocalCluster", "build_local_cluster", "lattice_atoms", "ASELocalEnergy", "check_pairs"]

_MARGIN = 0.3  # Å added to the core radius and to the buffer (rounding safety on ideal lattices)

_STENCIL_CACHE: dict[int, np.ndarray] = {}


def _doubled_stencil(radius_doubled: int) -> np.ndarray:
    """All BCC lattice vectors in doubled coordinates (all even or all odd) with |d| ≤ radius."""
    stencil = _STENCIL_CACHE.get(radius_doubled)
    if stencil is None:
        g = np.arange(-radius_doubled, radius_doubled + 1)
        d = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
        same_parity = (d % 2 == d[:, :1] % 2).all(axis=1)
        inside = (d.astype(np.int64) ** 2).sum(axis=1) <= radius_doubled**2
        stencil = d[same_parity & inside].astype(np.int64)
        _STENCIL_CACHE[radius_doubled] = stencil
    return stencil


@dataclass
class LocalCluster:
    """Unwrapped copies of lattice sites around some centre sites.

    ``sites`` [n] lattice site index of each copy; ``positions`` [n, 3] Å (unwrapped, relative to
    the first centre); ``doubled`` [n, 3] unwrapped doubled coordinates; ``core`` [n_pairs, n]
    bool: copy within the core radius of a pair's two central sites.
    """

    sites: np.ndarray
    positions: np.ndarray
    doubled: np.ndarray
    core: np.ndarray
    has_foreign_copy: np.ndarray  # [n_pairs] a non-central copy of a pair site lies in the cluster

    def species(self, lattice_species: np.ndarray, pair: tuple[int, int] | None = None) -> np.ndarray:
        """Species code of every copy, optionally after exchanging the pair's two sites."""
        s = lattice_species[self.sites].copy()
        if pair is not None:
            a, b = pair
            s[self.sites == a] = lattice_species[b]
            s[self.sites == b] = lattice_species[a]
        return s

    def core_site_mask(self, k: int) -> np.ndarray:
        """Copies of pair ``k``'s core, each lattice site once (first copy kept)."""
        idx = np.flatnonzero(self.core[k])
        _, first = np.unique(self.sites[idx], return_index=True)
        mask = np.zeros(len(self.sites), dtype=bool)
        mask[idx[first]] = True
        return mask


def build_local_cluster(lattice: "BCCLattice", pairs: np.ndarray, cutoff: float,
                        margin: float = _MARGIN) -> LocalCluster:
    """Cluster of all site copies within ``2·cutoff + 2·margin`` of any site of ``pairs`` [M, 2];
    core of pair k: copies within ``cutoff + margin`` of its two central sites."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    half_a = lattice.lattice_constant / 2.0
    core_r = (cutoff + margin) / half_a  # in doubled units
    cluster_r = (2.0 * cutoff + 2.0 * margin) / half_a
    stencil = _doubled_stencil(int(math.floor(cluster_r)))
    stencil = stencil[(stencil**2).sum(axis=1) <= cluster_r**2]
    centres = np.unique(pairs.ravel())
    dc_all = np.asarray(lattice.doubled_coords, dtype=np.int64)
    origin = dc_all[pairs[0, 0]]
    # unwrapped doubled coordinates of the central copies: nearest image to the first centre
    dims = 2 * np.asarray(lattice.cells, dtype=np.int64)
    rel = dc_all[centres] - origin
    rel -= dims * np.round(rel / dims).astype(np.int64)
    central = {int(c): origin + r for c, r in zip(centres, rel)}
    copies = np.unique(np.concatenate([central[c] + stencil for c in central]), axis=0)
    sites = np.asarray(lattice.site_index(copies), dtype=np.int64)
    core = np.zeros((len(pairs), len(copies)), dtype=bool)
    foreign = np.zeros(len(pairs), dtype=bool)
    for k, (a, b) in enumerate(pairs):
        for s in (int(a), int(b)):
            d2 = ((copies - central[s]) ** 2).sum(axis=1)
            core[k] |= d2 <= core_r**2
            foreign[k] |= bool(np.any((sites == s) & (d2 > 0)))
    positions = (copies - origin) * half_a
    return LocalCluster(sites=sites, positions=positions, doubled=copies, core=core,
                        has_foreign_copy=foreign)


def check_pairs(lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
    """Validate swap pairs: int64 array [M, 2] of distinct in-range site indices."""
    arr = np.asarray(pairs)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must have shape [M, 2], got {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"pairs must be integer site indices, got dtype {arr.dtype}")
    if arr.dtype != np.int64 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    n = lattice.n_sites
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"pair site indices must lie in [0, {n - 1}]")
    if (arr[:, 0] == arr[:, 1]).any():
        raise ValueError("a swap pair must name two different sites")
    return arr


def lattice_atoms(lattice: "BCCLattice", species: np.ndarray | None = None):
    """Periodic ase.Atoms of the occupied sites (vacancies left out)."""
    from ase import Atoms

    s = lattice.species if species is None else species
    occ = s > 0
    symbols = [lattice.elements[c - 1] for c in s[occ]]
    return Atoms(symbols=symbols, positions=lattice.positions[occ], cell=lattice.cell, pbc=True)


class ASELocalEnergy:
    """Swap energy changes from any ASE calculator, evaluated on the local cluster.

    ``calculator``: an ASE calculator (used as is; one instance is reused).
    ``per_atom``: use per-atom energies (default: when the calculator implements 'energies');
    with False the total cluster energy is used, or the whole cell when periodic copies of the
    swapped sites fall inside the cluster.
    ``cutoff`` (Å): the potential's interaction cutoff r_c; the cluster is core (r_c + margin)
    plus a buffer of r_c + margin, i.e. ≥ 2 r_c around the swapped sites.
    Implements :class:`matscale.calculators.base.LocalEnergyModel` with
    ``interaction_range = 2·cutoff`` (a species change influences swap energies of pairs up to
    2 r_c away: it changes the densities of atoms within r_c, whose embedding terms those swaps
    also change).
    """

    def __init__(self, calculator: "Calculator", cutoff: float, margin: float = _MARGIN,
                 per_atom: bool | None = None) -> None:
        if not hasattr(calculator, "get_potential_energy"):
            raise TypeError("calculator must be an ASE calculator (with get_potential_energy)")
        if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a finite positive distance in Å, got {cutoff!r}")
        if not (margin >= 0):
            raise ValueError(f"margin must be >= 0 Å, got {margin!r}")
        self.calculator = calculator
        self.cutoff = float(cutoff)
        self.margin = float(margin)
        self.interaction_range = 2.0 * self.cutoff
        props = getattr(calculator, "implemented_properties", ())
        if per_atom and "energies" not in props:
            raise ValueError("per_atom=True needs a calculator with 'energies' in implemented_properties")
        self.per_atom = ("energies" in props) if per_atom is None else bool(per_atom)

    # -- energies of explicit structures -------------------------------------------------------
    def _cluster_atoms(self, lattice: "BCCLattice", cluster: LocalCluster, species: np.ndarray):
        from ase import Atoms

        occ = species > 0
        pos = cluster.positions[occ]
        span = pos.max(axis=0) - pos.min(axis=0) + 2.0 * (self.cutoff + 5.0)
        atoms = Atoms(symbols=[lattice.elements[c - 1] for c in species[occ]],
                      positions=pos - pos.min(axis=0) + self.cutoff + 5.0,
                      cell=np.diag(span), pbc=False)
        return atoms, occ

    def _energies(self, atoms) -> np.ndarray:
        atoms.calc = self.calculator
        return np.asarray(atoms.get_potential_energies(), dtype=float)

    def _energy(self, atoms) -> float:
        atoms.calc = self.calculator
        return float(atoms.get_potential_energy())

    def cell_energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        """Energy (eV) of the whole periodic lattice (vacancies left out)."""
        return self._energy(lattice_atoms(lattice, species))

    def swap_delta_whole_cell(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """Reference ΔE (eV) from two whole-cell evaluations."""
        after = lattice.species.copy()
        after[[site_a, site_b]] = after[[site_b, site_a]]
        return self.cell_energy(lattice, after) - self.cell_energy(lattice)

    # -- LocalEnergyModel ----------------------------------------------------------------------
    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), in eV."""
        return float(self.swap_deltas(lattice, np.array([[site_a, site_b]]))[0])

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) of independent swaps [M, 2]; pairs sharing their first site share one
        cluster and one 'before' evaluation."""
        pairs = check_pairs(lattice, pairs)
        return grouped_swap_deltas(lattice, pairs, self._group_deltas)

    def _group_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        species = lattice.species
        out = np.zeros(len(pairs))
        same = species[pairs[:, 0]] == species[pairs[:, 1]]
        todo = np.flatnonzero(~same)
        if len(todo) == 0:
            return out
        cluster = build_local_cluster(lattice, pairs[todo], self.cutoff, self.margin)
        if self.per_atom:
            before_s = cluster.species(species)
            atoms, occ = self._cluster_atoms(lattice, cluster, before_s)
            e_before = np.zeros(len(before_s))
            e_before[occ] = self._energies(atoms)
            for k, idx in enumerate(todo):
                after_s = cluster.species(species, tuple(pairs[idx]))
                atoms, occ = self._cluster_atoms(lattice, cluster, after_s)
                e_after = np.zeros(len(after_s))
                e_after[occ] = self._energies(atoms)
                core = cluster.core_site_mask(k)
                out[idx] = float((e_after[core] - e_before[core]).sum())
            return out
        e_before = None
        for k, idx in enumerate(todo):
            a, b = (int(v) for v in pairs[idx])
            if cluster.has_foreign_copy[k] or len(cluster.sites) >= lattice.n_sites:
                out[idx] = self.swap_delta_whole_cell(lattice, a, b)
                continue
            if e_before is None:
                e_before = self._energy(self._cluster_atoms(lattice, cluster, cluster.species(species))[0])
            after = self._cluster_atoms(lattice, cluster, cluster.species(species, (a, b)))[0]
            out[idx] = self._energy(after) - e_before
        return out


def grouped_swap_deltas(lattice: "BCCLattice", pairs: np.ndarray,
                        group_fn: Callable[["BCCLattice", np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``group_fn(lattice, pairs_of_group)`` to the pairs grouped by their first site."""
    out = np.empty(len(pairs))
    if len(pairs) == 0:
        return out
    order = np.argsort(pairs[:, 0], kind="stable")
    firsts = pairs[order, 0]
    bounds = np.flatnonzero(np.diff(firsts)) + 1
    for group in np.split(order, bounds):
        out[group] = group_fn(lattice, pairs[group])
    return out
