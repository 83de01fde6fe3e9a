"""Geometry of lattice states: patches, tiles and windows on a periodic hypercubic cell grid.

Every system stores a state as an array ``[*grid, *cell]``: ``grid_dim`` grid axes of equal
side ``size`` (cells per axis) followed by the per-cell shape (``()`` for one spin per site of
a square lattice, ``(2,)`` for the two sites of a BCC cubic cell). Batches add a leading axis.
Because the grid axes come first, tiling, patch extraction and window placement are the same
numpy slicing for every system, and live here once.

Conventions
-----------
* A *patch* of side ``p`` is a block of ``p`` cells per axis; the grid holds
  ``K = (size / p) ** grid_dim`` of them, numbered row-major (last axis fastest). Patch ``k``
  has its origin at ``np.unravel_index(k, (size // p,) * grid_dim) * p``.
* A *window* is a block at an arbitrary origin; coordinates wrap periodically (modulo
  ``size``), so windows may straddle the box edge.
* *Tiling* places ``factor ** grid_dim`` small states of side ``s`` on a grid of tiles to form
  one state of side ``factor * s``, tile ``j`` at tile position ``np.unravel_index(j,
  (factor,) * grid_dim)``.
"""
from __future__ import annotations

import numpy as np

from matscale.io import child_keys, uniform_index

__all__ = ["n_patches", "patch_origins", "extract_blocks", "tile", "window_grid_origins",
           "window_geometry"]


def n_patches(size: int, p: int, grid_dim: int) -> int:
    """K = (size / p) ** grid_dim; ValueError when ``p`` does not divide ``size``."""
    if p <= 0 or size % p:
        raise ValueError(f"patch side p={p} must be a positive divisor of the box side {size}")
    return (size // p) ** grid_dim


def patch_origins(patch_index: np.ndarray, size: int, p: int, grid_dim: int) -> np.ndarray:
    """Origins ``int64 [..., grid_dim]`` of patches ``patch_index [...]`` (row-major numbering)."""
    per_side = size // p
    idx = np.asarray(patch_index, dtype=np.int64)
    coords = np.unravel_index(idx, (per_side,) * grid_dim)
    return np.stack([c * p for c in coords], axis=-1).astype(np.int64)


def extract_blocks(states: np.ndarray, origins: np.ndarray, p: int, grid_dim: int,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """Copies of the side-``p`` blocks of ``states [B, *grid, *cell]`` at ``origins [n, dim]``.

    Block i is cut from state ``rows[i]`` (default: state i, n = B). Coordinates wrap
    periodically. Returns ``[n, p, ..., p, *cell]``.
    """
    states = np.asarray(states)
    size = states.shape[1]
    rows = np.arange(states.shape[0]) if rows is None else np.asarray(rows)
    B = len(rows)
    offsets = np.arange(p)
    index: list[np.ndarray] = [rows.reshape((B,) + (1,) * grid_dim)]
    for axis in range(grid_dim):
        coord = (origins[:, axis, None] + offsets) % size  # [B, p]
        shape = [B] + [1] * grid_dim
        shape[axis + 1] = p
        index.append(coord.reshape(shape))
    return states[tuple(index)]


def tile(sources: np.ndarray, factor: int, grid_dim: int) -> np.ndarray:
    """Place ``sources [B, factor**dim, *grid_s, *cell]`` on a tile grid: ``[B, *grid_L, *cell]``."""
    B, n_src = sources.shape[:2]
    if n_src != factor ** grid_dim:
        raise ValueError(f"tiling by {factor} in {grid_dim} dimensions needs {factor ** grid_dim} "
                         f"sources per output, got {n_src}")
    side = sources.shape[2]
    cell = sources.shape[2 + grid_dim:]
    grid = sources.reshape(B, *(factor,) * grid_dim, *(side,) * grid_dim, *cell)
    # interleave (tile axis, in-tile axis) pairs: [B, f, s, f, s, ..., *cell]
    order = [0]
    for axis in range(grid_dim):
        order += [1 + axis, 1 + grid_dim + axis]
    order += list(range(1 + 2 * grid_dim, grid.ndim))
    out = np.ascontiguousarray(grid.transpose(order))
    return out.reshape(B, *(factor * side,) * grid_dim, *cell)


def window_geometry(size: int, window: int | None, stride: int | None) -> tuple[int, int, int]:
    """Validated (window, stride, windows per axis) for a box of side ``size``."""
    window = size // 2 if window is None else int(window)
    if not 1 <= window <= size:
        raise ValueError(f"window must lie in [1, box side={size}], got {window}")
    stride = max(1, window // 2) if stride is None else int(stride)
    if not 1 <= stride <= window:
        raise ValueError(f"stride must lie in [1, window={window}] so windows cover the box, got {stride}")
    return window, stride, -(-size // stride)


def window_grid_origins(size: int, keys: np.ndarray, grid_dim: int, *, window: int | None = None,
                        stride: int | None = None, order: str = "random",
                        random_offset: bool | None = None) -> np.ndarray:
    """Window origins ``int64 [B, W, grid_dim]`` on a grid of spacing ``stride``, visiting order.

    The grid holds ``ceil(size / stride) ** grid_dim`` windows at multiples of ``stride``
    (wrapping). ``order="row-major"`` visits them in raster order; ``"random"`` uses a
    per-state permutation derived from ``keys [B]``. ``random_offset`` (default: on for random
    order) shifts each state's grid by a random offset in ``[0, stride)`` per axis.
    """
    window, stride, per_side = window_geometry(size, window, stride)
    if order not in ("random", "row-major"):
        raise ValueError(f"order must be 'random' or 'row-major', got {order!r}")
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    random_offset = (order == "random") if random_offset is None else bool(random_offset)
    steps = np.arange(per_side, dtype=np.int64) * stride
    grid = np.stack(np.meshgrid(*(steps,) * grid_dim, indexing="ij"), axis=-1).reshape(-1, grid_dim)
    origins = np.broadcast_to(grid, (len(keys), *grid.shape)).copy()
    if order == "random":
        permutation = np.argsort(child_keys(keys, len(grid), "relax-order"), axis=1)
        origins = np.take_along_axis(origins, permutation[..., None], axis=1)
    if random_offset:
        offset = uniform_index(child_keys(keys, grid_dim, "relax-offset"), stride)  # [B, dim]
        origins = (origins + offset[:, None, :]) % size
    return origins


def seam_window_origins(size: int, keys: np.ndarray, grid_dim: int, *, tile: int,
                        window: int | None = None, stride: int | None = None) -> np.ndarray:
    """Origins ``int64 [B, W, grid_dim]`` of windows centred on the seams of a tiling, in a
    random visiting order per state.

    The seams are the cell faces at multiples of ``tile`` along each axis (those of
    :func:`tile` with tiles of side ``tile``, periodic). Along each seam, windows of side
    ``window`` sit at spacing ``stride`` (with a random offset per state) and straddle it,
    ``window // 2`` cells on either side; W = grid_dim * (size / tile) * (size / stride) **
    (grid_dim - 1), the same for every state. Relaxing only these windows heals the seams of
    a freshly tiled state whose tiles are relaxed already, at a cost that grows like the seam
    area instead of the volume.
    """
    window, stride, per_side = window_geometry(size, window, stride)
    if tile < 1 or size % tile:
        raise ValueError(f"tile={tile} must be a positive divisor of the box side {size}")
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    seams = np.arange(0, size, tile, dtype=np.int64)
    along = np.arange(per_side, dtype=np.int64) * stride
    blocks = []
    for axis in range(grid_dim):
        axes = [along] * grid_dim
        axes[axis] = (seams - window // 2) % size
        blocks.append(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, grid_dim))
    grid = np.concatenate(blocks)
    origins = np.broadcast_to(grid, (len(keys), *grid.shape)).copy()
    offset = uniform_index(child_keys(keys, grid_dim, "seam-offset"), stride)  # [B, dim]
    is_seam_axis = np.concatenate([np.broadcast_to(np.arange(grid_dim) == a, (len(b), grid_dim))
                                   for a, b in enumerate(blocks)])
    origins = (origins + np.where(is_seam_axis, 0, offset[:, None, :])) % size
    permutation = np.argsort(child_keys(keys, len(grid), "seam-order"), axis=1)
    return np.take_along_axis(origins, permutation[..., None], axis=1)
