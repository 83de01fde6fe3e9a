"""Exact on-lattice EAM swap energies in numba (µs per ΔE) from a setfl (eam/alloy) file.

On the ideal (unrelaxed) BCC lattice every pair distance is one of a few shell distances below
the cutoff (5 shells, 58 neighbours at a = 3.24 Å with the Zhou cutoff 6.395 Å). The pair
function φ_ab and the density ρ_b are therefore tabulated per shell once, and the embedding
F_a(ρ) is evaluated with the same cubic spline LAMMPS builds from the setfl table
(``PairEAM::interpolate``), so energies agree with LAMMPS ``pair_style eam/alloy`` on the same
unrelaxed cell to round-off (vacancy = empty site).

    E = Σ_i F_{s_i}(ρ_i) + ½ Σ_i Σ_{j ∈ N(i)} φ_{s_i s_j}(r_ij),   ρ_i = Σ_{j ∈ N(i)} ρ_{s_j}(r_ij)

A swap of sites a and b changes ρ only on the neighbours of a and b, so ΔE needs the ~100 sites
within r_c of a or b and their host densities.

State consistency (design): **no notification is needed**. The model caches the host density
ρ_i of every site together with its own snapshot (a copy) of the species they belong to. At the
start of every ``swap_delta`` / ``swap_deltas`` call it compares ``lattice.species`` with the
snapshot (8 sites per int64 word: ~1 µs per 10⁴ sites), updates ρ around every site that changed
(58 additions each) and refreshes the snapshot. kMC and swap-MC engines therefore modify
``lattice.species`` in place as they like, any number of sites at a time, and the next call is
exact; a different lattice of the same geometry simply shows up as many changed sites. The
cache is rebuilt from scratch after 200 000 site changes to bound round-off drift. Neighbour
tables are cached per geometry (cells, lattice constant, element list).
Periodic images in small cells are exact: neighbours are listed once per image.
Scratch arrays are kept per geometry; the numba kernels hold the GIL, so concurrent calls from
Python threads are serialised and safe (use one model per process with process pools).
Units: eV, Å.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np

from matscale.calculators.eam import SetflPotential, read_setfl

if TYPE_CHECKING:  # pragma: no cover
    from matscale.systems.alloy.lattice import BCCLattice

__all__ = ["LatticeEAM", "lammps_spline", "lammps_spline_eval"]

# incremental host-density updates accumulate round-off (~1e-16 relative each); rebuild the
# cache from scratch after this many site changes
_REBUILD_AFTER = 200_000


# ------------------------------------------------------------------------------------------
# LAMMPS' setfl interpolation (pair_eam.cpp: interpolate + the evaluation in compute)
# ------------------------------------------------------------------------------------------
def lammps_spline(values: np.ndarray, delta: float) -> np.ndarray:
    """Coefficients [n, 7] of LAMMPS' cubic interpolation of ``values`` on a uniform grid of
    spacing ``delta`` (rows 0-based; columns as LAMMPS' spline[m][0..6])."""
    f = np.asarray(values, dtype=float)
    n = len(f)
    if n < 5:
        raise ValueError(f"a setfl table needs at least 5 points, got {n}")
    s = np.zeros((n, 7))
    s[:, 6] = f
    s[0, 5] = f[1] - f[0]
    s[1, 5] = 0.5 * (f[2] - f[0])
    s[n - 2, 5] = 0.5 * (f[n - 1] - f[n - 3])
    s[n - 1, 5] = f[n - 1] - f[n - 2]
    m = np.arange(2, n - 2)
    s[m, 5] = ((f[m - 2] - f[m + 2]) + 8.0 * (f[m + 1] - f[m - 1])) / 12.0
    m = np.arange(0, n - 1)
    s[m, 4] = 3.0 * (f[m + 1] - f[m]) - 2.0 * s[m, 5] - s[m + 1, 5]
    s[m, 3] = s[m, 5] + s[m + 1, 5] - 2.0 * (f[m + 1] - f[m])
    s[n - 1, 4] = 0.0
    s[n - 1, 3] = 0.0
    s[:, 2] = s[:, 5] / delta
    s[:, 1] = 2.0 * s[:, 4] / delta
    s[:, 0] = 3.0 * s[:, 3] / delta
    return s


@numba.njit(cache=True)
def _spline_value(coeff: np.ndarray, x: float, inv_delta: float, clamp_low: bool) -> float:
    n = coeff.shape[0]
    p = x * inv_delta + 1.0
    m = int(p)
    if m > n - 1:
        m = n - 1
    if clamp_low and m < 1:
        m = 1
    p -= m
    if p > 1.0:
        p = 1.0
    c = coeff[m - 1]
    return ((c[3] * p + c[4]) * p + c[5]) * p + c[6]


@numba.njit(cache=True)
def _embedding(coeff: np.ndarray, rho: float, inv_drho: float, rho_max: float) -> float:
    """F(ρ) exactly as LAMMPS evaluates it, with its linear extrapolation above ρ_max."""
    n = coeff.shape[0]
    p = rho * inv_drho + 1.0
    m = int(p)
    if m > n - 1:
        m = n - 1
    if m < 1:
        m = 1
    p -= m
    if p > 1.0:
        p = 1.0
    c = coeff[m - 1]
    value = ((c[3] * p + c[4]) * p + c[5]) * p + c[6]
    if rho > rho_max:
        value += ((c[0] * p + c[1]) * p + c[2]) * (rho - rho_max)
    return value


def lammps_spline_eval(coeff: np.ndarray, x: np.ndarray | float, delta: float,
                       embedding: bool = False) -> np.ndarray:
    """Evaluate a :func:`lammps_spline` at ``x`` (vectorised, for tables and tests)."""
    xs = np.atleast_1d(np.asarray(x, dtype=float))
    inv = 1.0 / delta
    if embedding:
        rho_max = (coeff.shape[0] - 1) * delta
        return np.array([_embedding(coeff, float(v), inv, rho_max) for v in xs])
    return np.array([_spline_value(coeff, float(v), inv, False) for v in xs])


# ------------------------------------------------------------------------------------------
# numba kernels on fixed neighbour tables
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _host_density(species, neighbors, col_shell, rho_tab, site):
    rho = 0.0
    for col in range(neighbors.shape[1]):
        rho += rho_tab[species[neighbors[site, col]], col_shell[col]]
    return rho


@numba.njit(cache=True)
def _local_pair_energy(species, neighbors, col_shell, phi_tab, a, b, s_a, s_b):
    """Pair energy of all bonds touching a or b, with species s_a on a and s_b on b."""
    e = 0.0
    for col in range(neighbors.shape[1]):
        k = col_shell[col]
        j = neighbors[a, col]
        sj = s_a if j == a else (s_b if j == b else species[j])
        w = 0.5 if (j == a or j == b) else 1.0
        e += w * phi_tab[s_a, sj, k]
        j = neighbors[b, col]
        sj = s_a if j == a else (s_b if j == b else species[j])
        w = 0.5 if (j == a or j == b) else 1.0
        e += w * phi_tab[s_b, sj, k]
    return e


@numba.njit(cache=True)
def _swap_delta(species, neighbors, col_shell, rho_tab, phi_tab, f_spline, inv_drho, rho_max,
                a, b, drho, marked, touched, host_rho):
    """ΔE of exchanging the species of a and b; ``host_rho`` [N] must hold the host densities
    of the current ``species``."""
    s_a = species[a]
    s_b = species[b]
    if s_a == s_b:
        return 0.0
    d_pair = (_local_pair_energy(species, neighbors, col_shell, phi_tab, a, b, s_b, s_a)
              - _local_pair_energy(species, neighbors, col_shell, phi_tab, a, b, s_a, s_b))
    n_touched = 0
    for t in (a, b):
        marked[t] = True
        touched[n_touched] = t
        n_touched += 1
    z = neighbors.shape[1]
    for col in range(z):
        k = col_shell[col]
        j = neighbors[a, col]
        if not marked[j]:
            marked[j] = True
            touched[n_touched] = j
            n_touched += 1
        drho[j] += rho_tab[s_b, k] - rho_tab[s_a, k]
        j = neighbors[b, col]
        if not marked[j]:
            marked[j] = True
            touched[n_touched] = j
            n_touched += 1
        drho[j] += rho_tab[s_a, k] - rho_tab[s_b, k]
    d_embed = 0.0
    for q in range(n_touched):
        t = touched[q]
        s_old = species[t]
        s_new = s_b if t == a else (s_a if t == b else s_old)
        rho_old = host_rho[t]
        rho_new = rho_old + drho[t]
        if s_new > 0:
            d_embed += _embedding(f_spline[s_new], rho_new, inv_drho, rho_max)
        if s_old > 0:
            d_embed -= _embedding(f_spline[s_old], rho_old, inv_drho, rho_max)
        drho[t] = 0.0
        marked[t] = False
    return d_pair + d_embed


@numba.njit(cache=True)
def _swap_deltas(species, neighbors, col_shell, rho_tab, phi_tab, f_spline, inv_drho, rho_max,
                 pairs, drho, marked, touched, host_rho):
    out = np.empty(pairs.shape[0])
    for p in range(pairs.shape[0]):
        out[p] = _swap_delta(species, neighbors, col_shell, rho_tab, phi_tab, f_spline, inv_drho,
                             rho_max, pairs[p, 0], pairs[p, 1], drho, marked, touched, host_rho)
    return out


@numba.njit(cache=True)
def _all_host_densities(species, neighbors, col_shell, rho_tab, host_rho):
    for i in range(species.shape[0]):
        host_rho[i] = _host_density(species, neighbors, col_shell, rho_tab, i)


@numba.njit(cache=True)
def _apply_site_change(x, old, new, neighbors, col_shell, rho_tab, host_rho):
    for col in range(neighbors.shape[1]):
        host_rho[neighbors[x, col]] += rho_tab[new, col_shell[col]] - rho_tab[old, col_shell[col]]


@numba.njit(cache=True)
def _sync_host_densities(species, snapshot, words, snapshot_words, neighbors, col_shell, rho_tab,
                         host_rho):
    """Bring ``host_rho`` from ``snapshot`` to ``species``: compare 8 sites at a time (int64
    views ``words``), update the densities around every changed site, refresh the snapshot.
    Returns the number of changed sites."""
    n_changed = 0
    n = species.shape[0]
    for w in range(words.shape[0]):
        if words[w] != snapshot_words[w]:
            for x in range(8 * w, min(8 * w + 8, n)):
                if species[x] != snapshot[x]:
                    _apply_site_change(x, snapshot[x], species[x], neighbors, col_shell, rho_tab, host_rho)
                    snapshot[x] = species[x]
                    n_changed += 1
    for x in range(8 * words.shape[0], n):  # tail not covered by whole words
        if species[x] != snapshot[x]:
            _apply_site_change(x, snapshot[x], species[x], neighbors, col_shell, rho_tab, host_rho)
            snapshot[x] = species[x]
            n_changed += 1
    return n_changed


@numba.njit(cache=True)
def _synced_swap_deltas(species, words, snapshot, snapshot_words, neighbors, col_shell, rho_tab,
                        phi_tab, f_spline, inv_drho, rho_max, pairs, drho, marked, touched,
                        host_rho, change_counter):
    """One dispatch: sync the host-density cache to ``species``, then ΔE of every pair."""
    change_counter[0] += _sync_host_densities(species, snapshot, words, snapshot_words, neighbors,
                                              col_shell, rho_tab, host_rho)
    return _swap_deltas(species, neighbors, col_shell, rho_tab, phi_tab, f_spline, inv_drho,
                        rho_max, pairs, drho, marked, touched, host_rho)


@numba.njit(cache=True)
def _site_energies(species, neighbors, col_shell, rho_tab, phi_tab, f_spline, inv_drho, rho_max):
    n = species.shape[0]
    out = np.zeros(n)
    for i in range(n):
        s = species[i]
        if s == 0:
            continue
        rho = 0.0
        pair = 0.0
        for col in range(neighbors.shape[1]):
            sj = species[neighbors[i, col]]
            rho += rho_tab[sj, col_shell[col]]
            pair += phi_tab[s, sj, col_shell[col]]
        out[i] = _embedding(f_spline[s], rho, inv_drho, rho_max) + 0.5 * pair
    return out


# ------------------------------------------------------------------------------------------
@dataclass
class _Geometry:
    neighbors: np.ndarray  # int32 [N, z]
    col_shell: np.ndarray  # int64 [z]
    rho_tab: np.ndarray  # [n_codes, n_shells]
    phi_tab: np.ndarray  # [n_codes, n_codes, n_shells]
    f_spline: np.ndarray  # [n_codes, nrho, 7] (row 0 unused: vacancy)
    shell_distances: np.ndarray  # Å
    drho: np.ndarray
    marked: np.ndarray
    touched: np.ndarray
    host_rho: np.ndarray  # [N] host densities of `snapshot`
    snapshot: np.ndarray | None = None  # species the cache belongs to (own copy, int8)
    snapshot_words: np.ndarray | None = None  # int64 view of the snapshot's whole 8-site words
    species_obj: np.ndarray | None = None  # the lattice.species array last seen ...
    species_words: np.ndarray | None = None  # ... and its int64 view
    change_counter: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    pair_buffer: np.ndarray = field(default_factory=lambda: np.zeros((1, 2), dtype=np.int64))


class LatticeEAM:
    """On-lattice EAM energy model (implements ``LocalEnergyModel``) from a setfl potential.

    ``potential``: a :class:`SetflPotential` (see :func:`LatticeEAM.from_setfl`). The lattice's
    species code c ≥ 1 is the potential element named ``lattice.elements[c-1]``; code 0 is an
    empty site. ``interaction_range`` = 2 r_c (Å): a species change at x alters the densities of
    sites within r_c of x, and hence the swap ΔE of pairs with a site within 2 r_c of x.

    No species state is cached (see the module docstring): always exact for the current
    ``lattice.species``; neighbour tables are cached per lattice geometry.
    """

    def __init__(self, potential: SetflPotential) -> None:
        if not isinstance(potential, SetflPotential):
            raise TypeError("potential must be a SetflPotential (use LatticeEAM.from_setfl(path))")
        self.potential = potential
        self.cutoff = float(potential.cutoff)
        self.interaction_range = 2.0 * self.cutoff
        self._f_splines = [lammps_spline(f, potential.drho) for f in potential.embedding]
        self._rho_splines = [lammps_spline(f, potential.dr) for f in potential.density]
        n = len(potential.elements)
        self._z2r_splines = [[lammps_spline(potential.r_phi[i, j], potential.dr) for j in range(n)]
                             for i in range(n)]
        self.inv_drho = 1.0 / potential.drho
        self.rho_max = (potential.nrho - 1) * potential.drho
        self._geometries: dict[tuple, _Geometry] = {}

    @classmethod
    def from_setfl(cls, path: str | Path = "NbMoTa_Zhou04.eam.alloy",
                   lattice: "BCCLattice | None" = None) -> "LatticeEAM":
        """Build from a setfl file (a path or a file name shipped in ``potentials/``); with a
        ``lattice`` the neighbour tables of its geometry are built right away."""
        p = Path(path)
        if not p.is_file():
            from matscale.potentials import potential_path

            p = potential_path(str(path))
        model = cls(read_setfl(p))
        if lattice is not None:
            model._geometry(lattice)
        return model

    # -- tables --------------------------------------------------------------------------------
    def _geometry(self, lattice: "BCCLattice") -> _Geometry:
        key = (tuple(lattice.cells), float(lattice.lattice_constant), tuple(lattice.elements))
        geo = self._geometries.get(key)
        if geo is None:
            geo = self._build_geometry(lattice)
            self._geometries[key] = geo
        return geo

    def _build_geometry(self, lattice: "BCCLattice") -> _Geometry:
        pot = self.potential
        codes = [pot.element_index(e) for e in lattice.elements]  # ValueError on unknown
        a = float(lattice.lattice_constant)
        reach = int(math.ceil(2.0 * self.cutoff / a))
        g = np.arange(-reach, reach + 1)
        d = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
        same_parity = (d % 2 == d[:, :1] % 2).all(axis=1)
        d = d[same_parity & (np.abs(d).sum(axis=1) > 0)]
        r = np.sqrt((d.astype(float) ** 2).sum(axis=1)) * a / 2.0
        keep = r < self.cutoff
        d, r = d[keep], r[keep]
        order = np.lexsort((d[:, 2], d[:, 1], d[:, 0], np.round(r, 9)))
        d, r = d[order], r[order]
        shells, col_shell = np.unique(np.round(r, 9), return_inverse=True)
        shell_r = np.array([r[col_shell == k][0] for k in range(len(shells))])
        dc = np.asarray(lattice.doubled_coords, dtype=np.int64)
        neighbors = np.asarray(lattice.site_index(dc[:, None, :] + d[None, :, :]), dtype=np.int32)
        n_codes = len(codes) + 1
        rho_tab = np.zeros((n_codes, len(shells)))
        phi_tab = np.zeros((n_codes, n_codes, len(shells)))
        f_spline = np.zeros((n_codes, pot.nrho, 7))
        inv_dr = 1.0 / pot.dr
        for c, ei in enumerate(codes, start=1):
            f_spline[c] = self._f_splines[ei]
            rho_tab[c] = [_spline_value(self._rho_splines[ei], float(x), inv_dr, False) for x in shell_r]
            for c2, ej in enumerate(codes, start=1):
                z2 = [_spline_value(self._z2r_splines[ei][ej], float(x), inv_dr, False) for x in shell_r]
                phi_tab[c, c2] = np.asarray(z2) / shell_r
        n = lattice.n_sites
        return _Geometry(neighbors=neighbors, col_shell=col_shell.astype(np.int64), rho_tab=rho_tab,
                         phi_tab=phi_tab, f_spline=f_spline, shell_distances=shell_r,
                         drho=np.zeros(n), marked=np.zeros(n, dtype=np.bool_),
                         touched=np.zeros(2 * neighbors.shape[1] + 2, dtype=np.int64),
                         host_rho=np.zeros(n))

    def _prepared(self, lattice: "BCCLattice") -> tuple[_Geometry, np.ndarray, np.ndarray]:
        """Geometry tables, the int8 species and its int64 word view; the host-density cache is
        (re)built here when missing or after _REBUILD_AFTER changes, else synced in the kernel."""
        g = self._geometry(lattice)
        species = lattice.species
        if species is not g.species_obj:
            if species.dtype != np.int8 or not species.flags.c_contiguous or species.ndim != 1:
                species = np.ascontiguousarray(species, dtype=np.int8).ravel()
            else:
                g.species_obj = species
            n_words = len(species) // 8
            g.species_words = species[: 8 * n_words].view(np.int64)
        if g.snapshot is None or g.change_counter[0] > _REBUILD_AFTER:
            g.snapshot = species.copy()
            g.snapshot_words = g.snapshot[: 8 * (len(species) // 8)].view(np.int64)
            _all_host_densities(species, g.neighbors, g.col_shell, g.rho_tab, g.host_rho)
            g.change_counter[0] = 0
        return g, species, g.species_words

    def shell_distances(self, lattice: "BCCLattice") -> np.ndarray:
        """Neighbour-shell distances (Å) inside the cutoff for this lattice's geometry."""
        return self._geometry(lattice).shell_distances.copy()

    # -- energies ------------------------------------------------------------------------------
    def _species(self, lattice: "BCCLattice", species: np.ndarray | None) -> np.ndarray:
        s = lattice.species if species is None else np.asarray(species)
        if s.shape != (lattice.n_sites,):
            raise ValueError(f"species must have shape ({lattice.n_sites},), got {s.shape}")
        return s

    def site_energies(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> np.ndarray:
        """Per-site energies [N] (eV): F(ρ_i) + ½ Σ_j φ_ij; 0 on empty sites."""
        g = self._geometry(lattice)
        s = self._species(lattice, species)
        return _site_energies(s, g.neighbors, g.col_shell, g.rho_tab, g.phi_tab, g.f_spline,
                              self.inv_drho, self.rho_max)

    def total_energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        """Energy (eV) of the whole periodic unrelaxed lattice."""
        return float(self.site_energies(lattice, species).sum())

    # -- LocalEnergyModel ----------------------------------------------------------------------
    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), in eV."""
        n = lattice.n_sites
        a, b = int(site_a), int(site_b)
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"site indices must lie in [0, {n - 1}], got ({a}, {b})")
        g, species, words = self._prepared(lattice)
        g.pair_buffer[0, 0] = a
        g.pair_buffer[0, 1] = b
        return float(_synced_swap_deltas(
            species, words, g.snapshot, g.snapshot_words, g.neighbors, g.col_shell, g.rho_tab,
            g.phi_tab, g.f_spline, self.inv_drho, self.rho_max, g.pair_buffer, g.drho, g.marked,
            g.touched, g.host_rho, g.change_counter)[0])

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) of independent swaps [M, 2], each on the unchanged current lattice."""
        from matscale.calculators.ase_local import check_pairs

        p = check_pairs(lattice, pairs)
        g, species, words = self._prepared(lattice)
        return _synced_swap_deltas(
            species, words, g.snapshot, g.snapshot_words, g.neighbors, g.col_shell, g.rho_tab,
            g.phi_tab, g.f_spline, self.inv_drho, self.rho_max, p, g.drho, g.marked, g.touched,
            g.host_rho, g.change_counter)
