"""The pipeline's stages, each a function of (configuration, system, inputs) -> files in a folder.

The stages call only the system protocol (:mod:`matscale.systems.base`): they never ask which
system they run. A system with a conditioning parameter (``parameter_name``, e.g. the alloy's
temperature) runs the data-generation stages once per training value
(``cfg.system.parameter_points``) and the SDE is fitted to all of them with the parameter as an
input; a system without one runs them once and the SDE has no parameter input.

Units: every duration and elapsed time is in the system's ``time_unit``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from matscale.config import RunConfig
from matscale.io import h5_meta, json_dump, read_h5, read_json, reading, sample_keys, write_h5
from matscale.pipeline.runner import StageRunner, StopPipeline, stage_config

# The SDE networks are small (d <= 6 inputs, 64-wide layers): one torch thread is as fast as two
# on a quiet machine and avoids a 10-20x slowdown from spinning OpenMP threads on a busy one.
FIT_THREADS = 1
_QUENCH_GROUPS = 8
_PAIR_FIELDS = ("z0", "delta", "dt", "patch_index", "patch_before", "patch_after", "z1_naive")


# ----------------------------------------------------------------------------------------------
# Parameter groups and small helpers
# ----------------------------------------------------------------------------------------------
def parameter_groups(cfg: RunConfig, system: Any) -> list[tuple[tuple[int, ...], float | None, Any]]:
    """(extra seed tags, parameter value, system at that value) per training group.

    A system without a parameter has one group with no extra tags (its seeds are those of a
    single-group run); a conditioned system has one group per training value, tagged by index.
    """
    points = tuple(cfg.system.parameter_points)
    if not points:
        return [((), None, system)]
    return [((j,), float(v), system.at(v)) for j, v in enumerate(points)]


def group_seed(seed: int, tags: tuple[int, ...], label: str) -> int:
    """The integer seed of a training group: ``seed`` itself for the single group of a system
    without a parameter, else a hash of (seed, group index, label)."""
    if not tags:
        return seed
    return int(np.atleast_1d(sample_keys(seed, [tags[0]], label))[0] >> np.uint64(2))


def methods(cfg: RunConfig) -> tuple[str, ...]:
    """The SDE variants trained: "ours" (L_p, lam = K), "naive" (the paper's baseline) or both."""
    return ("ours", "naive") if cfg.train.method == "both" else (cfg.train.method,)


def _field(result: Any, name: str) -> np.ndarray:
    """Read field ``name`` from a dict-like or attribute-style result object."""
    if isinstance(result, dict):
        return np.asarray(result[name])
    return np.asarray(getattr(result, name))


def load_configs(folder: Path) -> np.ndarray:
    """The upsampled large states of an ``upsample`` stage folder."""
    return read_h5(folder / "configs.h5", ["configs"])["configs"]


def _config_params(folder: Path) -> np.ndarray | None:
    """Parameter value of every upsampled state (None for systems without a parameter)."""
    import h5py

    with reading(folder / "configs.h5"), h5py.File(folder / "configs.h5", "r") as f:
        return f["params"][()] if "params" in f else None


# ----------------------------------------------------------------------------------------------
# small_sim
# ----------------------------------------------------------------------------------------------
def run_trajectories(system: Any, states: np.ndarray, replicas: np.ndarray, seed: int,
                     key_tags: tuple[tuple, tuple], n_steps: int, duration: float,
                     record: str) -> Any:
    """One task of independent runs: evolve a copy of ``states [B, *state]`` for ``n_steps``
    steps of ``duration``; step k of replica r draws from ``sample_keys(seed, r, *before, k,
    *after)`` with ``key_tags = (before, after)``, so a run's path does not depend on which task
    holds it. ``record="states"``: returns the states at every step [B, n_steps + 1, *state];
    ``"observables"``: returns (observables [B, n_steps + 1, d], final states)."""
    states = np.array(states, copy=True)
    before, after = key_tags
    if record == "states":
        path = np.empty((len(states), n_steps + 1, *states.shape[1:]), dtype=states.dtype)
        path[:, 0] = states
    else:
        path = np.empty((len(states), n_steps + 1, len(system.observable_names)))
        path[:, 0] = system.observables(states)
    for k in range(n_steps):
        system.evolve_batch(states, duration=duration, seeds=sample_keys(seed, replicas, *before, k, *after))
        path[:, k + 1] = states if record == "states" else system.observables(states)
    return path if record == "states" else (path, states)


def _map_runs(system: Any, states: np.ndarray, replicas: np.ndarray, seed: int,
              key_tags: tuple[tuple, tuple], n_steps: int, duration: float, record: str,
              executor: Any, desc: str, progress: bool) -> list[Any]:
    """:func:`run_trajectories` over tasks of consecutive runs, results in run order."""
    from matscale.io import progress as bar
    from matscale.parallel import executor_workers, ordered_map, task_ranges

    ranges = task_ranges(len(states), executor_workers(executor))
    tasks = ((system, states[a:b], replicas[a:b], seed, key_tags, n_steps, duration, record)
             for a, b in ranges)
    return list(bar(ordered_map(executor, run_trajectories, tasks), total=len(ranges), desc=desc,
                    enabled=progress, unit="task"))


def small_sim(cfg: RunConfig, system: Any, p: int, folder: Path, progress: bool,
              executor: Any = None) -> None:
    """``n_runs`` independent small-box runs per training group from the system's random initial
    states; snapshots every ``sweep_time``. snapshots [G, n_runs, n_sweeps + 1, *state].
    Tasks of runs go to ``executor`` (:mod:`matscale.parallel`; identical results for any)."""
    sm = cfg.small
    small = system.resized(p)
    runs = np.arange(sm.n_runs)
    groups = parameter_groups(cfg, small)
    shape = (p,) * small.grid_dim + tuple(small.cell_shape)
    snaps = np.empty((len(groups), sm.n_runs, sm.n_sweeps + 1, *shape), dtype=small.state_dtype)
    for g, (tags, _, sys_g) in enumerate(groups):
        states = sys_g.random_states(sm.n_runs, np.random.default_rng([sm.seed, p, 0, *tags]))
        desc = f"small p={p}" + (f" {small.parameter_name}={groups[g][1]:g}" if tags else "")
        paths = _map_runs(sys_g, states, runs, sm.seed, (("small", p), tags), sm.n_sweeps,
                          sm.sweep_time, "states", executor, desc, progress)
        snaps[g] = np.concatenate(paths)
    times = sm.sweep_time * np.arange(sm.n_sweeps + 1, dtype=np.float64)
    arrays = {"snapshots": snaps, "times": times}
    if groups[0][1] is not None:
        arrays["params"] = np.array([v for _, v, _ in groups], dtype=np.float64)
    write_h5(folder / "snapshots.h5", arrays, {"side": p, "system": small.metadata()},
             {"times": small.time_unit, "snapshots": small.site_unit,
              "params": str(small.parameter_name or "")})


# ----------------------------------------------------------------------------------------------
# upsample
# ----------------------------------------------------------------------------------------------
def upsample(cfg: RunConfig, system: Any, p: int, small_dir: Path, folder: Path,
             progress: bool, executor: Any = None) -> None:
    """Hierarchical upsampling p -> L per training group (K = 1: draw from the pool), plus
    random augmentation; configs [N, *state] (groups in order), is_random [N], params [N],
    anchor_time [N] (recording time of each state's anchor small snapshot; NaN for the random
    states)."""
    data = read_h5(small_dir / "snapshots.h5")
    up, L = cfg.upsampling, system.size
    parts, flags, params, anchors = [], [], [], []
    for g, (tags, value, sys_g) in enumerate(parameter_groups(cfg, system)):
        snaps = data["snapshots"][g]                         # [R, S + 1, *small state]
        pool = snaps.reshape(-1, *snaps.shape[2:])
        pool_times = np.tile(data["times"], snaps.shape[0])
        configs, anchor_time = _upsample_group(cfg, sys_g, p, pool, pool_times, tags, folder, progress,
                                               executor)
        if up.n_random:
            rng = np.random.default_rng([up.seed, p, 1, *tags])
            if p == L:  # the pool draw consumed this stream first
                rng.integers(0, len(pool), size=up.n_configs)
            extra = sys_g.random_states(up.n_random, rng)
            if up.random_relax > 0:
                _quench(sys_g, extra, up, p, tags)
            configs = np.concatenate([configs, extra])
            anchor_time = np.concatenate([anchor_time, np.full(up.n_random, np.nan)])
        is_random = np.zeros(len(configs), dtype=bool)
        is_random[len(configs) - up.n_random:] = up.n_random > 0
        parts.append(configs)
        flags.append(is_random)
        params.append(np.full(len(configs), np.nan if value is None else value))
        anchors.append(anchor_time)
    arrays = {"configs": np.concatenate(parts), "is_random": np.concatenate(flags),
              "anchor_time": np.concatenate(anchors)}
    if not np.isnan(params[0][0]):
        arrays["params"] = np.concatenate(params)
    write_h5(folder / "configs.h5", arrays,
             {"side": L, "p": p, "n_upsampled": up.n_configs, "n_random": up.n_random},
             {"configs": system.site_unit, "params": str(system.parameter_name or ""),
              "anchor_time": system.time_unit})
    (folder / "levels.h5").unlink(missing_ok=True)  # intermediate levels only serve the resume


def _upsample_group(cfg: RunConfig, system: Any, p: int, pool: np.ndarray, pool_times: np.ndarray,
                    tags: tuple[int, ...], folder: Path, progress: bool, executor: Any = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Upsampled states of one training group and their anchor times."""
    up = cfg.upsampling
    if p == system.size:
        rng = np.random.default_rng([up.seed, p, 1, *tags])
        pick = rng.integers(0, len(pool), size=up.n_configs)
        return pool[pick], pool_times[pick]
    from matscale.upsampling import hierarchical_upsample

    seed = group_seed(up.seed, tags, "upsample-group")
    return hierarchical_upsample(
        system, pool, system.size, up.n_configs, factor=up.factor, mode=up.mode,
        window=up.window or None, stride=up.stride or None, n_events=up.n_events or None,
        duration=None if up.n_events else up.duration, seed=seed, pool_times=pool_times,
        progress=progress, out=str(folder / "levels.h5"), return_times=True,
        group="upsampled" if not tags else f"upsampled_{tags[0]}", executor=executor,
        relax_region=up.relax_region)


def _quench(system: Any, configs: np.ndarray, up: Any, p: int, tags: tuple[int, ...]) -> None:
    """LocalRelax random configurations in place, group g of ``_QUENCH_GROUPS`` (round robin) for
    window duration ``up.random_relax * g / (groups - 1)``: states along the initial relaxation."""
    from matscale.upsampling import local_relax

    for g in range(1, _QUENCH_GROUPS):
        members = np.arange(g, len(configs), _QUENCH_GROUPS)
        if len(members) == 0:  # fewer random configurations than groups
            continue
        block = np.ascontiguousarray(configs[members])
        local_relax(system, block, window=up.window or p, stride=up.stride or None,
                    duration=up.random_relax * g / (_QUENCH_GROUPS - 1),
                    seeds=sample_keys(up.seed, members, "quench", p, 3, *tags))
        configs[members] = block


# ----------------------------------------------------------------------------------------------
# partial
# ----------------------------------------------------------------------------------------------
def partial(cfg: RunConfig, system: Any, p: int, up_dir: Path, folder: Path, progress: bool,
            executor: Any = None) -> None:
    """``pairs_per_config`` partial-evolution pairs per large state (exterior frozen by default),
    each a mean of ``n_draws`` patch evolutions; the naive baseline's pairs when it is trained."""
    pa = cfg.partial
    all_configs = load_configs(up_dir)
    config_params = _config_params(up_dir)
    keep_patches = cfg.closure.dim > 0  # the closure encodes its own increments from the patches
    chunks: list[dict[str, np.ndarray]] = []
    for tags, value, sys_g in parameter_groups(cfg, system):
        mine = slice(None) if value is None else config_params == value
        configs = all_configs[mine]  # pair i <- config i // pairs_per_config
        arrays = _partial_group(cfg, sys_g, p, configs, tags, folder, keep_patches, progress, executor)
        if value is not None:
            arrays["params"] = np.full(len(configs) * pa.pairs_per_config, value)
        chunks.append(arrays)
    arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    names = list(system.observable_names)
    write_h5(folder / "pairs.h5", arrays,
             {"p": p, "K": cfg.n_patches(p), "n_draws": pa.n_draws, "observables": names,
              "note": "delta = K x global increment (patch-share increment), mean of n_draws"},
             {"dt": system.time_unit, "patch_before": system.site_unit,
              "patch_after": system.site_unit, "params": str(system.parameter_name or "")})
    for work in folder.glob("partial_work*.h5"):
        work.unlink()


def _partial_group(cfg: RunConfig, system: Any, p: int, configs: np.ndarray, tags: tuple[int, ...],
                   folder: Path, keep_patches: bool, progress: bool,
                   executor: Any = None) -> dict[str, np.ndarray]:
    from matscale.partial import partial_evolution

    pa = cfg.partial
    duration = pa.durations[tags[0]] if pa.durations else pa.duration
    suffix = "" if not tags else f"_{tags[0]}"
    seed = group_seed(pa.seed, tags, "partial-group")
    result = partial_evolution(
        system, configs, p, n_events=pa.n_events or None,
        duration=None if pa.n_events else duration,
        boundary=pa.boundary, seed=seed, chunk_size=pa.chunk_size, n_draws=pa.n_draws,
        store_patches=keep_patches, out=str(folder / f"partial_work{suffix}.h5"), progress=progress,
        executor=executor, pairs_per_snapshot=pa.pairs_per_config)
    arrays = {name: _field(result, name) for name in _PAIR_FIELDS
              if keep_patches or not name.startswith("patch_")}
    if "naive" in methods(cfg):
        # The paper's baseline, with the paper's budget: one patch sweep of events on the same
        # snapshots (an independent stream), next state = the patch observable afterwards.
        naive = partial_evolution(
            system, configs, p, n_events=pa.naive_n_events or p ** system.grid_dim,
            boundary=pa.boundary, seed=seed + 7919, chunk_size=pa.chunk_size,
            store_patches=keep_patches, out=str(folder / f"partial_work_naive{suffix}.h5"),
            progress=progress, executor=executor, pairs_per_snapshot=pa.pairs_per_config)
        arrays["z1_naive"] = _field(naive, "z1_naive")
        arrays["dt_naive"] = np.asarray(_field(naive, "dt"), dtype=np.float64)
        if keep_patches:
            arrays["patch_after_naive"] = _field(naive, "patch_after")
    d_phys = len(system.observable_names)
    for name in ("z0", "delta", "z1_naive"):
        arrays[name] = np.asarray(arrays[name], dtype=np.float64).reshape(len(configs) * pa.pairs_per_config,
                                                                          -1)[:, :d_phys]
    return arrays


# ----------------------------------------------------------------------------------------------
# closure and encode
# ----------------------------------------------------------------------------------------------
def closure(cfg: RunConfig, system: Any, p: int, up_dir: Path, folder: Path, progress: bool) -> None:
    """Train the patch-additive closure on (a subset of) the upsampled snapshots only."""
    from matscale.closure import system_site_values, train_closure

    cl = cfg.closure
    configs = load_configs(up_dir)
    if cl.max_train and len(configs) > cl.max_train:
        pick = np.sort(np.random.default_rng([cl.seed, p, 2]).choice(len(configs), cl.max_train, replace=False))
        configs = configs[pick]
    model = train_closure(configs, system.observables(configs), p, grid_dim=system.grid_dim,
                          site_values=system_site_values(system), d_closure=cl.dim,
                          epochs=cl.epochs, batch_size=cl.batch_size, lr=cl.lr,
                          normalization=cl.normalization, seed=cl.seed, progress=progress)
    model.save(folder)


def _encode_draws(model: Any, patches: np.ndarray) -> np.ndarray:
    """Closure codes of patches [N, p, ..., p, *cell], or the mean over draws of patches
    [N, R, p, ..., p, *cell]."""
    patch_shape = model.arch.patch_shape
    if patches.shape[1:] == patch_shape:
        return model.encode_patches(patches)
    if patches.ndim != 2 + len(patch_shape) or patches.shape[2:] != patch_shape:
        raise ValueError(f"patches must have shape [N, {', '.join(map(str, patch_shape))}] or "
                         f"[N, R, {', '.join(map(str, patch_shape))}], got {patches.shape}")
    n, R = patches.shape[:2]
    return model.encode_patches(patches.reshape(n * R, *patch_shape)).reshape(n, R, -1).mean(axis=1)


def observable_names(system: Any, d_closure: int) -> tuple[str, ...]:
    """Names of all macro-state components: the system's observables, then closure_1 .. d."""
    return tuple(system.observable_names) + tuple(f"closure_{i + 1}" for i in range(d_closure))


def encode(cfg: RunConfig, system: Any, p: int, up_dir: Path, partial_dir: Path,
           closure_dir: Path | None, folder: Path) -> None:
    """Macro-state training pairs z = (physical, closure): z0, delta (= K x global increment),
    z1_naive (patch observables after evolution, the paper's naive next state), dt, params."""
    pairs = read_h5(partial_dir / "pairs.h5")
    z0, delta, z1_naive = pairs["z0"], pairs["delta"], pairs["z1_naive"]
    dt_naive = pairs.get("dt_naive", pairs["dt"])
    d_closure = 0
    if closure_dir is not None:
        from matscale.closure import ClosureModel

        model = ClosureModel.load(closure_dir)
        d_closure = model.arch.d_closure
        before = _encode_draws(model, pairs["patch_before"])
        after = _encode_draws(model, pairs["patch_after"])
        # (without naive pairs of their own z1_naive is never fitted; reuse the codes)
        after_naive = (_encode_draws(model, pairs["patch_after_naive"])
                       if "patch_after_naive" in pairs else after)
        z0_closure = np.repeat(model.encode(load_configs(up_dir)), cfg.partial.pairs_per_config, axis=0)
        z0 = np.concatenate([z0, z0_closure], axis=1)
        delta = np.concatenate([delta, after - before], axis=1)
        z1_naive = np.concatenate([z1_naive, after_naive], axis=1)
    arrays = {"z0": z0, "delta": delta, "z1_naive": z1_naive, "dt": pairs["dt"], "dt_naive": dt_naive}
    if "params" in pairs:
        arrays["params"] = pairs["params"]
    write_h5(folder / "pairs.h5", arrays,
             {"observables": list(observable_names(system, d_closure)), "K": cfg.n_patches(p), "p": p,
              "parameter": system.parameter_name},
             {"dt": system.time_unit})


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
def fit(cfg: RunConfig, system: Any, p: int, encode_dir: Path, folder: Path, progress: bool) -> None:
    """Fit one SDE per method: "ours" = L_p with lam = K on (z0, z0 + delta); "naive" = lam = 1
    on (z0, z1_naive). An interrupted fit resumes from its checkpoints; finished methods are kept."""
    from matscale.sde import fit_sde

    tr = cfg.train
    data = read_h5(encode_dir / "pairs.h5")
    meta = h5_meta(encode_dir / "pairs.h5")
    K = cfg.n_patches(p)
    params = data["params"][:, None] if "params" in data else None
    odd = odd_components(tr.symmetrize, meta["observables"])
    for method in methods(cfg):
        target = folder / method
        if (target / "model.json").is_file():  # finished before an interruption: keep it
            continue
        if method == "ours":
            lam = tr.lam or float(K) / cfg.partial.n_draws  # delta is a mean of n_draws draws
            z1, dt = data["z0"] + data["delta"], data["dt"]
        else:
            z1, lam, dt = data["z1_naive"], 1.0, data.get("dt_naive", data["dt"])
        z0, z1, dt, params_m = mirrored_pairs(data["z0"], z1, dt, params, odd)
        sde = fit_sde(z0, z1, dt, params=params_m, loss="partial", lam=lam,
                      diffusion=tr.diffusion, hidden=tuple(tr.hidden), epochs=tr.epochs,
                      batch_size=tr.batch_size, lr=tr.lr, seed=tr.seed, device=tr.device or None,
                      validation_fraction=tr.validation_fraction, progress=progress,
                      num_threads=FIT_THREADS, checkpoint_dir=target / "checkpoints",
                      drift_scheme=tr.drift_scheme if method == "ours" else "euler")
        sde.save(target / "sde")
        json_dump({"method": method, "lam": lam, "K": K, "p": p, "observables": meta["observables"],
                   **({"symmetrized": [meta["observables"][i] for i in odd]} if odd else {}),
                   "parameter": system.parameter_name, "median_dt": float(np.median(dt)),
                   "min_dt": float(np.min(dt)),
                   "history": getattr(sde, "history", None)}, target / "model.json")


def odd_components(symmetrize: str, observables: Any) -> list[int]:
    """Indices in ``observables`` of the comma-separated names in ``symmetrize`` ("" -> [])."""
    names = [str(o) for o in observables]
    wanted = [w.strip() for w in symmetrize.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ValueError(f"train.symmetrize names {', '.join(unknown)}, not an observable "
                         f"(allowed: comma-separated names from {', '.join(names)})")
    return sorted({names.index(w) for w in wanted})


def mirrored_pairs(z0: np.ndarray, z1: np.ndarray, dt: np.ndarray, params: np.ndarray | None,
                   odd: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Pairs z0 -> z1 [N, d] followed by their mirror images (components ``odd`` negated in both,
    so the increment is negated there too); dt [N] and params [N, q] repeated. ``odd`` = []:
    the pairs unchanged. For dynamics invariant under the mirror (the spin flip of an Ising
    model at h = 0) the mirrored pair is an equally likely draw of the same transition law."""
    if not odd:
        return z0, z1, dt, params
    sign = np.ones(z0.shape[1])
    sign[odd] = -1.0
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), (len(z0),))
    return (np.concatenate([z0, z0 * sign]), np.concatenate([z1, z1 * sign]), np.concatenate([dt, dt]),
            None if params is None else np.concatenate([params, params]))


# ----------------------------------------------------------------------------------------------
# reference
# ----------------------------------------------------------------------------------------------
def reference(cfg: RunConfig, system: Any, folder: Path, progress: bool, executor: Any = None) -> None:
    """Direct large-system runs per reference condition, recorded on a common time grid (tasks
    of runs go to ``executor``; identical results for any)."""
    ref = cfg.reference
    n_t = int(round(ref.duration / ref.grid_dt))
    rng = np.random.default_rng([ref.seed, 3])
    conditions = ref.conditions
    C, R = len(conditions), ref.n_runs
    systems = [system if param is None else system.at(param) for param, _ in conditions]
    states = [sys_c.random_states(R, rng, condition=init)
              for sys_c, (_, init) in zip(systems, conditions)]
    initial = np.stack(states).copy()
    d = len(system.observable_names)
    obs = np.empty((C, R, n_t + 1, d))
    for c in range(C):
        replicas = np.arange(c * R, (c + 1) * R)
        done = _map_runs(systems[c], states[c], replicas, ref.seed, (("reference",), ()), n_t,
                         ref.grid_dt, "observables", executor, f"reference {c + 1}/{C}", progress)
        obs[c] = np.concatenate([o for o, _ in done])
        states[c] = np.concatenate([f for _, f in done])
    params = [np.nan if param is None else param for param, _ in conditions]
    write_h5(folder / "reference.h5",
             {"observables": obs, "times": ref.grid_dt * np.arange(n_t + 1),
              "initial_configs": initial, "final_configs": np.stack(states),
              "conditions": np.asarray(ref.condition_values, dtype=np.float64),
              "params": np.asarray(params, dtype=np.float64)},
             {"observables_names": list(system.observable_names), "system": system.metadata(),
              "condition_label": ref.condition_label},
             {"times": system.time_unit, "initial_configs": system.site_unit,
              "final_configs": system.site_unit})


# ----------------------------------------------------------------------------------------------
# evaluate and plots
# ----------------------------------------------------------------------------------------------
def _auto_substeps(model_json: Path, grid_dt: float) -> int:
    """Rollout substeps per grid interval: the integration step is at most twice the shortest
    training δt of the model (the SDE is identified on that time scale; with a δt per parameter
    value the shortest one belongs to the fastest dynamics)."""
    record = read_json(model_json)
    train_dt = record.get("min_dt") or record.get("median_dt") or grid_dt
    return max(1, math.ceil(grid_dt / (2.0 * train_dt) - 1e-9))


def evaluate(cfg: RunConfig, system: Any, p: int, p_dir: Path, ref_dir: Path, folder: Path,
             progress: bool = False) -> None:
    """Roll every trained SDE out from the encoded initial states of the reference runs and
    compare the paths with the direct ones (metrics.json, curves.npz)."""
    from matscale.evaluate import compare_paths
    from matscale.pipeline.model import load, predict_paths

    ev, ref = cfg.evaluate, cfg.reference
    data = read_h5(ref_dir / "reference.h5")
    names = tuple(system.observable_names)
    d_phys = len(names)
    true = data["observables"][..., :d_phys]  # [C, R, n_t, d_phys]
    n_steps = true.shape[2] - 1
    params = data["params"] if system.parameter_name is not None else None
    metrics: dict[str, Any] = {"p": p, "n_s": int(p ** system.grid_dim * max(1, math.prod(system.cell_shape))),
                               "K": cfg.n_patches(p), "condition_label": ref.condition_label,
                               "conditions": list(ref.condition_values)}
    curves: dict[str, np.ndarray] = {"times": data["times"],
                                     "true_mean": true.mean(1), "true_std": true.std(1, ddof=1)}
    for method in methods(cfg):
        model = load(p_dir, method=method)
        substeps = ev.substeps or _auto_substeps(p_dir / "fit" / method / "model.json", ref.grid_dt)
        pred = predict_paths(model, data["initial_configs"], n_steps, ref.grid_dt, ev.n_paths,
                             substeps=substeps, seed=ev.seed, params=params,
                             progress=f"evaluate: {method} rollout" if progress else None)[..., :d_phys]
        finite = np.all(np.isfinite(pred), axis=(0, 2, 3))
        n_bad = int((~finite).sum())
        if finite.sum() < 2:
            raise FloatingPointError(f"method '{method}': fewer than 2 finite predicted paths")
        pred = pred[:, finite]
        result = compare_paths(pred, true, names, paper_paths=ev.paper_paths or min(20, ref.n_runs),
                               mmd_bootstrap=ev.mmd_bootstrap,
                               rng=np.random.default_rng([ev.seed, 4]),
                               conditions=ref.condition_values,
                               # predicted path j starts from direct run j mod R: one resampling unit
                               pred_sources=np.flatnonzero(finite) % ref.n_runs)
        result["n_paths_diverged"] = n_bad
        metrics[method] = result
        curves[f"{method}_mean"] = pred.mean(1)
        curves[f"{method}_std"] = pred.std(1, ddof=1)
        if method == "ours" and ev.sizes:
            metrics["size_scaling"] = size_scaling(model, data, params, cfg, system, substeps)
        if method == "ours" and system.parameter_name is not None:
            metrics["equilibrium"] = equilibrium_scan(model, data, cfg, system, p, p_dir, substeps)
    json_dump(metrics, folder / "metrics.json")
    np.savez(folder / "curves.npz", **curves, names=np.array(names))


def _late_std(paths: np.ndarray) -> np.ndarray:
    """Std over paths, averaged over the second half of the time grid: [C, n, n_t, d] -> [C, d]."""
    n_t = paths.shape[2]
    return paths[:, :, n_t // 2:].std(axis=1, ddof=1).mean(axis=1)


def _condition_z0(model: Any, initial_states: np.ndarray) -> np.ndarray:
    """Mean encoded initial state per condition: [C, R, *state] -> [C, d]."""
    C, R = initial_states.shape[:2]
    return model.encode(initial_states.reshape(C * R, *initial_states.shape[2:])).reshape(C, R, -1).mean(1)


def size_scaling(model: Any, data: dict[str, np.ndarray], params: np.ndarray | None, cfg: RunConfig,
                 system: Any, substeps: int) -> dict[str, Any]:
    """Late-time std of the predicted observables at the trained size and at ``evaluate.sizes``
    (the SDE's noise scaled to each size), from the mean initial state of every condition, with
    the fitted exponent of std ∝ n^slope and the direct std at the trained size."""
    ev, ref = cfg.evaluate, cfg.reference
    n_steps = len(data["times"]) - 1
    z0 = _condition_z0(model, data["initial_configs"])
    cell = math.prod(system.cell_shape)
    sides = (system.size,) + tuple(side for side in ev.sizes if side != system.size)
    n_sites = [side ** system.grid_dim * cell for side in sides]
    stds = []
    for n in n_sites:
        paths = model.sample(z0, n_steps * substeps, ref.grid_dt / substeps, n_paths=ev.n_paths,
                             seed=ev.seed + 17, parameter=params, n_sites=n)[:, :, ::substeps]
        stds.append(_late_std(paths))
    stds = np.stack(stds, axis=1)                                       # [C, n_sizes, d]
    logn = np.log(np.asarray(n_sites, dtype=np.float64))
    slopes = np.array([[np.polyfit(logn, np.log(stds[c, :, k]), 1)[0] if len(n_sites) > 1 else np.nan
                        for k in range(stds.shape[2])] for c in range(stds.shape[0])])
    true = data["observables"][..., :len(system.observable_names)]
    return {"n_sites": n_sites, "predicted_std": stds, "slope": slopes,
            "direct_std": _late_std(true), "direct_n_sites": n_sites[0]}


def equilibrium_scan(model: Any, data: dict[str, np.ndarray], cfg: RunConfig, system: Any, p: int,
                     p_dir: Path, substeps: int) -> dict[str, Any]:
    """Late-time mean of the observables vs the conditioning parameter: the SDE rolled out at every
    training value from the mean reference initial state, against the small-box direct runs
    (mean over runs of their second half, with its standard error) at the same values."""
    ev, ref = cfg.evaluate, cfg.reference
    small = read_h5(p_dir / "small_sim" / "snapshots.h5")
    small_system = system.resized(p)
    values = np.asarray(small["params"], dtype=np.float64)
    S = small["snapshots"].shape[2]
    late = small["snapshots"][:, :, S // 2:]                            # [G, R, n_late, *state]
    G, R, n_late = late.shape[:3]
    obs = small_system.observables(late.reshape(G * R * n_late, *late.shape[3:]))
    per_run = obs.reshape(G, R, n_late, -1).mean(axis=2)                # [G, R, d]
    z0 = _condition_z0(model, data["initial_configs"]).mean(axis=0)     # [d]
    n_steps = len(data["times"]) - 1
    paths = model.sample(np.repeat(z0[None], G, axis=0), n_steps * substeps, ref.grid_dt / substeps,
                         n_paths=min(ev.n_paths, 64), seed=ev.seed + 29, parameter=values)
    predicted = paths[:, :, (n_steps * substeps) // 2:].mean(axis=(1, 2))   # [G, d]
    true = data["observables"][..., :len(system.observable_names)]
    return {"parameter": system.parameter_name, "values": values, "predicted": predicted,
            "small_direct": per_run.mean(axis=1),
            "small_direct_sem": per_run.std(axis=1, ddof=1) / np.sqrt(R) if R > 1 else np.full_like(per_run[:, 0], np.nan),
            "small_n_sites": int(p ** system.grid_dim * math.prod(system.cell_shape)),
            "reference_values": [float(v) for v in ref.condition_values],
            "reference_direct": true[:, :, true.shape[2] // 2:].mean(axis=(1, 2))}


def plots(cfg: RunConfig, system: Any, p: int, p_dir: Path, ref_dir: Path, folder: Path) -> None:
    """Mean ± std of the observables vs time (predicted and direct), MMD²(t) between them with its
    CI band, and upsampling diagnostics."""
    from matscale.plots import plot_mean_std_curves

    with reading(p_dir / "evaluate" / "curves.npz"):
        curves = dict(np.load(p_dir / "evaluate" / "curves.npz"))
    ref = cfg.reference
    plot_mean_std_curves(curves, ref.condition_values, folder / "mean_std_vs_time.png",
                         title=f"{cfg.system.describe()}; small side {p}",
                         condition_label=ref.condition_label, time_unit=system.time_unit)
    metrics = read_json(p_dir / "evaluate" / "metrics.json")
    names = tuple(system.observable_names)
    mmd = {m: metrics[m]["mmd_over_time"] for m in methods(cfg) if "mmd_over_time" in metrics.get(m, {})}
    if mmd:
        from matscale.plots import plot_mmd_over_time

        plot_mmd_over_time(mmd, curves["times"], ref.condition_values, folder / "mmd_vs_time.png",
                           title=f"{cfg.system.describe()}; small side {p}",
                           condition_label=ref.condition_label, time_unit=system.time_unit)
    if "equilibrium" in metrics:
        from matscale.plots import plot_equilibrium_vs_parameter

        plot_equilibrium_vs_parameter(metrics["equilibrium"], names, folder / "equilibrium_vs_parameter.png",
                                      parameter_label=str(system.parameter_name))
    if "size_scaling" in metrics:
        from matscale.plots import plot_std_vs_size

        plot_std_vs_size(metrics["size_scaling"], names, ref.condition_values, folder / "std_vs_size.png",
                         condition_label=ref.condition_label)
    if p < system.size:
        upsampling_diagnostics(cfg, system, p_dir, ref_dir, folder)


def upsampling_diagnostics(cfg: RunConfig, system: Any, p_dir: Path, ref_dir: Path, folder: Path) -> None:
    """Late upsampled states against the direct large-system states at the reference's final
    time, per parameter value: states whose anchor small snapshot was recorded at or after 80 %
    of the reference duration (the direct runs' last grid time), so both sides describe the same
    stage of the dynamics. One figure per compared parameter value (one in all without a
    parameter); metrics in ``upsampling_diagnostics.json``."""
    from matscale.upsampling import compare_snapshots, plot_upsampling_diagnostics

    up = read_h5(p_dir / "upsample" / "configs.h5")
    ref = read_h5(ref_dir / "reference.h5", ["final_configs", "params"])
    late = up["anchor_time"] >= 0.8 * cfg.reference.duration
    values = np.unique(ref["params"]) if "params" in up else np.array([np.nan])
    summary = {}
    for value in values:
        if np.isnan(value):
            mine, final = late, ref["final_configs"]
            tag = ""
        else:
            mine = late & (up["params"] == value)
            final = ref["final_configs"][ref["params"] == value]
            tag = f"_{value:g}"
        if mine.sum() < 2:
            continue
        states = up["configs"][np.flatnonzero(mine)[:2000]]
        diag = compare_snapshots(states, final.reshape(-1, *final.shape[2:]),
                                 observables=system.observables, names=tuple(system.observable_names),
                                 structure_factor=getattr(system, "structure_factor", None))
        where = "" if np.isnan(value) else f" at {system.parameter_name} = {value:g}"
        caption = (f"Like with like{where}: upsampled large states tiled from small snapshots "
                   f"recorded at or after 80 % of the reference duration, against the direct "
                   f"large-system states at the reference's final time. Good: the histograms "
                   f"overlap (KS statistic near 0; |z| = |Δmean| / its standard error below ~3) "
                   f"and the S(k) curves coincide. Upsampled states from small runs that have not "
                   f"fully relaxed give a wider histogram; a shift in the mean (large |z|) means "
                   f"the small box's stationary state differs from the large box's.")
        plot_upsampling_diagnostics(diag, folder / f"upsampling_diagnostics{tag}.png", caption=caption,
                                    units=getattr(system, "observable_units", None))
        summary[tag.lstrip("_") or "all"] = {
            name: {k: d[k] for k in ("mean_upsampled", "mean_direct", "sem_upsampled", "sem_direct",
                                     "std_upsampled", "std_direct", "z_mean", "ks_statistic")}
            for name, d in diag["observables"].items()}
    json_dump(summary, folder / "upsampling_diagnostics.json")


# ----------------------------------------------------------------------------------------------
# One patch side through all stages
# ----------------------------------------------------------------------------------------------
def run_patch_side(cfg: RunConfig, system: Any, p: int, runner: StageRunner, ref_id: str | None) -> str:
    """Run (or resume) every stage of patch side ``p``; returns the reference's run id."""
    from matscale.config import write_config

    out = runner.out
    pdir = out / f"p{p}"
    pdir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, pdir)
    prog = runner.progress

    def stage(name: str, inputs: dict[str, str], compute: Callable[[Path], None]) -> str:
        return runner.run(name, pdir / name, stage_config(cfg, name, p), inputs, compute)

    ids: dict[str, str] = {}
    ids["small_sim"] = stage("small_sim", {}, lambda f: small_sim(cfg, system, p, f, prog, runner.executor))
    ids["upsample"] = stage("upsample", {"small_sim": ids["small_sim"]},
                            lambda f: upsample(cfg, system, p, pdir / "small_sim", f, prog, runner.executor))
    ids["partial"] = stage("partial", {"upsample": ids["upsample"]},
                           lambda f: partial(cfg, system, p, pdir / "upsample", f, prog, runner.executor))
    closure_dir = None
    enc_inputs = {"partial": ids["partial"], "upsample": ids["upsample"]}
    if cfg.closure.dim > 0:
        ids["closure"] = stage("closure", {"upsample": ids["upsample"]},
                               lambda f: closure(cfg, system, p, pdir / "upsample", f, prog))
        closure_dir = pdir / "closure"
        enc_inputs["closure"] = ids["closure"]
    elif runner.stop_after == "closure":
        raise StopPipeline("closure")
    ids["encode"] = stage("encode", enc_inputs,
                          lambda f: encode(cfg, system, p, pdir / "upsample", pdir / "partial",
                                           closure_dir, f))
    ids["fit"] = stage("fit", {"encode": ids["encode"]},
                       lambda f: fit(cfg, system, p, pdir / "encode", f, prog))
    if ref_id is None:
        ref_id = runner.run("reference", out / "reference", stage_config(cfg, "reference", None), {},
                            lambda f: reference(cfg, system, f, prog, runner.executor))
    ids["evaluate"] = stage("evaluate", {"fit": ids["fit"], "reference": ref_id},
                            lambda f: evaluate(cfg, system, p, pdir, out / "reference", f, prog))
    stage("plots", {"evaluate": ids["evaluate"]},
          lambda f: plots(cfg, system, p, pdir, out / "reference", f))
    return ref_id
