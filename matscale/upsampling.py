"""Hierarchical upsampling: build large configurations from small-system snapshots.

One level is **Upsample** (a box of side L cells becomes side ``factor * L``), a repair of
the system's conserved quantities (:meth:`~matscale.systems.base.MicroscopicSystem.conserve`,
e.g. the exact composition of an alloy) and **LocalRelax** (short dynamics on overlapping
windows of the small-system size, exterior frozen). Repeating it turns a pool of small
snapshots into configurations of ``factor ** (grid_dim * k)`` times as many sites without ever
simulating the large system as a whole. Everything here works on the system protocol
(:mod:`matscale.systems.base`) and the grid geometry of :mod:`matscale.geometry`.

Upsample operators (``mode``) are pluggable through :func:`register_upsample_operator`:

* ``"duplicate"``: each cell becomes a ``factor``-sided block of copies. For spins it preserves
  the magnetization exactly and divides the domain-wall density by ``factor``; LocalRelax
  repairs the latter.
* ``"tile"``: ``factor ** grid_dim`` independently drawn snapshots placed side by side. Keeps
  the local structure; the seams (and too-small global fluctuations, by 1/factor) are what
  LocalRelax and the pool statistics must cope with.
* ``"tile_matched"``: tiles that share the anchor tile's order parameter
  (:meth:`~matscale.systems.base.MicroscopicSystem.order_parameter`; the magnetization of spins).
* ``"tile_time"``: tiles recorded at the anchor's time (small-system snapshots on a common time
  grid, e.g. independent kMC runs from random solid solutions), so that a large state is a
  homogeneous state at one stage of the relaxation; deeper levels match on the order parameter.
* ``"replicate"``: ``factor ** grid_dim`` periodic copies of one snapshot. The state has no
  seams (every bond is a bond of the small periodic state), so its local structure, and hence
  the drift measured on it by partial evolution, is that of the small system at the same
  observables; its fluctuations of the observables are those of the small box (wider coverage).
  Where tile seams cannot be healed cheaply (a 3-D lattice whose seam layers hold most sites)
  this is the operator to use; LocalRelax may then be switched off (``duration = 0``).
* ``"interpolate"``: one snapshot on ``factor`` times as many grid points per axis, by the
  system's optional ``refine`` capability (:mod:`matscale.systems.base`; for continuous fields,
  e.g. linear interpolation in x, the paper's upsampling of its predator–prey example). Only
  systems that offer ``refine`` accept it.

An operator that needs a system capability names it in ``requires``; its ``apply`` then takes the
system as a fourth argument (:func:`apply_operator`), and a system without the capability is
refused with a one-line error.

LocalRelax design choices (the paper code used fixed 16x16 periodic windows):

* window side defaults to the small-system side p, stride to window // 2 so the
  windows overlap and every site lies in at least one window interior;
* each window is evolved for a fixed **time** (default ``DEFAULT_WINDOW_DURATION`` = 1 system
  time unit; for Glauber spin systems one attempt per site, i.e. one Monte-Carlo sweep) with
  the exterior **frozen** (true neighbours as boundary), through the system's batched
  ``evolve_windows``. A fixed *number of events* (the paper's ``window**2``) is available via
  ``n_events`` but is not the default: a rejection-free chain stopped after a fixed number of
  events is distributed as π(x)·R(x)/<R> (R = total rate of the window), not as π, so it
  shifts the statistics of every window it touches (a measurement is in
  :mod:`matscale.systems.spin`). A fixed duration leaves the conditional Gibbs measure invariant;
* ``order="random"`` (default): each configuration visits its windows in its own random
  permutation, and the whole window grid is shifted by a random offset in ``[0, stride)``.
  Every window update leaves the equilibrium measure invariant whatever the order, so the
  order only affects how fast artefacts (duplicated blocks, tile seams) are removed; a fixed
  raster order sweeps artefacts consistently towards the bottom-right and pins the window
  seams to the same lattice lines in every configuration, which imprints a systematic,
  translation-breaking pattern on the data set. Random order and offset make the procedure
  statistically translation invariant. ``order="row-major"`` (no offset) reproduces the
  paper's raster scan.

All randomness is derived from ``seed`` and the sample index (:func:`matscale.io.sample_keys`),
so the output is identical after a resume and independent of ``chunk_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from matscale import geometry
from matscale.io import ChunkedWriter, Field, child_keys, fingerprint, sample_keys, uniform_index
from matscale.io import progress as _progress_bar

__all__ = [
    "DEFAULT_WINDOW_DURATION",
    "UpsampleOperator",
    "register_upsample_operator",
    "get_upsample_operator",
    "apply_operator",
    "missing_capability",
    "upsample",
    "relax_window_origins",
    "local_relax",
    "block_gibbs_sweeps",
    "hierarchical_upsample",
    "system_of_side",
    "system_metadata",
    "compare_snapshots",
    "plot_upsampling_diagnostics",
]


DEFAULT_WINDOW_DURATION = 1.0  # system time units per LocalRelax window
MATCH_KINDS = (None, "order", "time")


# --------------------------------------------------------------------------------------------
# Upsample operators
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpsampleOperator:
    """A way of building one state of side ``factor * L`` from pool snapshots.

    ``n_sources(factor, grid_dim)`` is how many pool snapshots one output uses; ``apply(sources,
    factor, grid_dim)`` maps ``sources [B, n_sources, *state]`` to ``[B, *upsampled state]``.
    ``match`` (optional) matches the other sources to the first one (the anchor): on the
    system's order parameter (``"order"``) or on the snapshots' recording time (``"time"``; at
    deeper levels, whose pools carry no time, on the order parameter). The other sources are
    then drawn among the ``match_fraction`` of the pool closest to the anchor in that key, so
    that an output is a homogeneous state instead of an average over the whole pool. The anchor
    is drawn uniformly from the pool with probability 1 − ``balance``, and otherwise at a key
    drawn uniformly over the pool's key range: small-system pools are dominated by equilibrated
    snapshots, and this spreads the training states over the whole range of the key
    (off-equilibrium transients included) while keeping the rest at the pool's own weights.
    ``requires`` names optional system capabilities (methods, :mod:`matscale.systems.base`)
    the operator calls; such an operator is applied as ``apply(sources, factor, grid_dim,
    system)``.
    """

    name: str
    n_sources: Callable[[int, int], int]
    apply: Callable[..., np.ndarray]
    match: str | None = None
    match_fraction: float = 0.01
    balance: float = 0.5
    requires: tuple[str, ...] = ()


def _duplicate(sources: np.ndarray, factor: int, grid_dim: int) -> np.ndarray:
    """Each cell of ``sources[:, 0]`` becomes a ``factor``-sided block of copies."""
    x = sources[:, 0]
    for axis in range(1, grid_dim + 1):
        x = np.repeat(x, factor, axis=axis)
    return np.ascontiguousarray(x)


def _tile(sources: np.ndarray, factor: int, grid_dim: int) -> np.ndarray:
    """``factor ** grid_dim`` snapshots placed on a tile grid (:func:`matscale.geometry.tile`)."""
    return geometry.tile(sources, factor, grid_dim)


def _replicate(sources: np.ndarray, factor: int, grid_dim: int) -> np.ndarray:
    """``factor ** grid_dim`` periodic copies of ``sources[:, 0]``: the small periodic box seen in
    a larger box. No seams: every bond across a tile boundary is a bond of the small state."""
    x = sources[:, 0]
    reps = (1,) + (factor,) * grid_dim + (1,) * (x.ndim - 1 - grid_dim)
    return np.tile(x, reps)


def _n_tiles(factor: int, grid_dim: int) -> int:
    return factor ** grid_dim


def _one_source(factor: int, grid_dim: int) -> int:
    return 1


def _interpolate(sources: np.ndarray, factor: int, grid_dim: int, system: Any) -> np.ndarray:
    """``sources[:, 0]`` on ``factor`` times as many grid points per axis (``system.refine``)."""
    return system.refine(sources[:, 0], factor)


_OPERATORS: dict[str, UpsampleOperator] = {
    "duplicate": UpsampleOperator("duplicate", _one_source, _duplicate),
    "tile": UpsampleOperator("tile", _n_tiles, _tile),
    # Tiles share the anchor's order parameter (within the closest 1 % of the pool): covers
    # off-equilibrium homogeneous states (e.g. relaxation from m < 0 against h > 0), which plain
    # tiling of a mostly equilibrated pool almost never produces.
    "tile_matched": UpsampleOperator("tile_matched", _n_tiles, _tile, match="order"),
    # Tiles recorded at the anchor's time: one stage of a relaxation from random states.
    "tile_time": UpsampleOperator("tile_time", _n_tiles, _tile, match="time"),
    # Periodic copies of one snapshot: seam-free, the small box's local structure everywhere.
    "replicate": UpsampleOperator("replicate", _one_source, _replicate),
    # One snapshot refined onto a finer grid by the system (continuous fields).
    "interpolate": UpsampleOperator("interpolate", _one_source, _interpolate, requires=("refine",)),
}


def _state_mean(snapshots: np.ndarray) -> np.ndarray:
    """Mean of each snapshot [M, ...] (the magnetization of spin configurations)."""
    return snapshots.reshape(len(snapshots), -1).mean(axis=1, dtype=np.float64)


def draw_sources(op: UpsampleOperator, keys: np.ndarray, pool_size: int,
                 pool_keys: np.ndarray | None = None, order: np.ndarray | None = None) -> np.ndarray:
    """Pool indices ``[B, n_sources]`` for one output per row of ``keys [B, n_sources]``.

    Without matching every source is uniform on the pool. With it, ``pool_keys [M]`` are the
    matching keys of the pool and ``order`` their stable argsort (computed when None): the
    anchor is placed as described in :class:`UpsampleOperator` and the other sources uniformly
    among the ``op.match_fraction`` of the pool nearest to the anchor in key rank.
    """
    picks = uniform_index(keys, pool_size)
    if op.match is None or picks.shape[1] == 1:
        return picks
    if order is None:
        order = np.argsort(pool_keys, kind="stable")
    half = max(1, int(op.match_fraction * pool_size) // 2)
    anchor_rank = picks[:, :1].copy()
    u = uniform_index(child_keys(keys[:, 0], 2, "balance"), 2**30) / 2.0**30  # [B, 2] in [0, 1)
    balanced = u[:, :1] < op.balance
    if balanced.any():
        sorted_key = np.asarray(pool_keys)[order]
        target = sorted_key[0] + u[:, 1:] * (sorted_key[-1] - sorted_key[0])
        balanced_rank = np.minimum(np.searchsorted(sorted_key, target), pool_size - 1)
        anchor_rank[balanced] = balanced_rank[balanced]
    offset = picks[:, 1:] % (2 * half + 1) - half
    ranks = np.clip(anchor_rank + offset, 0, pool_size - 1)
    return order[np.concatenate([anchor_rank, ranks], axis=1)]


def register_upsample_operator(operator: UpsampleOperator, *, replace: bool = False) -> None:
    """Make ``operator`` available as ``mode=operator.name``."""
    if not isinstance(operator, UpsampleOperator):
        raise TypeError(f"operator must be an UpsampleOperator, got {type(operator).__name__}")
    if operator.match not in MATCH_KINDS:
        raise ValueError(f"operator.match must be one of {MATCH_KINDS}, got {operator.match!r}")
    if operator.name in _OPERATORS and not replace:
        raise ValueError(f"upsample mode {operator.name!r} is already registered (pass replace=True)")
    _OPERATORS[operator.name] = operator


def get_upsample_operator(mode: str | UpsampleOperator) -> UpsampleOperator:
    """The operator registered under ``mode`` (or ``mode`` itself if it is an operator)."""
    if isinstance(mode, UpsampleOperator):
        return mode
    if mode not in _OPERATORS:
        raise ValueError(f"mode must be one of {sorted(_OPERATORS)}, got {mode!r}")
    return _OPERATORS[mode]


def missing_capability(operator: UpsampleOperator, system: Any) -> str | None:
    """The first capability in ``operator.requires`` that ``system`` (an instance or a class)
    does not offer, or None."""
    return next((name for name in operator.requires
                 if not callable(getattr(system, name, None))), None)


def _check_capabilities(operator: UpsampleOperator, system: Any) -> None:
    missing = missing_capability(operator, system)
    if missing is not None:
        raise ValueError(f"upsampling mode {operator.name!r} needs the system capability "
                         f"'{missing}', which {type(system).__name__} does not offer")


def apply_operator(operator: UpsampleOperator, system: Any, sources: np.ndarray, factor: int) -> np.ndarray:
    """``operator`` applied to ``sources [B, n_sources, *state]`` of ``system`` (which gets the
    system itself when the operator ``requires`` capabilities; ValueError without them)."""
    _check_capabilities(operator, system)
    extra = (system,) if operator.requires else ()
    return operator.apply(sources, factor, system.grid_dim, *extra)


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
    return int(factor)


def _check_square(configs: np.ndarray, name: str = "configs") -> np.ndarray:
    configs = np.asarray(configs)
    if configs.ndim != 3 or configs.shape[1] != configs.shape[2] or configs.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B>0, L, L], got {configs.shape}")
    return configs


def _check_states(system: Any, states: np.ndarray, name: str = "configs") -> np.ndarray:
    """``states`` as an array ``[B>0, *grid, *cell]`` of the system's layout (any box side)."""
    states = np.asarray(states)
    d, cell = system.grid_dim, tuple(system.cell_shape)
    grid = states.shape[1:1 + d]
    if (states.ndim != 1 + d + len(cell) or states.shape[0] == 0 or len(set(grid)) != 1
            or states.shape[1 + d:] != cell):
        raise ValueError(f"{name} must have shape [B>0, {', '.join(['L'] * d + [str(c) for c in cell])}], "
                         f"got {states.shape}")
    return states


def upsample(configs: np.ndarray, factor: int = 2, mode: str | UpsampleOperator = "duplicate",
             rng: np.random.Generator | None = None, *, n_out: int | None = None) -> np.ndarray:
    """Upsample square configurations ``configs [B, L, L]`` to side ``factor * L``.

    ``"duplicate"`` maps config b to output b (``rng`` unused) unless ``n_out`` is given, in
    which case ``n_out`` configs are drawn with replacement. ``"tile"`` builds ``n_out``
    (default B) outputs, each from ``factor**2`` configs drawn with replacement by ``rng``;
    ``"tile_matched"`` matches tiles on the mean site value (the magnetization).
    """
    configs = _check_square(configs)
    factor = _check_factor(factor)
    op = get_upsample_operator(mode)
    if op.match == "time":
        raise ValueError(f"mode {op.name!r} needs recording times: use hierarchical_upsample(pool_times=...)")
    if op.requires:
        raise ValueError(f"mode {op.name!r} needs a system offering {', '.join(op.requires)}: "
                         "use hierarchical_upsample(system, ...)")
    n_src = op.n_sources(factor, 2)
    if n_out is None and n_src == 1:
        return op.apply(configs[:, None], factor, 2)
    n_out = len(configs) if n_out is None else int(n_out)
    if n_out < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator for mode={op.name!r} drawing, got {type(rng).__name__}")
    keys = rng.integers(0, 2**63, size=(n_out, n_src), dtype=np.uint64) << np.uint64(1)
    pool_keys = _state_mean(configs) if op.match else None
    return op.apply(configs[draw_sources(op, keys, len(configs), pool_keys)], factor, 2)


# --------------------------------------------------------------------------------------------
# LocalRelax
# --------------------------------------------------------------------------------------------
def relax_window_origins(L: int, keys: np.ndarray, *, window: int | None = None,
                         stride: int | None = None, order: str = "random",
                         random_offset: bool | None = None, grid_dim: int = 2) -> np.ndarray:
    """Window origins ``int64 [B, W, grid_dim]`` of LocalRelax, in visiting order.

    See :func:`matscale.geometry.window_grid_origins` (``L`` is the box side in cells).
    """
    return geometry.window_grid_origins(L, keys, grid_dim, window=window, stride=stride,
                                        order=order, random_offset=random_offset)


def local_relax(system: Any, configs: np.ndarray, *, window: int | None = None,
                stride: int | None = None, n_events: int | None = None,
                duration: float | None = None, boundary: str = "frozen",
                seeds: int | np.ndarray = 0, order: str = "random",
                random_offset: bool | None = None,
                origins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Relax ``configs [B, *grid, *cell]`` in place by short runs on overlapping windows.

    Parameters
    ----------
    system:
        The microscopic system of the configs' box side (the protocol's ``evolve_windows``).
    window, stride:
        Window side in cells (default half the box: the pre-upsample side for ``factor=2``;
        :func:`hierarchical_upsample` passes the small-system side p) and grid spacing
        (default ``window // 2``, overlapping windows).
    n_events, duration:
        Budget per window: time in the system's time unit (default
        ``DEFAULT_WINDOW_DURATION``) or a number of events (biased, see the module docstring).
    boundary:
        ``"frozen"`` (exterior is a fixed boundary; default) or ``"periodic"`` where the system
        offers it.
    seeds:
        An int (per-config keys derived from it and the config index) or ``uint64 [B]`` keys.
    order, random_offset:
        Window visiting order, see :func:`matscale.geometry.window_grid_origins`.
    origins:
        Explicit window origins ``int [B, W, grid_dim]`` in visiting order, replacing the grid
        (e.g. to relax only the seams of a tiling); ``stride``/``order`` are then unused.

    Returns ``(configs, elapsed)`` with ``elapsed [B, W]`` the time spent in each window.
    """
    configs = _check_states(system, configs)
    if configs.dtype != np.dtype(system.state_dtype) or not configs.flags.c_contiguous:
        raise TypeError(f"configs must be a C-contiguous {np.dtype(system.state_dtype)} array "
                        f"(relaxed in place), got {configs.dtype}")
    L = configs.shape[1]
    if system.size != L:
        raise ValueError(f"configs have side {L} but the system's box side is {system.size}")
    window, stride, _ = geometry.window_geometry(L, window, stride)
    keys = _config_keys(seeds, len(configs), "local-relax")
    if origins is None:
        origins = geometry.window_grid_origins(L, keys, system.grid_dim, window=window,
                                               stride=stride, order=order,
                                               random_offset=random_offset)
    if n_events is None and duration is None:
        duration = DEFAULT_WINDOW_DURATION
    elapsed = system.evolve_windows(configs, origins, window, n_events=n_events,
                                    duration=duration, boundary=boundary, seeds=keys)
    return configs, np.asarray(elapsed)


def block_gibbs_sweeps(system: Any, configs: np.ndarray, passes: int, *, duration: float,
                       window: int | None = None, seed: int = 0,
                       index: np.ndarray | None = None) -> Iterator[int]:
    """Relax ``configs [B, *grid, *cell]`` in place by ``passes`` LocalRelax passes and yield
    the pass number (1 .. passes) after each, for the caller to record the states.

    Every pass visits all windows of side ``window`` (stride ``window // 2``) in a fresh random
    order per config and evolves each for ``duration`` (system time units) with its exterior
    frozen. A window move with a fixed duration is an exact Monte Carlo move of the large
    system (it leaves the Gibbs measure invariant), so repeated passes are a block-Gibbs chain
    that approaches the large system's equilibrium. Several short passes are not one long one:
    a single long relaxation equilibrates each window *given* its frozen, possibly ordered
    exterior, and can add order instead of removing it. States recorded after successive passes
    have decorrelated short-range structure (each window ran ``duration``) while slow
    observables move little: many more training states for the cost of the passes. The stream
    of config i in pass k depends only on ``(seed, k, i)``, where i is its entry of ``index``
    (default 0 .. B-1): any split of a set of configs into chunks gives the same states."""
    passes = int(passes)
    if passes < 0:
        raise ValueError(f"block_gibbs_sweeps: passes={passes} out of range (allowed: >= 0)")
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(f"block_gibbs_sweeps: duration={duration!r} out of range (allowed: > 0)")
    index = np.arange(len(configs)) if index is None else np.asarray(index)
    if index.shape != (len(configs),):
        raise ValueError(f"block_gibbs_sweeps: index has shape {index.shape}, expected ({len(configs)},)")
    for k in range(1, passes + 1):
        local_relax(system, configs, window=window, duration=float(duration),
                    seeds=sample_keys(int(seed), index, "block-gibbs", k))
        yield k


def _config_keys(seeds: int | np.ndarray, n: int, tag: str) -> np.ndarray:
    """Per-config uint64 keys from an int seed (hashed with the config index) or given keys."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return sample_keys(int(seeds), np.arange(n), tag)
    keys = np.asarray(seeds)
    if keys.shape != (n,) or not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"seeds must be an int or an integer array of shape ({n},), got {keys.shape}")
    return keys.astype(np.uint64)


# --------------------------------------------------------------------------------------------
# Hierarchical upsampling
# --------------------------------------------------------------------------------------------
def system_of_side(system: Any, L: int) -> Any:
    """The same system (same physical parameters) on a box of side ``L`` cells."""
    return system if system.size == L else system.resized(L)


def system_metadata(system: Any) -> dict[str, Any]:
    """JSON scalars describing ``system`` (the protocol's ``metadata()``)."""
    return dict(system.metadata())


def _levels(p: int, target_L: int, factor: int) -> list[int]:
    """Sides p*factor, p*factor**2, ..., target_L; ValueError if target_L is not reachable."""
    sides, L = [], p
    while L < target_L:
        L *= factor
        sides.append(L)
    if L != target_L or not sides:
        raise ValueError(f"target_L={target_L} must equal p * factor**k (k >= 1) with p={p}, factor={factor}")
    return sides


def _conserve(system: Any, configs: np.ndarray, keys: np.ndarray) -> None:
    """Repair conserved quantities of every freshly tiled config with its own stream."""
    for i, key in enumerate(np.asarray(keys, dtype=np.uint64)):
        system.conserve(configs[i:i + 1], np.random.default_rng(int(key)))


def _draw_level(system: Any, pool: np.ndarray, start: int, stop: int, level: int, *,
                op: UpsampleOperator, factor: int, seed: int, pool_keys: np.ndarray | None = None,
                order: np.ndarray | None = None) -> np.ndarray:
    """Pool indices ``[stop - start, n_sources]`` of the sources of outputs ``start:stop``."""
    index = np.arange(start, stop)
    draw_keys = child_keys(sample_keys(seed, index, "upsample-pool", level), op.n_sources(factor, system.grid_dim))
    return draw_sources(op, draw_keys, len(pool), pool_keys, order)


def _build_outputs(system: Any, sources: np.ndarray, start: int, level: int, *,
                   op: UpsampleOperator, factor: int, seed: int, relax: Mapping[str, Any]) -> np.ndarray:
    """Outputs ``start : start + len(sources)`` of one level from their drawn sources
    ``[B, n_sources, *state]``: upsample, conserve, LocalRelax. Every random stream is keyed by
    the output's index, so any split of the outputs into tasks gives the same states."""
    index = np.arange(start, start + len(sources))
    configs = np.ascontiguousarray(apply_operator(op, system, sources, factor), dtype=system.state_dtype)
    _conserve(system, configs, sample_keys(seed, index, "upsample-conserve", level))
    if relax["n_events"] or relax["duration"]:  # (a zero budget switches LocalRelax off)
        relax_keys = sample_keys(seed, index, "upsample-relax", level)
        settings = {k: v for k, v in relax.items() if k != "region"}
        if relax.get("region", "all") == "seams":
            settings["origins"] = geometry.seam_window_origins(
                system.size, relax_keys, system.grid_dim, tile=system.size // factor,
                window=relax["window"], stride=relax["stride"])
        local_relax(system, configs, seeds=relax_keys, **settings)
    return configs


def _upsample_level(system: Any, pool: np.ndarray, start: int, stop: int, level: int, *,
                    op: UpsampleOperator, factor: int, seed: int, relax: Mapping[str, Any],
                    pool_times: np.ndarray, pool_keys: np.ndarray | None = None,
                    order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Outputs ``start:stop`` of one level: draw sources, upsample, conserve, LocalRelax; with
    the recording time of each output's anchor (first) source."""
    picks = _draw_level(system, pool, start, stop, level, op=op, factor=factor, seed=seed,
                        pool_keys=pool_keys, order=order)
    configs = _build_outputs(system, pool[picks], start, level, op=op, factor=factor, seed=seed, relax=relax)
    return {"configs": configs, "anchor_time": pool_times[picks[:, 0]]}


def hierarchical_upsample(system_large: Any, small_snapshots: np.ndarray, target_L: int | None = None,
                          n_configs: int = 1000, *, factor: int = 2,
                          mode: str | UpsampleOperator = "tile", window: int | None = None,
                          stride: int | None = None, n_events: int | None = None,
                          duration: float | None = None, boundary: str = "frozen",
                          order: str = "random", random_offset: bool | None = None, seed: int = 0,
                          pool_times: np.ndarray | None = None,
                          chunk_size: int = 2000, out: str | os.PathLike | None = None,
                          group: str = "upsampled", overwrite: bool = False,
                          progress: bool = True, return_times: bool = False,
                          executor: Any = None, relax_region: str = "all") -> Any:
    """Build ``n_configs`` states of side ``target_L`` cells from small snapshots.

    Each level draws its sources (with replacement) from the previous level's output (level
    1: ``small_snapshots [M, *small state]``), upsamples by ``factor``, repairs conserved
    quantities and relaxes with :func:`local_relax` (window defaults to p, the small side, at
    every level). ``pool_times [M]`` are the recording times of the small snapshots, required by
    time-matched modes (``"tile_time"``); every output records the time of its anchor source
    (through the levels), returned with ``return_times=True`` as ``(states, anchor_time [n])``
    (NaN without ``pool_times``).

    ``mode`` defaults to ``"tile"`` (for a spin model, tiling reproduces the direct large-box
    statistics where the paper's ``"duplicate"`` does not; see :mod:`matscale.systems.spin`).

    With ``out`` (an HDF5 path) every level is written chunk by chunk to
    ``{group}/level_{k}`` (dataset ``configs``) and a rerun resumes where it stopped; a finished
    output is read back instead of recomputed. Returns ``[n_configs, *large state]`` (and the
    anchor times with ``return_times``).

    ``relax_region``: ``"all"`` (LocalRelax windows tile the whole box, the paper's scheme) or
    ``"seams"`` (only windows centred on the seams of the new tiling,
    :func:`matscale.geometry.seam_window_origins`: the tiles themselves were relaxed at the
    level before, and the cost per state grows like the seam length instead of the area).

    ``executor`` (:mod:`matscale.parallel`; None: this process) builds the outputs of every
    chunk in tasks (sources are drawn here, the tiling, conservation and LocalRelax run in the
    tasks); every random stream is keyed by the output's index, so the states are the same for
    any executor, worker count and chunk size.
    """
    small = _check_states(system_large, small_snapshots, "small_snapshots")
    p = small.shape[1]
    target_L = int(system_large.size if target_L is None else target_L)
    if system_large.size != target_L:
        raise ValueError(f"target_L={target_L} differs from the system's box side {system_large.size}")
    factor = _check_factor(factor)
    sides = _levels(p, target_L, factor)
    if int(n_configs) < 1:
        raise ValueError(f"n_configs must be >= 1, got {n_configs}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    op = get_upsample_operator(mode)
    _check_capabilities(op, system_large)
    if op.match == "time":
        if pool_times is None or np.shape(pool_times) != (len(small),):
            raise ValueError(f"mode {op.name!r} needs pool_times of shape ({len(small)},) "
                             "(the recording time of every small snapshot)")
    window = p if window is None else int(window)
    if n_events is None and duration is None:
        duration = DEFAULT_WINDOW_DURATION
    relax = dict(window=window, stride=stride, n_events=n_events, duration=duration,
                 boundary=boundary, order=order, random_offset=random_offset)
    if relax_region not in ("all", "seams"):
        raise ValueError(f"relax_region must be 'all' or 'seams', got {relax_region!r}")
    if relax_region == "seams":
        relax["region"] = "seams"
    config = {"stage": "hierarchical_upsample", "system": system_metadata(system_large),
              "small_snapshots": {"shape": small.shape, "fingerprint": fingerprint(small)},
              "factor": factor, "mode": op.name, "seed": int(seed), "relax": relax}
    if pool_times is not None:
        config["pool_times"] = fingerprint(np.ascontiguousarray(pool_times, dtype=np.float64))
    times = (np.full(len(small), np.nan) if pool_times is None
             else np.asarray(pool_times, dtype=np.float64))
    pool = np.ascontiguousarray(small, dtype=system_large.state_dtype)
    for level, L in enumerate(sides, start=1):
        system = system_of_side(system_large, L)
        geometry.window_geometry(L, window, stride)
        keys = _pool_keys(op, system, pool, pool_times if level == 1 else None)
        order_ = None if keys is None else np.argsort(keys, kind="stable")
        level_ = _Level(system, pool, times, level, op, factor, int(seed), relax, keys, order_)
        pool, times = _run_level(level_, int(n_configs), int(chunk_size), executor, out=out,
                                 group=f"{group}/level_{level}", config={**config, "level": level, "L": L},
                                 overwrite=overwrite, show=progress, desc=f"upsample {L // factor}->{L}")
    return (pool, times) if return_times else pool


def _pool_keys(op: UpsampleOperator, system: Any, pool: np.ndarray,
               times: np.ndarray | None) -> np.ndarray | None:
    """Matching keys of a pool: recording times (level 1 of "time"), the order parameter, or None."""
    if op.match is None:
        return None
    if op.match == "time" and times is not None:
        return np.asarray(times, dtype=np.float64)
    return np.asarray(system.order_parameter(pool), dtype=np.float64)


@dataclass
class _Level:
    """One level of hierarchical upsampling: its pool, matching keys and settings."""

    system: Any
    pool: np.ndarray
    pool_times: np.ndarray
    level: int
    op: UpsampleOperator
    factor: int
    seed: int
    relax: Mapping[str, Any]
    pool_keys: np.ndarray | None
    order: np.ndarray | None

    def outputs(self, chunks: list[tuple[int, int]], executor: Any
                ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """``(start, stop, {"configs", "anchor_time"})`` of every chunk, in order; the outputs
        are built in tasks on ``executor`` (a chunk split into about 4 tasks per worker)."""
        from matscale.parallel import executor_workers, ordered_map, task_ranges

        workers = executor_workers(executor)
        plan: list[tuple[np.ndarray, int]] = []  # (picks, number of tasks) per chunk, filled lazily

        def tasks() -> Iterator[tuple]:
            for a, b in chunks:
                picks = _draw_level(self.system, self.pool, a, b, self.level, op=self.op,
                                    factor=self.factor, seed=self.seed, pool_keys=self.pool_keys,
                                    order=self.order)
                parts = [(0, b - a)] if executor is None else task_ranges(b - a, workers)
                plan.append((picks, len(parts)))
                for sa, sb in parts:
                    yield (self.system, self.pool[picks[sa:sb]], a + sa, self.level, self.op,
                           self.factor, self.seed, dict(self.relax))

        results = ordered_map(executor, _build_task, tasks())
        for i, (a, b) in enumerate(chunks):
            first = next(results)  # (plan[i] is filled once the chunk's first task is submitted)
            picks, n_parts = plan[i]
            parts = [first, *(next(results) for _ in range(n_parts - 1))]
            yield a, b, {"configs": np.concatenate(parts), "anchor_time": self.pool_times[picks[:, 0]]}


def _build_task(system: Any, sources: np.ndarray, start: int, level: int, op: UpsampleOperator,
                factor: int, seed: int, relax: dict[str, Any]) -> np.ndarray:
    """:func:`_build_outputs` with positional arguments (one executor task)."""
    return _build_outputs(system, sources, start, level, op=op, factor=factor, seed=seed, relax=relax)


def _run_level(level: _Level, n: int, chunk_size: int, executor: Any, *,
               out: str | os.PathLike | None, group: str, config: Mapping[str, Any],
               overwrite: bool, show: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``n`` outputs of one level, in memory or through a ChunkedWriter (resumable);
    returns (states, anchor times)."""
    system = level.system
    shape = (system.size,) * system.grid_dim + tuple(system.cell_shape)
    fields = {"configs": Field(shape, np.dtype(system.state_dtype), system.site_unit),
              "anchor_time": Field((), np.dtype(np.float64), system.time_unit)}
    if out is None:
        result = {name: np.empty((n, *f.shape), dtype=f.dtype) for name, f in fields.items()}
        chunks = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
        for start, stop, values in _progress_bar(level.outputs(chunks, executor), total=len(chunks),
                                                 desc=desc, enabled=show):
            for name, value in values.items():
                result[name][start:stop] = value
        return result["configs"], result["anchor_time"]
    with ChunkedWriter(out, group, n, chunk_size, fields, config, overwrite=overwrite) as writer:
        pending = list(writer.pending_chunks())
        for start, stop, values in _progress_bar(level.outputs(pending, executor), total=len(pending),
                                                 desc=desc, enabled=show):
            writer.write_chunk(start, stop, **values)
        data = writer.read(["configs", "anchor_time"])
        return data["configs"], data["anchor_time"]


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------
def _default_observables() -> tuple[Callable[[np.ndarray], np.ndarray], tuple[str, ...]]:
    from matscale.observables import SPIN_OBSERVABLE_NAMES, spin_observables

    return spin_observables, tuple(SPIN_OBSERVABLE_NAMES)


#: bytes of Fourier transforms held at once by the diagnostics' S(k) (complex128 per site)
_SK_BYTES = 256 * 2**20


def _mean_structure_factor(structure_factor: Callable, states: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Batch-averaged radial S(k) without the k = 0 shell, over chunks of states whose
    transforms fit in ``_SK_BYTES`` (2000 states of 1024² would need 35 GB at once)."""
    per_state = 16 * int(np.prod(states.shape[1:]))
    chunk = max(1, _SK_BYTES // max(per_state, 1))
    total, k = None, None
    for start in range(0, len(states), chunk):
        k, s = structure_factor(states[start:start + chunk])
        part = np.asarray(s).reshape(-1, len(k)).sum(axis=0)
        total = part if total is None else total + part
    keep = np.asarray(k) > 0
    return np.asarray(k)[keep], (total / len(states))[keep]


def compare_snapshots(upsampled: np.ndarray, direct: np.ndarray, *,
                      observables: Callable[[np.ndarray], np.ndarray] | None = None,
                      names: tuple[str, ...] | None = None, n_bins: int = 30,
                      structure_factor: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> dict[str, Any]:
    """Compare upsampled with directly simulated snapshots of the same size.

    For every observable (default: the spin observables m and ρ_dw of square spin
    configurations; pass a system's ``observables`` and ``observable_names`` otherwise):
    common-edge histograms (densities), mean, std, standard error of the mean, ``z_mean`` (mean
    difference in units of the combined standard error), the two-sample Kolmogorov–Smirnov
    statistic and p-value and the energy distance. With the default spin observables (or a
    given ``structure_factor``), also the batch-averaged, radially averaged structure factor
    S(k) of both sets (k = 0 dropped).
    """
    from scipy import stats

    upsampled, direct = np.asarray(upsampled), np.asarray(direct)
    if len(upsampled) == 0 or len(direct) == 0:
        raise ValueError("upsampled and direct must hold at least one state each")
    if upsampled.shape[1:] != direct.shape[1:]:
        raise ValueError(f"upsampled {upsampled.shape[1:]} and direct {direct.shape[1:]} lattices differ")
    if observables is None:
        _check_square(upsampled, "upsampled")
        observables, default_names = _default_observables()
        names = names or default_names
        if structure_factor is None:
            from matscale.observables import structure_factor
    phi_up = np.asarray(observables(upsampled), dtype=np.float64).reshape(len(upsampled), -1)
    phi_dir = np.asarray(observables(direct), dtype=np.float64).reshape(len(direct), -1)
    names = names or tuple(f"phi{i}" for i in range(phi_up.shape[1]))
    if len(names) != phi_up.shape[1]:
        raise ValueError(f"names has {len(names)} entries for {phi_up.shape[1]} observables")
    result: dict[str, Any] = {"n_upsampled": len(upsampled), "n_direct": len(direct),
                              "L": upsampled.shape[1], "observables": {}}
    for i, name in enumerate(names):
        a, b = phi_up[:, i], phi_dir[:, i]
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, n_bins + 1)
        sem_a = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.inf
        sem_b = b.std(ddof=1) / np.sqrt(len(b)) if len(b) > 1 else np.inf
        ks = stats.ks_2samp(a, b)
        result["observables"][name] = {
            "edges": edges,
            "hist_upsampled": np.histogram(a, edges, density=True)[0],
            "hist_direct": np.histogram(b, edges, density=True)[0],
            "mean_upsampled": a.mean(), "mean_direct": b.mean(),
            "std_upsampled": a.std(), "std_direct": b.std(),
            "sem_upsampled": sem_a, "sem_direct": sem_b,
            "z_mean": (a.mean() - b.mean()) / np.hypot(sem_a, sem_b),
            "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
            "energy_distance": float(stats.energy_distance(a, b)),
        }
    if structure_factor is not None:
        k, s_up = _mean_structure_factor(structure_factor, upsampled)
        _, s_dir = _mean_structure_factor(structure_factor, direct)
        result["structure_factor"] = {"k": k, "S_upsampled": s_up, "S_direct": s_dir,
                                      "max_rel_diff": float(np.max(np.abs(s_up - s_dir) / s_dir))}
    return result


def plot_upsampling_diagnostics(diag: Mapping[str, Any], path: str | os.PathLike, *,
                                caption: str | None = None,
                                units: Sequence[str] | None = None) -> str:
    """Histograms of every observable (and S(k) when present), upsampled vs direct.

    ``caption``: what the two samples are and what a good result looks like, printed under the
    panels; ``units``: one unit per observable for the axis labels ("1" = dimensionless).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    obs = diag["observables"]
    sf = diag.get("structure_factor")
    n_panels = len(obs) + (1 if sf is not None else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.4 * n_panels, 4.3 if caption else 3.6),
                             squeeze=False)
    axes = axes[0]
    n_up, n_direct = diag["n_upsampled"], diag["n_direct"]
    units = list(units) if units is not None else ["1"] * len(obs)
    for ax, (name, d), unit in zip(axes, obs.items(), units):
        centres = 0.5 * (d["edges"][1:] + d["edges"][:-1])
        width = np.diff(d["edges"])
        ax.bar(centres, d["hist_direct"], width=width, alpha=0.5, label=f"direct ({n_direct} states)")
        ax.step(centres, d["hist_upsampled"], where="mid", color="C3", label=f"upsampled ({n_up} states)")
        ax.set_xlabel(name if unit in ("1", "") else f"{name} ({unit})")
        ax.set_ylabel("probability density" + ("" if unit in ("1", "") else f" (1/{unit})"))
        ax.set_title(f"{name}: KS = {d['ks_statistic']:.3f}, z = {d['z_mean']:.1f}", fontsize=10)
        ax.legend(fontsize=8)
    if sf is not None:
        ax = axes[-1]
        ax.loglog(sf["k"], sf["S_direct"], "o", ms=3, label="direct")
        ax.loglog(sf["k"], sf["S_upsampled"], "-", color="C3", label="upsampled")
        for axis in (ax.xaxis, ax.yaxis):  # labels at 1, 2, 5 x 10^n only, plain numbers
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wavenumber k (1/lattice spacing)")
        ax.set_ylabel("structure factor S(k) (1)")
        ax.set_title("S(k), radially averaged", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Upsampled vs direct large-system states, box side {diag['L']}")
    if caption:
        import textwrap

        fig.text(0.01, 0.01, textwrap.fill(caption, width=int(62 * n_panels)), fontsize=8,
                 va="bottom", ha="left")
        fig.tight_layout(rect=(0, 0.12, 1, 1))
    else:
        fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
