"""The scalable spin workflow as resumable stages, and :func:`load` for a finished run folder.

Layout of a run folder ``OUT`` (one sub-pipeline per patch side p, sharing the reference)::

    OUT/config.toml, config.json     the validated configuration
    OUT/stages.log                   one line per stage: ran / skipped, with seconds
    OUT/p{p}/small_sim/              small-system (p x p) trajectories          [training data]
    OUT/p{p}/upsample/               upsampled L x L snapshots                  [training data]
    OUT/p{p}/partial/                partial-evolution pairs                     [training data]
    OUT/p{p}/closure/                patch-additive closure (Ising only)         [training data]
    OUT/p{p}/encode/                 macro-state pairs z0, delta, z1_naive, dt   [training data]
    OUT/p{p}/fit/{ours,naive}/       fitted SDEs (state_dict + JSON)
    OUT/reference/                   direct L x L runs — used ONLY by evaluate
    OUT/p{p}/evaluate/metrics.json   metrics per method; predicted mean/std curves
    OUT/p{p}/plots/                  mean ± std of m and rho_dw vs time, upsampling diagnostics
    OUT/metrics.json, OUT/plots/, OUT/report.md    summary over all p

Every stage writes into a hidden temporary folder and renames it into place when complete
(atomic), together with ``stage.json`` recording the configuration sections it depends on and
the run ids of its inputs. A rerun skips a stage whose record matches; a record made with a
different configuration is a one-line :class:`~matscale.config.ConfigError` unless the stage is
forced (``force_stages``), in which case it and every stage downstream of it are recomputed.
A stage interrupted mid-way resumes from its temporary folder (chunked HDF5 outputs of
upsampling and partial evolution resume chunk by chunk).

Units: reduced spin units (J = k_B = 1); all times, including SDE time steps, are Glauber time
(one attempted flip per spin per unit).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np

from matscale import __version__
from matscale.config import ConfigError, RunConfig, write_config

SPIN_STAGES = ("small_sim", "upsample", "partial", "closure", "encode", "fit", "reference",
               "evaluate", "plots")
_STAGE_RECORD = "stage.json"

# Configuration sections each stage depends on (transitively).
_STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "small_sim": ("system", "small"),
    "upsample": ("system", "small", "upsampling"),
    "partial": ("system", "small", "upsampling", "partial"),
    "closure": ("system", "small", "upsampling", "closure"),
    "encode": ("system", "small", "upsampling", "partial", "closure"),
    "fit": ("system", "small", "upsampling", "partial", "closure", "train"),
    "reference": ("system", "reference"),
    "evaluate": ("system", "small", "upsampling", "partial", "closure", "train", "reference",
                 "evaluate"),
    "plots": ("system", "small", "upsampling", "partial", "closure", "train", "reference",
              "evaluate"),
}


class StopPipeline(Exception):
    """Raised internally after the ``stop_after`` stage."""


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def make_system(cfg: RunConfig, L: int) -> Any:
    """The configured spin system with box side ``L``."""
    from matscale.systems import CurieWeiss, Ising2D

    cls = {"curie_weiss": CurieWeiss, "ising": Ising2D}[cfg.system.kind]
    return cls(L, cfg.system.T, h=cfg.system.h, J=cfg.system.J)


def physical_names(kind: str) -> tuple[str, ...]:
    """Physical observables of the macro state, in order: CW ("m",), Ising ("m", "rho_dw")."""
    return ("m",) if kind == "curie_weiss" else ("m", "rho_dw")


def observable_names(kind: str, d_closure: int) -> tuple[str, ...]:
    """Names of all macro-state components: physical first, then closure_1 .. closure_d."""
    return physical_names(kind) + tuple(f"closure_{i + 1}" for i in range(d_closure))


def physical_observables(configs: np.ndarray, kind: str) -> np.ndarray:
    """[N, L, L] spins -> [N, d_phys] physical observables (m[, rho_dw]), float64."""
    from matscale.observables import spin_observables

    phi = np.asarray(spin_observables(configs), dtype=np.float64)
    return phi[..., : len(physical_names(kind))]


def _write_h5(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
              units: dict[str, str] | None = None) -> None:
    """Write arrays (chunked, lzf-compressed when large) plus a JSON ``meta`` attribute."""
    with h5py.File(path, "w") as f:
        f.attrs["meta"] = json.dumps({"matscale_version": __version__, **meta})
        for name, value in arrays.items():
            value = np.asarray(value)
            big = value.ndim >= 1 and value.nbytes > (1 << 20)
            ds = f.create_dataset(name, data=value, compression="lzf" if big else None,
                                  chunks=True if big else None)
            ds.attrs["units"] = (units or {}).get(name, "")


def _read_h5(path: Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        keys = list(f.keys()) if names is None else list(names)
        return {k: f[k][()] for k in keys}


def _h5_meta(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["meta"])


def _json_dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """Dotted path of the first differing key between two JSON-like records."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return prefix or "(record)"


def _field(result: Any, name: str) -> np.ndarray:
    """Read field ``name`` from a dict-like or attribute-style result object."""
    if isinstance(result, dict):
        return np.asarray(result[name])
    if hasattr(result, name):
        return np.asarray(getattr(result, name))
    return np.asarray(result[name])


# ----------------------------------------------------------------------------------------------
# Stage runner: atomic outputs, resume, config checks, stage log
# ----------------------------------------------------------------------------------------------
@dataclass
class StageRunner:
    """Runs stages into ``out`` with atomic renames; see the module docstring for the rules."""

    out: Path
    force: frozenset[str] = frozenset()
    stop_after: str | None = None
    progress: bool = False
    cfg: RunConfig | None = None  # written into every stage folder when given
    executed: list[str] = field(default_factory=list)

    def log(self, label: str, action: str, seconds: float = 0.0) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {label} {action} {seconds:.2f}s\n"
        with open(self.out / "stages.log", "a", encoding="utf-8") as fh:
            fh.write(line)
        if self.progress:
            print(f"[matscale] {label}: {action} ({seconds:.1f} s)", flush=True)

    def run(self, stage: str, folder: Path, config: dict[str, Any], inputs: dict[str, str],
            compute: Callable[[Path], None]) -> str:
        """Run (or skip) one stage; returns its run id."""
        label = str(folder.relative_to(self.out))
        record = {"stage": stage, "config": config, "inputs": inputs}
        done = folder / _STAGE_RECORD
        if done.is_file():
            old = json.loads(done.read_text(encoding="utf-8"))
            same_config = old.get("config") == config
            if same_config and old.get("inputs") == inputs and stage not in self.force:
                self.log(label, "skipped")
                self._maybe_stop(stage)
                return old["run_id"]
            if not same_config and stage not in self.force:
                key = _first_difference(old.get("config"), config)
                raise ConfigError(
                    f"stage '{stage}' in {folder} was made with a different configuration "
                    f"(first difference: {key}); use --force-stage {stage} or another --out"
                )
        tmp = folder.parent / f".{folder.name}.partial"
        pending = tmp / "stage.pending.json"
        if tmp.exists():
            same = pending.is_file() and json.loads(pending.read_text(encoding="utf-8")) == record
            if not same:
                shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        _json_dump(record, pending)
        start = time.perf_counter()
        compute(tmp)
        seconds = time.perf_counter() - start
        run_id = uuid.uuid4().hex
        pending.unlink()
        if self.cfg is not None:
            write_config(self.cfg, tmp)
        _json_dump({**record, "run_id": run_id, "seconds": seconds, "matscale_version": __version__,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, tmp / _STAGE_RECORD)
        self._swap_into_place(tmp, folder)
        self.executed.append(label)
        self.log(label, "ran", seconds)
        # A recomputed stage invalidates its dependents through their recorded input run ids.
        self._maybe_stop(stage)
        return run_id

    @staticmethod
    def _swap_into_place(tmp: Path, folder: Path) -> None:
        if folder.exists():
            old = folder.parent / f".{folder.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)

    def _maybe_stop(self, stage: str) -> None:
        if self.stop_after == stage:
            raise StopPipeline(stage)


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------
def _stage_config(cfg: RunConfig, stage: str, p: int | None) -> dict[str, Any]:
    d = cfg.to_dict()
    record = {name: d[name] for name in _STAGE_SECTIONS[stage]}
    if "small" in record:
        record["small"] = {**record["small"], "p": p}
    return record


def _small_sim(cfg: RunConfig, p: int, folder: Path, progress: bool) -> None:
    """n_runs independent p x p runs from m0 ~ U(-1, 1); snapshots every sweep_time."""
    from matscale.io import progress as bar
    from matscale.io import sample_keys

    sm = cfg.small
    system = make_system(cfg, p)
    runs = np.arange(sm.n_runs)
    rng = np.random.default_rng([sm.seed, p, 0])
    states = np.stack([system.random_state(rng) for _ in runs]).astype(np.int8)
    snaps = np.empty((sm.n_runs, sm.n_sweeps + 1, p, p), dtype=np.int8)
    snaps[:, 0] = states
    for k in bar(range(sm.n_sweeps), total=sm.n_sweeps, desc=f"small p={p}", enabled=progress):
        system.evolve_batch(states, duration=sm.sweep_time, seeds=sample_keys(sm.seed, runs, "small", p, k))
        snaps[:, k + 1] = states
    times = sm.sweep_time * np.arange(sm.n_sweeps + 1, dtype=np.float64)
    _write_h5(folder / "snapshots.h5", {"snapshots": snaps, "times": times},
              {"L": p, "kind": cfg.system.kind, "T": cfg.system.T, "h": cfg.system.h},
              {"snapshots": "spin (+1/-1)", "times": "Glauber time"})


def _load_small(folder: Path) -> np.ndarray:
    snaps = _read_h5(folder / "snapshots.h5", ["snapshots"])["snapshots"]
    return snaps.reshape(-1, snaps.shape[-2], snaps.shape[-1])


def _upsample(cfg: RunConfig, p: int, small_dir: Path, folder: Path, progress: bool) -> None:
    """Hierarchical upsampling p -> L (K = 1: draw from the pool), plus random augmentation."""
    up, L = cfg.upsampling, cfg.system.L
    pool = _load_small(small_dir)
    rng = np.random.default_rng([up.seed, p, 1])
    if p == L:
        configs = pool[rng.integers(0, len(pool), size=up.n_configs)]
    else:
        from matscale.upsampling import hierarchical_upsample

        configs = hierarchical_upsample(
            make_system(cfg, L), pool, L, up.n_configs, factor=up.factor, mode=up.mode,
            window=up.window or None, stride=up.stride or None, n_events=up.n_events or None,
            duration=None if up.n_events else up.duration,
            seed=up.seed, progress=progress, out=str(folder / "levels.h5"))
    if up.n_random:
        system = make_system(cfg, L)
        extra = np.stack([system.random_state(rng) for _ in range(up.n_random)]).astype(np.int8)
        if up.random_relax > 0:
            _quench(system, extra, up, p)
        configs = np.concatenate([configs, extra])
    is_random = np.zeros(len(configs), dtype=bool)
    is_random[len(configs) - up.n_random:] = up.n_random > 0
    _write_h5(folder / "configs.h5", {"configs": configs, "is_random": is_random},
              {"L": L, "p": p, "n_upsampled": up.n_configs, "n_random": up.n_random},
              {"configs": "spin (+1/-1)"})
    (folder / "levels.h5").unlink(missing_ok=True)  # intermediate levels only serve the resume


_QUENCH_GROUPS = 8


def _quench(system: Any, configs: np.ndarray, up: Any, p: int) -> None:
    """LocalRelax random configurations in place, group g of ``_QUENCH_GROUPS`` (round robin) for
    window duration ``up.random_relax * g / (groups - 1)``: states along the initial decay."""
    from matscale.io import sample_keys
    from matscale.upsampling import local_relax

    for g in range(1, _QUENCH_GROUPS):
        members = np.arange(g, len(configs), _QUENCH_GROUPS)
        if len(members) == 0:  # fewer random configurations than groups
            continue
        block = configs[members]  # a C-contiguous copy
        local_relax(system, block, window=up.window or p, stride=up.stride or None,
                    duration=up.random_relax * g / (_QUENCH_GROUPS - 1),
                    seeds=sample_keys(up.seed, members, "quench", p, 3))
        configs[members] = block


def _load_configs(folder: Path) -> np.ndarray:
    return _read_h5(folder / "configs.h5", ["configs"])["configs"]


_PAIR_FIELDS = ("z0", "delta", "dt", "patch_index", "patch_before", "patch_after", "z1_naive")


def _partial(cfg: RunConfig, p: int, up_dir: Path, folder: Path, progress: bool) -> None:
    """One partial-evolution pair per large configuration (exterior frozen by default)."""
    from matscale.partial import partial_evolution

    pa = cfg.partial
    configs = np.repeat(_load_configs(up_dir), pa.pairs_per_config, axis=0)  # pair i <- config i // R
    keep_patches = cfg.closure.dim > 0  # the closure encodes its own increments from the patches
    result = partial_evolution(
        make_system(cfg, cfg.system.L), configs, p, n_events=pa.n_events or None,
        duration=None if pa.n_events else pa.duration,
        boundary=pa.boundary, seed=pa.seed, chunk_size=pa.chunk_size, n_draws=pa.n_draws,
        store_patches=keep_patches, out=str(folder / "partial_work.h5"), progress=progress)
    arrays = {name: _field(result, name) for name in _PAIR_FIELDS
              if keep_patches or not name.startswith("patch_")}
    if "naive" in _methods(cfg):
        # The paper's baseline, with the paper's budget: one patch sweep of events on the same
        # snapshots (an independent stream), next state = the patch observable afterwards.
        naive = partial_evolution(
            make_system(cfg, cfg.system.L), configs, p, n_events=pa.naive_n_events or p * p,
            boundary=pa.boundary, seed=pa.seed + 7919, chunk_size=pa.chunk_size,
            store_patches=keep_patches, out=str(folder / "partial_work_naive.h5"),
            progress=progress)
        arrays["z1_naive"] = _field(naive, "z1_naive")
        arrays["dt_naive"] = np.asarray(_field(naive, "dt"), dtype=np.float64)
        if keep_patches:
            arrays["patch_after_naive"] = _field(naive, "patch_after")
    d_phys = len(physical_names(cfg.system.kind))
    for name in ("z0", "delta", "z1_naive"):
        arrays[name] = np.asarray(arrays[name], dtype=np.float64).reshape(len(configs), -1)[:, :d_phys]
    _write_h5(folder / "pairs.h5", arrays,
              {"p": p, "K": cfg.n_patches(p), "n_draws": pa.n_draws,
               "observables": list(physical_names(cfg.system.kind)),
               "note": "delta = K x global increment (patch-share increment), mean of n_draws"},
              {"dt": "Glauber time", "patch_before": "spin (+1/-1)", "patch_after": "spin (+1/-1)"})
    (folder / "partial_work.h5").unlink(missing_ok=True)
    (folder / "partial_work_naive.h5").unlink(missing_ok=True)


def _closure(cfg: RunConfig, p: int, up_dir: Path, folder: Path, progress: bool) -> None:
    """Train the patch-additive closure on (a subset of) the upsampled snapshots only."""
    from matscale.closure import train_closure

    cl = cfg.closure
    configs = _load_configs(up_dir)
    if cl.max_train and len(configs) > cl.max_train:
        pick = np.sort(np.random.default_rng([cl.seed, p, 2]).choice(len(configs), cl.max_train, replace=False))
        configs = configs[pick]
    model = train_closure(configs, physical_observables(configs, cfg.system.kind), p,
                          d_closure=cl.dim, epochs=cl.epochs, batch_size=cl.batch_size, lr=cl.lr,
                          normalization=cl.normalization, seed=cl.seed, progress=progress)
    model.save(folder)


def _encode_draws(model: Any, patches: np.ndarray) -> np.ndarray:
    """Closure codes of patches [N, p, p], or the mean over draws of patches [N, R, p, p]."""
    if patches.ndim == 3:
        return model.encode_patches(patches)
    n, R = patches.shape[:2]
    return model.encode_patches(patches.reshape(n * R, *patches.shape[2:])).reshape(n, R, -1).mean(axis=1)


def _encode(cfg: RunConfig, p: int, up_dir: Path, partial_dir: Path, closure_dir: Path | None,
            folder: Path) -> None:
    """Macro-state training pairs z = (physical, closure): z0, delta (= K x global increment),
    z1_naive (patch observables after evolution, the paper's naive next state), dt."""
    pairs = _read_h5(partial_dir / "pairs.h5")
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
        z0_closure = np.repeat(model.encode(_load_configs(up_dir)), cfg.partial.pairs_per_config, axis=0)
        z0 = np.concatenate([z0, z0_closure], axis=1)
        delta = np.concatenate([delta, after - before], axis=1)
        z1_naive = np.concatenate([z1_naive, after_naive], axis=1)
    names = observable_names(cfg.system.kind, d_closure)
    _write_h5(folder / "pairs.h5",
              {"z0": z0, "delta": delta, "z1_naive": z1_naive, "dt": pairs["dt"], "dt_naive": dt_naive},
              {"observables": list(names), "K": cfg.n_patches(p), "p": p},
              {"dt": "Glauber time"})


def _methods(cfg: RunConfig) -> tuple[str, ...]:
    return ("ours", "naive") if cfg.train.method == "both" else (cfg.train.method,)


# The SDE networks are small (d <= 6 inputs, 64-wide layers): one torch thread is as fast as two
# on a quiet machine and avoids a 10-20x slowdown from spinning OpenMP threads on a busy one.
_FIT_THREADS = 1


def _fit(cfg: RunConfig, p: int, encode_dir: Path, folder: Path, progress: bool) -> None:
    """Fit one SDE per method: "ours" = L_p with lam = K on (z0, z0 + delta); "naive" = lam = 1
    on (z0, z1_naive). An interrupted fit resumes from its checkpoints; finished methods are kept."""
    from matscale.sde import fit_sde

    tr = cfg.train
    data = _read_h5(encode_dir / "pairs.h5")
    meta = _h5_meta(encode_dir / "pairs.h5")
    K = cfg.n_patches(p)
    for method in _methods(cfg):
        target = folder / method
        if (target / "model.json").is_file():  # finished before an interruption: keep it
            continue
        if method == "ours":
            lam = tr.lam or float(K) / cfg.partial.n_draws  # delta is a mean of n_draws draws
            z1, dt = data["z0"] + data["delta"], data["dt"]
        else:
            z1, lam, dt = data["z1_naive"], 1.0, data.get("dt_naive", data["dt"])
        sde = fit_sde(data["z0"], z1, dt, loss="partial", lam=lam, diffusion=tr.diffusion,
                      hidden=tuple(tr.hidden), epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                      seed=tr.seed, device=tr.device or None,
                      validation_fraction=tr.validation_fraction, progress=progress,
                      num_threads=_FIT_THREADS, checkpoint_dir=target / "checkpoints",
                      drift_scheme=tr.drift_scheme if method == "ours" else "euler")
        sde.save(target / "sde")
        _json_dump({"method": method, "lam": lam, "K": K, "p": p, "observables": meta["observables"],
                    "median_dt": float(np.median(dt)),
                    "history": getattr(sde, "history", None)}, target / "model.json")


def _reference(cfg: RunConfig, folder: Path, progress: bool) -> None:
    """Direct L x L runs from each initial magnetization, recorded on a common time grid."""
    from matscale.io import progress as bar
    from matscale.io import sample_keys

    ref, L, kind = cfg.reference, cfg.system.L, cfg.system.kind
    system = make_system(cfg, L)
    n_t = int(round(ref.duration / ref.grid_dt))
    rng = np.random.default_rng([ref.seed, 3])
    C, R = len(ref.magnetizations), ref.n_runs
    states = np.stack([system.random_state(rng, magnetization=m0)
                       for m0 in ref.magnetizations for _ in range(R)]).astype(np.int8)
    initial = states.copy()
    d_obs = len(physical_names("ising"))
    obs = np.empty((C * R, n_t + 1, d_obs))
    obs[:, 0] = _spin_obs(states)
    replicas = np.arange(C * R)
    for k in bar(range(n_t), total=n_t, desc="reference", enabled=progress):
        system.evolve_batch(states, duration=ref.grid_dt, seeds=sample_keys(ref.seed, replicas, "reference", k))
        obs[:, k + 1] = _spin_obs(states)
    _write_h5(folder / "reference.h5",
              {"observables": obs.reshape(C, R, n_t + 1, d_obs),
               "times": ref.grid_dt * np.arange(n_t + 1),
               "initial_configs": initial.reshape(C, R, L, L),
               "final_configs": states.reshape(C, R, L, L),
               "magnetizations": np.asarray(ref.magnetizations)},
              {"observables_names": ["m", "rho_dw"], "kind": kind, "L": L},
              {"times": "Glauber time", "initial_configs": "spin (+1/-1)", "final_configs": "spin (+1/-1)"})


def _spin_obs(states: np.ndarray) -> np.ndarray:
    from matscale.observables import spin_observables

    return np.asarray(spin_observables(states), dtype=np.float64)[..., :2]


def predict_paths(model: "MacroModel", initial_configs: np.ndarray, n_steps: int, dt: float,
                  n_paths: int, *, substeps: int = 1, seed: int = 0) -> np.ndarray:
    """Predicted macro paths from encoded initial configurations.

    initial_configs [R, L, L] -> paths [n_paths, n_steps + 1, d] on the grid k * dt; path j starts
    from configuration j mod R (so the first R paths start from distinct direct runs). A leading
    condition axis, [C, R, L, L] -> [C, n_paths, n_steps + 1, d], rolls all conditions out in one
    batch. The SDE is integrated with step dt / substeps. Non-finite paths are kept (the caller
    filters them).
    """
    configs = np.asarray(initial_configs)
    batched = configs.ndim == 4
    if not batched:
        configs = configs[None]
    C, R = configs.shape[:2]
    z0 = model.encode(configs.reshape(C * R, *configs.shape[2:]))
    per_state = math.ceil(n_paths / R)
    raw = np.asarray(model.sample(z0, n_steps * substeps, dt / substeps, n_paths=per_state, seed=seed))
    raw = raw.reshape(C, R, per_state, n_steps * substeps + 1, -1)[:, :, :, ::substeps]
    paths = np.swapaxes(raw, 1, 2).reshape(C, per_state * R, n_steps + 1, -1)[:, :n_paths]
    return paths if batched else paths[0]


def _auto_substeps(model_json: Path, grid_dt: float) -> int:
    """Rollout substeps per grid interval: the integration step is at most twice the median
    training δt of the model (the SDE is only identified on that time scale)."""
    median_dt = json.loads(model_json.read_text()).get("median_dt") or grid_dt
    return max(1, math.ceil(grid_dt / (2.0 * median_dt) - 1e-9))


def _evaluate(cfg: RunConfig, p: int, p_dir: Path, ref_dir: Path, folder: Path) -> None:
    from matscale.evaluate import compare_paths

    ev, ref = cfg.evaluate, cfg.reference
    data = _read_h5(ref_dir / "reference.h5")
    names = physical_names(cfg.system.kind)
    d_phys = len(names)
    true = data["observables"][..., :d_phys]  # [C, R, n_t, d_phys]
    n_steps = true.shape[2] - 1
    metrics: dict[str, Any] = {"p": p, "n_s": p * p, "K": cfg.n_patches(p),
                               "magnetizations": list(ref.magnetizations)}
    curves: dict[str, np.ndarray] = {"times": data["times"],
                                     "true_mean": true.mean(1), "true_std": true.std(1, ddof=1)}
    for method in _methods(cfg):
        model = load(p_dir, method=method)
        substeps = ev.substeps or _auto_substeps(p_dir / "fit" / method / "model.json", ref.grid_dt)
        pred = predict_paths(model, data["initial_configs"], n_steps, ref.grid_dt, ev.n_paths,
                             substeps=substeps, seed=ev.seed)[..., :d_phys]
        finite = np.all(np.isfinite(pred), axis=(0, 2, 3))
        n_bad = int((~finite).sum())
        if finite.sum() < 2:
            raise FloatingPointError(f"method '{method}': fewer than 2 finite predicted paths")
        pred = pred[:, finite]
        result = compare_paths(pred, true, names, paper_paths=ev.paper_paths,
                               mmd_bootstrap=ev.mmd_bootstrap,
                               rng=np.random.default_rng([ev.seed, 4]),
                               conditions=ref.magnetizations)
        result["n_paths_diverged"] = n_bad
        metrics[method] = result
        curves[f"{method}_mean"] = pred.mean(1)
        curves[f"{method}_std"] = pred.std(1, ddof=1)
    _json_dump(metrics, folder / "metrics.json")
    np.savez(folder / "curves.npz", **curves, names=np.array(names))


def _plots(cfg: RunConfig, p: int, p_dir: Path, ref_dir: Path, folder: Path) -> None:
    from matscale.plots import plot_mean_std_curves

    curves = dict(np.load(p_dir / "evaluate" / "curves.npz"))
    plot_mean_std_curves(curves, cfg.reference.magnetizations, folder / "mean_std_vs_time.png",
                         title=f"{cfg.system.kind}, L={cfg.system.L}, n_s={p}x{p}")
    try:  # upsampling diagnostics against the reference snapshots (evaluation only)
        from matscale.upsampling import compare_snapshots, plot_upsampling_diagnostics

        if p < cfg.system.L:
            up = _load_configs(p_dir / "upsample")
            final = _read_h5(ref_dir / "reference.h5", ["final_configs"])["final_configs"]
            diag = compare_snapshots(up[: min(len(up), 2000)], final.reshape(-1, *final.shape[-2:]))
            plot_upsampling_diagnostics(diag, folder / "upsampling_diagnostics.png")
    except ImportError:  # pragma: no cover - optional diagnostics
        pass


# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------
def run_pipeline(cfg: RunConfig, out: str | Path, *, force_stages: Iterable[str] = (),
                 stop_after: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the whole workflow of ``cfg`` into ``out``; returns the summary metrics.

    ``force_stages``: stage names to recompute even when their outputs exist (their dependents
    are recomputed too). ``stop_after``: stop once that stage is done (for staged runs/tests).
    """
    out = Path(out)
    force = frozenset(force_stages)
    unknown = sorted(force - set(SPIN_STAGES) - {"fit_pairs"})
    if unknown:
        raise ConfigError(f"--force-stage {unknown[0]!r} is not a stage (allowed: {', '.join(SPIN_STAGES)})")
    if stop_after is not None and stop_after not in SPIN_STAGES:
        raise ConfigError(f"--stop-after {stop_after!r} is not a stage (allowed: {', '.join(SPIN_STAGES)})")
    force = _with_dependents(force)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(cfg, out, force)
    if cfg.workflow == "spin":
        _preflight(cfg, out, force)
    write_config(cfg, out)
    if cfg.workflow == "fit":
        return run_fit_workflow(cfg, out, force=force, progress=progress)
    runner = StageRunner(out, force, stop_after, progress, cfg)
    try:
        ref_id = None
        for p in cfg.patch_sides:
            ref_id = _run_one_p(cfg, p, runner, ref_id)
    except StopPipeline:
        return {}
    summary = write_summary(cfg, out)
    runner.log("summary", "ran")
    return summary


_DEPENDENTS: dict[str, tuple[str, ...]] = {
    "small_sim": ("upsample", "partial", "closure", "encode", "fit", "evaluate", "plots"),
    "upsample": ("partial", "closure", "encode", "fit", "evaluate", "plots"),
    "partial": ("encode", "fit", "evaluate", "plots"),
    "closure": ("encode", "fit", "evaluate", "plots"),
    "encode": ("fit", "evaluate", "plots"),
    "fit": ("evaluate", "plots"),
    "reference": ("evaluate", "plots"),
    "evaluate": ("plots",),
    "plots": (),
    "fit_pairs": (),
}


def _with_dependents(force: frozenset[str]) -> frozenset[str]:
    """A forced stage forces every stage that consumes its output."""
    return frozenset(force).union(*(_DEPENDENTS[s] for s in force))


def _preflight(cfg: RunConfig, out: Path, force: frozenset[str]) -> None:
    """Refuse, before anything is written, to mix a changed configuration into finished stages."""
    folders = [("reference", out / "reference", None)]
    folders += [(s, out / f"p{p}" / s, p) for p in cfg.patch_sides for s in SPIN_STAGES if s != "reference"]
    for stage, folder, p in folders:
        record = folder / _STAGE_RECORD
        if stage in force or not record.is_file():
            continue
        old = json.loads(record.read_text(encoding="utf-8")).get("config")
        new = _stage_config(cfg, stage, p)
        if old != new:
            raise ConfigError(
                f"stage '{stage}' in {folder} was made with a different configuration "
                f"(first difference: {_first_difference(old, new)}); use --force-stage {stage} "
                f"or another --out")


def _check_run_config(cfg: RunConfig, out: Path, force: frozenset[str]) -> None:
    """Refuse to mix workflows or system kinds in one folder (stage records check the rest)."""
    stored = out / "config.json"
    if stored.is_file() and not force:
        old = json.loads(stored.read_text(encoding="utf-8"))
        for key in ("workflow",):
            if old.get(key) != cfg.to_dict().get(key):
                raise ConfigError(f"{out} holds a run with {key}={old.get(key)!r}; use another --out")


def _run_one_p(cfg: RunConfig, p: int, runner: StageRunner, ref_id: str | None) -> str:
    out = runner.out
    pdir = out / f"p{p}"
    pdir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, pdir)
    prog = runner.progress

    def stage(name: str, inputs: dict[str, str], compute: Callable[[Path], None], folder: Path | None = None) -> str:
        return runner.run(name, folder or pdir / name, _stage_config(cfg, name, p), inputs, compute)

    ids: dict[str, str] = {}
    ids["small_sim"] = stage("small_sim", {}, lambda f: _small_sim(cfg, p, f, prog))
    ids["upsample"] = stage("upsample", {"small_sim": ids["small_sim"]},
                            lambda f: _upsample(cfg, p, pdir / "small_sim", f, prog))
    ids["partial"] = stage("partial", {"upsample": ids["upsample"]},
                           lambda f: _partial(cfg, p, pdir / "upsample", f, prog))
    closure_dir = None
    enc_inputs = {"partial": ids["partial"], "upsample": ids["upsample"]}
    if cfg.closure.dim > 0:
        ids["closure"] = stage("closure", {"upsample": ids["upsample"]},
                               lambda f: _closure(cfg, p, pdir / "upsample", f, prog))
        closure_dir = pdir / "closure"
        enc_inputs["closure"] = ids["closure"]
    elif runner.stop_after == "closure":
        raise StopPipeline("closure")
    ids["encode"] = stage("encode", enc_inputs,
                          lambda f: _encode(cfg, p, pdir / "upsample", pdir / "partial", closure_dir, f))
    ids["fit"] = stage("fit", {"encode": ids["encode"]},
                       lambda f: _fit(cfg, p, pdir / "encode", f, prog))
    if ref_id is None:
        ref_id = runner.run("reference", out / "reference", _stage_config(cfg, "reference", None), {},
                            lambda f: _reference(cfg, f, prog))
    ids["evaluate"] = stage("evaluate", {"fit": ids["fit"], "reference": ref_id},
                            lambda f: _evaluate(cfg, p, pdir, out / "reference", f))
    stage("plots", {"evaluate": ids["evaluate"]}, lambda f: _plots(cfg, p, pdir, out / "reference", f))
    return ref_id


def write_summary(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """OUT/metrics.json (all p and methods), the test-error-vs-n_s plot and OUT/report.md."""
    from matscale.plots import plot_test_error_vs_ns

    summary: dict[str, Any] = {"system": cfg.section("system"), "matscale_version": __version__,
                               "results": {}}
    for p in cfg.patch_sides:
        summary["results"][f"p{p}"] = json.loads((out / f"p{p}" / "evaluate" / "metrics.json").read_text())
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    if len(cfg.patch_sides) > 1:
        plot_test_error_vs_ns(summary["results"], _methods(cfg), plots_dir / "test_error_vs_ns.png")
    for p in cfg.patch_sides:
        src = out / f"p{p}" / "plots" / "mean_std_vs_time.png"
        if src.is_file():
            shutil.copyfile(src, plots_dir / f"mean_std_vs_time_p{p}.png")
    tmp = out / ".metrics.json.partial"
    _json_dump(summary, tmp)
    os.replace(tmp, out / "metrics.json")
    (out / "report.md").write_text(render_report(cfg, summary, out), encoding="utf-8")
    return summary


def render_report(cfg: RunConfig, summary: dict[str, Any], out: Path) -> str:
    """Markdown report: the metrics table per (p, method) and links to the plots."""
    names = physical_names(cfg.system.kind)
    s = cfg.system
    lines = [f"# matscale run: {cfg.name or s.kind}", "",
             f"System: {s.kind}, L = {s.L}, T = {s.T}, h = {s.h}, J = {s.J}. "
             f"Reference: {cfg.reference.n_runs} direct runs per m0 in {list(cfg.reference.magnetizations)}, "
             f"grid dt = {cfg.reference.grid_dt}, duration = {cfg.reference.duration} (Glauber time).", "",
             "Test error = the paper's metric (spec §3.6/§4.6) on the physical observables "
             f"({', '.join(names)}); rel. errors are L2 over the time grid and all m0.", ""]
    header = ["n_s", "K", "method", "test err (paper paths)", "test err (all paths)"]
    for n in names:
        header += [f"rel err mean {n}", f"rel err std {n}", f"stat. std {n} pred/direct"]
    header += ["MMD² stationary [95% CI]"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, res in summary["results"].items():
        for method in _methods(cfg):
            r = res[method]
            row = [f"{res['p']}²", str(res["K"]), method,
                   f"{r['test_error_paper']:.3g} ({r['test_error_paper_paths']})",
                   f"{r['test_error_all']:.3g} ({r['n_paths_pred']})"]
            for n in names:
                st = r["stationary"]
                row += [f"{r['moments'][n]['rel_mean_error']:.3g}", f"{r['moments'][n]['rel_std_error']:.3g}",
                        f"{st['predicted'][n]['std']:.3g} / {st['direct'][n]['std']:.3g}"]
            mm = r["mmd_stationary"]
            row.append(f"{mm['mmd2']:.2g} [{mm['ci_low']:.2g}, {mm['ci_high']:.2g}]")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Plots", ""]
    for png in sorted((out / "plots").glob("*.png")):
        lines.append(f"![{png.stem}](plots/{png.name})")
    lines += ["", "Full numbers: `metrics.json`; per-p stages under `p{p}/`; the configuration in `config.toml`.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The "fit" workflow (issue 2 item 4): fit one SDE to a pairs file
# ----------------------------------------------------------------------------------------------
def load_pairs(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``z0``, ``z1``, ``dt`` (and optional ``params``) from ``.npz`` or ``.h5``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fit.pairs: file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    else:
        with h5py.File(path, "r") as f:
            data = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    missing = [k for k in ("z0", "z1", "dt") if k not in data]
    if missing:
        raise ConfigError(f"fit.pairs: {path.name} lacks array '{missing[0]}' (needs z0, z1, dt[, params])")
    return {k: data[k] for k in ("z0", "z1", "dt", "params") if k in data}


def run_fit_workflow(cfg: RunConfig, out: Path, *, force: frozenset[str] = frozenset(),
                     progress: bool = False) -> dict[str, Any]:
    """Fit an SDE to ``fit.pairs`` and write it to ``OUT/fit_pairs/sde`` (resumable stage)."""
    f = cfg.fit
    pairs_path = (Path(cfg.source) / f.pairs) if not Path(f.pairs).is_absolute() else Path(f.pairs)
    data = load_pairs(pairs_path)
    from matscale.io import fingerprint

    record = {"fit": cfg.section("fit"),
              "pairs_fingerprint": {k: fingerprint(np.ascontiguousarray(v)) for k, v in data.items()}}
    summary: dict[str, Any] = {}

    def compute(folder: Path) -> None:
        from matscale.sde import fit_sde

        sde = fit_sde(data["z0"], data["z1"], data["dt"], params=data.get("params"), loss=f.loss,
                      lam=f.lam, diffusion=f.diffusion, hidden=tuple(f.hidden), epochs=f.epochs,
                      batch_size=f.batch_size, lr=f.lr, seed=f.seed, device=f.device or None,
                      validation_fraction=f.validation_fraction, progress=progress,
                      num_threads=_FIT_THREADS)
        sde.save(folder / "sde")
        _json_dump({"n_pairs": len(data["z0"]), "history": getattr(sde, "history", None)},
                   folder / "fit.json")

    runner = StageRunner(out, force, None, progress, cfg)
    runner.run("fit_pairs", out / "fit_pairs", record, {}, compute)
    summary = json.loads((out / "fit_pairs" / "fit.json").read_text(encoding="utf-8"))
    _json_dump({"workflow": "fit", "n_pairs": summary["n_pairs"], "model": "fit_pairs/sde"},
               out / "metrics.json")
    return summary


# ----------------------------------------------------------------------------------------------
# matscale.load
# ----------------------------------------------------------------------------------------------
class MacroModel:
    """A fitted macroscopic model of a run folder.

    ``encode(configs [N, L, L]) -> z [N, d]`` (physical observables first, then the normalised
    closure variables), ``sample(z0, n_steps, dt, n_paths=..., seed=...)`` (Glauber time units;
    see :meth:`matscale.sde.FittedSDE.sample` for shapes), ``observable_names``, ``sde``,
    ``config``, ``closure`` (None for Curie–Weiss), ``p``, ``method`` and ``folder`` (the
    ``p{p}`` run folder it was loaded from).
    """

    def __init__(self, sde: Any, config: RunConfig, closure: Any, p: int, method: str,
                 folder: Path | None = None) -> None:
        self.sde, self.config, self.closure, self.p, self.method = sde, config, closure, p, method
        self.folder = folder
        d_closure = closure.arch.d_closure if closure is not None else 0
        self.observable_names: tuple[str, ...] = observable_names(config.system.kind, d_closure)

    def encode(self, configs: np.ndarray) -> np.ndarray:
        configs = np.asarray(configs)
        if configs.ndim == 2:
            return self.encode(configs[None])[0]
        L = self.config.system.L
        if configs.ndim != 3 or configs.shape[1:] != (L, L):
            raise ValueError(f"configs must have shape [N, {L}, {L}], got {configs.shape}")
        z = physical_observables(configs, self.config.system.kind)
        if self.closure is not None:
            z = np.concatenate([z, self.closure.encode(configs)], axis=1)
        return z

    def sample(self, z0: np.ndarray, n_steps: int, dt: float, n_paths: int = 1,
               seed: int | None = None, method: str = "em") -> np.ndarray:
        return np.asarray(self.sde.sample(np.asarray(z0, dtype=np.float64), n_steps, dt,
                                          n_paths=n_paths, seed=seed, method=method))

    def __repr__(self) -> str:
        return (f"MacroModel({self.config.system.kind}, L={self.config.system.L}, p={self.p}, "
                f"method={self.method!r}, observables={self.observable_names})")


def load(folder: str | Path, *, p: int | None = None, method: str | None = None) -> MacroModel:
    """Load the fitted model of a run folder (the run root or one ``p{p}`` sub-folder).

    With several patch sides, ``p`` selects one (required); ``method`` defaults to "ours" when
    it was trained, else the only trained method.
    """
    from matscale.config import load_config
    from matscale.sde import load_sde

    folder = Path(folder)
    if not (folder / "config.toml").is_file():
        raise FileNotFoundError(f"{folder} is not a matscale run folder (no config.toml)")
    cfg = load_config(folder / "config.toml")
    if cfg.workflow == "fit":
        raise ValueError(f"{folder} holds a 'fit' workflow; use matscale.sde.load_sde('{folder}/fit_pairs/sde')")
    if folder.name.startswith("p") and (folder / "fit").is_dir():
        pdir = folder
        p = int(folder.name[1:])
    else:
        if p is None:
            if len(cfg.patch_sides) != 1:
                raise ValueError(f"p must be given for a run with several patch sides {list(cfg.patch_sides)}")
            p = cfg.patch_sides[0]
        pdir = folder / f"p{p}"
    if not (pdir / "fit").is_dir():
        raise FileNotFoundError(f"no fitted model in {pdir} (run the pipeline up to 'fit' first)")
    trained = sorted(d.name for d in (pdir / "fit").iterdir() if (d / "model.json").is_file())
    method = method or ("ours" if "ours" in trained else (trained[0] if trained else "ours"))
    if method not in trained:
        raise ValueError(f"method={method!r} was not trained in {pdir} (allowed: {', '.join(trained)})")
    closure = None
    if (pdir / "closure" / "closure.json").is_file():
        from matscale.closure import ClosureModel

        closure = ClosureModel.load(pdir / "closure")
    return MacroModel(load_sde(pdir / "fit" / method / "sde"), cfg, closure, p, method, pdir)


__all__ = ["run_pipeline", "load", "MacroModel", "StageRunner", "SPIN_STAGES", "load_pairs",
           "run_fit_workflow", "predict_paths", "make_system", "observable_names"]
