"""The fitted SDE: evaluate drift / diffusion in physical units, roll out, save and load."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matscale.io import reading

from .integrators import METHODS, integrate_grid, substep_counts
from .models import SDEModel
from .templates import IntegratorTemplate, site_values, template_from_record

DriftPrior = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
NONFINITE_MODES = ("raise", "keep")

# The default internal step of ``FittedSDE.sample`` is at most SAFE_STEP_FACTOR x the shortest
# training δt. Reason: a drift fitted with the Euler likelihood to pairs a time δt apart has, along
# any relaxation mode of rate r, the linear rate r_fit = (1 - exp(-r δt)) / δt < 1 / δt, so an
# Euler step h keeps that mode stable (|1 - r_fit h| < 1) for every h < 2 / r_fit, in particular
# for h <= 2 δt; h = δt reproduces the fitted one-step mean exactly. Longer steps can overshoot and
# blow up (the NaN rollouts of a model sampled on a coarse reporting grid).
SAFE_STEP_FACTOR = 2.0
# Fallback training support (without recorded z_min / z_max): mean +- this many standard deviations.
SUPPORT_STDS = 5.0


class NonFiniteRolloutError(FloatingPointError):
    """A rollout reached NaN/inf; the one-line message names the step size or the support exit."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CPU; "cuda" only when available (clear error otherwise)."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    return dev


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device``: from an int seed, passed through, or fresh OS entropy for None."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative int, a torch.Generator or None; got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _time_grid(ts: Any, n_steps: Any, dt: Any) -> tuple[np.ndarray, np.ndarray]:
    """(grid times [n + 1], interval lengths [n]) from ``ts`` or from ``n_steps`` x ``dt``."""
    if ts is not None:
        if n_steps is not None or dt is not None:
            raise ValueError("ts: give either ts or n_steps and dt, not both")
        times = np.asarray(ts.detach().cpu().numpy() if isinstance(ts, torch.Tensor) else ts, dtype=np.float64)
        if times.ndim != 1 or times.size < 1:
            raise ValueError(f"ts: must be a 1-D sequence of at least one time, got shape {list(times.shape)}")
        if not np.isfinite(times).all():
            raise ValueError("ts: contains NaN or inf")
        intervals = np.diff(times)
        if (intervals <= 0).any():
            raise ValueError(f"ts: must be strictly increasing (step {intervals.min():.4g} at index "
                             f"{int(np.argmin(intervals))})")
        return times, intervals
    if n_steps is None or dt is None:
        raise ValueError("n_steps: give n_steps and dt, or ts")
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps: must be an int >= 0, got {n_steps!r}")
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt: must be a finite number > 0, got {dt}")
    return dt * np.arange(int(n_steps) + 1, dtype=np.float64), np.full(int(n_steps), dt)


class FittedSDE:
    """A fitted dz = mu(z, p) dt + sigma(z, p) dW in the physical units of the training data.

    Attributes: ``config`` (JSON-able dict), ``history`` (per-epoch "train"/"val" NLL in nats per
    pair and "lr"), ``dim`` (d), ``n_params`` (q), ``model`` (the torch module).

    It is also an SDE object for ``torchsde.sdeint(sde, y0, ts)``: ``f(t, y)``, ``g(t, y)``,
    ``noise_type`` ("diagonal" or "general") and ``sde_type`` ("ito"); with conditioning inputs
    use ``sde.conditioned(params)``.

    Fitted through an integrator template (``template``, :mod:`matscale.sde.templates`), the
    networks are the template's per-site force and noise: evaluate them with
    ``learned_functions(x)``; ``sample`` rolls out with the template's step, and the drift /
    diffusion / torchsde views of the whole state are not defined (one-line ValueError).
    """

    sde_type = "ito"

    def __init__(self, model: SDEModel, config: dict[str, Any], history: dict[str, list] | None = None,
                 drift_prior: DriftPrior | None = None, template: IntegratorTemplate | None = None):
        self.model = model.eval()
        self.config = config
        self.history = history or {"train": [], "val": [], "lr": []}
        self.drift_prior = drift_prior
        self.template = template

    def __repr__(self) -> str:
        through = "" if self.template is None else f", template={self.template!r}"
        return (f"FittedSDE(dim={self.dim}, n_params={self.n_params}, diffusion={self.config['diffusion']!r}, "
                f"loss={self.config['loss']!r}{through})")

    @property
    def dim(self) -> int:
        return self.model.dim if self.template is None else self.template.dim

    @property
    def n_params(self) -> int:
        return self.model.n_params if self.template is None else 0

    @property
    def device(self) -> torch.device:
        return self.model.z_loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.z_loc.dtype

    # ------------------------------------------------------------------ input handling
    def _as_tensor(self, x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
        t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64))
        return t.to(device=device or self.device, dtype=self.dtype)

    def _states(self, z: Any, device: torch.device | None = None) -> torch.Tensor:
        zt = self._as_tensor(z, "z", device)
        if zt.dim() == 1 and self.dim == 1:
            zt = zt[:, None]
        if zt.dim() != 2 or zt.shape[1] != self.dim:
            raise ValueError(f"z: expected shape [N, {self.dim}], got {list(zt.shape)}")
        return zt

    def _params(self, params: Any, n: int, device: torch.device | None = None) -> torch.Tensor | None:
        q = self.n_params
        if params is None:
            if q > 0:
                raise ValueError(f"params: the SDE was fitted with {q} conditioning inputs; pass params of shape [N, {q}] or [{q}]")
            return None
        if q == 0:
            raise ValueError("params: the SDE was fitted without conditioning inputs; pass params=None")
        pt = self._as_tensor(params, "params", device)
        if pt.dim() == 1:
            pt = pt.view(1, q) if pt.shape[0] == q else pt.view(-1, 1) if q == 1 else pt
        if pt.dim() != 2 or pt.shape[1] != q or pt.shape[0] not in (1, n):
            raise ValueError(f"params: expected shape [{n}, {q}] or [{q}], got {list(pt.shape)}")
        return pt.expand(n, q)

    @staticmethod
    def _output(x: torch.Tensor, like: Any) -> Any:
        return x.detach() if isinstance(like, torch.Tensor) else x.detach().cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ coefficients
    def _drift_t(self, z: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        return self._coefficients_t(z, p)[0]

    def _sigma_t(self, z: torch.Tensor, p: torch.Tensor | None, *, diagonal_ok: bool = False) -> torch.Tensor:
        sigma = self._coefficients_t(z, p)[1]
        return torch.diag_embed(sigma) if self.model.diagonal and not diagonal_ok else sigma

    def _coefficients_t(self, z: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift [B, d], sigma [B, d] if diagonal else [B, d, d]) from one network pass."""
        if self.template is not None:
            raise ValueError(f"drift: this SDE was fitted through template {self.template.name!r}; its networks "
                             f"are the per-site force and noise, evaluate them with sde.learned_functions(x)")
        m = self.model
        mu_u, sig_u = m.standardized(m.standardize_state(z), m.standardize_params(p))
        mu = mu_u * m.z_scale / m.time_scale
        if self.drift_prior is not None:
            mu = mu + torch.as_tensor(self.drift_prior(z, p), dtype=z.dtype, device=z.device)
        if m.diagonal:
            return mu, sig_u * m.z_scale / m.time_scale.sqrt()
        return mu, m.z_scale[:, None] * sig_u / m.time_scale.sqrt()

    def learned_functions(self, x: Any) -> tuple[Any, Any]:
        """A template fit's learned functions at site inputs x [N, n_features] (the template's
        ``feature_names``): (force [N, n_outputs], noise amplitude [N, n_outputs]) in the
        template's physical units (numpy in -> numpy out, torch in -> torch out)."""
        t = self.template
        if t is None:
            raise ValueError("learned_functions: this SDE was fitted without a template; use drift(z) and diffusion(z)")
        xt = self._as_tensor(x, "x")
        if xt.dim() == 1 and t.n_features == 1:
            xt = xt[:, None]
        if xt.dim() != 2 or xt.shape[1] != t.n_features:
            raise ValueError(f"x: expected shape [N, {t.n_features}] ({', '.join(t.feature_names)}), got {list(xt.shape)}")
        with torch.no_grad():
            force, noise = site_values(self.model, xt.unsqueeze(1))
        return self._output(force[:, 0], x), self._output(noise[:, 0], x)

    def drift(self, z: Any, params: Any = None) -> Any:
        """Drift mu(z, p) [N, d] in [z]/[t] (numpy in -> numpy out, torch in -> torch out)."""
        zt = self._states(z)
        with torch.no_grad():
            return self._output(self._drift_t(zt, self._params(params, zt.shape[0])), z)

    def diffusion(self, z: Any, params: Any = None) -> Any:
        """Diffusion matrix sigma(z, p) [N, d, d] in [z]/sqrt([t]), with Sigma = sigma sigma^T."""
        zt = self._states(z)
        with torch.no_grad():
            return self._output(self._sigma_t(zt, self._params(params, zt.shape[0])), z)

    def covariance(self, z: Any, params: Any = None) -> Any:
        """Sigma(z, p) = sigma sigma^T [N, d, d] in [z]^2/[t]."""
        zt = self._states(z)
        with torch.no_grad():
            sig = self._sigma_t(zt, self._params(params, zt.shape[0]))
            return self._output(sig @ sig.transpose(-1, -2), z)

    # ------------------------------------------------------------------ time steps and support
    @property
    def training_dt(self) -> tuple[float, float]:
        """(shortest, median) training step δt [t]. Read from ``config["min_dt"]`` and
        ``config["median_dt"]``; a config without them falls back to the model's time scale
        (the median training δt) for both."""
        median = self.config.get("median_dt")
        median = float(median) if median else float(self.model.time_scale)
        shortest = self.config.get("min_dt")
        return (float(shortest) if shortest else median), median

    @property
    def safe_step(self) -> float:
        """Largest internal integration step of ``sample(max_step="auto")``:
        ``SAFE_STEP_FACTOR`` x the shortest training δt (see ``SAFE_STEP_FACTOR``)."""
        return SAFE_STEP_FACTOR * self.training_dt[0]

    @property
    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """(low [d], high [d]): the box of states the SDE was identified on, from
        ``config["z_min"]`` / ``config["z_max"]`` when recorded, else the training mean
        +- ``SUPPORT_STDS`` standard deviations."""
        if self.config.get("z_min") is not None and self.config.get("z_max") is not None:
            return (np.asarray(self.config["z_min"], dtype=np.float64).reshape(self.dim),
                    np.asarray(self.config["z_max"], dtype=np.float64).reshape(self.dim))
        loc = self.model.z_loc.detach().cpu().double().numpy()
        scale = self.model.z_scale.detach().cpu().double().numpy()
        return loc - SUPPORT_STDS * scale, loc + SUPPORT_STDS * scale

    # ------------------------------------------------------------------ torchsde interface
    @property
    def noise_type(self) -> str:
        """torchsde noise type: "diagonal" (g(t, y) is [B, d]) or "general" (g is [B, d, d])."""
        return "diagonal" if self.model.diagonal else "general"

    def conditioned(self, params: Any = None, *, noise_scale: float = 1.0) -> "ConditionedSDE":
        """A torch module with ``f``, ``g``, ``f_and_g``, ``noise_type`` and ``sde_type`` for
        ``torchsde.sdeint``, the conditioning inputs bound: ``params`` [q] (every path) or [B, q]
        (one row per path), None for an unconditioned SDE. ``noise_scale`` multiplies sigma."""
        return ConditionedSDE(self, params, noise_scale)

    def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """torchsde drift f(t, y) = mu(y) [B, d] (autonomous: t is ignored). An SDE with
        conditioning inputs needs them bound first: ``self.conditioned(params)``."""
        return self._unconditioned("f").f(t, y)

    def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """torchsde diffusion g(t, y): sigma(y) [B, d] (diagonal) or [B, d, d] (general)."""
        return self._unconditioned("g").g(t, y)

    def f_and_g(self, t: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(t, y), g(t, y))`` from one network pass."""
        return self._unconditioned("f_and_g").f_and_g(t, y)

    def _unconditioned(self, name: str) -> "ConditionedSDE":
        if self.n_params > 0:
            raise ValueError(f"params: the SDE was fitted with {self.n_params} conditioning inputs; "
                             f"bind them with sde.conditioned(params) and call {name} on that")
        view = self.__dict__.get("_torchsde_view")
        if view is None:
            view = self.__dict__["_torchsde_view"] = ConditionedSDE(self, None, 1.0)
        return view

    # ------------------------------------------------------------------ rollout
    def sample(self, z0: Any, n_steps: int | None = None, dt: float | None = None, *, ts: Any = None,
               n_paths: int = 1, params: Any = None, seed: int | torch.Generator | None = None,
               method: str = "em", device: str | torch.device | None = None, noise_scale: float = 1.0,
               max_step: float | str | None = "auto", nonfinite: str = "raise",
               progress: str | None = None) -> Any:
        """Roll out ``n_paths`` paths per initial state and return them on a time grid.

        The grid is either ``ts`` (increasing 1-D times [t]; z0 is the state at ts[0]) or
        ``n_steps`` intervals of ``dt`` (the grid dt * [0, 1, ..., n_steps]).
        z0 [d] -> [n_paths, n_t, d]; z0 [M, d] -> [M, n_paths, n_t, d], n_t = len(ts) or
        n_steps + 1, index 0 = z0. params: [q] (shared) or [M, q]. Same seed -> same paths (on
        the same device). ``method``: "em" or "milstein" (diagonal diffusions only).
        ``noise_scale`` multiplies sigma (e.g. sqrt(n / n') for a system of n' instead of n
        sites when the noise is a sum of independent local contributions).

        ``max_step``: each grid interval is crossed in equal substeps no longer than this.
        "auto" (default): ``self.safe_step`` (twice the shortest training δt); a number [t]: that
        bound; None: one step per grid interval, whatever its length.
        ``nonfinite``: "raise" (default) stops at the first NaN/inf state with a
        ``NonFiniteRolloutError`` naming the cause (a step too long for the training δt, or the
        state leaving the training support, with the time and the state range); "keep" returns
        the paths as they are (for callers that count diverged paths).
        ``progress``: a description to show a progress bar over the grid (None: quiet).
        """
        if not (isinstance(noise_scale, (int, float)) and np.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
        if method not in METHODS:
            raise ValueError(f"method: unknown {method!r}; allowed: {', '.join(METHODS)}")
        if self.template is not None and method != "em":
            raise ValueError(f"method: a template SDE rolls out with template {self.template.name!r}; pass method='em'")
        if method == "milstein" and not self.model.diagonal:
            raise ValueError(f"method: 'milstein' needs a diagonal diffusion, this SDE has {self.config['diffusion']!r}")
        if not isinstance(n_paths, (int, np.integer)) or n_paths < 1:
            raise ValueError(f"n_paths: must be an int >= 1, got {n_paths!r}")
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite: unknown {nonfinite!r}; allowed: {', '.join(NONFINITE_MODES)}")
        times, intervals = _time_grid(ts, n_steps, dt)
        step_bound = self._step_bound(max_step)
        if self.template is not None and self.template.fixed_dt is not None:
            step_bound = self.template.fixed_dt   # every substep must be exactly that step
            for h in intervals / substep_counts(intervals, step_bound):
                self.template.check_step(float(h), "ts" if ts is not None else "dt")
        dev = resolve_device(device) if device is not None else self.device
        z_start = self._as_tensor(z0, "z0", dev)
        single = z_start.dim() == 1
        if single:
            z_start = z_start.view(1, -1)
        if z_start.dim() != 2 or z_start.shape[1] != self.dim:
            raise ValueError(f"z0: expected shape [{self.dim}] or [M, {self.dim}], got {list(np.shape(z0))}")
        if not torch.isfinite(z_start).all():
            raise ValueError("z0: contains NaN or inf")
        n_start = z_start.shape[0]
        p = self._params(params, n_start, dev)
        z_flat = z_start.repeat_interleave(n_paths, dim=0)
        p_flat = None if p is None else p.repeat_interleave(n_paths, dim=0)
        model_device = self.device
        if dev != model_device:
            self.model.to(dev)
        try:
            gen = make_generator(seed, dev)
            scale = float(noise_scale)

            def coefficients(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                mu, sigma = self._coefficients_t(z, p_flat)
                return mu, sigma if scale == 1.0 else sigma * scale

            step_fn = None
            if self.template is not None:
                template, model = self.template, self.model

                def sites(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                    force, noise = site_values(model, x)
                    return force, noise if scale == 1.0 else noise * scale

                def step_fn(z: torch.Tensor, h: float, generator: torch.Generator) -> torch.Tensor:
                    return template.step(z, h, sites, generator)

            paths, counts, first_bad = integrate_grid(
                lambda z: self._drift_t(z, p_flat), lambda z: self._sigma_t(z, p_flat, diagonal_ok=True) * scale,
                z_flat, intervals, gen, method, max_step=step_bound, coefficients_fn=coefficients,
                stop_on_nonfinite=nonfinite == "raise", progress=progress, step_fn=step_fn)
        finally:
            if dev != model_device:
                self.model.to(model_device)
        if first_bad is not None and nonfinite == "raise":
            raise NonFiniteRolloutError(self._nonfinite_message(paths, times, intervals / counts, first_bad))
        paths = paths.view(n_start, n_paths, len(times), self.dim)
        if single:
            paths = paths[0]
        return paths if isinstance(z0, torch.Tensor) else paths.cpu().numpy().astype(np.float64)

    def _step_bound(self, max_step: float | str | None) -> float | None:
        if max_step is None:
            return None
        if isinstance(max_step, str):
            if max_step != "auto":
                raise ValueError(f"max_step: must be 'auto', a number > 0 or None, got {max_step!r}")
            return self.safe_step
        if not (isinstance(max_step, (int, float, np.integer, np.floating)) and np.isfinite(max_step) and max_step > 0):
            raise ValueError(f"max_step: must be 'auto', a finite number > 0 or None, got {max_step!r}")
        return float(max_step)

    def _nonfinite_message(self, paths: torch.Tensor, times: np.ndarray, steps: np.ndarray, first_bad: int) -> str:
        """One line naming why the rollout produced NaN/inf at grid index ``first_bad``: a step
        above the safe step, else the state leaving the training support, else the model output."""
        z = paths[:, :first_bad + 1].detach().cpu().double().numpy()   # [B, first_bad + 1, d]
        t_bad = float(times[first_bad])
        step = float(np.max(steps[:first_bad])) if first_bad > 0 else float("nan")   # largest step used
        shortest, median = self.training_dt
        head = f"sample: non-finite paths from t={t_bad:.4g} on"
        low, high = self.support
        with np.errstate(invalid="ignore"):
            outside = ~np.isfinite(z) | (z < low) | (z > high)         # [B, n, d]
        first_out = int(np.argmax(outside.any(axis=(0, 2))))
        finite_before = first_out < first_bad or (np.isfinite(z[:, first_out]) & outside[:, first_out]).any()
        left = ""
        if finite_before:
            at = z[:, first_out]
            comp = int(np.argmax((np.isfinite(at) & outside[:, first_out]).sum(axis=0)))
            vals = at[:, comp][np.isfinite(at[:, comp])]
            left = (f"the state left the training support first at t={times[first_out]:.4g} "
                    f"(z[{comp}] in [{vals.min():.4g}, {vals.max():.4g}], support [{low[comp]:.4g}, {high[comp]:.4g}])")
        if step > self.safe_step * (1 + 1e-6):
            return (f"{head}: the integration step {step:.4g} is {step / shortest:.3g}x the shortest training "
                    f"dt {shortest:.4g} (median {median:.4g}); Euler-type steps are only reliable up to "
                    f"{self.safe_step:.4g} ({SAFE_STEP_FACTOR:g}x the shortest training dt), use max_step='auto' "
                    f"or a smaller max_step" + (f"; {left}" if left else ""))
        if left:
            return (f"{head} with step {step:.4g} (safe up to {self.safe_step:.4g}): {left}; the fitted SDE "
                    f"is not valid outside its training data, start inside it or shorten the horizon")
        return (f"{head} with step {step:.4g} (safe up to {self.safe_step:.4g}) while every state stayed inside "
                f"the training support: the drift or diffusion returned NaN/inf (check the weights)")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save state_dict + JSON config (+ history). ``*.pt`` -> one file; otherwise a directory
        holding ``model.pt`` and ``config.json``. Loadable with torch.load(weights_only=True)."""
        path = Path(path)
        payload = {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                   "config_json": json.dumps(self.config), "history_json": json.dumps(self.history)}
        if path.suffix == ".pt":
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_torch_save(payload, path)
            return path
        path.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(payload, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))
        return path


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_model(config: dict[str, Any]) -> SDEModel:
    """An untrained SDEModel with the architecture recorded in ``config``. A template fit's model
    maps the template's site features to its outputs: "state" = the first n_outputs features,
    conditioning inputs = the rest (``templates.site_values``)."""
    record = config.get("template")
    if record:
        n_out = int(record["n_outputs"])
        return SDEModel(n_out, int(record["n_features"]) - n_out, diffusion=config["diffusion"],
                        hidden=tuple(config["hidden"]), activation=config["activation"], floor=config["floor"])
    return SDEModel(config["dim"], config["n_params"], diffusion=config["diffusion"],
                    hidden=tuple(config["hidden"]), activation=config["activation"], floor=config["floor"])


def load_sde(path: str | os.PathLike, *, drift_prior: DriftPrior | None = None,
             device: str | torch.device | None = None) -> FittedSDE:
    """Load a FittedSDE written by ``FittedSDE.save`` (a ``.pt`` file or a directory).

    A model fitted with a ``drift_prior`` needs the same callable again (code is never stored).
    """
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"path: no saved SDE at {file}")
    with reading(file):  # a truncated or foreign file is one line naming it, not a torch traceback
        payload = torch.load(file, map_location="cpu", weights_only=True)
        config = json.loads(payload["config_json"])
    if config.get("drift_prior") and drift_prior is None:
        raise ValueError(f"drift_prior: this SDE was fitted with drift prior {config['drift_prior']!r}; pass it to load_sde")
    if not config.get("drift_prior") and drift_prior is not None:
        raise ValueError("drift_prior: this SDE was fitted without a drift prior; pass drift_prior=None")
    template = None
    if config.get("template"):
        try:
            template = template_from_record(config["template"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{file}: {exc}") from None
    model = build_model(config)
    dtype = getattr(torch, config.get("dtype", "float32"))
    model.to(dtype=dtype)
    with reading(file):
        model.load_state_dict(payload["state_dict"])
    model.to(resolve_device(device))
    return FittedSDE(model, config, json.loads(payload.get("history_json", "null")), drift_prior, template)


class ConditionedSDE(torch.nn.Module):
    """A FittedSDE with its conditioning inputs bound, as a torchsde SDE module:
    ``f(t, y) -> [B, d]``, ``g(t, y) -> [B, d]`` (noise_type "diagonal") or ``[B, d, d]``
    ("general"), ``f_and_g``; ``sde_type`` "ito". Autonomous (t is ignored). y may have another
    floating dtype than the model: it is evaluated in the model's dtype and returned in y's.
    Gradients flow to the model's parameters when grad mode is on."""

    sde_type = "ito"

    def __init__(self, fitted: FittedSDE, params: Any = None, noise_scale: float = 1.0):
        super().__init__()
        if not (isinstance(noise_scale, (int, float)) and np.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
        self.fitted = [fitted]          # a list: not registered, the model below is
        self.model = fitted.model
        self.noise_type = fitted.noise_type
        self.noise_scale = float(noise_scale)
        if params is None:
            fitted._params(None, 1)      # raises when the SDE needs params
            self.register_buffer("params", None)
        else:
            pt = fitted._as_tensor(params, "params")
            q = fitted.n_params
            if q == 0:
                raise ValueError("params: the SDE was fitted without conditioning inputs; pass params=None")
            if pt.dim() == 1 and pt.shape[0] == q:
                pt = pt.view(1, q)
            if pt.dim() != 2 or pt.shape[1] != q:
                raise ValueError(f"params: expected shape [{q}] or [B, {q}], got {list(pt.shape)}")
            self.register_buffer("params", pt)

    def _bound(self, y: torch.Tensor) -> torch.Tensor | None:
        if self.params is None:
            return None
        if self.params.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"params: {self.params.shape[0]} rows bound, but the state batch has {y.shape[0]}")
        return self.params.expand(y.shape[0], -1)

    def f_and_g(self, t: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fitted = self.fitted[0]
        z = y.to(fitted.dtype)
        mu, sigma = fitted._coefficients_t(z, self._bound(z))
        if self.noise_scale != 1.0:
            sigma = sigma * self.noise_scale
        return mu.to(y.dtype), sigma.to(y.dtype)

    def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        fitted = self.fitted[0]
        z = y.to(fitted.dtype)
        return fitted._drift_t(z, self._bound(z)).to(y.dtype)

    def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(t, y)[1]
