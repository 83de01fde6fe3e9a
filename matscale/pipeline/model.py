"""The fitted macroscopic model of a run folder: :func:`load` and :class:`MacroModel`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from matscale.config import RunConfig


class MacroModel:
    """A fitted macroscopic model of a run folder.

    ``encode(states [N, *state]) -> z [N, d]`` (the system's observables first, then the
    normalised closure variables), ``sample(z0, n_steps, dt, n_paths=..., seed=..., <parameter>=...)``
    or ``sample(z0, ts=times, ...)`` (times in the system's time unit, substepped internally to at
    most twice the shortest training δt; a conditioned system takes its parameter, e.g.
    ``temperature_K=900.0``; see :meth:`matscale.sde.FittedSDE.sample` for shapes),
    ``observable_names``, ``sde``, ``config``, ``system`` (the large system), ``closure`` (None
    without closure), ``p``, ``method`` and ``folder`` (the ``p{p}`` run folder it came from).
    """

    def __init__(self, sde: Any, config: RunConfig, closure: Any, p: int, method: str,
                 folder: Path | None = None, system: Any = None) -> None:
        from matscale.pipeline.stages import observable_names
        from matscale.systems.registry import build_system

        self.sde, self.config, self.closure, self.p, self.method = sde, config, closure, p, method
        self.folder = folder
        _record_training_dt(sde, None if folder is None else folder / "fit" / method / "model.json")
        self.system = system if system is not None else build_system(config.system)
        d_closure = closure.arch.d_closure if closure is not None else 0
        self.observable_names: tuple[str, ...] = observable_names(self.system, d_closure)

    @property
    def parameter_name(self) -> str | None:
        """The conditioning parameter of ``sample`` (None for an unconditioned system)."""
        return self.system.parameter_name

    def encode(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states)
        shape = (self.system.size,) * self.system.grid_dim + tuple(self.system.cell_shape)
        if states.shape == shape:
            return self.encode(states[None])[0]
        if states.shape[1:] != shape:
            raise ValueError(f"states must have shape [N, {', '.join(map(str, shape))}], got {states.shape}")
        z = np.asarray(self.system.observables(states), dtype=np.float64)
        if self.closure is not None:
            z = np.concatenate([z, self.closure.encode(states)], axis=1)
        return z

    @property
    def n_sites(self) -> int:
        """Sites of the large system the SDE was learned for (K patches of the small box)."""
        return int(self.system.size ** self.system.grid_dim * math.prod(self.system.cell_shape))

    def sample(self, z0: np.ndarray, n_steps: int | None = None, dt: float | None = None, n_paths: int = 1,
               seed: int | None = None, method: str = "em", parameter: Any = None,
               n_sites: int | None = None, *, ts: Any = None, max_step: float | str | None = "auto",
               nonfinite: str = "raise", progress: str | None = None, **named: Any) -> np.ndarray:
        """Paths of the SDE from ``z0`` on the grid ``ts`` (increasing times, z0 at ts[0]) or
        ``dt * [0, ..., n_steps]``; ``parameter`` (or the keyword named by ``parameter_name``) is
        the conditioning value, a scalar or one per initial state.

        Each grid interval is crossed in equal substeps of at most ``max_step``: "auto" = twice
        the shortest training δt (a coarse reporting grid such as one sweep is safe), a number,
        or None for one step per interval. A NaN/inf state raises a one-line
        ``matscale.sde.NonFiniteRolloutError`` naming the cause (``nonfinite="keep"`` returns
        the paths instead).

        ``n_sites``: predict a system of another size n' (default: the trained one, n). The
        observables are means of patch shares whose increments are independent between distant
        patches, so the drift is intensive and the diffusion scales as sqrt(n / n') — the same
        scaling that makes lam = K the covariance factor of the patch-increment likelihood.
        """
        params = self._params(parameter, named)
        scale = 1.0
        if n_sites is not None:
            if int(n_sites) < 1:
                raise ValueError(f"n_sites must be a positive number of sites, got {n_sites}")
            scale = math.sqrt(self.n_sites / int(n_sites))
        return np.asarray(self.sde.sample(np.asarray(z0, dtype=np.float64), n_steps, dt, ts=ts,
                                          n_paths=n_paths, seed=seed, method=method, params=params,
                                          noise_scale=scale, max_step=max_step, nonfinite=nonfinite,
                                          progress=progress))

    def _params(self, parameter: Any, named: dict[str, Any]) -> Any:
        name = self.parameter_name
        unknown = sorted(set(named) - ({name} if name else set()))
        if unknown:
            raise TypeError(f"sample() got an unexpected keyword {unknown[0]!r}"
                            + (f" (the parameter is {name!r})" if name else ""))
        if name is not None and name in named:
            parameter = named[name]
        if name is None:
            if parameter is not None:
                raise ValueError("this model has no conditioning parameter; omit parameter")
            return None
        if parameter is None:
            raise ValueError(f"{name} is required: this model is conditioned on {name}")
        value = np.asarray(parameter, dtype=np.float64)
        return value.reshape(-1, 1) if value.ndim >= 1 else value.reshape(1)

    def __repr__(self) -> str:
        return (f"MacroModel({self.config.system.kind}, size={self.system.size}, p={self.p}, "
                f"method={self.method!r}, observables={self.observable_names})")


def predict_paths(model: MacroModel, initial_states: np.ndarray, n_steps: int, dt: float,
                  n_paths: int, *, substeps: int = 1, seed: int = 0,
                  params: np.ndarray | None = None, progress: str | None = None) -> np.ndarray:
    """Predicted macro paths from encoded initial states (``progress``: a bar's description).

    ``initial_states [C, R, *state]`` -> paths ``[C, n_paths, n_steps + 1, d]`` on the grid
    k * dt; path j of condition c starts from state j mod R (so the first R paths start from
    distinct direct runs). ``params [C]``: the conditioning value per condition (conditioned
    models). Without the condition axis, ``[R, *state] -> [n_paths, n_steps + 1, d]``. The SDE
    is integrated with step dt / substeps (further substepped when that is longer than the
    model's safe step). Non-finite paths are kept (the caller filters and counts them).
    """
    states = np.asarray(initial_states)
    n_state_axes = model.system.grid_dim + len(model.system.cell_shape)
    batched = states.ndim == n_state_axes + 2
    if not batched:
        states = states[None]
        params = None if params is None else np.asarray(params).reshape(1)
    C, R = states.shape[:2]
    z0 = model.encode(states.reshape(C * R, *states.shape[2:]))
    per_state = math.ceil(n_paths / R)
    parameter = None if params is None else np.repeat(np.asarray(params, dtype=np.float64), R)
    raw = np.asarray(model.sample(z0, n_steps * substeps, dt / substeps, n_paths=per_state,
                                  seed=seed, parameter=parameter, nonfinite="keep",
                                  progress=progress))
    raw = raw.reshape(C, R, per_state, n_steps * substeps + 1, -1)[:, :, :, ::substeps]
    paths = np.swapaxes(raw, 1, 2).reshape(C, per_state * R, n_steps + 1, -1)[:, :n_paths]
    return paths if batched else paths[0]


def _record_training_dt(sde: Any, model_json: Path | None) -> None:
    """Copy the shortest / median training δt of the fit stage's ``model.json`` into the SDE's
    config when the SDE does not record them itself (they set its safe rollout step)."""
    config = getattr(sde, "config", None)
    if not isinstance(config, dict) or (config.get("min_dt") and config.get("median_dt")):
        return
    if model_json is None or not model_json.is_file():
        return
    from matscale.io import read_json

    record = read_json(model_json)
    for key in ("min_dt", "median_dt"):
        if not config.get(key) and record.get(key):
            config[key] = float(record[key])


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
    from matscale.pipeline.runner import verify_stage

    for stage in ("fit", "closure"):  # damaged files are named with their remedy, never loaded
        if (pdir / stage / "stage.json").is_file():
            verify_stage(pdir / stage, stage)
    closure = None
    if (pdir / "closure" / "closure.json").is_file():
        from matscale.closure import ClosureModel

        closure = ClosureModel.load(pdir / "closure")
    return MacroModel(load_sde(pdir / "fit" / method / "sde"), cfg, closure, p, method, pdir)
