"""NNK vacancy-migration barriers for Nb–Mo–Ta (Xing, Rupert, Pan & Cao, Nat. Commun. 15, 3879, 2024).

The network maps a 9×9×9 voxel image of the species around a vacancy (voxel edge a/2, codes
1 = Nb, 2 = Mo, 3 = Ta, 0 = empty) to the barrier in eV of the jump to +[111]/2. For the
jump along s = (sx, sy, sz)/2 the environment is first mirrored in z (if sz < 0) and rotated
about z by the unique multiple of 90° that maps s onto +(1, 1, 1); the image is flattened in
NNK's (y, x, z) order (numpy ``meshgrid`` 'xy' indexing). BatchNorm uses NNK's eps 1e-3.
These conventions reproduce ``golden_barriers.json`` exactly; the x↔y-swapped order differs by
up to 0.03 eV.

Fast evaluation (all in one numba kernel per request):
- only the 112 BCC sites within the 7.5 Å cutoff around the vacancy (besides the vacancy
  itself) can be non-zero, so the first layer gathers those 112 rows of W1; the 8 jump images
  of one vacancy are 8 permutations of the same 112 species, so they are folded into one
  [112, 8·128] first-layer matrix (one pass over the environment gives all 8 first layers);
- BatchNorm is folded into the weights; float32 arithmetic;
- a direct-mapped cache keyed by the exact 112-site species vector (224 bits) returns the 8
  barriers of an environment seen before (exact: keys are compared in full).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS, BCCLattice, lattice_from_atoms

NNK_ELEMENTS: tuple[str, ...] = ("Nb", "Mo", "Ta")
NNK_LATTICE_CONSTANT = 3.24  # Å, the lattice the network was trained on
NNK_CUTOFF = 7.5  # Å, sites farther from the vacancy are left out of the image
_VOXEL = NNK_LATTICE_CONSTANT / 2.0
_HALF_WIDTH = 4  # voxels, round(7.5 / 1.62 - 0.5)
_N_ENV = 112  # sites within the cutoff, vacancy excluded
_HIDDEN = 128


def environment_offsets() -> np.ndarray:
    """The 112 doubled-coordinate offsets (excluding the origin) of the BCC sites within the
    NNK cutoff, int32 [112, 3], sorted by distance then lexicographically."""
    axis = np.arange(-_HALF_WIDTH, _HALF_WIDTH + 1)
    rows = []
    for v in itertools.product(axis, repeat=3):
        v = np.array(v)
        if not np.all(v % 2 == v[0] % 2) or not v.any():
            continue
        if float(v @ v) * _VOXEL**2 > NNK_CUTOFF**2:
            continue
        rows.append(v)
    rows = np.array(rows, dtype=np.int32)
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0], np.sum(rows.astype(np.int64) ** 2, axis=1)))
    out = rows[order]
    assert len(out) == _N_ENV
    return out


def jump_transform(step: np.ndarray) -> np.ndarray:
    """Integer 3×3 matrix T (z-mirror if step_z < 0, then a 90°-multiple rotation about z) with
    T @ step = (1, 1, 1) for a first-shell doubled step (±1, ±1, ±1)."""
    sx, sy, sz = (int(x) for x in step)
    mirror = np.diag([1, 1, sz])
    rotations = {
        (1, 1): np.eye(3, dtype=int),
        (-1, 1): np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
        (-1, -1): np.diag([-1, -1, 1]),
        (1, -1): np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]),
    }
    transform = rotations[(sx, sy)] @ mirror
    assert np.array_equal(transform @ np.array([sx, sy, sz]), np.ones(3, dtype=int))
    return transform


def voxel_images(lattice: BCCLattice, vacancy_site: int) -> np.ndarray:
    """Reference (slow, dense) NNK input images, float64 [8, 729], one per first-shell jump in the
    order of ``lattice.neighbors(1)``. The vacancy voxel is 0 whatever ``species`` holds there."""
    origin = lattice.doubled_coords[int(vacancy_site)]
    images = np.zeros((8, 9, 9, 9))
    offsets = environment_offsets()
    for d, step in enumerate(NEIGHBOR_OFFSETS[1]):
        inverse = np.round(np.linalg.inv(jump_transform(step))).astype(int)
        sites = lattice.site_index(origin + offsets @ inverse.T)
        ix, iy, iz = (offsets + _HALF_WIDTH).T
        images[d, iy, ix, iz] = lattice.species[sites]
    return images.reshape(8, 729)


class _Network:
    """The NNK MLP with BatchNorm folded in; float64 for the dense reference path."""

    def __init__(self, path: Path, bn_eps: float) -> None:
        with np.load(path) as data:
            raw = {k: data[k].astype(np.float64) for k in data.files}
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for i in range(4):
            scale = raw[f"hidden{i}_bn_gamma"] / np.sqrt(raw[f"hidden{i}_bn_running_var"] + bn_eps)
            self.weights.append(raw[f"hidden{i}_weight"] * scale)
            self.biases.append((raw[f"hidden{i}_bias"] - raw[f"hidden{i}_bn_running_mean"]) * scale + raw[f"hidden{i}_bn_beta"])
        self.out_weight = raw["output_weight"][:, 0]
        self.out_bias = float(raw["output_bias"][0])

    def dense(self, images: np.ndarray) -> np.ndarray:
        h = np.asarray(images, dtype=np.float64)
        for w, b in zip(self.weights, self.biases):
            h = np.maximum(h @ w + b, 0.0)
        return h @ self.out_weight + self.out_bias


@nb.njit(cache=True, inline="always")
def _wrap_site(d0: int, d1: int, d2: int, box: np.ndarray) -> int:
    d0 %= box[0]
    d1 %= box[1]
    d2 %= box[2]
    b = d0 & 1
    return 2 * ((((d0 - b) // 2) * (box[1] // 2) + (d1 - b) // 2) * (box[2] // 2) + (d2 - b) // 2) + b


@nb.njit(cache=True, inline="always")
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, fastmath=True)
def _forward_one(env, w1, b1, w_hidden, b_hidden, w_out, b_out, h, g, out_row):
    """8 barriers of one environment vector env[112] (float32) into out_row[8]. Zero inputs
    (empty voxels, ReLU zeros) are skipped. fastmath: results may differ in the last float32
    bits between compilation contexts (fused kMC loop vs ``hop_barriers``)."""
    h[:] = b1
    for m in range(env.shape[0]):
        e = env[m]
        if e != 0.0:
            for j in range(h.shape[0]):
                h[j] += e * w1[m, j]
    for d in range(8):
        x = h[d * 128:(d + 1) * 128]
        for j in range(128):
            if x[j] < 0.0:
                x[j] = 0.0
        for layer in range(w_hidden.shape[0]):
            g[:] = b_hidden[layer]
            for i in range(128):
                xi = x[i]
                if xi != 0.0:
                    for j in range(128):
                        g[j] += xi * w_hidden[layer, i, j]
            for j in range(128):
                x[j] = g[j] if g[j] > 0.0 else 0.0
        s = b_out
        for j in range(128):
            s += x[j] * w_out[j]
        out_row[d] = s


@nb.njit(cache=True)
def _nnk_hop_barriers(species, doubled, box, vacancy_sites, env_offsets, first_shell,
                      w1, b1, w_hidden, b_hidden, w_out, b_out,
                      cache_keys, cache_values, cache_used, stats, out):
    """Barriers [M, 8] (eV) of the vacancies ``vacancy_sites``; inf where the target is a vacancy.
    stats[0] += cache hits, stats[1] += network evaluations."""
    n_env = env_offsets.shape[0]
    env = np.empty(n_env, np.float32)
    h = np.empty(w1.shape[1], np.float32)
    g = np.empty(128, np.float32)
    row = np.empty(8, np.float32)
    key = np.empty(4, np.uint64)
    mask = np.uint64(cache_keys.shape[0] - 1)
    for v in range(vacancy_sites.shape[0]):
        site = vacancy_sites[v]
        c0, c1, c2 = doubled[site, 0], doubled[site, 1], doubled[site, 2]
        key[:] = 0
        for m in range(n_env):
            s = _wrap_site(c0 + env_offsets[m, 0], c1 + env_offsets[m, 1], c2 + env_offsets[m, 2], box)
            code = species[s]
            env[m] = code
            key[m >> 5] |= np.uint64(code) << np.uint64(2 * (m & 31))
        hsh = _mix64(key[0] ^ _mix64(key[1] ^ _mix64(key[2] ^ _mix64(key[3]))))
        slot = hsh & mask
        hit = cache_used[slot] and cache_keys[slot, 0] == key[0] and cache_keys[slot, 1] == key[1] \
            and cache_keys[slot, 2] == key[2] and cache_keys[slot, 3] == key[3]
        if hit:
            for d in range(8):
                out[v, d] = cache_values[slot, d]
            stats[0] += 1
        else:
            _forward_one(env, w1, b1, w_hidden, b_hidden, w_out, b_out, h, g, row)
            for d in range(8):
                out[v, d] = row[d]
                cache_values[slot, d] = row[d]
            for q in range(4):
                cache_keys[slot, q] = key[q]
            cache_used[slot] = True
            stats[1] += 1
        for d in range(8):
            t = _wrap_site(c0 + first_shell[d, 0], c1 + first_shell[d, 1], c2 + first_shell[d, 2], box)
            if species[t] == 0:
                out[v, d] = np.inf


class NNKBarrierModel:
    """NNK vacancy-migration barriers (eV) on a Nb–Mo–Ta BCC lattice (a ≈ 3.24 Å).

    Implements :class:`matscale.calculators.base.BarrierModel`. ``interaction_range`` = 7.5 Å:
    the 8 barriers of a vacancy depend only on the species within 7.5 Å of the *vacancy*
    (``vacancy_centred = True``, which lets kMC recompute fewer vacancies after a hop).

    Parameters
    ----------
    weights_path : npz with the NNK weights; default the shipped ``nnk/nnk_barrier_mlp.npz``.
    bn_eps : BatchNorm epsilon (NNK's own code: 1e-3).
    cache_size : slots of the environment cache (a power of two; 0 disables caching).
    """

    interaction_range: float = NNK_CUTOFF
    vacancy_centred: bool = True

    def __init__(self, weights_path: str | Path | None = None, bn_eps: float = 1e-3, cache_size: int = 2**16) -> None:
        if weights_path is None:
            from matscale.potentials import potential_path

            weights_path = potential_path("nnk/nnk_barrier_mlp.npz")
        weights_path = Path(weights_path)
        if not weights_path.exists():
            raise FileNotFoundError(f"NNK weights file not found: {weights_path}")
        if not (bn_eps > 0):
            raise ValueError(f"bn_eps must be > 0, got {bn_eps}")
        if cache_size < 0 or (cache_size & (cache_size - 1)):
            raise ValueError(f"cache_size must be 0 or a power of two, got {cache_size}")
        self.network = _Network(weights_path, bn_eps)
        self._env_offsets = environment_offsets()
        self._first_shell = NEIGHBOR_OFFSETS[1].astype(np.int32)
        self._build_fast_weights()
        self._cache_size = max(int(cache_size), 1)
        self._caching = cache_size > 0
        self.clear_cache()

    # -------------------------------------------------------------- weights
    def _build_fast_weights(self) -> None:
        """First layer restricted to the 112 environment sites, the 8 jump images side by side."""
        offsets = self._env_offsets
        index_of = {tuple(o): m for m, o in enumerate(offsets.tolist())}
        w1_dense = self.network.weights[0]
        w1 = np.zeros((_N_ENV, 8 * _HIDDEN))
        for d, step in enumerate(NEIGHBOR_OFFSETS[1]):
            transform = jump_transform(step)
            for c, rotated in enumerate(offsets):
                original = np.round(np.linalg.inv(transform) @ rotated).astype(int)
                m = index_of[tuple(original)]
                ix, iy, iz = rotated + _HALF_WIDTH
                w1[m, d * _HIDDEN:(d + 1) * _HIDDEN] = w1_dense[(iy * 9 + ix) * 9 + iz]
        self._w1 = np.ascontiguousarray(w1, dtype=np.float32)
        self._b1 = np.tile(self.network.biases[0], 8).astype(np.float32)
        self._w_hidden = np.ascontiguousarray(np.stack(self.network.weights[1:]), dtype=np.float32)
        self._b_hidden = np.ascontiguousarray(np.stack(self.network.biases[1:]), dtype=np.float32)
        self._w_out = self.network.out_weight.astype(np.float32)
        self._b_out = np.float32(self.network.out_bias)

    # -------------------------------------------------------------- cache
    def clear_cache(self) -> None:
        """Forget all cached environments and reset the hit/evaluation counters."""
        self._cache_keys = np.zeros((self._cache_size, 4), dtype=np.uint64)
        self._cache_values = np.zeros((self._cache_size, 8), dtype=np.float32)
        self._cache_used = np.zeros(self._cache_size, dtype=np.bool_)
        self._stats = np.zeros(2, dtype=np.int64)

    @property
    def cache_info(self) -> dict[str, int]:
        """{'hits': environments served from the cache, 'evaluations': network evaluations}."""
        return {"hits": int(self._stats[0]), "evaluations": int(self._stats[1])}

    # -------------------------------------------------------------- API
    def check_lattice(self, lattice: BCCLattice) -> None:
        """ValueError unless the lattice has elements (Nb, Mo, Ta) and a within 2 % of 3.24 Å."""
        if tuple(lattice.elements) != NNK_ELEMENTS:
            raise ValueError(f"NNK needs lattice.elements == {NNK_ELEMENTS}, got {lattice.elements}")
        if abs(lattice.lattice_constant - NNK_LATTICE_CONSTANT) > 0.02 * NNK_LATTICE_CONSTANT:
            raise ValueError(
                f"NNK was trained at a = {NNK_LATTICE_CONSTANT} Å; lattice_constant must be within 2 %, "
                f"got {lattice.lattice_constant}"
            )

    def hop_barriers(self, lattice: BCCLattice, vacancy_sites: np.ndarray) -> np.ndarray:
        """Barriers float64 [M, 8] in eV of the 8 first-shell jumps of each vacancy, in the order
        of ``lattice.neighbors(1)``; ``inf`` where the target site is a vacancy."""
        self.check_lattice(lattice)
        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        if sites.size and (sites.min() < 0 or sites.max() >= lattice.n_sites):
            raise ValueError(f"vacancy_sites must lie in 0..{lattice.n_sites - 1}")
        out = np.empty((sites.size, 8), dtype=np.float64)
        if not self._caching:
            self._cache_used[:] = False
        _nnk_hop_barriers(
            lattice.species, lattice.doubled_coords, lattice.doubled_box, sites, self._env_offsets,
            self._first_shell, self._w1, self._b1, self._w_hidden, self._b_hidden, self._w_out,
            self._b_out, self._cache_keys, self._cache_values, self._cache_used, self._stats, out,
        )
        return out

    def kernel_arrays(self) -> tuple:
        """Arrays the numba kernel ``_nnk_hop_barriers`` takes after ``vacancy_sites`` (used by
        the fused kMC loop): offsets, weights, cache tables and counters."""
        return (self._env_offsets, self._first_shell, self._w1, self._b1, self._w_hidden, self._b_hidden,
                self._w_out, self._b_out, self._cache_keys, self._cache_values, self._cache_used, self._stats)

    def jump_barriers(self, atoms: Any, vacancy_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Barriers of the 8 jumps of the vacancy at atom ``vacancy_index`` of a BCC ``ase.Atoms``.

        The atom at ``vacancy_index`` is treated as the vacancy whatever its symbol. Returns
        ``(neighbor_indices int64 [8], barriers_eV float64 [8])``: atom indices of the jump
        targets (order of ``NEIGHBOR_OFFSETS[1]``) and their barriers (inf for a vacancy target).
        """
        lattice, site_of_atom = lattice_from_atoms(atoms, NNK_ELEMENTS)
        if not 0 <= int(vacancy_index) < len(atoms):
            raise ValueError(f"vacancy_index must lie in 0..{len(atoms) - 1}, got {vacancy_index}")
        vacancy_site = int(site_of_atom[int(vacancy_index)])
        lattice.species[vacancy_site] = 0
        atom_of_site = np.empty_like(site_of_atom)
        atom_of_site[site_of_atom] = np.arange(len(site_of_atom))
        targets = lattice.neighbors(1)[vacancy_site]
        barriers = self.hop_barriers(lattice, np.array([vacancy_site]))[0]
        return atom_of_site[targets].astype(np.int64), barriers

    def dense_barriers(self, lattice: BCCLattice, vacancy_site: int) -> np.ndarray:
        """Reference path: dense 729-input float64 network on :func:`voxel_images` (no cache).
        Barriers [8] in eV (no inf masking)."""
        self.check_lattice(lattice)
        return self.network.dense(voxel_images(lattice, vacancy_site))
