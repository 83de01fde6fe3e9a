"""Conversions and trajectory output for :class:`BCCLattice` states.

- pymatgen ``Structure`` adapter (vacancies are left out of the Structure, since pymatgen has
  no dummy 'X' species in a periodic structure; :func:`from_structure` puts them back on the
  empty BCC sites when ``cells`` and the lattice constant fit).
- trajectory writers through ``ase.io``: extended XYZ (vacancies kept as 'X') and LAMMPS dump
  text (atoms only, vacancies dropped, with types from element order).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from matscale.systems.alloy.lattice import VACANCY_SYMBOL, BCCLattice, lattice_from_atoms


def to_structure(lattice: BCCLattice) -> Any:
    """pymatgen ``Structure`` of the atoms (vacancy sites omitted), Cartesian Å."""
    from pymatgen.core import Lattice, Structure

    atoms = lattice.species > 0
    symbols = [lattice.elements[c - 1] for c in lattice.species[atoms]]
    return Structure(Lattice(lattice.cell), symbols, lattice.positions[atoms], coords_are_cartesian=True)


def from_structure(structure: Any, cells: int | tuple[int, int, int] | None = None,
                   elements: tuple[str, ...] | None = None) -> BCCLattice:
    """BCC lattice from a pymatgen ``Structure``; missing sites become vacancies.

    ``cells`` (cells per side) is needed when the structure has vacancies; without it every site
    must be occupied. Raises ValueError for a non-BCC structure.
    """
    from ase import Atoms

    cell = np.asarray(structure.lattice.matrix, dtype=np.float64)
    symbols = [str(site.specie.symbol) for site in structure]
    positions = np.asarray(structure.cart_coords, dtype=np.float64)
    if cells is None:
        return BCCLattice.from_atoms(Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True), elements)
    template = BCCLattice(cells, 1.0)
    box = np.diag(cell)
    if np.any(np.abs(cell - np.diag(box)) > 1e-6 * np.abs(cell).max()):
        raise ValueError("structure is not a BCC supercell: the lattice must be orthorhombic")
    a_per_axis = box / np.asarray(template.cells, dtype=np.float64)
    if np.ptp(a_per_axis) > 1e-3 * a_per_axis.mean():
        raise ValueError(f"structure box {box} Å does not hold {template.cells} cubic cells")
    a = float(a_per_axis.mean())
    lattice = BCCLattice(template.cells, a, elements or _elements_of(symbols))
    rel = (positions - positions[0]) * (2.0 / a)
    doubled = np.rint(rel).astype(np.int64)
    if len(positions) and np.max(np.abs(rel - doubled)) > 0.1:
        raise ValueError("structure is not a BCC supercell: positions deviate from BCC sites by more than 0.05 a")
    sites = lattice.site_index(doubled)
    if np.unique(sites).size != len(sites):
        raise ValueError("structure is not a BCC supercell: two atoms occupy the same lattice site")
    code_of = {el: c + 1 for c, el in enumerate(lattice.elements)}
    unknown = sorted(set(symbols) - set(code_of))
    if unknown:
        raise ValueError(f"unknown element {unknown[0]!r}: not in elements {lattice.elements}")
    species = np.zeros(lattice.n_sites, dtype=np.int8)
    species[sites] = [code_of[s] for s in symbols]
    lattice.species = species
    return lattice


def _elements_of(symbols: Iterable[str]) -> tuple[str, ...]:
    from matscale.systems.alloy.lattice import DEFAULT_ELEMENTS

    present = set(symbols) - {VACANCY_SYMBOL}
    if present <= set(DEFAULT_ELEMENTS):
        return DEFAULT_ELEMENTS
    from ase.data import atomic_numbers

    return tuple(sorted(present, key=lambda s: atomic_numbers[s]))


def write_extxyz(path: str | Path, frames: Iterable[BCCLattice], times_s: Iterable[float] | None = None, append: bool = False) -> Path:
    """Write lattices as extended XYZ frames (vacancies as 'X'); ``times_s`` go into each frame's
    info as ``time_s`` (seconds)."""
    from ase.io import write

    frames = list(frames)
    times = [None] * len(frames) if times_s is None else list(times_s)
    if len(times) != len(frames):
        raise ValueError(f"times_s must have one entry per frame ({len(frames)}), got {len(times)}")
    images = []
    for lattice, time in zip(frames, times):
        atoms = lattice.to_atoms()
        if time is not None:
            atoms.info["time_s"] = float(time)
        images.append(atoms)
    write(str(path), images, format="extxyz", append=append)
    return Path(path)


def read_extxyz(path: str | Path, elements: tuple[str, ...] | None = None) -> list[BCCLattice]:
    """Read every frame of an extended XYZ file written by :func:`write_extxyz`."""
    from ase.io import read

    return [lattice_from_atoms(atoms, elements)[0] for atoms in read(str(path), index=":", format="extxyz")]


def write_lammps_dump(path: str | Path, frames: Iterable[BCCLattice], steps: Iterable[int] | None = None) -> Path:
    """Write lattices as a LAMMPS text dump (``id type x y z``; atoms only, vacancies dropped;
    type = species code, i.e. element order of the lattice). ``steps`` label the timesteps."""
    frames = list(frames)
    labels = list(range(len(frames))) if steps is None else [int(s) for s in steps]
    if len(labels) != len(frames):
        raise ValueError(f"steps must have one entry per frame ({len(frames)}), got {len(labels)}")
    with open(path, "w") as handle:
        for lattice, step in zip(frames, labels):
            atoms = lattice.species > 0
            ids = np.flatnonzero(atoms) + 1
            positions = lattice.positions[atoms]
            box = np.diag(lattice.cell)
            handle.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{ids.size}\n")
            handle.write("ITEM: BOX BOUNDS pp pp pp\n")
            for length in box:
                handle.write(f"0.0 {length:.10f}\n")
            handle.write("ITEM: ATOMS id type x y z\n")
            rows = np.column_stack([ids, lattice.species[atoms], positions])
            np.savetxt(handle, rows, fmt=["%d", "%d", "%.8f", "%.8f", "%.8f"])
    return Path(path)


def read_lammps_dump(path: str | Path, cells: int | tuple[int, int, int], elements: tuple[str, ...] = ("Nb", "Mo", "Ta"),
                     lattice_constant: float | None = None) -> list[BCCLattice]:
    """Read a dump written by :func:`write_lammps_dump` via ``ase.io`` (types map to ``elements``)."""
    from ase.io import read

    lattices = []
    for atoms in read(str(path), index=":", format="lammps-dump-text"):
        template = BCCLattice(cells, 1.0)
        box = np.diag(np.asarray(atoms.cell[:]))
        a = lattice_constant or float(box[0] / template.cells[0])
        lattice = BCCLattice(cells, a, elements)
        types = atoms.get_array("type") if "type" in atoms.arrays else atoms.numbers
        doubled = np.rint(atoms.positions * (2.0 / a)).astype(np.int64)
        species = np.zeros(lattice.n_sites, dtype=np.int8)
        species[lattice.site_index(doubled)] = types
        lattice.species = species
        lattices.append(lattice)
    return lattices
