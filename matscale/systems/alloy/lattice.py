"""A periodic BCC lattice whose state is one species code per site.

Geometry
--------
The box holds ``cells = (cx, cy, cz)`` cubic cells of edge ``a`` (Å). Each cell has a corner
site (i, j, k) and a body-centre site (i+½, j+½, k+½). Sites are addressed by *doubled
coordinates* ``d = 2 r / a`` (integers, all even on the corner sublattice, all odd on the
body-centre one). Site order (the order of ``golden_barriers.json`` of the NNK weights)::

    index = 2 * ((i * cy + j) * cz + k) + b        # b = 0 corner, b = 1 body centre

so k runs fastest and the two sites of a cell are adjacent.

State
-----
``species`` (int8 [N]) is the whole state: 0 = vacancy (ASE dummy symbol 'X'), c >= 1 means
``elements[c - 1]``. Kinetic and swap Monte Carlo modify it in place.

Neighbour shells (doubled coordinates, distance in units of a)
-------------------------------------------------------------
1: the 8 (±1, ±1, ±1), ⟨111⟩/2, √3/2;  2: the 6 (±2, 0, 0), ⟨100⟩, 1;  3: the 12 (±2, ±2, 0),
⟨110⟩, √2. Tables are built from doubled coordinates by integer arithmetic (no distance
search). For boxes of fewer than 3 cells along an axis some neighbours are periodic images of
the same site; they are listed as often as they occur (consistent bond counting).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

VACANCY_SYMBOL = "X"
DEFAULT_ELEMENTS: tuple[str, ...] = ("Nb", "Mo", "Ta")


def _shell_offsets() -> dict[int, np.ndarray]:
    first = np.array(list(itertools.product((-1, 1), repeat=3)), dtype=np.int32)
    second = np.array(
        [v for v in itertools.product((-2, 0, 2), repeat=3) if sum(x != 0 for x in v) == 1],
        dtype=np.int32,
    )
    third = np.array(
        [v for v in itertools.product((-2, 0, 2), repeat=3) if sum(x != 0 for x in v) == 2],
        dtype=np.int32,
    )
    return {1: first, 2: second, 3: third}


#: Neighbour offsets per shell in doubled coordinates; row order of ``BCCLattice.neighbors``.
#: Shell 1 is ``itertools.product((-1, 1), repeat=3)``: (-1,-1,-1), (-1,-1,1), ..., (1,1,1).
NEIGHBOR_OFFSETS: dict[int, np.ndarray] = _shell_offsets()
#: Shell distances in units of the lattice constant.
SHELL_DISTANCES: dict[int, float] = {1: np.sqrt(3.0) / 2.0, 2: 1.0, 3: np.sqrt(2.0)}


def _known_symbols() -> set[str]:
    from ase.data import chemical_symbols

    return set(chemical_symbols[1:])


def validate_elements(elements: Iterable[str]) -> tuple[str, ...]:
    """Return ``elements`` as a tuple after checking they are distinct chemical symbols."""
    if isinstance(elements, str):
        raise TypeError(f"elements must be a sequence of chemical symbols, got the string {elements!r}")
    elements = tuple(elements)
    known = _known_symbols()
    if len(elements) == 0 or len(elements) > 126:
        raise ValueError(f"elements must hold 1..126 chemical symbols, got {len(elements)}")
    for symbol in elements:
        if symbol not in known:
            raise ValueError(f"unknown element {symbol!r} in elements (must be a chemical symbol such as 'Nb')")
    if len(set(elements)) != len(elements):
        raise ValueError(f"elements must be distinct, got {elements}")
    return elements


def _validate_cells(cells: int | tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(cells, (int, np.integer)):
        cells = (int(cells),) * 3
    try:
        cells = tuple(int(c) for c in cells)
    except TypeError:
        raise TypeError(f"cells must be an int or a tuple of 3 ints, got {cells!r}") from None
    if len(cells) != 3 or any(c < 1 for c in cells):
        raise ValueError(f"cells must be 3 positive integers (cells per side), got {cells}")
    return cells  # type: ignore[return-value]


def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


class BCCLattice:
    """Periodic BCC lattice of ``2 * cx * cy * cz`` sites holding species codes.

    Parameters
    ----------
    cells : cells per side, an int (cubic box) or ``(cx, cy, cz)``.
    lattice_constant : cubic lattice constant a in Å (default 3.24, NbMoTa).
    elements : chemical symbols of the codes 1, 2, ...; code 0 is a vacancy.
    species : optional int array [N] of codes in 0..len(elements); default all ``1``.
    """

    def __init__(
        self,
        cells: int | tuple[int, int, int],
        lattice_constant: float = 3.24,
        elements: tuple[str, ...] = DEFAULT_ELEMENTS,
        species: np.ndarray | None = None,
    ) -> None:
        self._cells = _validate_cells(cells)
        if not np.isfinite(lattice_constant) or lattice_constant <= 0:
            raise ValueError(f"lattice_constant must be a positive length in Å, got {lattice_constant}")
        self._a = float(lattice_constant)
        self._elements = validate_elements(elements)
        n = 2 * int(np.prod(self._cells))
        if species is None:
            self.species = np.ones(n, dtype=np.int8)
        else:
            species = np.asarray(species)
            if species.shape != (n,):
                raise ValueError(f"species must have shape ({n},) for cells={self._cells}, got {species.shape}")
            if species.size and (species.min() < 0 or species.max() > len(self._elements)):
                raise ValueError(
                    f"species codes must lie in 0..{len(self._elements)} (0 = vacancy), "
                    f"got {species.min()}..{species.max()}"
                )
            self.species = species.astype(np.int8, copy=True)
        self._neighbor_cache: dict[int, np.ndarray] = {}
        self._doubled: np.ndarray | None = None

    # ----------------------------------------------------------------- geometry
    @property
    def cells(self) -> tuple[int, int, int]:
        """Cells per side (cx, cy, cz)."""
        return self._cells

    @property
    def n_sites(self) -> int:
        """Number of lattice sites N = 2 cx cy cz."""
        return 2 * self._cells[0] * self._cells[1] * self._cells[2]

    @property
    def lattice_constant(self) -> float:
        """Cubic lattice constant a (Å)."""
        return self._a

    @property
    def elements(self) -> tuple[str, ...]:
        """Chemical symbols of the species codes 1, 2, ... (code 0 = vacancy)."""
        return self._elements

    @property
    def n_elements(self) -> int:
        return len(self._elements)

    @property
    def doubled_box(self) -> np.ndarray:
        """Box edges in doubled coordinates, int32 [3] = 2 * cells."""
        return 2 * np.asarray(self._cells, dtype=np.int32)

    @property
    def doubled_coords(self) -> np.ndarray:
        """Doubled coordinates 2 r / a, int32 [N, 3] (all even or all odd per row)."""
        if self._doubled is None:
            cx, cy, cz = self._cells
            i, j, k, b = np.meshgrid(
                np.arange(cx), np.arange(cy), np.arange(cz), np.arange(2), indexing="ij"
            )
            coords = np.stack([2 * i + b, 2 * j + b, 2 * k + b], axis=-1).reshape(-1, 3)
            self._doubled = coords.astype(np.int32)
            self._doubled.flags.writeable = False
        return self._doubled

    @property
    def positions(self) -> np.ndarray:
        """Cartesian positions in Å, float64 [N, 3]."""
        return self.doubled_coords.astype(np.float64) * (0.5 * self._a)

    @property
    def cell(self) -> np.ndarray:
        """Orthorhombic periodic cell in Å, float64 [3, 3] (rows are the box vectors)."""
        return np.diag(np.asarray(self._cells, dtype=np.float64) * self._a)

    def site_index(self, doubled_coords: np.ndarray) -> np.ndarray:
        """Site index of doubled coordinates [..., 3] (periodic wrap) -> int64 [...].

        Raises ValueError when a row mixes even and odd entries (not a BCC site).
        """
        d = np.asarray(doubled_coords, dtype=np.int64)
        if d.shape[-1:] != (3,):
            raise ValueError(f"doubled_coords must have a last axis of length 3, got shape {d.shape}")
        d = np.mod(d, 2 * np.asarray(self._cells, dtype=np.int64))
        parity = d & 1
        if np.any(parity != parity[..., :1]):
            raise ValueError("doubled_coords must be all even or all odd in each row (BCC sites)")
        b = parity[..., 0]
        cells = (d - parity) // 2
        _, cy, cz = self._cells
        return 2 * ((cells[..., 0] * cy + cells[..., 1]) * cz + cells[..., 2]) + b

    def neighbor_offsets(self, shell: int) -> np.ndarray:
        """Neighbour offsets of ``shell`` (1, 2 or 3) in doubled coordinates, int32 [z, 3]."""
        if shell not in NEIGHBOR_OFFSETS:
            raise ValueError(f"shell must be 1, 2 or 3, got {shell!r}")
        return NEIGHBOR_OFFSETS[shell].copy()

    def neighbors(self, shell: int) -> np.ndarray:
        """Neighbour table int32 [N, z] of ``shell``; column order = ``neighbor_offsets(shell)``."""
        if shell not in NEIGHBOR_OFFSETS:
            raise ValueError(f"shell must be 1, 2 or 3, got {shell!r}")
        table = self._neighbor_cache.get(shell)
        if table is None:
            offsets = NEIGHBOR_OFFSETS[shell]
            table = self.site_index(self.doubled_coords[:, None, :] + offsets[None, :, :]).astype(np.int32)
            table.flags.writeable = False
            self._neighbor_cache[shell] = table
        return table

    def offsets_within(self, radius_A: float) -> np.ndarray:
        """All doubled-coordinate offsets of BCC sites at distance <= ``radius_A`` (Å),
        including (0, 0, 0); int32 [M, 3], sorted by distance then lexicographically."""
        if not np.isfinite(radius_A) or radius_A < 0:
            raise ValueError(f"radius_A must be a finite length >= 0 in Å, got {radius_A}")
        reach = int(np.floor(2.0 * radius_A / self._a + 1e-9))
        axis = np.arange(-reach, reach + 1)
        grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
        parity = grid & 1
        grid = grid[np.all(parity == parity[:, :1], axis=1)]
        squared = np.sum(grid.astype(np.int64) ** 2, axis=1)
        keep = squared * (0.5 * self._a) ** 2 <= radius_A**2 * (1 + 1e-12)
        grid, squared = grid[keep], squared[keep]
        order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], squared))
        return grid[order].astype(np.int32)

    def sites_within(self, center_sites: np.ndarray | int, radius_A: float) -> np.ndarray:
        """Sorted unique site indices within ``radius_A`` (Å, periodic) of any of ``center_sites``."""
        centers = np.atleast_1d(np.asarray(center_sites, dtype=np.int64))
        if centers.size and (centers.min() < 0 or centers.max() >= self.n_sites):
            raise ValueError(f"center_sites must lie in 0..{self.n_sites - 1}")
        offsets = self.offsets_within(radius_A)
        coords = self.doubled_coords[centers][:, None, :] + offsets[None, :, :]
        return np.unique(self.site_index(coords))

    # ----------------------------------------------------------------- patches
    def patch_sites(self, origin_cell: tuple[int, int, int], size_cells: int) -> np.ndarray:
        """The 2 * size³ sites of the cubic patch of ``size_cells`` cells per side whose first
        cell is ``origin_cell`` (periodic wrap), int64, ordered like the lattice (k fastest,
        corner before body centre)."""
        size = int(size_cells)
        if size < 1 or any(size > c for c in self._cells):
            raise ValueError(f"size_cells must be in 1..{min(self._cells)}, got {size_cells}")
        origin = np.asarray(origin_cell, dtype=np.int64)
        if origin.shape != (3,):
            raise ValueError(f"origin_cell must be 3 integers (i, j, k), got {origin_cell!r}")
        r = np.arange(size)
        i, j, k, b = np.meshgrid(r, r, r, np.arange(2), indexing="ij")
        cell_idx = np.stack([i, j, k], axis=-1).reshape(-1, 3) + origin
        doubled = 2 * cell_idx + b.reshape(-1, 1)
        return self.site_index(doubled)

    def patches(self, size_cells: int) -> np.ndarray:
        """All K non-overlapping cubic patches, int64 [K, 2 * size³]; patch p has origin cell
        ``(pi, pj, pk) * size`` with ``p = (pi * ny + pj) * nz + pk``. ``size_cells`` must divide
        every entry of ``cells``."""
        size = int(size_cells)
        if size < 1 or any(c % size for c in self._cells):
            raise ValueError(f"size_cells must be a positive divisor of every entry of cells={self._cells}, got {size_cells}")
        counts = [c // size for c in self._cells]
        rows = [
            self.patch_sites((pi * size, pj * size, pk * size), size)
            for pi in range(counts[0])
            for pj in range(counts[1])
            for pk in range(counts[2])
        ]
        return np.stack(rows)

    # ----------------------------------------------------------------- state
    @property
    def vacancies(self) -> np.ndarray:
        """Sites holding a vacancy (species 0), int64, ascending."""
        return np.flatnonzero(self.species == 0).astype(np.int64)

    def composition(self) -> dict[str, float]:
        """Fraction of each element among the atoms (vacancies excluded)."""
        counts = self.species_counts()
        n_atoms = counts.sum()
        if n_atoms == 0:
            return {el: 0.0 for el in self._elements}
        return {el: float(counts[c] / n_atoms) for c, el in enumerate(self._elements)}

    def species_counts(self) -> np.ndarray:
        """Number of atoms of each element, int64 [n_elements] (code c at index c - 1)."""
        return np.bincount(self.species, minlength=len(self._elements) + 1)[1:].astype(np.int64)

    def copy(self) -> "BCCLattice":
        """Independent copy (the species array is copied; geometry tables are shared)."""
        new = BCCLattice(self._cells, self._a, self._elements, self.species)
        new._neighbor_cache = self._neighbor_cache
        new._doubled = self._doubled
        return new

    def symbols(self) -> list[str]:
        """Chemical symbol per site ('X' for a vacancy)."""
        table = np.array((VACANCY_SYMBOL,) + self._elements, dtype=object)
        return list(table[self.species])

    # ----------------------------------------------------------------- ASE
    def to_atoms(self) -> "Any":
        """The lattice as ``ase.Atoms`` (vacancies as the dummy symbol 'X', pbc=True)."""
        from ase import Atoms

        return Atoms(symbols=self.symbols(), positions=self.positions, cell=self.cell, pbc=True)

    @classmethod
    def from_atoms(cls, atoms: Any, elements: tuple[str, ...] | None = None) -> "BCCLattice":
        """Build a lattice from a periodic orthorhombic BCC ``ase.Atoms`` (one atom or 'X' per site).

        The lattice constant is (2 V / N)^(1/3); the atom at index 0 fixes the origin. Elements
        default to ("Nb", "Mo", "Ta") when the symbols fit, else the symbols by atomic number.
        Raises a one-line ValueError for non-periodic, non-orthorhombic or non-BCC input and for a
        symbol missing from ``elements``.
        """
        return lattice_from_atoms(atoms, elements)[0]

    def __repr__(self) -> str:
        counts = dict(zip(self._elements, self.species_counts().tolist()))
        return (
            f"BCCLattice(cells={self._cells}, lattice_constant={self._a}, counts={counts}, "
            f"vacancies={int(np.sum(self.species == 0))})"
        )


def _integer_counts(composition: Mapping[str, float], elements: tuple[str, ...], n_atoms: int) -> np.ndarray:
    """Largest-remainder (Hamilton) rounding of fractions to integer counts summing to n_atoms.
    Ties in the remainder go to the element listed first in ``elements``."""
    fractions = np.array([float(composition.get(el, 0.0)) for el in elements])
    exact = fractions * n_atoms
    counts = np.floor(exact + 1e-9).astype(np.int64)
    short = n_atoms - counts.sum()
    remainders = exact - counts
    order = sorted(range(len(elements)), key=lambda c: (-round(remainders[c], 9), c))
    for c in order[: int(short)]:
        counts[c] += 1
    return counts


def random_solid_solution(
    composition: Mapping[str, float],
    cells: int | tuple[int, int, int],
    lattice_constant: float = 3.24,
    n_vacancies: int = 1,
    rng: np.random.Generator | int | None = None,
    elements: tuple[str, ...] | None = None,
) -> BCCLattice:
    """A random BCC solid solution with exact species counts and ``n_vacancies`` random vacancies.

    Counts: the N - n_vacancies atoms are split by largest-remainder rounding of
    ``fraction * n_atoms`` (ties to the element listed first), then all sites are shuffled by
    ``rng``. ``elements`` defaults to ("Nb", "Mo", "Ta") when the composition keys fit, else the
    keys in the given order. ``composition`` must sum to 1 (±1e-6) with fractions in [0, 1].
    """
    if rng is None:
        raise TypeError("rng is required: pass a numpy.random.Generator or an int seed")
    generator = _as_generator(rng)
    if not isinstance(composition, Mapping) or len(composition) == 0:
        raise TypeError("composition must be a non-empty dict element -> fraction")
    known = _known_symbols()
    for symbol in composition:
        if symbol not in known:
            raise ValueError(f"unknown element {symbol!r} in composition (must be a chemical symbol such as 'Nb')")
    if elements is None:
        elements = DEFAULT_ELEMENTS if set(composition) <= set(DEFAULT_ELEMENTS) else tuple(composition)
    elements = validate_elements(elements)
    for symbol in composition:
        if symbol not in elements:
            raise ValueError(f"unknown element {symbol!r} in composition: not in elements {elements}")
    fractions = np.array([float(v) for v in composition.values()])
    if np.any(~np.isfinite(fractions)) or np.any(fractions < 0) or np.any(fractions > 1):
        raise ValueError(f"composition fractions must lie in [0, 1], got {dict(composition)}")
    if abs(fractions.sum() - 1.0) > 1e-6:
        raise ValueError(f"composition must sum to 1, got {fractions.sum():.6g}")
    lattice = BCCLattice(cells, lattice_constant, elements)
    n = lattice.n_sites
    if not isinstance(n_vacancies, (int, np.integer)) or n_vacancies < 0 or n_vacancies >= n:
        raise ValueError(f"n_vacancies must be an integer in 0..{n - 1} (fewer than the {n} sites), got {n_vacancies}")
    counts = _integer_counts(composition, elements, n - int(n_vacancies))
    codes = np.repeat(np.arange(len(elements) + 1, dtype=np.int8), np.concatenate([[n_vacancies], counts]))
    lattice.species = generator.permutation(codes).astype(np.int8)
    return lattice


def lattice_from_atoms(atoms: Any, elements: tuple[str, ...] | None = None) -> tuple[BCCLattice, np.ndarray]:
    """Like :meth:`BCCLattice.from_atoms`, also returning ``site_of_atom`` (int64 [N]): the
    lattice site of each atom of ``atoms`` (atom i sits on site ``site_of_atom[i]``)."""
    if not np.all(atoms.pbc):
        raise ValueError("atoms must be periodic in all three directions (pbc=True) to form a BCC lattice")
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    n = len(atoms)
    if n == 0 or n % 2:
        raise ValueError(f"atoms is not a BCC supercell: {n} sites is not 2 * cx * cy * cz")
    off_diagonal = cell - np.diag(np.diag(cell))
    if np.any(np.abs(off_diagonal) > 1e-6 * np.abs(cell).max()) or np.any(np.diag(cell) <= 0):
        raise ValueError("atoms is not a BCC supercell: the cell must be orthorhombic (diagonal, positive)")
    box = np.diag(cell)
    a = (2.0 * np.prod(box) / n) ** (1.0 / 3.0)
    cells_f = box / a
    cells = np.rint(cells_f).astype(int)
    if np.any(cells < 1) or np.any(np.abs(cells_f - cells) > 1e-3) or 2 * np.prod(cells) != n:
        raise ValueError(f"atoms is not a BCC supercell: box {box} Å does not hold whole cubic cells")
    rel = (atoms.positions - atoms.positions[0]) * (2.0 / a)
    doubled = np.rint(rel).astype(np.int64)
    if np.max(np.abs(rel - doubled)) > 0.1:
        raise ValueError("atoms is not a BCC supercell: positions deviate from BCC sites by more than 0.05 a")
    symbols = atoms.get_chemical_symbols()
    present = sorted({s for s in symbols if s != VACANCY_SYMBOL})
    if elements is None:
        if set(present) <= set(DEFAULT_ELEMENTS):
            elements = DEFAULT_ELEMENTS
        else:
            from ase.data import atomic_numbers

            elements = tuple(sorted(present, key=lambda s: atomic_numbers[s]))
    lattice = BCCLattice(tuple(int(c) for c in cells), a, tuple(elements))
    parity = doubled & 1
    if np.any(parity != parity[:, :1]):
        raise ValueError("atoms is not a BCC supercell: a position is neither a corner nor a body centre")
    sites = lattice.site_index(doubled)
    if np.unique(sites).size != n:
        raise ValueError("atoms is not a BCC supercell: two atoms occupy the same lattice site")
    missing = sorted(set(present) - set(lattice.elements))
    if missing:
        raise ValueError(f"unknown element {missing[0]!r}: not in elements {lattice.elements}")
    code_of = {VACANCY_SYMBOL: 0, **{el: c + 1 for c, el in enumerate(lattice.elements)}}
    species = np.empty(n, dtype=np.int8)
    species[sites] = [code_of[s] for s in symbols]
    lattice.species = species
    return lattice, sites.astype(np.int64)


def jump_barriers_of_atoms(model: Any, atoms: Any, vacancy_index: int,
                           elements: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(jump-target atom indices int64 [8], barriers eV float64 [8]) of ``model.hop_barriers``
    for the vacancy at atom ``vacancy_index`` of a periodic BCC ``ase.Atoms`` (that atom is the
    vacancy whatever its symbol); targets in the order of ``NEIGHBOR_OFFSETS[1]``. The
    ``jump_barriers`` of every barrier model."""
    if not 0 <= int(vacancy_index) < len(atoms):
        raise ValueError(f"vacancy_index must lie in 0..{len(atoms) - 1}, got {vacancy_index}")
    lattice, site_of_atom = lattice_from_atoms(atoms, elements)
    vacancy_site = int(site_of_atom[int(vacancy_index)])
    lattice.species[vacancy_site] = 0
    atom_of_site = np.empty_like(site_of_atom)
    atom_of_site[site_of_atom] = np.arange(len(site_of_atom))
    targets = np.asarray(lattice.neighbors(1), dtype=np.int64)[vacancy_site]
    barriers = model.hop_barriers(lattice, np.array([vacancy_site]))[0]
    return atom_of_site[targets].astype(np.int64), barriers
