"""TOML run configurations, validated into typed, frozen dataclasses.

Two workflows exist:

``workflow = "pipeline"`` (default; ``"spin"`` is accepted as its former name)
    The scalable pipeline of arXiv 2511.12842 for any registered system: small-system
    simulation -> hierarchical upsampling -> partial evolution -> closure -> SDE fit ->
    direct large-system reference -> evaluation -> plots. Sections: ``[system]``, ``[small]``,
    ``[upsampling]``, ``[partial]``, ``[closure]``, ``[train]``, ``[reference]``, ``[evaluate]``.
    ``[system]`` and ``[reference]`` are a tagged union on ``system.kind``: their fields and
    checks come from :mod:`matscale.systems.registry`.
``workflow = "fit"``
    Fit one SDE to a pairs file (``.npz`` or ``.h5`` holding ``z0``, ``z1``, ``dt`` and optionally
    ``params``). Section: ``[fit]``.
A study (:mod:`matscale.pipeline.studies`), e.g. ``workflow = "diffusion"``
    A self-contained study; its one section has the workflow's name (``[diffusion]``), its
    fields and checks come from the study's configuration class.

Units are those of the system (:mod:`matscale.systems.registry`): spin models use reduced
units and Glauber time, the alloy eV, Å, K and a scaled vacancy clock. Every validation failure raises :class:`ConfigError` with a one-line
message naming the field (``section.key``) and the allowed range.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

UPSAMPLE_MODES = ("duplicate", "tile", "tile_matched", "tile_time", "replicate", "interpolate")
BOUNDARIES = ("frozen", "periodic")
RELAX_REGIONS = ("all", "seams")
NORMALIZATIONS = ("minmax", "zscore")
TRAIN_METHODS = ("ours", "naive", "both")
LOSSES = ("em", "milstein", "partial")
DIFFUSIONS = ("diagonal", "cholesky", "spd", "constant", "constant_diagonal")
WORKFLOWS = ("pipeline", "fit")  # and the studies of matscale.pipeline.studies
_WORKFLOW_ALIASES = {"spin": "pipeline"}


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range (one-line message)."""


# ----------------------------------------------------------------------------------------------
# Typed sections
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmallConfig:
    """Small-system simulations of side ``p`` cells per axis (several values run one sub-pipeline
    each). ``n_runs`` independent runs from the system's random initial states (spins: m0 ~
    U(-1, 1)), per training parameter (alloy: temperature), each recording ``n_sweeps``
    snapshots spaced by ``sweep_time`` time units after the initial one."""

    p: tuple[int, ...]
    n_runs: int = 100
    n_sweeps: int = 100
    sweep_time: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class UpsamplingConfig:
    """Hierarchical upsampling from p to L. ``window``/``stride`` = 0 select the defaults
    (window = p, stride = window // 2). Each LocalRelax window is evolved for ``duration``
    time units, or for ``n_events`` events when ``n_events`` > 0 (the paper's budget; a fixed
    event count biases the window towards high-rate states, see matscale.upsampling); both 0
    switch LocalRelax off (for the seam-free ``"replicate"`` mode).
    ``n_random`` extra
    uncorrelated random configurations (m0 ~ U(-1, 1)) are appended (paper: as many as
    ``n_configs``; 0 disables). With ``random_relax`` > 0 they are quenched: LocalRelax with
    window durations spread evenly over [0, random_relax] (8 groups, the first unrelaxed; each
    site lies in ~4 windows), so the data also cover the fast decay of the domain-wall density
    that follows a random initial state (the test runs of the evaluation start there).
    ``relax_region``: "all" (windows over the whole box at every level, the paper's LocalRelax)
    or "seams" (only windows straddling the seams of each new tiling: the tiles were relaxed at
    the level before; the cost per state grows like the box side instead of its area, which is
    what makes boxes of 1024² and more affordable)."""

    n_configs: int = 2000
    mode: str = "tile_matched"
    factor: int = 2
    window: int = 0
    stride: int = 0
    n_events: int = 0
    duration: float = 1.0
    n_random: int = 0
    random_relax: float = 0.0
    relax_region: str = "all"
    seed: int = 1


@dataclass(frozen=True)
class PartialConfig:
    """Partial evolution: one uniformly drawn patch of side p per large configuration is evolved
    for ``duration`` time units (or ``n_events`` events when > 0, the paper's choice of one
    patch sweep) with the given exterior ``boundary``.

    ``duration`` must be short compared with the relaxation time τ of what the patch can relax
    on its own while its exterior stays frozen: the mean increment over δt is then
    μ·τ(1 − e^{−δt/τ}) rather than μ·δt; a longer step gives less noise per pair. The measured
    choices for each shipped system are documented with the system (``matscale.systems``).
    ``durations``: one δt per training parameter value of a conditioned system (same order as
    its parameter list), replacing ``duration`` where the dynamics' speed in the system clock
    depends on the parameter.

    ``pairs_per_config`` independent pairs (each its own patch and random stream) are drawn from
    every large configuration: the short δt makes a single increment noisy, and extra pairs cost
    one patch evolution each, without new upsampling or closure encoding of the configuration.
    ``n_draws`` = R independent patch evolutions are averaged into every pair instead (fitted
    with lam = K / R): the same drift information as R separate pairs at 1/R of the fitting cost.

    The paper's naive baseline (train.method = "naive" or "both") gets its own pairs from the same
    snapshots, evolved with the paper's budget of ``naive_n_events`` events (0 = p**2, one patch
    sweep), so that the baseline is the one the paper reports.
    """

    n_events: int = 0
    duration: float = 0.05
    durations: tuple[float, ...] = ()
    naive_n_events: int = 0
    pairs_per_config: int = 1
    n_draws: int = 1
    boundary: str = "frozen"
    chunk_size: int = 1000
    seed: int = 2


@dataclass(frozen=True)
class ClosureConfig:
    """Patch-additive CNN closure. ``dim`` closure variables (0 = no closure; the default where
    the system has no closure model or has it off by default, e.g. the alloy); trained by
    reconstruction (BCE for two site classes, cross-entropy for more) on at most ``max_train``
    upsampled snapshots (0 = all). ``normalization`` of the latents uses training data only."""

    dim: int = 2
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    max_train: int = 20000
    normalization: str = "minmax"
    seed: int = 3


@dataclass(frozen=True)
class TrainConfig:
    """SDE fit on the partial pairs. ``method``: "ours" (L_p loss, lam = K), "naive" (patch
    observable after evolution taken as the next global state, lam = 1) or "both".
    ``lam`` = 0 selects K / partial.n_draws for "ours". ``drift_scheme`` "heun" models the mean
    increment of "ours" by a Heun step (see :func:`matscale.sde.fit_sde`), for partial steps δt
    that are not short against the fastest relaxation; the naive baseline keeps "euler".
    ``symmetrize``: comma-separated observables that are odd under a symmetry of the dynamics
    (e.g. "m" for a spin system at h = 0: the global spin flip); every training pair is also
    used mirrored (those components of z0 and of the increment negated), so the fitted drift is
    odd and the diffusion even in them up to the fit error. "" (default): off."""

    method: str = "ours"
    drift_scheme: str = "euler"
    diffusion: str = "cholesky"
    hidden: tuple[int, ...] = (64, 64, 64)
    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    lam: float = 0.0
    validation_fraction: float = 0.1
    device: str = ""
    seed: int = 4
    symmetrize: str = ""


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation of the fitted SDE against the reference: ``n_paths`` predicted paths per
    reference condition (>= 200 recommended), the paper's metric also on ``paper_paths`` paths
    (0 = the paper's 20, or fewer when there are fewer reference runs),
    EM with ``substeps`` steps per grid interval (0 = automatic: the largest step not above twice
    the median training δt of the model), ``mmd_bootstrap`` path-bootstrap resamples for every CI of the evaluation (MMD², stationary mean and std).
    ``sizes``: further box sides (cells per axis, multiples of the small side) at which the SDE
    is rolled out with its noise scaled to that size, for the std-vs-size study."""

    n_paths: int = 200
    paper_paths: int = 0
    substeps: int = 0
    mmd_bootstrap: int = 200
    sizes: tuple[int, ...] = ()
    seed: int = 6


@dataclass(frozen=True)
class FitConfig:
    """The "fit" workflow: fit one SDE to the pairs file ``pairs`` (path relative to the config)."""

    pairs: str
    loss: str = "em"
    lam: float = 1.0
    diffusion: str = "cholesky"
    hidden: tuple[int, ...] = (64, 64, 64)
    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    validation_fraction: float = 0.1
    device: str = ""
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """A whole validated configuration. ``source`` is the folder relative paths resolve from."""

    workflow: str = "pipeline"
    name: str = ""
    system: Any = None
    small: SmallConfig | None = None
    upsampling: UpsamplingConfig = field(default_factory=UpsamplingConfig)
    partial: PartialConfig = field(default_factory=PartialConfig)
    closure: ClosureConfig = field(default_factory=ClosureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reference: Any = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    fit: FitConfig | None = None
    study: Any = None  # the section of a study workflow (matscale.pipeline.studies)
    source: str = "."

    # -- conveniences -------------------------------------------------------------------------
    @property
    def patch_sides(self) -> tuple[int, ...]:
        """The patch sides p (cells per axis) of the sub-pipelines."""
        return self.small.p if self.small is not None else ()

    @property
    def grid_dim(self) -> int:
        """Grid axes of the system's states (2 for square spin lattices, 3 for the alloy)."""
        return self.system.grid_dim

    def n_patches(self, p: int) -> int:
        """K = (size / p) ** grid_dim."""
        return (self.system.size // p) ** self.grid_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); ``source`` is left out."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d))

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain JSON-able dict."""
        return self.to_dict()[name]


# ----------------------------------------------------------------------------------------------
# Validation machinery
# ----------------------------------------------------------------------------------------------
_SECTION_TYPES: dict[str, type | None] = {
    "system": None,      # tagged union on system.kind (matscale.systems.registry)
    "small": SmallConfig,
    "upsampling": UpsamplingConfig,
    "partial": PartialConfig,
    "closure": ClosureConfig,
    "train": TrainConfig,
    "reference": None,   # tagged union on system.kind
    "evaluate": EvaluateConfig,
    "fit": FitConfig,
}
_TOP_LEVEL_SCALARS = ("workflow", "name")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(where: str, value: Any, annotation: str) -> Any:
    """Convert a TOML value to the annotated field type or raise a one-line ConfigError."""
    ann = annotation.replace(" ", "")
    if ann == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_type_name(value)} {value!r}")
        return value
    if ann == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_type_name(value)} {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return float(value)
    if ann == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_type_name(value)} {value!r}")
        return value
    if ann.startswith("tuple[str"):
        items = value if isinstance(value, list) else [value]
        return tuple(_coerce(f"{where}[{i}]", v, "str") for i, v in enumerate(items))
    if ann.startswith("tuple[int"):
        items = value if isinstance(value, list) else [value]
        return tuple(_coerce(f"{where}[{i}]", v, "int") for i, v in enumerate(items))
    if ann.startswith("tuple[float"):
        items = value if isinstance(value, list) else [value]
        return tuple(_coerce(f"{where}[{i}]", v, "float") for i, v in enumerate(items))
    raise TypeError(f"internal: unsupported annotation {annotation!r} for {where}")  # pragma: no cover


def _build_section(name: str, raw: Any, cls: type | None = None) -> Any:
    cls = cls or _SECTION_TYPES[name]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {_type_name(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{name}.{unknown[0]}' (allowed: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for key, f in fields.items():
        if key in raw:
            kwargs[key] = _coerce(f"{name}.{key}", raw[key], str(f.type))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{name}.{key}'")
    if kwargs.get("seed", 0) < 0:  # every section's random stream seed (numpy needs >= 0)
        raise ConfigError(f"{name}.seed={kwargs['seed']} out of range (allowed: >= 0)")
    return cls(**kwargs)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _choice(where: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, f"{where}={value!r} is not allowed (allowed: {', '.join(allowed)})")


def _positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if allow_zero:
        _require(value >= 0, f"{where}={value!r} out of range (allowed: >= 0)")
    else:
        _require(value > 0, f"{where}={value!r} out of range (allowed: > 0)")


def _is_power_of(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def _closure_on_by_default(system: Any) -> bool:
    """Whether ``closure.dim`` keeps its default (> 0) for this ``[system]`` section: its
    ``default_closure``, else whether it allows a closure at all (``supports_closure``)."""
    allowed = getattr(system, "supports_closure", True)
    return bool(getattr(system, "default_closure", allowed)) and bool(allowed)


def _system_offers_mode(system: Any, mode: str) -> bool:
    """Whether the system of a ``[system]`` section offers the capabilities (e.g. ``refine``)
    that upsampling ``mode`` requires; the section names its class in ``system_class``, and a
    section without one offers none of the optional capabilities."""
    from matscale.upsampling import get_upsample_operator, missing_capability

    operator = get_upsample_operator(mode)
    if not operator.requires:
        return True
    cls = getattr(system, "system_class", None)
    return cls is not None and missing_capability(operator, cls) is None


def _check_pipeline(cfg: RunConfig) -> None:
    from matscale.systems.registry import get_kind

    s, sm, up, pa, cl, tr, ref, ev = (
        cfg.system, cfg.small, cfg.upsampling, cfg.partial, cfg.closure, cfg.train,
        cfg.reference, cfg.evaluate,
    )
    _require(s is not None, "missing section [system] (required for workflow='pipeline')")
    _require(sm is not None, "missing section [small] (required for workflow='pipeline')")
    size, unit = s.size, ("system.L" if hasattr(s, "L") else "system.cells")
    _require(len(sm.p) >= 1, "small.p must list at least one patch side")
    _require(len(set(sm.p)) == len(sm.p), f"small.p={list(sm.p)} has duplicates (allowed: distinct)")
    _choice("upsampling.mode", up.mode, UPSAMPLE_MODES)
    _choice("upsampling.relax_region", up.relax_region, RELAX_REGIONS)
    if not _system_offers_mode(s, up.mode):
        allowed = ", ".join(m for m in UPSAMPLE_MODES if _system_offers_mode(s, m))
        raise ConfigError(f"upsampling.mode={up.mode!r} is not allowed for system.kind={s.kind!r} "
                          f"(allowed: {allowed})")
    _require(up.factor >= 2, f"upsampling.factor={up.factor} out of range (allowed: >= 2)")
    for p in sm.p:
        _require(p >= 2 and size % p == 0,
                 f"small.p={p}: the small box must tile the large one (allowed: p >= 2 dividing {unit}={size})")
        _require(_is_power_of(size // p, up.factor),
                 f"small.p={p}: {unit}/p={size // p} must be a power of upsampling.factor={up.factor}")
        if up.window:
            _require(up.window <= size,
                     f"upsampling.window={up.window} out of range (allowed: 0 or 1..{size})")
    get_kind(s.kind).check(cfg)
    _positive("small.n_runs", sm.n_runs)
    _positive("small.n_sweeps", sm.n_sweeps)
    _positive("small.sweep_time", sm.sweep_time)
    _positive("upsampling.n_configs", up.n_configs)
    for key in ("window", "stride", "n_events", "n_random"):
        _positive(f"upsampling.{key}", getattr(up, key), allow_zero=True)
    _positive("partial.n_events", pa.n_events, allow_zero=True)
    _positive("partial.duration", pa.duration)
    points = tuple(s.parameter_points)
    _require(not pa.durations or len(pa.durations) == len(points),
             f"partial.durations has {len(pa.durations)} values (allowed: none, or one per training "
             f"parameter value: {len(points)})")
    for i, value in enumerate(pa.durations):
        _positive(f"partial.durations[{i}]", value)
    _positive("partial.naive_n_events", pa.naive_n_events, allow_zero=True)
    _positive("partial.pairs_per_config", pa.pairs_per_config)
    _positive("partial.n_draws", pa.n_draws)
    _positive("upsampling.duration", up.duration, allow_zero=True)  # 0 (and n_events 0): no LocalRelax
    _positive("upsampling.random_relax", up.random_relax, allow_zero=True)
    _choice("partial.boundary", pa.boundary, BOUNDARIES)
    _positive("partial.chunk_size", pa.chunk_size)
    _positive("closure.dim", cl.dim, allow_zero=True)
    _require(cl.dim == 0 or getattr(s, "supports_closure", True),
             f"closure.dim={cl.dim} out of range for system.kind={s.kind!r} (allowed: 0)")
    _positive("closure.epochs", cl.epochs)
    _positive("closure.batch_size", cl.batch_size)
    _positive("closure.lr", cl.lr)
    _positive("closure.max_train", cl.max_train, allow_zero=True)
    _choice("closure.normalization", cl.normalization, NORMALIZATIONS)
    _check_train_like("train", tr.diffusion, tr.hidden, tr.epochs, tr.batch_size, tr.lr,
                      tr.validation_fraction)
    _choice("train.method", tr.method, TRAIN_METHODS)
    _choice("train.drift_scheme", tr.drift_scheme, ("euler", "heun"))
    _positive("train.lam", tr.lam, allow_zero=True)
    if tr.symmetrize:
        _require(cl.dim == 0, f"train.symmetrize={tr.symmetrize!r} needs closure.dim = 0 (the parity of "
                              f"closure variables is unknown; allowed: symmetrize = \"\" with a closure)")
        _require(float(getattr(s, "h", 0.0)) == 0.0,
                 f"train.symmetrize={tr.symmetrize!r} needs system.h = 0 (a field breaks the flip "
                 f"symmetry; allowed: symmetrize = \"\" for h != 0)")
    _positive("reference.n_runs", ref.n_runs)
    _positive("reference.duration", ref.duration)
    _positive("reference.grid_dt", ref.grid_dt)
    _require(ref.grid_dt <= ref.duration,
             f"reference.grid_dt={ref.grid_dt} out of range (allowed: <= reference.duration)")
    _require(ref.duration / ref.grid_dt <= 100000,
             "reference.duration/grid_dt too large (allowed: <= 100000 grid points)")
    _positive("evaluate.n_paths", ev.n_paths)
    _require(0 <= ev.paper_paths <= min(ev.n_paths, ref.n_runs),
             f"evaluate.paper_paths={ev.paper_paths} out of range "
             f"(allowed: 0 (automatic) or 1..min(evaluate.n_paths, reference.n_runs)={min(ev.n_paths, ref.n_runs)})")
    _positive("evaluate.substeps", ev.substeps, allow_zero=True)
    _positive("evaluate.mmd_bootstrap", ev.mmd_bootstrap, allow_zero=True)
    for i, side in enumerate(ev.sizes):
        _require(side >= 1 and all(side % p == 0 for p in sm.p),
                 f"evaluate.sizes[{i}]={side} out of range (allowed: box sides that are multiples of "
                 f"every small.p {list(sm.p)})")


def _check_train_like(section: str, diffusion: str, hidden: tuple[int, ...], epochs: int,
                      batch_size: int, lr: float, validation_fraction: float) -> None:
    _choice(f"{section}.diffusion", diffusion, DIFFUSIONS)
    _require(len(hidden) >= 1 and all(h > 0 for h in hidden),
             f"{section}.hidden={list(hidden)} out of range (allowed: non-empty list of positive ints)")
    _positive(f"{section}.epochs", epochs)
    _positive(f"{section}.batch_size", batch_size)
    _positive(f"{section}.lr", lr)
    _require(0.0 <= validation_fraction < 1.0,
             f"{section}.validation_fraction={validation_fraction} out of range (allowed: 0 <= x < 1)")


def _check_fit(cfg: RunConfig) -> None:
    f = cfg.fit
    _require(f is not None, "missing section [fit] (required for workflow='fit')")
    _require(f.pairs.endswith((".npz", ".h5", ".hdf5")),
             f"fit.pairs={f.pairs!r} has an unknown format (allowed: .npz, .h5, .hdf5)")
    _choice("fit.loss", f.loss, LOSSES)
    _positive("fit.lam", f.lam)
    _require(f.lam == 1.0 or f.loss == "partial",
             f"fit.lam={f.lam} out of range for fit.loss={f.loss!r} (allowed: 1, or any > 0 with loss='partial')")
    _check_train_like("fit", f.diffusion, f.hidden, f.epochs, f.batch_size, f.lr,
                      f.validation_fraction)


def _study_names() -> tuple[str, ...]:
    from matscale.pipeline.studies import study_names

    return study_names()


def all_workflows() -> tuple[str, ...]:
    """Every accepted ``workflow`` value: the pipeline, fit and the registered studies."""
    return WORKFLOWS + _study_names()


def _check_top_keys(raw: Mapping[str, Any], prefix: str) -> None:
    """One-line ConfigError for a top-level key that is neither a section nor a known scalar."""
    allowed = set(_SECTION_TYPES) | set(_TOP_LEVEL_SCALARS) | set(_study_names())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def config_from_dict(raw: Mapping[str, Any], *, source: str | Path = ".") -> RunConfig:
    """Validate a parsed TOML mapping into a :class:`RunConfig` (raises ConfigError)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"configuration must be a table, got {_type_name(raw)}")
    _check_top_keys(raw, "")
    workflow = _coerce("workflow", raw.get("workflow", "pipeline"), "str")
    workflow = _WORKFLOW_ALIASES.get(workflow, workflow)
    _choice("workflow", workflow, all_workflows())
    name = _coerce("name", raw.get("name", ""), "str")
    if workflow not in WORKFLOWS:
        return _study_config(raw, workflow, name, source)
    if workflow == "fit":
        extra = sorted(set(raw) & set(_SECTION_TYPES) - {"fit"})
        if extra:
            raise ConfigError(f"section [{extra[0]}] is not allowed with workflow='fit' (allowed: [fit])")
    kind_entry = _system_kind(raw) if workflow == "pipeline" else None
    union = ({"system": kind_entry.system_config, "reference": kind_entry.reference_config}
             if kind_entry is not None else {})
    sections = {k: _build_section(k, v, union.get(k)) for k, v in raw.items()
                if k in _SECTION_TYPES and (k in union or _SECTION_TYPES[k] is not None)}
    if workflow == "pipeline" and "fit" in sections:
        raise ConfigError("section [fit] is only allowed with workflow='fit'")
    if workflow == "fit":
        extra = sorted(set(sections) - {"fit"})
        if extra:
            raise ConfigError(f"section [{extra[0]}] is not allowed with workflow='fit' (allowed: [fit])")
    system = sections.get("system")
    closure = sections.get("closure", ClosureConfig())
    if system is not None and not _closure_on_by_default(system) \
            and "dim" not in (raw.get("closure") or {}):
        closure = dataclasses.replace(closure, dim=0)
    cfg = RunConfig(
        workflow=workflow, name=name, system=system, small=sections.get("small"),
        upsampling=sections.get("upsampling", UpsamplingConfig()),
        partial=sections.get("partial", PartialConfig()),
        closure=closure,
        train=sections.get("train", TrainConfig()),
        reference=sections.get("reference", kind_entry.reference_config() if kind_entry else None),
        evaluate=sections.get("evaluate", EvaluateConfig()),
        fit=sections.get("fit"), source=str(source),
    )
    if workflow == "pipeline":
        _check_pipeline(cfg)
    else:
        _check_fit(cfg)
    return cfg


def _study_config(raw: Mapping[str, Any], workflow: str, name: str, source: str | Path) -> RunConfig:
    """The :class:`RunConfig` of a study workflow: its one section, built and checked."""
    from matscale.pipeline.studies import get_study

    extra = sorted(k for k in raw if k not in _TOP_LEVEL_SCALARS and k != workflow)
    if extra:
        raise ConfigError(f"section [{extra[0]}] is not allowed with workflow={workflow!r} "
                          f"(allowed: [{workflow}])")
    study = get_study(workflow)
    section = _build_section(workflow, raw.get(workflow, {}), study.config)
    section.check()
    return RunConfig(workflow=workflow, name=name, study=section, source=str(source))


def _system_kind(raw: Mapping[str, Any]) -> Any:
    """The registry entry named by ``system.kind`` (checked before the sections are built)."""
    from matscale.systems.registry import get_kind

    system = raw.get("system")
    if not isinstance(system, Mapping):
        raise ConfigError("missing section [system] (required for workflow='pipeline')")
    if "kind" not in system:
        raise ConfigError("missing required key 'system.kind'")
    return get_kind(_coerce("system.kind", system["kind"], "str"))


def apply_quick(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration with its ``[quick]`` preset merged in (section by section, key by key).

    A configuration may carry a ``[quick]`` table of section tables (``[quick.small]``, ...)
    whose values replace those of the full run: ``matscale run CONFIG --quick`` runs that
    smaller preset. Without ``quick`` the table is only checked to name known sections.
    """
    preset = raw.get("quick")
    if not isinstance(preset, Mapping):
        raise ConfigError("this configuration has no [quick] table (a preset of smaller values "
                          "for --quick); run it without --quick")
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items() if k != "quick"}
    for section, values in preset.items():
        if isinstance(values, Mapping):
            merged.setdefault(section, {})
            if not isinstance(merged[section], dict):
                raise ConfigError(f"quick.{section} replaces a value that is not a table")
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def _strip_quick(raw: Mapping[str, Any]) -> dict[str, Any]:
    preset = raw.get("quick", {})
    if not isinstance(preset, Mapping):
        raise ConfigError(f"[quick] must be a table of section tables, got {_type_name(preset)}")
    _check_top_keys(preset, "quick.")
    return {k: v for k, v in raw.items() if k != "quick"}


def loads_config(text: str, *, source: str | Path = ".", quick: bool = False) -> RunConfig:
    """Parse and validate TOML text (with ``quick``, its ``[quick]`` preset applied)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None
    if quick:
        return config_from_dict(apply_quick(raw), source=source)
    return config_from_dict(_strip_quick(raw), source=source)


def load_config(path: str | Path, *, quick: bool = False) -> RunConfig:
    """Read and validate a TOML configuration file; relative paths inside resolve from its
    folder. ``quick`` applies the file's ``[quick]`` preset (see :func:`apply_quick`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return loads_config(path.read_text(encoding="utf-8"), source=path.resolve().parent,
                            quick=quick)
    except ConfigError as exc:
        if quick and "no [quick] table" in str(exc):
            raise ConfigError(f"{path.name} has no [quick] table (a preset of smaller values for "
                              "--quick); run it without --quick") from None
        raise


@dataclass(frozen=True)
class ResourceEstimate:
    """Rough upper estimates of what a pipeline run stores and holds in memory (bytes)."""

    disk_bytes: int
    memory_bytes: int
    state_bytes: int  # one large-system state

    def describe(self) -> str:
        return (f"~{_human_bytes(self.disk_bytes)} on disk, ~{_human_bytes(self.memory_bytes)} of memory "
                f"(one large state {_human_bytes(self.state_bytes)})")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def resource_estimate(cfg: RunConfig) -> ResourceEstimate:
    """Disk and memory a pipeline run needs, from the sizes in ``cfg`` alone.

    The big items are large-system states (``[system] cell_bytes`` bytes per grid cell, 8 when a
    registered kind does not say): the upsampled states of every patch side and training
    parameter (held in memory twice while they are made), and the initial and final states of
    the reference runs. Trajectories of observables are small next to them.
    """
    if cfg.workflow != "pipeline":
        return ResourceEstimate(0, 0, 0)
    s = cfg.system
    state = int(s.size) ** int(s.grid_dim) * int(getattr(s, "cell_bytes", 8))
    n_points = max(1, len(s.parameter_points))
    upsampled = (cfg.upsampling.n_configs + cfg.upsampling.n_random) * n_points
    reference = 2 * cfg.reference.n_runs * len(cfg.reference.conditions)
    disk = state * (upsampled * len(cfg.patch_sides) + reference)
    memory = state * max(2 * upsampled, reference)
    return ResourceEstimate(disk, memory, state)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_resources(cfg: RunConfig, out: str | Path | None = None) -> ResourceEstimate:
    """Refuse (one-line :class:`ConfigError`) a run whose estimated memory exceeds this machine's
    physical memory, or whose estimated disk use exceeds the free space at ``out``; the CLI's
    ``--yes`` skips this check."""
    est = resource_estimate(cfg)
    memory = _physical_memory()
    advice = "reduce system size, upsampling.n_configs/n_random or reference.n_runs, or pass --yes"
    if memory is not None and est.memory_bytes > memory:
        raise ConfigError(f"this run needs {est.describe()}, more than this machine's "
                          f"{_human_bytes(memory)} of memory; {advice}")
    if out is not None:
        target = Path(out)
        while not target.exists():
            target = target.parent
        free = shutil.disk_usage(target).free
        if est.disk_bytes > free:
            raise ConfigError(f"this run needs {est.describe()}, more than the {_human_bytes(free)} "
                              f"free at {out}; {advice}")
    return est


def quick_config() -> RunConfig:
    """The embedded default of ``matscale run --quick``: the ``[quick]`` preset of the shipped
    NbMoTa configuration (``matscale/data/nbmota.toml``, also ``inputs/nbmota.toml``)."""
    from importlib.resources import files

    text = files("matscale").joinpath("data/nbmota.toml").read_text(encoding="utf-8")
    return loads_config(text, source=".", quick=True)


def config_to_toml(cfg: RunConfig) -> str:
    """Serialise a validated config back to TOML (round-trips through :func:`loads_config`)."""
    d = cfg.to_dict()
    lines = [f"workflow = {json.dumps(d.pop('workflow'))}", f"name = {json.dumps(d.pop('name'))}"]
    for section, values in d.items():
        if values is None:
            continue
        if cfg.workflow == "fit" and section != "fit":
            continue
        if section == "study":
            section = cfg.workflow
        elif cfg.workflow not in WORKFLOWS:
            continue
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write_config(cfg: RunConfig, folder: str | Path) -> None:
    """Write ``config.toml`` and ``config.json`` into ``folder`` (the run folder says how it was made)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
