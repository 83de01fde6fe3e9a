"""Detailed balance of vacancy-hop barrier models as a checked property.

A vacancy kMC with rates r(i → j) = ν0 exp(−β E_b(i → j)) has a Boltzmann stationary state
π_i ∝ exp(−β E_i) with detailed balance exactly when E_b(i → j) − E_b(j → i) = E_j − E_i for
every hop. Without reference to any energy, Kolmogorov's criterion (Kolmogorov, Math. Ann. 112,
155, 1936; Kelly, *Reversibility and Stochastic Networks*, Wiley 1979) says a chain is
reversible — has *some* stationary state with detailed balance — iff around every closed cycle
of configurations i_0 → i_1 → … → i_n = i_0

    Σ_k [E_b(i_k → i_{k+1}) − E_b(i_{k+1} → i_k)] = 0          (eV; the "cycle sum").

For any model built on an energy landscape (KRA, :class:`ConsistentNNKBarrierModel`) the terms
are E_{k+1} − E_k and telescope to 0 up to float rounding. The raw NNK network predicts forward
and backward barriers independently, and its cycle sums are not zero.

Cycles used here: the vacancy walks a closed loop of first-shell hops v → s_1 → … → v through
distinct sites; one lap cyclically permutes the atoms on the loop (the vacancy returns, the atoms
do not), so the lap is repeated until the species array equals the starting one (at most
``len(loop) − 1`` laps; 3 laps = 12 hops for a 4-site loop of three distinct species). Two-hop
"there and back" cycles are trivially balanced and are not used.

Also here: the point-group images of a configuration (:func:`transformed_about`) and
:func:`mirror_deviations`, the spread of a model's barrier over symmetry-equivalent jumps.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS, BCCLattice
from matscale.systems.alloy.nnk import point_group

__all__ = ["closed_loops", "cycle_sum", "kolmogorov_cycle_sums", "transformed_about", "mirror_deviations",
           "point_group"]

_DIRECTION = {tuple(int(x) for x in s): d for d, s in enumerate(NEIGHBOR_OFFSETS[1])}


def closed_loops(length: int = 4) -> np.ndarray:
    """All closed walks of ``length`` first-shell hops (direction indices into
    ``NEIGHBOR_OFFSETS[1]``, int64 [L, length]) that visit ``length`` distinct sites and return to
    the start. BCC has no 3-site loops (three odd vectors cannot sum to 0), so ``length`` is even
    and ≥ 4; there are 96 loops of length 4 (counting each orientation and each starting hop)."""
    if int(length) != length or length < 4 or length % 2:
        raise ValueError(f"length must be an even number of hops >= 4, got {length!r}")
    steps = NEIGHBOR_OFFSETS[1].astype(np.int64)
    out = []
    for seq in itertools.product(range(8), repeat=int(length) - 1):
        position = np.zeros(3, dtype=np.int64)
        visited = {(0, 0, 0)}
        ok = True
        for d in seq:
            position = position + steps[d]
            key = tuple(position.tolist())
            if key in visited:
                ok = False
                break
            visited.add(key)
        if ok:
            last = _DIRECTION.get(tuple((-position).tolist()))
            if last is not None:
                out.append((*seq, last))
    return np.array(out, dtype=np.int64)


def _hop(species: np.ndarray, a: int, b: int) -> None:
    species[a] = species[b]
    species[b] = 0


def cycle_sum(lattice: BCCLattice, barrier_model: Any, vacancy_site: int, loop: np.ndarray,
              max_laps: int | None = None) -> tuple[float, int]:
    """Σ (E_forward − E_backward) in eV along the vacancy on ``vacancy_site`` walking ``loop``
    (direction indices, a closed walk, see :func:`closed_loops`) lap after lap until the
    configuration is restored; returns ``(cycle_sum_eV, n_hops)``. E_forward of a hop is the
    model's barrier in the configuration before it, E_backward that of the reverse hop in the
    configuration after it. ``lattice`` is not modified (a copy is walked). ValueError when a
    loop site holds another vacancy or the configuration is not restored within ``max_laps``
    (default ``len(loop) − 1``)."""
    loop = np.asarray(loop, dtype=np.int64).ravel()
    if loop.size < 2 or loop.min() < 0 or loop.max() > 7:
        raise ValueError("loop must be a sequence of first-shell direction indices 0..7")
    if np.any(NEIGHBOR_OFFSETS[1][loop].sum(axis=0) != 0):
        raise ValueError("loop must be closed (its hop vectors must sum to 0)")
    walk = lattice.copy()
    species = walk.species
    v = int(vacancy_site)
    if species[v] != 0:
        raise ValueError(f"vacancy_site {v} does not hold a vacancy")
    start = species.copy()
    neighbors = walk.neighbors(1)
    opposite = np.array([_DIRECTION[tuple(int(-x) for x in s)] for s in NEIGHBOR_OFFSETS[1]])
    laps = loop.size - 1 if max_laps is None else int(max_laps)
    total = 0.0
    hops = 0
    forward = np.asarray(barrier_model.hop_barriers(walk, np.array([v])), dtype=np.float64)[0]
    for _ in range(laps):
        for d in loop:
            t = int(neighbors[v, d])
            if species[t] == 0:
                raise ValueError(f"loop site {t} holds another vacancy")
            e_forward = forward[d]
            _hop(species, v, t)
            v = t
            forward = np.asarray(barrier_model.hop_barriers(walk, np.array([v])), dtype=np.float64)[0]
            total += e_forward - forward[opposite[d]]
            hops += 1
        if np.array_equal(species, start):
            return total, hops
    raise ValueError(f"the configuration is not restored after {laps} laps of the loop")


def kolmogorov_cycle_sums(lattice: BCCLattice, barrier_model: Any, *, n_loops: int = 16, loop_length: int = 4,
                          vacancy_site: int | None = None, rng: Any = None) -> np.ndarray:
    """Cycle sums (eV, float64 [n_loops]) of ``n_loops`` loops drawn at random (without
    replacement while possible) from :func:`closed_loops` (``loop_length``) around the vacancy
    ``vacancy_site`` (default the lattice's first vacancy); loops through another vacancy are
    skipped. Zero to float rounding (|sum| ≲ 1e-12 eV) for every thermodynamically consistent
    model; see the module docstring."""
    if int(n_loops) != n_loops or n_loops < 1:
        raise ValueError(f"n_loops must be an integer >= 1, got {n_loops!r}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if vacancy_site is None:
        vacancies = lattice.vacancies
        if vacancies.size == 0:
            raise ValueError("the lattice holds no vacancy")
        vacancy_site = int(vacancies[0])
    loops = closed_loops(loop_length)
    order = np.concatenate([generator.permutation(len(loops)) for _ in range(-(-int(n_loops) // len(loops)))])
    neighbors = lattice.neighbors(1)
    sums = []
    for index in order:
        if len(sums) == n_loops:
            break
        loop = loops[index]
        v, blocked = int(vacancy_site), False
        for d in loop[:-1]:
            v = int(neighbors[v, d])
            blocked |= lattice.species[v] == 0
        if blocked:
            continue
        sums.append(cycle_sum(lattice, barrier_model, vacancy_site, loop)[0])
    if len(sums) < n_loops:
        raise ValueError(f"only {len(sums)} loops around site {vacancy_site} avoid the other vacancies")
    return np.array(sums)


def transformed_about(lattice: BCCLattice, operation: np.ndarray, centre_site: int) -> BCCLattice:
    """A copy of ``lattice`` with the point-group ``operation`` (integer 3×3, e.g. a row of
    :func:`point_group`) applied about the site ``centre_site``: the species on site centre + r
    moves to centre + operation · r. Needs a cubic box unless the operation is diagonal."""
    op = np.asarray(operation, dtype=np.int64)
    if op.shape != (3, 3) or not np.array_equal(np.abs(op) @ np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64)) \
            or not np.array_equal(np.abs(op).sum(axis=0), np.ones(3, dtype=np.int64)):
        raise ValueError("operation must be a 3×3 signed permutation matrix (a cubic point-group operation)")
    cells = lattice.cells
    if not np.array_equal(np.abs(op), np.eye(3, dtype=np.int64)) and len(set(cells)) != 1:
        raise ValueError(f"a non-diagonal operation needs a cubic box, got cells={cells}")
    out = lattice.copy()
    centre = lattice.doubled_coords[int(centre_site)].astype(np.int64)
    relative = lattice.doubled_coords.astype(np.int64) - centre
    out.species[lattice.site_index(centre + relative @ op.T)] = lattice.species
    return out


def mirror_deviations(lattice: BCCLattice, barrier_model: Any, vacancy_site: int,
                      operations: np.ndarray | None = None) -> np.ndarray:
    """|E_b(g·c, v → v + g·s) − E_b(c, v → v + s)| in eV, float64 [n_ops, 8], for the point-group
    operations g (default all 48 of O_h) applied about the vacancy ``vacancy_site`` and the 8
    jumps s: zero for a model that depends only on the physical jump (hops onto vacancies: 0)."""
    ops = point_group() if operations is None else np.asarray(operations, dtype=np.int64)
    v = int(vacancy_site)
    base = np.asarray(barrier_model.hop_barriers(lattice, np.array([v])), dtype=np.float64)[0]
    out = np.zeros((len(ops), 8))
    for k, op in enumerate(ops):
        image = np.asarray(barrier_model.hop_barriers(transformed_about(lattice, op, v), np.array([v])),
                           dtype=np.float64)[0]
        for d, s in enumerate(NEIGHBOR_OFFSETS[1]):
            mapped = image[_DIRECTION[tuple(int(x) for x in op @ s)]]
            if np.isfinite(base[d]) or np.isfinite(mapped):
                out[k, d] = abs(mapped - base[d])
    return out
