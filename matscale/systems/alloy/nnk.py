"""NNK vacancy-migration barriers for Nb–Mo–Ta (Xing, Rupert, Pan & Cao, Nat. Commun. 15, 3879, 2024).

The network maps a 9×9×9 voxel image of the species around a vacancy (voxel edge a/2, codes
1 = Nb, 2 = Mo, 3 = Ta, 0 = empty) to the barrier in eV of the jump to +[111]/2. For the
jump along s = (sx, sy, sz)/2 the environment is first mirrored in z (if sz < 0) and rotated
about z by the unique multiple of 90° that maps s onto +(1, 1, 1); the image is flattened in
NNK's (y, x, z) order (numpy ``meshgrid`` 'xy' indexing). BatchNorm uses NNK's eps 1e-3.
These conventions reproduce ``golden_barriers.json`` exactly; the x↔y-swapped order differs by
up to 0.03 eV.

Three barrier laws
------------------
- raw (``NNKBarrierModel()``, the published model): one image per jump, as above. It is not a
  function of the jump alone: the 6 operations of the BCC point group that fix the jump vector
  (3 rotations about [111] and 3 mirrors, the group C3v) map the environment to physically
  equivalent ones that the network scores differently (mirror images of one jump differ by up
  to ~0.05 eV, rms 0.013 eV). It also has **no Boltzmann stationary state**: around closed loops
  of vacancy hops that restore the configuration (4–12 hops), Σ (E_forward − E_backward) is
  0.10 eV on average and up to 0.3 eV in magnitude instead of 0
  (:mod:`matscale.systems.alloy.balance`), so the kMC steady state is a non-equilibrium one
  (Kolmogorov's criterion for reversibility fails).
- symmetrised (``NNKBarrierModel(symmetrise=True)``): the network output averaged over the 6
  images of C3v, S(c, v→t) = (1/6) Σ_P NNK(P · image). Mirror images of a jump give identical
  barriers (bit for bit, see below), but detailed balance still fails (cycle sums 0.08 eV on
  average, up to 0.26 eV).
- thermodynamically consistent (:class:`ConsistentNNKBarrierModel`): the kinetically resolved
  activation form (Van der Ven, Ceder, Asta & Tepesch, Phys. Rev. B 64, 184307, 2001)
  E_b = max(E_KRA + ΔE/2, ΔE, 0) with E_KRA = ½ [S(c, v→t) + S(c', t→v)] the forward/backward
  mean of the (symmetrised) network (c' = the configuration after the hop) and ΔE the
  configuration energy change from an energy model. E_b(forward) − E_b(backward) = ΔE exactly,
  so the stationary state is the energy model's Boltzmann distribution; NNK sets the kinetics
  only.

Fast evaluation (numba kernels):
- only the 112 BCC sites within the 7.5 Å cutoff around the vacancy (besides the vacancy
  itself) can be non-zero, so the first layer gathers those 112 rows of W1; for the raw model
  the 8 jump images of one vacancy are 8 permutations of the same 112 species, so they are folded
  into one [112, 8·128] first-layer matrix (one pass over the environment gives all 8 first
  layers); BatchNorm is folded into the weights; float32 arithmetic (fastmath);
- the symmetrised and consistent laws evaluate each of the 6 images of a jump separately,
  summing the first layer in the image's own (canonical) voxel order and without fastmath, so
  one image always gives the same float32 output in every compilation context; the 6 outputs
  are summed in float64 (exact, hence order-independent). That is what makes mirror images
  bit-identical and the consistent law's E_KRA the same number for a hop and its reverse.
  Cost: 6 un-folded images per jump, about 6× the raw model per environment;
- a direct-mapped cache keyed by the exact 112-site species vector (224 bits) returns the
  barriers of an environment seen before (exact: keys are compared in full). The symmetrised
  cache holds each of the 8 directions separately (NaN until computed), so the single backward
  jump the consistent law needs from a post-hop environment costs one direction, not eight.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS, BCCLattice, jump_barriers_of_atoms

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


def voxel_images(lattice: BCCLattice, vacancy_site: int, operation: np.ndarray | None = None) -> np.ndarray:
    """Reference (slow, dense) NNK input images, float64 [8, 729], one per first-shell jump in the
    order of ``lattice.neighbors(1)``. The vacancy voxel is 0 whatever ``species`` holds there.
    ``operation``: an element P of :func:`jump_stabiliser` of (1, 1, 1) applied after the jump
    transform (the image P · T_d · environment); default the identity (the raw image)."""
    origin = lattice.doubled_coords[int(vacancy_site)]
    op = np.eye(3, dtype=int) if operation is None else np.asarray(operation, dtype=int)
    if not np.array_equal(op @ np.ones(3, dtype=int), np.ones(3, dtype=int)):
        raise ValueError("operation must fix the canonical jump vector (1, 1, 1)")
    images = np.zeros((8, 9, 9, 9))
    offsets = environment_offsets()
    for d, step in enumerate(NEIGHBOR_OFFSETS[1]):
        inverse = np.round(np.linalg.inv(op @ jump_transform(step))).astype(int)
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
def _image_barrier(env, sites, w1c, b1c, w_hidden, b_hidden, w_out, b_out, x, g):
    """Network output (float32) of one image: canonical voxel c holds env[sites[c]]. Strict IEEE
    arithmetic in a fixed order (no fastmath): the result is a function of the image alone, the
    same in every compilation context."""
    x[:] = b1c
    for c in range(sites.shape[0]):
        e = env[sites[c]]
        if e != 0.0:
            for j in range(x.shape[0]):
                x[j] += e * w1c[c, j]
    for j in range(x.shape[0]):
        if x[j] < 0.0:
            x[j] = 0.0
    for layer in range(w_hidden.shape[0]):
        g[:] = b_hidden[layer]
        for i in range(x.shape[0]):
            xi = x[i]
            if xi != 0.0:
                for j in range(g.shape[0]):
                    g[j] += xi * w_hidden[layer, i, j]
        for j in range(x.shape[0]):
            x[j] = g[j] if g[j] > 0.0 else 0.0
    s = b_out
    for j in range(x.shape[0]):
        s += x[j] * w_out[j]
    return s


@nb.njit(cache=True)
def _gather_env(species, doubled, box, center, env_offsets, moved_from, moved_code, env, key):
    """Species of the 112 environment sites of ``center`` into env (float32) and the 224-bit key
    into key[4]; the site ``moved_from`` (if >= 0) reads ``moved_code`` instead of its species
    (the environment after a hop, without touching the lattice). Returns the key's hash."""
    c0, c1, c2 = doubled[center, 0], doubled[center, 1], doubled[center, 2]
    key[:] = 0
    for m in range(env_offsets.shape[0]):
        s = _wrap_site(c0 + env_offsets[m, 0], c1 + env_offsets[m, 1], c2 + env_offsets[m, 2], box)
        if s == moved_from:
            code = moved_code
        elif s == center:  # a periodic image of the vacancy itself (boxes under 5 cells)
            code = 0
        else:
            code = species[s]
        env[m] = code
        key[m >> 5] |= np.uint64(code) << np.uint64(2 * (m & 31))
    return _mix64(key[0] ^ _mix64(key[1] ^ _mix64(key[2] ^ _mix64(key[3]))))


@nb.njit(cache=True)
def _image_direction_barriers(env, key, hsh, want, image_sites, w1c, b1c, w_hidden, b_hidden, w_out, b_out,
                              cache_keys, cache_values, cache_used, stats, x, g, out_row):
    """Per-image barriers of the environment env for the directions with want[d] into out_row[d]
    (others untouched): mean over the image group of d (image_sites rows d·G .. d·G + G − 1),
    summed in float64 (exact for G ≤ 8 float32 terms, so independent of the order). Cached per
    direction (NaN = not computed yet). stats[0] += full hits, stats[1] += environments computed."""
    group = image_sites.shape[0] // 8
    slot = hsh & np.uint64(cache_keys.shape[0] - 1)
    hit = cache_used[slot] and cache_keys[slot, 0] == key[0] and cache_keys[slot, 1] == key[1] \
        and cache_keys[slot, 2] == key[2] and cache_keys[slot, 3] == key[3]
    if not hit:
        for q in range(4):
            cache_keys[slot, q] = key[q]
        cache_used[slot] = True
        for d in range(8):
            cache_values[slot, d] = np.nan
    computed = False
    for d in range(8):
        if not want[d]:
            continue
        value = cache_values[slot, d]
        if np.isnan(value):
            total = 0.0
            for p in range(group):
                total += np.float64(_image_barrier(env, image_sites[d * group + p], w1c, b1c, w_hidden,
                                                   b_hidden, w_out, b_out, x, g))
            value = total / group
            cache_values[slot, d] = value
            computed = True
        out_row[d] = value
    if computed:
        stats[1] += 1
    else:
        stats[0] += 1


@nb.njit(cache=True)
def _nnk_hop_barriers(species, doubled, box, vacancy_sites, env_offsets, first_shell, image_sites,
                      w1, b1, w_hidden, b_hidden, w_out, b_out,
                      cache_keys, cache_values, cache_used, stats, out):
    """Barriers [M, 8] (eV) of the vacancies ``vacancy_sites``; inf where the target is a vacancy.
    ``image_sites`` empty: raw model (w1 the folded [112, 8·128] first layer, all 8 directions
    per environment); else the per-image path (w1 the canonical [112, 128] first layer,
    image_sites [8·G, 112]), directions onto vacancies not computed.
    stats[0] += cache hits, stats[1] += network evaluations."""
    n_env = env_offsets.shape[0]
    env = np.empty(n_env, np.float32)
    key = np.empty(4, np.uint64)
    if image_sites.shape[0] > 0:
        x = np.empty(w1.shape[1], np.float32)
        g = np.empty(w1.shape[1], np.float32)
        want = np.empty(8, np.bool_)
        row64 = np.empty(8, np.float64)
        for v in range(vacancy_sites.shape[0]):
            site = vacancy_sites[v]
            c0, c1, c2 = doubled[site, 0], doubled[site, 1], doubled[site, 2]
            for d in range(8):
                t = _wrap_site(c0 + first_shell[d, 0], c1 + first_shell[d, 1], c2 + first_shell[d, 2], box)
                want[d] = species[t] != 0
            hsh = _gather_env(species, doubled, box, site, env_offsets, -1, 0, env, key)
            _image_direction_barriers(env, key, hsh, want, image_sites, w1, b1, w_hidden, b_hidden, w_out, b_out,
                                      cache_keys, cache_values, cache_used, stats, x, g, row64)
            for d in range(8):
                out[v, d] = row64[d] if want[d] else np.inf
        return
    h = np.empty(w1.shape[1], np.float32)
    g = np.empty(128, np.float32)
    row = np.empty(8, np.float32)
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


@nb.njit(cache=True)
def _nnk_pair_barriers(species, doubled, box, vacancy_sites, env_offsets, first_shell, opposite, image_sites,
                       w1c, b1c, w_hidden, b_hidden, w_out, b_out, cache_keys, cache_values, cache_used, stats,
                       forward, backward):
    """Per-image NNK barriers of each hop v -> t of the vacancies ``vacancy_sites``: forward[k, d]
    of the jump in the current configuration, backward[k, d] of the reverse jump t -> v in the
    configuration after the hop (the atom of t moved to v); inf where t holds a vacancy."""
    env = np.empty(env_offsets.shape[0], np.float32)
    key = np.empty(4, np.uint64)
    x = np.empty(w1c.shape[1], np.float32)
    g = np.empty(w1c.shape[1], np.float32)
    want = np.empty(8, np.bool_)
    one = np.zeros(8, np.bool_)
    row = np.empty(8, np.float64)
    targets = np.empty(8, np.int64)
    for k in range(vacancy_sites.shape[0]):
        v = vacancy_sites[k]
        c0, c1, c2 = doubled[v, 0], doubled[v, 1], doubled[v, 2]
        for d in range(8):
            targets[d] = _wrap_site(c0 + first_shell[d, 0], c1 + first_shell[d, 1], c2 + first_shell[d, 2], box)
            want[d] = species[targets[d]] != 0
        hsh = _gather_env(species, doubled, box, v, env_offsets, -1, 0, env, key)
        _image_direction_barriers(env, key, hsh, want, image_sites, w1c, b1c, w_hidden, b_hidden, w_out, b_out,
                                  cache_keys, cache_values, cache_used, stats, x, g, row)
        for d in range(8):
            forward[k, d] = row[d] if want[d] else np.inf
        for d in range(8):
            if not want[d]:
                backward[k, d] = np.inf
                continue
            t = targets[d]
            back = opposite[d]
            hsh = _gather_env(species, doubled, box, t, env_offsets, v, species[t], env, key)
            one[back] = True
            _image_direction_barriers(env, key, hsh, one, image_sites, w1c, b1c, w_hidden, b_hidden, w_out, b_out,
                                      cache_keys, cache_values, cache_used, stats, x, g, row)
            one[back] = False
            backward[k, d] = row[back]


def point_group() -> np.ndarray:
    """The 48 operations of the cubic point group O_h (that of the BCC lattice) as integer
    signed-permutation matrices [48, 3, 3], the identity first."""
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3), dtype=int)
            m[np.arange(3), perm] = signs
            ops.append(m)
    return np.array(ops)


def jump_stabiliser(step: np.ndarray) -> np.ndarray:
    """The 6 operations of O_h that leave the first-shell jump vector ``step`` fixed (the group
    C3v: rotations by 0, ±120° about it and the 3 mirrors containing it), [6, 3, 3], the
    identity first."""
    step = np.asarray(step, dtype=int)
    ops = [m for m in point_group() if np.array_equal(m @ step, step)]
    assert len(ops) == 6
    return np.array(ops)


def _image_tables(offsets: np.ndarray, symmetrise: bool) -> np.ndarray:
    """image_sites int32 [8·G, 112] (G = 6 symmetrised, 1 raw): for direction d and operation P
    of the stabiliser of (1, 1, 1), canonical voxel c (offset r_c) holds the environment site
    (P T_d)⁻¹ r_c, T_d = :func:`jump_transform`; P = identity first (the raw image)."""
    index_of = {tuple(o): m for m, o in enumerate(offsets.tolist())}
    group = jump_stabiliser(np.ones(3, dtype=int)) if symmetrise else np.eye(3, dtype=int)[None]
    rows = []
    for step in NEIGHBOR_OFFSETS[1]:
        transform = jump_transform(step)
        for op in group:
            inverse = np.round(np.linalg.inv(op @ transform)).astype(int)
            rows.append([index_of[tuple(inverse @ r)] for r in offsets])
    return np.array(rows, dtype=np.int32)


class NNKBarrierModel:
    """NNK vacancy-migration barriers (eV) on a Nb–Mo–Ta BCC lattice (a ≈ 3.24 Å).

    Implements :class:`matscale.calculators.base.BarrierModel`. ``interaction_range`` = 7.5 Å:
    the 8 barriers of a vacancy depend only on the species within 7.5 Å of the *vacancy*
    (``vacancy_centred = True``, which lets kMC recompute fewer vacancies after a hop).

    ``symmetrise=False`` (default) is the published network as is. It is **not** thermodynamically
    consistent: forward and backward barriers are predicted independently, the sums
    Σ (E_forward − E_backward) around closed loops of hops that restore the configuration are
    not zero (0.10 eV on average, up to 0.3 eV, for 4–12-hop loops in random equimolar cells), so
    vacancy kMC with it has no Boltzmann stationary state, and mirror images of one jump get
    barriers differing by up to ~0.05 eV (module docstring). ``symmetrise=True`` averages the
    network over the 6 point-group images that fix the jump (mirror images then agree exactly;
    detailed balance still fails). :class:`ConsistentNNKBarrierModel` restores detailed balance.
    Raw and symmetrised both run in the fused kMC loop (symmetrised: ~6× the cost per new
    environment).

    Parameters
    ----------
    weights_path : npz with the NNK weights; default the shipped ``nnk/nnk_barrier_mlp.npz``.
    bn_eps : BatchNorm epsilon (NNK's own code: 1e-3).
    cache_size : slots of the environment cache (a power of two; 0 disables caching).
    symmetrise : average each barrier over the 6 operations of O_h fixing the jump vector.
    """

    interaction_range: float = NNK_CUTOFF
    vacancy_centred: bool = True

    def __init__(self, weights_path: str | Path | None = None, bn_eps: float = 1e-3, cache_size: int = 2**16,
                 symmetrise: bool = False) -> None:
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
        if not isinstance(symmetrise, (bool, np.bool_)):
            raise TypeError(f"symmetrise must be True or False, got {symmetrise!r}")
        self.network = _Network(weights_path, bn_eps)
        self.symmetrise = bool(symmetrise)
        self._env_offsets = environment_offsets()
        self._first_shell = NEIGHBOR_OFFSETS[1].astype(np.int32)
        self._build_fast_weights()
        self._cache_size = max(int(cache_size), 1)
        self._caching = cache_size > 0
        self.clear_cache()

    # -------------------------------------------------------------- weights
    def _build_fast_weights(self) -> None:
        """First layer restricted to the 112 environment sites: the canonical [112, 128] rows
        (per-image path) and, for the raw model, the 8 jump images side by side [112, 8·128]."""
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
        ix, iy, iz = (offsets + _HALF_WIDTH).T
        self._w1_canonical = np.ascontiguousarray(w1_dense[(iy * 9 + ix) * 9 + iz], dtype=np.float32)
        self._b1_canonical = self.network.biases[0].astype(np.float32)
        self._image_sites_raw = _image_tables(offsets, False)
        self._image_sites_symmetric = _image_tables(offsets, True)
        self._w_hidden = np.ascontiguousarray(np.stack(self.network.weights[1:]), dtype=np.float32)
        self._b_hidden = np.ascontiguousarray(np.stack(self.network.biases[1:]), dtype=np.float32)
        self._w_out = self.network.out_weight.astype(np.float32)
        self._b_out = np.float32(self.network.out_bias)

    def image_arrays(self) -> tuple:
        """(image_sites, w1, b1, w_hidden, b_hidden, w_out, b_out) of the per-image path with this
        model's symmetrisation (one image per jump when ``symmetrise`` is False)."""
        sites = self._image_sites_symmetric if self.symmetrise else self._image_sites_raw
        return (sites, self._w1_canonical, self._b1_canonical, self._w_hidden, self._b_hidden,
                self._w_out, self._b_out)

    # -------------------------------------------------------------- cache
    def new_cache(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Empty cache tables (keys, values, used, stats) of this model's size; values are
        float64 (NaN = direction not computed) on the per-image path, float32 on the raw one."""
        n = self._cache_size
        per_image = self.symmetrise
        values = np.full((n, 8), np.nan) if per_image else np.zeros((n, 8), dtype=np.float32)
        return (np.zeros((n, 4), dtype=np.uint64), values, np.zeros(n, dtype=np.bool_),
                np.zeros(2, dtype=np.int64))

    def clear_cache(self) -> None:
        """Forget all cached environments and reset the hit/evaluation counters."""
        self._cache_keys, self._cache_values, self._cache_used, self._stats = self.new_cache()

    @property
    def cache_info(self) -> dict[str, int]:
        """{'hits': environments served from the cache, 'evaluations': environments for which
        the network ran (all 8 jumps raw, the missing jumps symmetrised)}."""
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
        _nnk_hop_barriers(lattice.species, lattice.doubled_coords, lattice.doubled_box, sites,
                          *self.kernel_arrays(), out)
        return out

    def environments(self, lattice: BCCLattice, vacancy_sites: np.ndarray) -> np.ndarray:
        """Species codes float32 [M, 112] of the environment sites of each vacancy (the vacancy
        itself excluded; other vacancies are 0), in the order of :func:`environment_offsets`."""
        self.check_lattice(lattice)
        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        neighbours = lattice.site_index(lattice.doubled_coords[sites][:, None, :] + self._env_offsets[None])
        return lattice.species[neighbours].astype(np.float32)

    def hop_barriers_torch(self, lattice: BCCLattice, vacancy_sites: np.ndarray,
                           device: str | Any = "cuda") -> np.ndarray:
        """:meth:`hop_barriers` evaluated with torch on ``device`` ("cuda" for a GPU, "cpu"):
        the same network (BatchNorm folded, float32) on the environments of all vacancies in one
        batch, without the cache. Agrees with :meth:`hop_barriers` to float32 rounding
        (~1e-5 eV); ``inf`` where the target site holds a vacancy. For many vacancies at once
        (large boxes, batched patches); the kMC loop keeps the numba kernel."""
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        env = torch.as_tensor(self.environments(lattice, sites), device=dev)
        w_hidden = torch.as_tensor(self._w_hidden, device=dev)
        b_hidden = torch.as_tensor(self._b_hidden, device=dev)
        w_out, b_out = torch.as_tensor(self._w_out, device=dev), float(self._b_out)
        with torch.no_grad():
            if self.symmetrise:  # every image of every jump: canonical voxel c <- env[table[c]]
                table = torch.as_tensor(self._image_sites_symmetric, dtype=torch.int64, device=dev)
                images = env[:, table]                                    # [M, 8·G, 112]
                h = images @ torch.as_tensor(self._w1_canonical, device=dev) \
                    + torch.as_tensor(self._b1_canonical, device=dev)
            else:  # the 8 jump images folded into one first layer
                h = env @ torch.as_tensor(self._w1, device=dev) + torch.as_tensor(self._b1, device=dev)
                h = h.view(len(sites), 8, _HIDDEN)
            h = torch.relu(h)
            for layer in range(w_hidden.shape[0]):
                h = torch.relu(h @ w_hidden[layer] + b_hidden[layer])
            out = (h @ w_out + b_out)
            if self.symmetrise:
                out = out.view(len(sites), 8, -1).mean(dim=2)
        barriers = out.cpu().numpy().astype(np.float64)
        targets = lattice.neighbors(1)[sites]
        barriers[lattice.species[targets] == 0] = np.inf
        return barriers

    def kernel_arrays(self) -> tuple:
        """Arrays the numba kernel ``_nnk_hop_barriers`` takes after ``vacancy_sites`` (used by
        the fused kMC loop): offsets, image table (empty for the raw folded path), weights,
        cache tables and counters."""
        if self.symmetrise:
            sites, w1, b1 = self._image_sites_symmetric, self._w1_canonical, self._b1_canonical
        else:
            sites, w1, b1 = np.empty((0, _N_ENV), dtype=np.int32), self._w1, self._b1
        return (self._env_offsets, self._first_shell, sites, w1, b1, self._w_hidden, self._b_hidden,
                self._w_out, self._b_out, self._cache_keys, self._cache_values, self._cache_used, self._stats)

    def jump_barriers(self, atoms: Any, vacancy_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Barriers of the 8 jumps of the vacancy at atom ``vacancy_index`` of a BCC ``ase.Atoms``.

        The atom at ``vacancy_index`` is treated as the vacancy whatever its symbol. Returns
        ``(neighbor_indices int64 [8], barriers_eV float64 [8])``: atom indices of the jump
        targets (order of ``NEIGHBOR_OFFSETS[1]``) and their barriers (inf for a vacancy target).
        """
        return jump_barriers_of_atoms(self, atoms, vacancy_index, NNK_ELEMENTS)

    def dense_barriers(self, lattice: BCCLattice, vacancy_site: int) -> np.ndarray:
        """Reference path: dense 729-input float64 network on :func:`voxel_images` (no cache),
        averaged over the 6 images of :func:`jump_stabiliser` when ``symmetrise``. Barriers [8]
        in eV (no inf masking)."""
        self.check_lattice(lattice)
        if not self.symmetrise:
            return self.network.dense(voxel_images(lattice, vacancy_site))
        ops = jump_stabiliser(np.ones(3, dtype=int))
        return np.mean([self.network.dense(voxel_images(lattice, vacancy_site, op)) for op in ops], axis=0)


class ConsistentNNKBarrierModel:
    """Thermodynamically consistent NNK barriers: E_b = max(E_KRA + ΔE/2, ΔE, 0) with

        E_KRA(v ⇄ t) = ½ [S(c, v → t) + S(c', t → v)],     ΔE = E(c') − E(c)     (eV),

    S the (symmetrised) NNK barrier, c the configuration with the vacancy on v, c' the one after
    the hop (the atom of t moved to v), E the energy of ``energy_model``. E_KRA is the same number
    for a hop and its reverse, so E_b(forward) − E_b(backward) = ΔE for every hop (the clamp keeps
    this, see :func:`matscale.systems.alloy.kra.kra_barrier`) and vacancy kMC satisfies detailed
    balance with respect to the Boltzmann distribution of ``energy_model``: the equilibrium
    (SRO, ordering) is that of the energy model; NNK sets the rates only (kinetically resolved
    activation, Van der Ven et al., Phys. Rev. B 64, 184307, 2001).

    Implements ``BarrierModel``; plugs into :class:`VacancyKMC` through the generic event loop
    (not fused). ``interaction_range`` = max(7.5 Å, energy_model.interaction_range) from either
    site of the hop (``vacancy_centred = False``: S(c', t → v) looks 7.5 Å around t).

    Parameters
    ----------
    energy_model : a ``LocalEnergyModel`` (``swap_deltas``, ``interaction_range``) on the same
        lattice, e.g. :class:`~matscale.calculators.lattice_eam.LatticeEAM`.
    nnk : the network; default ``NNKBarrierModel(symmetrise=True)``. Its ``symmetrise`` decides
        whether S is the symmetrised (default) or the raw single-image network. This model keeps
        its own cache (``cache_size`` slots), so sharing ``nnk`` with other users is harmless.
    """

    vacancy_centred: bool = False

    def __init__(self, energy_model: Any, nnk: NNKBarrierModel | None = None) -> None:
        from matscale.calculators.base import LocalEnergyModel

        if not isinstance(energy_model, LocalEnergyModel):
            raise TypeError("energy_model must implement LocalEnergyModel "
                            "(swap_delta, swap_deltas, interaction_range)")
        if nnk is None:
            nnk = NNKBarrierModel(symmetrise=True)
        if not isinstance(nnk, NNKBarrierModel):
            raise TypeError(f"nnk must be an NNKBarrierModel, got {type(nnk).__name__}")
        self.energy_model = energy_model
        self.nnk = nnk
        self.interaction_range = max(NNK_CUTOFF, float(energy_model.interaction_range))
        self._opposite = np.array([int(np.flatnonzero((NEIGHBOR_OFFSETS[1] == -s).all(axis=1))[0])
                                   for s in NEIGHBOR_OFFSETS[1]], dtype=np.int64)
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget this model's cached NNK environments and reset its counters."""
        n = self.nnk._cache_size
        self._cache = (np.zeros((n, 4), dtype=np.uint64), np.full((n, 8), np.nan), np.zeros(n, dtype=np.bool_),
                       np.zeros(2, dtype=np.int64))

    @property
    def cache_info(self) -> dict[str, int]:
        """{'hits', 'evaluations'} of this model's NNK environment cache (forward and post-hop)."""
        return {"hits": int(self._cache[3][0]), "evaluations": int(self._cache[3][1])}

    def check_lattice(self, lattice: BCCLattice) -> None:
        """ValueError unless NNK accepts the lattice (elements Nb, Mo, Ta; a ≈ 3.24 Å)."""
        self.nnk.check_lattice(lattice)

    def nnk_pair(self, lattice: BCCLattice, vacancy_sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S(c, v → t), S(c', t → v)), each float64 [M, 8] in eV in the order of
        ``lattice.neighbors(1)``: the network's forward barrier and that of the reverse jump after
        the hop; inf where t holds a vacancy."""
        self.check_lattice(lattice)
        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        if sites.size and (sites.min() < 0 or sites.max() >= lattice.n_sites):
            raise ValueError(f"vacancy_sites must lie in 0..{lattice.n_sites - 1}")
        if np.any(lattice.species[sites] != 0):
            raise ValueError("every entry of vacancy_sites must hold a vacancy (species 0)")
        forward = np.empty((sites.size, 8))
        backward = np.empty((sites.size, 8))
        if not self.nnk._caching:
            self._cache[2][:] = False
        image_sites, w1, b1, w_hidden, b_hidden, w_out, b_out = self.nnk.image_arrays()
        _nnk_pair_barriers(lattice.species, lattice.doubled_coords, lattice.doubled_box, sites, self.nnk._env_offsets,
                           self.nnk._first_shell, self._opposite, image_sites, w1, b1, w_hidden, b_hidden, w_out,
                           b_out, *self._cache, forward, backward)
        return forward, backward

    def hop_barriers(self, lattice: BCCLattice, vacancy_sites: np.ndarray) -> np.ndarray:
        """Barriers float64 [M, 8] in eV of the 8 first-shell hops of each vacancy, in the order
        of ``lattice.neighbors(1)``; ``inf`` where the target site holds a vacancy."""
        from matscale.systems.alloy.kra import kra_barrier

        sites = np.atleast_1d(np.asarray(vacancy_sites, dtype=np.int64))
        forward, backward = self.nnk_pair(lattice, sites)
        barriers = np.full(forward.shape, np.inf)
        rows, cols = np.nonzero(np.isfinite(forward))
        if len(rows):
            targets = lattice.neighbors(1)[sites]
            pairs = np.stack([sites[rows], targets[rows, cols].astype(np.int64)], axis=1)
            delta = np.asarray(self.energy_model.swap_deltas(lattice, pairs), dtype=np.float64)
            e_kra = 0.5 * (forward[rows, cols] + backward[rows, cols])
            barriers[rows, cols] = kra_barrier(e_kra, delta)
        return barriers

    def jump_barriers(self, atoms: Any, vacancy_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Barriers of the 8 jumps of the vacancy at atom ``vacancy_index`` of a periodic BCC
        ``ase.Atoms`` (that atom is treated as the vacancy whatever its symbol): ``(neighbor
        atom indices int64 [8], barriers_eV float64 [8])``, as :meth:`NNKBarrierModel.jump_barriers`."""
        return jump_barriers_of_atoms(self, atoms, vacancy_index, NNK_ELEMENTS)
