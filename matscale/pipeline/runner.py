"""The stage runner: one table of stages, atomic outputs, resume and configuration checks.

Layout of a run folder ``OUT`` (one sub-pipeline per patch side p, sharing the reference)::

    OUT/config.toml, config.json     the validated configuration
    OUT/stages.log                   one line per stage: ran / skipped, with seconds
    OUT/p{p}/small_sim/              small-system trajectories                   [training data]
    OUT/p{p}/upsample/               upsampled large states                      [training data]
    OUT/p{p}/partial/                partial-evolution pairs                      [training data]
    OUT/p{p}/closure/                patch-additive closure (when closure.dim > 0) [training data]
    OUT/p{p}/encode/                 macro-state pairs z0, delta, z1_naive, dt    [training data]
    OUT/p{p}/fit/{ours,naive}/       fitted SDEs (state_dict + JSON)
    OUT/reference/                   direct large-system runs — used ONLY by evaluate
    OUT/p{p}/evaluate/metrics.json   metrics per method; predicted mean/std curves
    OUT/p{p}/plots/                  mean ± std of the observables vs time, upsampling diagnostics
    OUT/metrics.json, OUT/plots/, OUT/report.md    summary over all p

Every stage writes into a hidden temporary folder and renames it into place when complete
(atomic), together with ``stage.json`` recording the configuration sections it depends on, the
run ids of its inputs, and the size and SHA-256 of every file it wrote. Before a finished stage
is trusted (skipped, or read by a later stage) its files are checked against that record; a
damaged or missing file stops the run with one line naming the file and the ``--force-stage``
that regenerates it, before anything is written. A rerun skips a stage whose record matches; a record made with a
different configuration is a one-line :class:`~matscale.config.ConfigError` unless the stage is
forced (``force_stages``), in which case it and every stage downstream of it are recomputed.
A stage interrupted mid-way resumes from its temporary folder (chunked HDF5 outputs of
upsampling and partial evolution resume chunk by chunk).

Which sections a stage depends on, and which stages a forced stage forces, both follow from
the one table :data:`STAGES` (each stage's inputs and the sections it reads itself).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from matscale import __version__
from matscale.config import ConfigError, RunConfig, check_resources, write_config
from matscale.pipeline.studies import get_study, study_names
from matscale.io import (STAGE_RECORD, DamagedDataError, folder_manifest, json_dump, manifest_problem,
                         read_json)

_STAGE_RECORD = STAGE_RECORD
_SECTION_ORDER = ("system", "small", "upsampling", "partial", "closure", "train", "reference",
                  "evaluate")


@dataclass(frozen=True)
class Stage:
    """One stage: the stages whose outputs it reads, the config sections it reads itself, and
    single settings of other sections that change its output (``settings(cfg) -> dict``)."""

    name: str
    inputs: tuple[str, ...]
    sections: tuple[str, ...]
    per_p: bool = True
    settings: Callable[[RunConfig], dict[str, Any]] | None = None
    uses_training_points: bool = True  # False: the [system] fields listing training values do not matter


STAGES: tuple[Stage, ...] = (
    Stage("small_sim", (), ("system", "small")),
    Stage("upsample", ("small_sim",), ("upsampling",)),
    # partial evolution keeps the patches when a closure will encode them
    Stage("partial", ("upsample",), ("partial",),
          settings=lambda cfg: {"store_patches": cfg.closure.dim > 0}),
    Stage("closure", ("upsample",), ("closure",)),
    Stage("encode", ("partial", "closure"), ()),
    Stage("fit", ("encode",), ("train",)),
    # the direct reference runs do not depend on which parameter values the SDE is trained at
    Stage("reference", (), ("system", "reference"), per_p=False, uses_training_points=False),
    Stage("evaluate", ("fit", "reference"), ("evaluate",)),
    Stage("plots", ("evaluate",), ()),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage_sections(name: str) -> tuple[str, ...]:
    """Every config section ``name`` depends on, through its inputs (canonical order)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        stage = _BY_NAME[todo.pop()]
        seen.update(stage.sections)
        todo.extend(stage.inputs)
    return tuple(s for s in _SECTION_ORDER if s in seen)


def dependents(name: str) -> tuple[str, ...]:
    """Every stage that consumes ``name``'s output, directly or not (table order)."""
    found: set[str] = set()
    frontier = {name}
    while frontier:
        frontier = {s.name for s in STAGES if set(s.inputs) & frontier} - found
        found |= frontier
    return tuple(s for s in STAGE_NAMES if s in found)


def with_dependents(force: Iterable[str]) -> frozenset[str]:
    """A forced stage forces every stage that consumes its output."""
    force = frozenset(force)
    return force.union(*(dependents(s) for s in force if s in _BY_NAME))


def stage_config(cfg: RunConfig, stage: str, p: int | None) -> dict[str, Any]:
    """The configuration record of ``stage`` (the sections it depends on; small.p = this p)."""
    d = cfg.to_dict()
    record = {name: d[name] for name in stage_sections(stage)}
    if "small" in record:
        record["small"] = {**record["small"], "p": p}
    entry = _BY_NAME[stage]
    if not entry.uses_training_points and "system" in record:
        training = getattr(cfg.system, "training_fields", ())
        record["system"] = {k: v for k, v in record["system"].items() if k not in training}
    if entry.settings is not None:
        record["settings"] = entry.settings(cfg)
    for (section, key), default in _LATER_FIELDS.items():
        if section in record and record[section].get(key) == default:
            del record[section][key]
    return record


#: fields added to a section after runs were made with it: left out of the stage records at
#: their default, so finished runs of earlier versions stay valid (same data).
_LATER_FIELDS: dict[tuple[str, str], Any] = {("upsampling", "relax_region"): "all", ("train", "symmetrize"): "",
                                              ("system", "ase_receptive_field"): 0.0}


class StopPipeline(Exception):
    """Raised internally after the ``stop_after`` stage."""


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """Dotted path of the first differing key between two JSON-like records."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return prefix or "(record)"


@dataclass
class StageRunner:
    """Runs stages into ``out`` with atomic renames; see the module docstring for the rules."""

    out: Path
    force: frozenset[str] = frozenset()
    stop_after: str | None = None
    progress: bool = False
    cfg: RunConfig | None = None  # written into every stage folder when given
    executed: list[str] = field(default_factory=list)
    verified: set[Path] = field(default_factory=set)  # finished stage folders whose files were checked
    executor: Any = None  # where the data stages' tasks run (matscale.parallel); None = here

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
            old = read_json(done)
            same_config = old.get("config") == config
            if same_config and old.get("inputs") == inputs and stage not in self.force:
                if folder not in self.verified:
                    verify_stage(folder, stage)
                    self.verified.add(folder)
                self.log(label, "skipped")
                self._maybe_stop(stage)
                return old["run_id"]
            if not same_config and stage not in self.force:
                key = first_difference(old.get("config"), config)
                raise ConfigError(
                    f"stage '{stage}' in {folder} was made with a different configuration "
                    f"(first difference: {key}); use --force-stage {stage} or another --out")
        tmp = folder.parent / f".{folder.name}.partial"
        pending = tmp / "stage.pending.json"
        if tmp.exists():
            try:  # an unreadable record of unfinished work only means starting the stage afresh
                same = pending.is_file() and json.loads(pending.read_text(encoding="utf-8")) == record
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        json_dump(record, pending)
        if self.progress:  # a long stage is not silent until it ends
            print(f"[matscale] {label}: running", flush=True)
        start = time.perf_counter()
        compute(tmp)
        seconds = time.perf_counter() - start
        run_id = uuid.uuid4().hex
        pending.unlink()
        if self.cfg is not None:
            write_config(self.cfg, tmp)
        json_dump({**record, "run_id": run_id, "seconds": seconds, "matscale_version": __version__,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": folder_manifest(tmp)},
                  tmp / _STAGE_RECORD)
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


def stage_folder(out: Path, stage: str, p: int | None) -> Path:
    """Where ``stage`` of patch side ``p`` writes its output."""
    return out / stage if not _BY_NAME[stage].per_p else out / f"p{p}" / stage


def verify_stage(folder: Path, stage: str) -> None:
    """Check a finished stage's files against the sizes and hashes in its record; a damaged,
    missing or unrecorded file is a one-line :class:`DamagedDataError` with the remedy."""
    record = read_json(folder / _STAGE_RECORD)
    remedy = f"rerun with --force-stage {stage} (it and the stages after it are recomputed)"
    manifest = record.get("files") if isinstance(record, dict) else None
    if not isinstance(manifest, dict):
        raise DamagedDataError(f"{folder / _STAGE_RECORD}: no file checksums (written by an older "
                               f"matscale, or edited); {remedy}")
    problem = manifest_problem(folder, manifest)
    if problem is not None:
        raise DamagedDataError(f"{problem}; {remedy}")


def _finished_stages(cfg: RunConfig, out: Path) -> list[tuple[str, Path, int | None]]:
    folders = [(s.name, stage_folder(out, s.name, None), None) for s in STAGES if not s.per_p]
    folders += [(s.name, stage_folder(out, s.name, p), p) for p in cfg.patch_sides
                for s in STAGES if s.per_p]
    return [f for f in folders if (f[1] / _STAGE_RECORD).is_file()]


def minimal_forces(stages: Iterable[str]) -> list[str]:
    """The stages to name in ``--force-stage`` so that all of ``stages`` are recomputed (a forced
    stage forces its dependents), in table order."""
    stages = set(stages)
    implied = set().union(*(dependents(s) for s in stages)) if stages else set()
    return [s for s in STAGE_NAMES if s in stages and s not in implied]


def _force_hint(stages: Iterable[str]) -> str:
    return " ".join(f"--force-stage {s}" for s in minimal_forces(stages))


def preflight(cfg: RunConfig, out: Path, force: frozenset[str],
              verified: set[Path] | None = None) -> None:
    """Before anything is written: refuse to mix a changed configuration into finished stages
    (naming every stage that must be redone, in one line), and check the files of every finished
    stage that will be trusted against their recorded checksums."""
    changed: dict[str, str] = {}
    for stage, folder, p in _finished_stages(cfg, out):
        if stage in force:
            continue
        old = read_json(folder / _STAGE_RECORD).get("config")
        new = stage_config(cfg, stage, p)
        if old != new:
            changed.setdefault(stage, first_difference(old, new))
    if changed:
        where = ", ".join(f"{s} ({key})" for s, key in changed.items())
        raise ConfigError(f"the configuration differs from the one that made finished stages: {where}; "
                          f"rerun with {_force_hint(changed)} or use another --out")
    for stage, folder, _ in _finished_stages(cfg, out):
        if stage in force:
            continue
        verify_stage(folder, stage)
        if verified is not None:
            verified.add(folder)


def check_run_folder(cfg: RunConfig, out: Path, force: frozenset[str]) -> None:
    """Refuse to mix workflows or system kinds in one folder (stage records check the rest)."""
    stored = out / "config.json"
    if stored.is_file() and not force:
        old = read_json(stored)
        new = cfg.to_dict()
        old_workflow = {"spin": "pipeline"}.get(old.get("workflow"), old.get("workflow"))
        if old_workflow != new.get("workflow"):
            raise ConfigError(f"{out} holds a run with workflow={old.get('workflow')!r}; use another --out")
        old_kind = (old.get("system") or {}).get("kind")
        new_kind = (new.get("system") or {}).get("kind")
        if old_kind != new_kind:
            raise ConfigError(f"{out} holds a run of system.kind={old_kind!r}; use another --out")


class RunLock:
    """An exclusive lock on a run folder (``OUT/.matscale.lock``) for the life of one run.

    Two runs writing into one folder would interleave their temporary stage folders; the second
    is refused with a one-line error. The lock is an OS file lock (``fcntl.flock``), released by
    the operating system when the process ends, so a crashed run never leaves a stale lock.
    Where ``fcntl`` does not exist (Windows) no lock is taken.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / ".matscale.lock"
        self._fh: Any = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ConfigError(f"{self.path.parent} is in use by another matscale run (pid {holder}); "
                              "wait for it to finish or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the lock
            self._fh = None


def run_pipeline(cfg: RunConfig, out: str | Path, *, force_stages: Iterable[str] = (),
                 stop_after: str | None = None, progress: bool = False,
                 check_size: bool = True, executor: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole workflow of ``cfg`` into ``out``; returns the summary metrics.

    ``force_stages``: stage names to recompute even when their outputs exist (their dependents
    are recomputed too). ``stop_after``: stop once that stage is done (for staged runs/tests).
    ``check_size``: refuse, before anything is written, a run whose estimated memory or disk use
    exceeds this machine's (:func:`matscale.config.check_resources`).
    ``executor``: where the tasks of the data-generation stages run — None/"inline" (this
    process), "processes:N", "dask-local:N" or "dask:ADDRESS" (:mod:`matscale.parallel`); the
    ``critical`` study runs its (L, T) points there. The results are identical for every
    choice, so it is not part of the configuration.
    """
    out = Path(out)
    force = frozenset(force_stages)
    if cfg.workflow in study_names():
        force = _study_stages(cfg.workflow, force, stop_after)
    else:
        unknown = sorted(force - set(STAGE_NAMES) - {"fit_pairs"})
        if unknown:
            raise ConfigError(f"--force-stage {unknown[0]!r} is not a stage (allowed: {', '.join(STAGE_NAMES)})")
        if stop_after is not None and stop_after not in STAGE_NAMES:
            raise ConfigError(f"--stop-after {stop_after!r} is not a stage (allowed: {', '.join(STAGE_NAMES)})")
        force = with_dependents(force)
    if check_size:
        check_resources(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        return _run_locked(cfg, out, force, stop_after, progress, executor)


def _study_stages(workflow: str, force: frozenset[str], stop_after: str | None) -> frozenset[str]:
    """Check ``--force-stage`` / ``--stop-after`` against a study's stage names. A study's later
    stages consume its earlier ones, so forcing a stage forces every stage after it."""
    stages = get_study(workflow).stages
    for flag, names in (("--force-stage", sorted(force)), ("--stop-after", [stop_after] if stop_after else [])):
        for stage in names:
            if stages and stage not in stages:
                raise ConfigError(f"{flag} {stage!r} is not a stage of workflow={workflow!r} "
                                  f"(allowed: {', '.join(stages)})")
    if not force or not stages:
        return force
    first = min(stages.index(stage) for stage in force)
    return frozenset(stages[first:])


def _run_locked(cfg: RunConfig, out: Path, force: frozenset[str], stop_after: str | None,
                progress: bool, executor_spec: str | None = None) -> dict[str, Any]:
    from matscale.pipeline.fit_workflow import run_fit_workflow
    from matscale.pipeline.report import write_summary
    from matscale.parallel import open_executor
    from matscale.pipeline.stages import run_patch_side
    from matscale.systems.registry import build_system

    check_run_folder(cfg, out, force)
    verified: set[Path] = set()
    if cfg.workflow == "pipeline":
        preflight(cfg, out, force, verified)
    write_config(cfg, out)
    if cfg.workflow == "fit":
        return run_fit_workflow(cfg, out, force=force, progress=progress)
    study = cfg.workflow in study_names()
    system = None if study else build_system(cfg.system)
    with open_executor(executor_spec) as executor:  # the data stages' tasks; a study's points
        runner = StageRunner(out, force, stop_after, progress, cfg, verified=verified, executor=executor)
        try:
            if study:
                return get_study(cfg.workflow).run(cfg.study, runner, Path(cfg.source))
            ref_id = None
            for p in cfg.patch_sides:
                ref_id = run_patch_side(cfg, system, p, runner, ref_id)
        except StopPipeline:
            return {}
    summary = write_summary(cfg, system, out)
    runner.log("summary", "ran")
    return summary
