"""Partial evolution: training pairs for the large system from patch-sized simulations.

For every large snapshot x_t (side L cells) one patch I of side p is drawn uniformly from the
K = (L/p)**grid_dim non-overlapping patches (:mod:`matscale.geometry`), and only that patch is
evolved for δt with the exterior frozen (``boundary="frozen"``: the exterior is the true
boundary condition; ``"periodic"`` evolves the patch as an isolated periodic box where the
system offers it, as the paper code did for its spin model). What "evolving a patch" means is the
system's ``evolve_windows`` (the alloy moves the vacancies that start inside the patch).

Budget: a fixed ``duration`` δt (default ``DEFAULT_DURATION`` = 1 system time unit; spin
systems: one attempt per site) or a fixed number of events ``n_events`` (the paper's p**2,
"one patch sweep", with a random δt). The fixed-duration increment is exact: started from
equilibrium its mean is zero. The fixed-event increment is not: a rejection-free chain stopped
after n events is distributed as π·R/<R> (R = the patch's total event rate), which biases the
increment (measured for a spin model in :mod:`matscale.systems.spin`). Use ``n_events`` only
for comparison with the paper.

Stored per sample i (``d`` = number of observables):

========================  =========================  ==============================================
``z0``                    float64 [d]                φ(x_t), global observables of the large config
``delta``                 float64 [d]                K·(φ(x_{t+δt}) − φ(x_t)): the patch-share increment
``dt``                    float64                    elapsed time δt (system time unit)
``patch_index``           int64                      I, row-major patch number (see ``matscale.geometry``)
``z1_naive``              float64 [d]                φ_P(patch after): the observable of the evolved
                                                     patch alone (periodic wrap), the paper's naive target
``patch_before/after``    [p, ..., p, *cell]         the patch configuration (optional), so a closure
                                                     encoder can add its own increments E(after)−E(before)
========================  =========================  ==============================================

With ``n_draws = R`` > 1 every sample averages R independent patch evolutions of the same
snapshot (``delta`` and ``dt`` are means; ``patch_index`` is [R], the patch arrays [R, p, p]) and
the increments are fitted with λ = K / R.

For observables that are means of patch shares (φ = (1/K) Σ_J φ_J), ``delta`` equals the sum of
the K patch-share changes; for a local observable with a frozen exterior only patch I and the
shares touching its boundary change.

Randomness: sample i uses keys hashed from ``(seed, i)`` (:func:`matscale.io.sample_keys`) for
both the patch index and the kernel's random stream, so the data are identical after a resume
and for any ``chunk_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from matscale import __version__, geometry
from matscale.io import ChunkedWriter, Field, child_keys, fingerprint, sample_keys, uniform_index
from matscale.io import progress as _progress_bar
from matscale.parallel import ordered_map
from matscale.upsampling import system_metadata

DEFAULT_DURATION = 1.0  # system time units

__all__ = ["DEFAULT_DURATION", "PartialEvolutionData", "partial_evolution", "patch_origins", "extract_patches",
           "generator_pairs", "moment_pairs", "exact_moments"]

Observables = Callable[[np.ndarray], np.ndarray]


@dataclass
class PartialEvolutionData:
    """Arrays of a partial-evolution data set (first axis: sample) and their metadata."""

    z0: np.ndarray
    delta: np.ndarray
    dt: np.ndarray
    patch_index: np.ndarray
    z1_naive: np.ndarray
    patch_before: np.ndarray | None = None
    patch_after: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.dt)

    @property
    def K(self) -> int:
        """Number of patches of the large system (the λ of the L_p loss)."""
        return int(self.attrs["K"])

    @property
    def n_draws(self) -> int:
        """Patch evolutions averaged into each sample (R)."""
        return int(self.attrs.get("n_draws", 1))

    @property
    def lam(self) -> float:
        """The λ of the L_p loss for these increments: K / R."""
        return self.K / self.n_draws

    @property
    def z1(self) -> np.ndarray:
        """Partial-evolution target z0 + delta (the paper's ``z1_train_partial``)."""
        return self.z0 + self.delta

    def arrays(self) -> dict[str, np.ndarray]:
        """All stored arrays by name (patch arrays only when present)."""
        out = {"z0": self.z0, "delta": self.delta, "dt": self.dt,
               "patch_index": self.patch_index, "z1_naive": self.z1_naive}
        if self.patch_before is not None:
            out["patch_before"] = self.patch_before
            out["patch_after"] = self.patch_after
        return out


def patch_origins(patch_index: np.ndarray, L: int, p: int, grid_dim: int = 2) -> np.ndarray:
    """Origins ``int64 [B, grid_dim]`` of patches ``patch_index [B]`` (row-major numbering)."""
    return geometry.patch_origins(patch_index, L, p, grid_dim)


def extract_patches(states: np.ndarray, origins: np.ndarray, p: int) -> np.ndarray:
    """Copies of the side-``p`` blocks of ``states [B, *grid, *cell]`` at ``origins [B, dim]``."""
    return geometry.extract_blocks(states, origins, p, np.shape(origins)[-1])


def _observable_matrix(observables: Observables, states: np.ndarray) -> np.ndarray:
    """φ(states) as float64 ``[B, d]``."""
    values = np.asarray(observables(states), dtype=np.float64)
    return values.reshape(len(states), -1)


def _draw_keys(keys: np.ndarray, n_draws: int) -> np.ndarray:
    """Per-draw stream keys ``uint64 [B, R, 2]`` (patch index, kernel stream) of samples ``keys``.

    Draw 0 uses the single-draw keys, so ``n_draws = 1`` reproduces the one-patch data set.
    """
    first = child_keys(keys, 2, "partial-streams")[:, None, :]
    if n_draws == 1:
        return first
    extra = child_keys(child_keys(keys, n_draws - 1, "partial-draws"), 2, "partial-streams")
    return np.concatenate([first, extra], axis=1)


def _evolve_chunk(system: Any, chunk: np.ndarray, start: int, stop: int, p: int, K: int,
                  seed: int, observables: Observables, n_events: int | None,
                  duration: float | None, boundary: str, store_patches: bool,
                  n_draws: int = 1, pairs_per_snapshot: int = 1,
                  local_change: bool = False) -> dict[str, np.ndarray]:
    """Samples ``start:stop``: draw patches, evolve them with the exterior frozen, measure. One
    task of :func:`matscale.parallel.ordered_map`.

    Sample i belongs to snapshot i // pairs_per_snapshot; ``chunk`` holds the snapshots of
    samples ``start:stop`` (from snapshot start // pairs_per_snapshot on). Each of the
    ``n_draws`` draws evolves its own copy of the snapshot; ``delta`` and ``dt`` are the means
    over the draws. With ``local_change`` the increment comes from the system's
    ``block_observable_sums`` of the patch before and after (exact: only the shares that
    involve the patch's sites change), instead of the observables of the whole box.
    """
    B, R, P = stop - start, n_draws, pairs_per_snapshot
    owner = np.arange(start, stop) // P - start // P          # snapshot of each sample in chunk
    snaps = np.asarray(chunk, dtype=system.state_dtype)
    L, d = snaps.shape[1], system.grid_dim
    keys = sample_keys(seed, np.arange(start, stop), "partial-evolution")
    per_draw = _draw_keys(keys, R).reshape(B * R, 2)
    patch_index = uniform_index(per_draw[:, 0], K)
    origins = geometry.patch_origins(patch_index, L, p, d)
    z0 = _observable_matrix(observables, snaps)[owner]
    halo = getattr(system, "window_halo", None) if local_change and boundary == "frozen" else None
    if halo is not None and p + 2 * int(halo) <= L:
        # Only the patch and the exterior its dynamics reads: a box of side p + 2 halo each.
        halo = int(halo)
        system, states = system.resized(p + 2 * halo), geometry.extract_blocks(
            snaps, origins - halo, p + 2 * halo, d, rows=np.repeat(owner, R))
        origins = np.full_like(origins, halo)
    else:
        states = np.repeat(snaps[owner], R, axis=0)  # a fresh copy per draw
    before = geometry.extract_blocks(states, origins, p, d)
    if local_change:
        sums_before = np.asarray(system.block_observable_sums(states, origins, p), dtype=np.float64)
    elapsed = system.evolve_windows(states, origins[:, None, :], p, n_events=n_events,
                                    duration=duration, boundary=boundary, seeds=per_draw[:, 1])
    after = geometry.extract_blocks(states, origins, p, d)
    if local_change:
        sums_after = np.asarray(system.block_observable_sums(states, origins, p), dtype=np.float64)
        increment = ((sums_after - sums_before) / L ** d).reshape(B, R, -1)
    else:
        increment = _observable_matrix(observables, states).reshape(B, R, -1) - z0[:, None, :]
    shape = (B, R) if R > 1 else (B,)
    chunk = {"z0": z0, "delta": K * increment.mean(axis=1),
             "dt": np.asarray(elapsed, dtype=np.float64).reshape(B, R).mean(axis=1),
             "patch_index": patch_index.reshape(shape),
             "z1_naive": _observable_matrix(observables, after[::R])}
    if store_patches:
        chunk["patch_before"] = before.reshape(*shape, *before.shape[1:])
        chunk["patch_after"] = after.reshape(*shape, *after.shape[1:])
    return chunk


def _validate(system: Any, snapshots: np.ndarray, p: int, n_events: int | None,
              duration: float | None, boundary: str, chunk_size: int,
              n_draws: int = 1) -> tuple[int, int]:
    """Checks the inputs; returns (L, K)."""
    d, cell = system.grid_dim, tuple(system.cell_shape)
    expected = (system.size,) * d + cell
    if snapshots.ndim != 1 + d + len(cell) or snapshots.shape[1:] != expected or len(snapshots) == 0:
        raise ValueError(f"snapshots must have shape [N>0, {', '.join(map(str, expected))}] "
                         f"(the system's box), got {snapshots.shape}")
    L = system.size
    K = geometry.n_patches(L, int(p), d)
    if n_events is not None and duration is not None:
        raise ValueError("give either n_events or duration, not both")
    if n_events is not None and int(n_events) < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    if duration is not None and not float(duration) > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if boundary not in ("frozen", "periodic"):
        raise ValueError(f"boundary must be 'frozen' or 'periodic', got {boundary!r}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(n_draws, (bool, np.bool_)) or int(n_draws) != n_draws or int(n_draws) < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws}")
    return L, K


def partial_evolution(system: Any, snapshots: np.ndarray, p: int, *, n_events: int | None = None,
                      duration: float | None = None, boundary: str = "frozen", seed: int = 0,
                      observables: Observables | None = None,
                      observable_names: Sequence[str] | None = None, store_patches: bool = True,
                      out: str | os.PathLike | None = None, group: str = "partial",
                      chunk_size: int = 2000, n_draws: int = 1, overwrite: bool = False,
                      max_chunks: int | None = None, progress: bool = True,
                      executor: Any = None, pairs_per_snapshot: int = 1) -> PartialEvolutionData:
    """Evolve one uniformly drawn patch of every snapshot and record the increments.

    Parameters
    ----------
    system:
        Microscopic system of the snapshots' box (the protocol's ``evolve_windows``).
    snapshots:
        Large states ``[N, *grid, *cell]`` of the system's dtype (not modified).
    p:
        Patch side in cells; must divide the box side L. K = (L/p)**grid_dim.
    n_events, duration:
        Evolution budget of the patch: time (default ``DEFAULT_DURATION``) or a number of
        events (p**2 = the paper's "one patch sweep"; biased, see the module docstring).
    boundary:
        ``"frozen"`` (default) or ``"periodic"``.
    seed:
        Base seed of the per-sample streams.
    observables, observable_names:
        ``states [B, *state] -> [B, d]`` (default: the system's ``observables`` and
        ``observable_names``). Also applied to the bare patch for ``z1_naive``.
    store_patches:
        Keep the patch before and after evolution ([N, p, ..., p, *cell] each).
    out, group:
        HDF5 file and group for chunked, resumable output. A rerun skips finished chunks; a
        group made with a different configuration is refused unless ``overwrite=True``.
    chunk_size:
        Samples per chunk (does not change the numbers).
    n_draws:
        R independent patch evolutions per snapshot (each its own uniformly drawn patch and
        random stream, on its own copy of the snapshot). ``delta`` and ``dt`` are their means, so
        the increment's covariance is (K / R)·δt·σσᵀ: fit with ``lam = K / R``
        (:attr:`PartialEvolutionData.lam`). Averaging R draws gives the drift estimate of R
        separate pairs at 1/R of the fitting cost. With R > 1, ``patch_index`` has shape [N, R]
        and the patch arrays [N, R, p, ..., p, *cell]; ``z1_naive`` is that of the first draw. A chunk holds
        ``chunk_size x R`` copies of a snapshot in memory.
    max_chunks:
        With ``out``: compute at most this many pending chunks, then return what is complete
        (time-sliced jobs; call again to continue).
    progress:
        Show a tqdm bar over chunks.
    executor:
        Where the chunks run (:mod:`matscale.parallel`: None = this process, a process pool or
        Dask); the data are identical for any executor and chunk size.
    pairs_per_snapshot:
        P samples per snapshot (N x P samples; sample i evolves snapshot i // P), the same data
        as snapshots repeated P times without holding the copies.

    Systems whose observables are sums of local shares may offer ``block_observable_sums(states,
    origins, size) -> [B, d]``: the sums, over every share that involves a site of the block of
    side ``size`` at ``origins``, of the observables times the number of cells. The increment
    is then their change over the evolved patch divided by the number of cells, which costs
    the patch instead of the whole box (used with the system's own observables).
    Those that also name ``window_halo`` (cells of the exterior that a window's frozen-boundary
    dynamics reads; 1 for nearest-neighbour spins) evolve each patch in a box of side
    p + 2 halo cut from the snapshot instead of in a copy of the whole snapshot.
    """
    snapshots = np.asarray(snapshots)
    if snapshots.dtype != np.dtype(system.state_dtype):
        raise TypeError(f"snapshots must be {np.dtype(system.state_dtype)}, got {snapshots.dtype}")
    L, K = _validate(system, snapshots, p, n_events, duration, boundary, chunk_size, n_draws)
    if isinstance(pairs_per_snapshot, (bool, np.bool_)) or int(pairs_per_snapshot) != pairs_per_snapshot \
            or int(pairs_per_snapshot) < 1:
        raise ValueError(f"pairs_per_snapshot must be an integer >= 1, got {pairs_per_snapshot}")
    P = int(pairs_per_snapshot)
    p, n, R = int(p), len(snapshots) * P, int(n_draws)
    if n_events is None and duration is None:
        duration = DEFAULT_DURATION
    local_change = False
    if observables is None:
        observables = system.observables
        observable_names = tuple(observable_names or system.observable_names)
        local_change = callable(getattr(system, "block_observable_sums", None))
    d = _observable_matrix(observables, snapshots[:1]).shape[1]
    names = tuple(observable_names or (f"phi{i}" for i in range(d)))
    if len(names) != d:
        raise ValueError(f"observable_names has {len(names)} entries for {d} observables")
    if max_chunks is not None and (out is None or int(max_chunks) < 0):
        raise ValueError("max_chunks needs out=<path> and must be >= 0")

    time_unit = getattr(system, "time_unit", "system time unit")
    attrs = {"system": system_metadata(system), "p": p, "L": L, "K": K, "n_draws": R,
             "lam": K / R, "n_events": n_events,
             "duration": duration, "boundary": boundary, "seed": int(seed),
             "observable_names": list(names), "matscale_version": __version__,
             "units": {"z0": "observable units", "delta": "observable units (K x global increment)",
                       "z1_naive": "observable units", "dt": time_unit,
                       "patch_index": "row-major patch number", "patch_before": "site value",
                       "patch_after": "site value"}}
    config = {"stage": "partial_evolution",
              "observables": f"{getattr(observables, '__module__', '?')}.{getattr(observables, '__qualname__', repr(observables))}",
              "snapshots": {"shape": snapshots.shape, "fingerprint": fingerprint(snapshots)},
              "store_patches": bool(store_patches),
              **{k: attrs[k] for k in ("system", "p", "n_events", "duration", "boundary", "seed",
                                       "observable_names")}}
    if R > 1:  # (n_draws = 1 keeps the configuration of existing single-draw files)
        config["n_draws"] = R
    if P > 1:
        config["pairs_per_snapshot"] = P
    draw_axis = (R,) if R > 1 else ()
    fields = {"z0": Field((d,), np.float64, "observable units"),
              "delta": Field((d,), np.float64, "observable units"),
              "dt": Field((), np.float64, time_unit),
              "patch_index": Field(draw_axis, np.int64, "patch number"),
              "z1_naive": Field((d,), np.float64, "observable units")}
    if store_patches:
        patch_shape = (p,) * system.grid_dim + tuple(system.cell_shape)
        dtype = np.dtype(system.state_dtype)
        fields["patch_before"] = Field((*draw_axis, *patch_shape), dtype, "site value")
        fields["patch_after"] = Field((*draw_axis, *patch_shape), dtype, "site value")

    def computed(ranges: list[tuple[int, int]]):
        """(start, stop, arrays) of every range, in order, run on ``executor``."""
        tasks = ((system, snapshots[a // P:(b - 1) // P + 1], a, b, p, K, int(seed), observables,
                  n_events, duration, boundary, store_patches, R, P, local_change) for a, b in ranges)
        results = ordered_map(executor, _evolve_chunk, tasks)
        bar = _progress_bar(zip(ranges, results), total=len(ranges), desc="partial evolution",
                            enabled=progress)
        return ((a, b, arrays) for (a, b), arrays in bar)

    if out is None:
        arrays = {name: np.empty((n, *f.shape), dtype=f.dtype) for name, f in fields.items()}
        ranges = [(a, min(a + int(chunk_size), n)) for a in range(0, n, int(chunk_size))]
        for start, stop, chunk in computed(ranges):
            for name, values in chunk.items():
                arrays[name][start:stop] = values
        return PartialEvolutionData(**arrays, attrs=attrs)

    with ChunkedWriter(out, group, n, int(chunk_size), fields, config, attrs=attrs,
                       overwrite=overwrite) as writer:
        pending = list(writer.pending_chunks())
        if max_chunks is not None:
            pending = pending[: int(max_chunks)]
        for start, stop, chunk in computed(pending):
            writer.write_chunk(start, stop, **chunk)
        arrays = writer.read()
        stored_attrs = {**attrs, "n_complete": writer.n_complete}
    return PartialEvolutionData(**arrays, attrs=stored_attrs)


def generator_pairs(system: Any, states: np.ndarray, dt: float, *, chunk_size: int = 500
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs whose Gaussian likelihood is the *expected* likelihood under the exact generator.

    For a system with a known generator (``system.generator_moments(states) -> (b [B, d],
    a [B, d, d])``: the exact instantaneous drift and diffusion of its observables) the
    increment of z over a short δt has mean b δt and covariance a δt. Every state x gives
    2d pairs z0 = z(x) -> z0 + b δt ± sqrt(d δt α_j) v_j (a = Σ_j α_j v_j v_jᵀ): their mean
    and covariance are exactly b δt and a δt, and the Gaussian NLL is quadratic in the
    increment, so the mean NLL over the 2d pairs equals the NLL averaged over the true
    increment law. This is partial evolution in the limit δt → 0 with infinitely many averaged
    draws (the λ = K/R scaling of the patch likelihood becomes exact, λ = 1): no sampling noise,
    which near a critical point (drift ~1e-3 of the noise per unit time) is the difference
    between a determined and an undetermined drift. Fit them with ``loss="em"`` (or "partial",
    λ = 1); the fitted μ(z) estimates E[b | z] and σσᵀ(z) estimates E[a | z] + δt Var(b | z).

    Returns ``(z0 [2 d B, d], z1 [2 d B, d], dt [2 d B])``, the 2d pairs of each state adjacent.
    """
    if not hasattr(system, "generator_moments"):
        raise ValueError(f"generator_pairs: {type(system).__name__} has no generator_moments (exact drift "
                         "and diffusion of its observables); use partial_evolution")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"generator_pairs: dt={dt!r} out of range (allowed: > 0)")
    return moment_pairs(*exact_moments(system, states, chunk_size=chunk_size), dt)


def exact_moments(system: Any, states: np.ndarray | Iterable[np.ndarray], *, chunk_size: int = 2000
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z [B, d], drift [B, d], diffusion [B, d, d])``, float64: the observables of ``states``
    (an array, or an iterable of arrays taken in turn) and their exact generator moments
    (``system.generator_moments``, per time unit), computed ``chunk_size`` states at a time."""
    if not hasattr(system, "generator_moments"):
        raise ValueError(f"exact_moments: {type(system).__name__} has no generator_moments (exact drift "
                         "and diffusion of its observables); use partial_evolution")
    z, drift, diffusion = [], [], []
    for chunk in ([states] if isinstance(states, np.ndarray) else states):
        for start in range(0, len(chunk), chunk_size):
            block = np.asarray(chunk[start:start + chunk_size])
            b, a = system.generator_moments(block)
            z.append(np.asarray(system.observables(block), dtype=np.float64))
            drift.append(np.asarray(b, dtype=np.float64))
            diffusion.append(np.asarray(a, dtype=np.float64))
    return np.concatenate(z), np.concatenate(drift), np.concatenate(diffusion)


def moment_pairs(z: np.ndarray, drift: np.ndarray, diffusion: np.ndarray, dt: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2d pairs of :func:`generator_pairs` from given observables ``z [B, d]`` and exact
    moments ``drift [B, d]`` (per time unit) and ``diffusion [B, d, d]`` (per time unit)."""
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[1]
    alpha, vectors = np.linalg.eigh(np.asarray(diffusion, dtype=np.float64))
    # columns sqrt(d dt alpha_j) v_j: [B, d (components), d (j)]
    spread = vectors * np.sqrt(d * dt * np.clip(alpha, 0.0, None))[:, None, :]
    mean = z + np.asarray(drift, dtype=np.float64) * dt
    offsets = np.concatenate([spread, -spread], axis=2).transpose(0, 2, 1)   # [B, 2d, d]
    z0 = np.repeat(z, 2 * d, axis=0)
    return z0, (mean[:, None, :] + offsets).reshape(-1, d), np.full(len(z0), float(dt))
