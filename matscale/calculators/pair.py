"""Analytic shell-wise pair interactions on a BCC lattice: a fast toy Hamiltonian.

    E = sum over shells k of sum over unordered bonds {i, j} of shell k of V_k(s_i, s_j)    (eV)

with ``V_k`` a symmetric [n_elements + 1, n_elements + 1] table indexed by species codes; row
and column 0 (vacancy) are zero, so vacancies do not interact. Implements
:class:`matscale.calculators.base.LocalEnergyModel` (numba kernels for the swap ΔE); used in
tests and as an inexpensive stand-in for a real potential.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numba as nb
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matscale.systems.alloy.lattice import BCCLattice

_SHELL_DISTANCE_IN_A = {1: np.sqrt(3.0) / 2.0, 2: 1.0, 3: np.sqrt(2.0)}


@nb.njit(cache=True)
def _swap_delta(species, tables, energies, a, b):
    """ΔE (eV) of exchanging the species on sites a and b; tables = list of neighbour tables."""
    sa = species[a]
    sb = species[b]
    if sa == sb:
        return 0.0
    delta = 0.0
    for k in range(len(tables)):
        table = tables[k]
        v = energies[k]
        for n in range(table.shape[1]):
            # a bond to b is unchanged; a bond of a site to its own periodic image (boxes of
            # one cell) is counted once in E, i.e. half per table entry
            j = table[a, n]
            if j == a:
                delta += 0.5 * (v[sb, sb] - v[sa, sa])
            elif j != b:
                sj = species[j]
                delta += v[sb, sj] - v[sa, sj]
            j = table[b, n]
            if j == b:
                delta += 0.5 * (v[sa, sa] - v[sb, sb])
            elif j != a:
                sj = species[j]
                delta += v[sa, sj] - v[sb, sj]
    return delta


@nb.njit(cache=True)
def _swap_deltas(species, tables, energies, pairs, out):
    for m in range(pairs.shape[0]):
        out[m] = _swap_delta(species, tables, energies, pairs[m, 0], pairs[m, 1])


@nb.njit(cache=True)
def _total_energy(species, tables, energies):
    total = 0.0
    for k in range(len(tables)):
        table = tables[k]
        v = energies[k]
        for i in range(table.shape[0]):
            for n in range(table.shape[1]):
                total += v[species[i], species[table[i, n]]]
    return 0.5 * total


class ShellPairModel:
    """Pair energies per neighbour shell: ``ShellPairModel({1: V1, 2: V2}, n_elements=3)``.

    Parameters
    ----------
    pair_energies : dict shell -> symmetric matrix [n_elements, n_elements] in eV between the
        element codes 1..n_elements (the vacancy row/column is added as zeros). Shells 1, 2, 3.
    lattice_constant : a in Å, used only for ``interaction_range`` (default 3.24).

    ``interaction_range`` (Å) = distance of the outermost shell given: the swap ΔE of (a, b)
    depends only on species within that distance of a or b.
    """

    def __init__(self, pair_energies: dict[int, np.ndarray], lattice_constant: float = 3.24) -> None:
        if not pair_energies:
            raise ValueError("pair_energies must give at least one shell (1, 2 or 3)")
        shells = sorted(pair_energies)
        for shell in shells:
            if shell not in (1, 2, 3):
                raise ValueError(f"pair_energies shells must be 1, 2 or 3, got {shell!r}")
        sizes = {np.asarray(pair_energies[s]).shape for s in shells}
        if len(sizes) != 1:
            raise ValueError(f"pair_energies matrices must all have the same shape, got {sizes}")
        shape = sizes.pop()
        if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
            raise ValueError(f"pair_energies matrices must be square [n_elements, n_elements], got {shape}")
        if not np.isfinite(lattice_constant) or lattice_constant <= 0:
            raise ValueError(f"lattice_constant must be a positive length in Å, got {lattice_constant}")
        self.shells = tuple(shells)
        self.n_elements = shape[0]
        tables = []
        for shell in shells:
            v = np.asarray(pair_energies[shell], dtype=np.float64)
            if not np.allclose(v, v.T):
                raise ValueError(f"pair_energies[{shell}] must be symmetric")
            padded = np.zeros((self.n_elements + 1, self.n_elements + 1))
            padded[1:, 1:] = v
            tables.append(padded)
        self.energies = np.stack(tables)
        self.lattice_constant = float(lattice_constant)
        self.interaction_range = _SHELL_DISTANCE_IN_A[shells[-1]] * self.lattice_constant

    def _tables(self, lattice: "BCCLattice") -> "nb.typed.List":
        if lattice.n_elements != self.n_elements:
            raise ValueError(f"lattice has {lattice.n_elements} elements, the pair model {self.n_elements}")
        tables = nb.typed.List()
        for shell in self.shells:
            tables.append(np.ascontiguousarray(lattice.neighbors(shell)))
        return tables

    def _tables_cached(self, lattice: "BCCLattice") -> "nb.typed.List":
        key = lattice.cells  # neighbour tables depend only on the box shape
        cached = getattr(self, "_table_cache", None)
        if cached is None or cached[0] != key:
            self._table_cache = (key, self._tables(lattice))
        return self._table_cache[1]

    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species of site_a and site_b) − E(before), eV."""
        return float(_swap_delta(lattice.species, self._tables_cached(lattice), self.energies, int(site_a), int(site_b)))

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) for independent pairs [M, 2], each on the unchanged current lattice."""
        pairs = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        out = np.empty(pairs.shape[0])
        _swap_deltas(lattice.species, self._tables_cached(lattice), self.energies, pairs, out)
        return out

    def energy(self, lattice: "BCCLattice") -> float:
        """Total configurational energy E (eV) of the lattice."""
        return float(_total_energy(lattice.species, self._tables_cached(lattice), self.energies))


class PairKRABarrierModel:
    """Kinetically resolved activation barriers on a pair model (a quick, exact-balance toy):
    ``E_b = e0[moving species] + ΔE / 2`` with ΔE the pair-model energy change of the hop.

    ``e0``: dict element -> eV (or a sequence in element-code order). Forward and backward
    barriers differ by exactly ΔE, so kMC obeys detailed balance with respect to the pair
    model's Boltzmann distribution. Implements the BarrierModel protocol.
    """

    def __init__(self, energy_model: ShellPairModel, e0: dict[str, float] | np.ndarray, elements: tuple[str, ...] = ("Nb", "Mo", "Ta")) -> None:
        self.energy_model = energy_model
        if isinstance(e0, dict):
            missing = [el for el in elements if el not in e0]
            if missing:
                raise ValueError(f"e0 must give a barrier for every element, missing {missing}")
            values = [float(e0[el]) for el in elements]
        else:
            values = [float(x) for x in e0]
        if len(values) != energy_model.n_elements:
            raise ValueError(f"e0 needs {energy_model.n_elements} values, got {len(values)}")
        self.e0_by_code = np.array([np.inf] + values)  # code 0 (vacancy) cannot move
        self.interaction_range = energy_model.interaction_range

    def hop_barriers(self, lattice: "BCCLattice", vacancy_sites: np.ndarray) -> np.ndarray:
        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        targets = lattice.neighbors(1)[sites].astype(np.int64)
        pairs = np.stack([np.repeat(sites, 8), targets.ravel()], axis=1)
        delta = self.energy_model.swap_deltas(lattice, pairs).reshape(-1, 8)
        return self.e0_by_code[lattice.species[targets]] + 0.5 * delta
