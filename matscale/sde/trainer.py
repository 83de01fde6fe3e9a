"""``fit_sde``: identify dz = mu(z, p) dt + sigma(z, p) dW from scattered pairs (z0, z1, dt).

Training runs in the standardised frame of ``models.py``. The data live in one tensor on the
device and each epoch indexes it with a seeded permutation (no DataLoader, no per-sample Python
work). AdamW, a learning-rate schedule, checkpoints with resume, and a clear stop on a NaN/inf loss.

Built for noise-dominated pairs (per-pair signal-to-noise |sigma^-1 mu| sqrt(dt) well below 1,
as in partial-evolution data), where the validation NLL barely resolves the drift:
    * the fit starts from the weighted least-squares linear drift and constant noise, and the
      linear drift is stepped in units of the drift's scale;
    * a power-function moving average of the weights is what is validated and returned;
    * early stopping and the plateau schedule count only improvements larger than one standard
      error of the per-pair validation difference, with patience in training pairs, not epochs;
    * the networks replace the starting linear model only if they beat it clearly.
``benchmarks/bench_estimator.py`` compares the result with kernel regression on the same pairs.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from .fitted import DriftPrior, FittedSDE, _atomic_torch_save, build_model, make_generator, resolve_device
from .losses import LOSSES, em_nll, milstein_nll
from .memory import retain_freed_memory
from .models import ACTIVATIONS, DIFFUSION_KINDS, SDEModel
from .templates import IntegratorTemplate, site_values

SCHEDULES = ("plateau", "cosine", "none")
DRIFT_SCHEMES = ("euler", "heun")
CHECKPOINT_FILE = "checkpoint.pt"
# The fitted networks replace the starting linear model (weighted least-squares drift, constant
# noise) only if their validation NLL is lower by more than START_MARGIN standard errors of the
# per-pair difference. The epoch compared is chosen among many after looking at the validation
# pairs, so its apparent gain is biased upwards (in pairs from a linear SDE, gains of 1-1.7 SE
# over the start are typical noise); at 2 SE a single one-sided comparison passes noise 2.3 % of
# the time. When the data show no structure beyond the linear model, that model is the better
# estimate: networks trained on them only add fitted noise.
START_MARGIN = 2.0
# Default early-stopping patience: 20 epochs, but at least 10^6 training pairs' worth of
# optimiser steps (500 steps at the default batch). Each Adam step moves a weight by about lr,
# whatever the data size, so learning the drift from noisy increments takes a number of steps,
# not of epochs: with 10^4 pairs an epoch is only 5 steps.
PATIENCE_EPOCHS = 20
PATIENCE_SAMPLES = 1_000_000
# options a resumed run must share with the checkpointed one (the others, e.g. epochs, may change)
RESUME_KEYS = ("dim", "n_params", "diffusion", "hidden", "activation", "floor", "loss", "lam", "drift_scheme",
               "jitter", "drift_prior", "drift_prior_fingerprint", "seed", "data_fingerprint",
               "validation_fraction", "dtype", "weight_average", "template")
#: diffusion forms a template fit accepts (the template's noise is diagonal per learned output)
TEMPLATE_DIFFUSIONS = ("diagonal", "constant_diagonal")


class TrainingDivergedError(FloatingPointError):
    """A NaN/inf training or validation loss. ``.result`` holds the FittedSDE with the best
    weights seen before the failure; the checkpoint on disk (if any) is the last good one."""

    def __init__(self, message: str, result: FittedSDE | None):
        super().__init__(message)
        self.result = result


# ====================================================================== input validation
def _as_2d(name: str, x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: must be a numeric array, got {type(x).__name__}") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape [N, d], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _validate_inputs(z0, z1, dt, params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    z0a, z1a = _as_2d("z0", z0), _as_2d("z1", z1)
    if z0a.shape != z1a.shape:
        raise ValueError(f"z1: shape {list(z1a.shape)} does not match z0 shape {list(z0a.shape)}")
    n = z0a.shape[0]
    if n < 2:
        raise ValueError(f"z0: need at least 2 pairs, got {n}")
    dta = np.asarray(dt.detach().cpu().numpy() if isinstance(dt, torch.Tensor) else dt, dtype=np.float64)
    if np.ndim(z0) == 1 and dta.ndim == 0:  # [N] with one scalar step: say how it was read
        warnings.warn(f"z0 is 1-D (shape [{n}]): taken as {n} pairs of a one-dimensional state; "
                      "pass z0[:, None] (shape [N, 1]) to say so, or shape [1, d] for one "
                      "d-dimensional state", UserWarning, stacklevel=3)
    if dta.ndim == 0:
        dta = np.full(n, float(dta))
    dta = dta.reshape(-1) if dta.ndim == 2 and dta.shape[1] == 1 else dta
    if dta.shape != (n,):
        raise ValueError(f"dt: expected a scalar or shape [{n}], got {list(dta.shape)}")
    if not np.isfinite(dta).all():
        raise ValueError("dt: contains NaN or inf")
    if (dta <= 0).any():
        raise ValueError(f"dt: every step must be > 0, got min {dta.min():.3g}")
    pa = None
    if params is not None:
        pa = _as_2d("params", params)
        if pa.shape[0] != n:
            raise ValueError(f"params: expected {n} rows (one per pair), got {pa.shape[0]}")
    return z0a, z1a, dta, pa


def _validate_options(loss: str, lam: float, diffusion: str, hidden, activation: str, epochs: int,
                      batch_size: int, lr: float, validation_fraction: float, schedule: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r}; allowed: {', '.join(LOSSES)}")
    if diffusion not in DIFFUSION_KINDS:
        raise ValueError(f"diffusion: unknown {diffusion!r}; allowed: {', '.join(DIFFUSION_KINDS)}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam: must be a finite number > 0, got {lam!r}")
    if loss != "partial" and lam != 1.0:
        raise ValueError(f"lam: only loss='partial' uses lam; got lam={lam} with loss={loss!r}")
    if loss == "milstein" and diffusion not in ("diagonal", "constant_diagonal"):
        raise ValueError(f"diffusion: loss='milstein' needs 'diagonal' or 'constant_diagonal', got {diffusion!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if len(hidden) == 0 or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden: need at least one positive layer width, got {tuple(hidden)}")
    if int(epochs) < 1:
        raise ValueError(f"epochs: must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction: must be in [0, 1), got {validation_fraction}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown {schedule!r}; allowed: {', '.join(SCHEDULES)}")


# ====================================================================== standardisation
@dataclass
class _Scales:
    z_loc: np.ndarray
    z_scale: np.ndarray
    p_loc: np.ndarray
    p_scale: np.ndarray
    time_scale: float


def _robust_std(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return np.where(std > 0, std, np.maximum(np.abs(x.mean(axis=0)), 1.0))


def _input_scales(z0: np.ndarray, dt: np.ndarray, params: np.ndarray | None) -> _Scales:
    q = 0 if params is None else params.shape[1]
    p_loc = np.zeros(q) if params is None else params.mean(axis=0)
    p_scale = np.ones(q) if params is None else _robust_std(params)
    return _Scales(z0.mean(axis=0), _robust_std(z0), p_loc, p_scale, float(np.median(dt)))


def _output_scales(u0: np.ndarray, du: np.ndarray, s: np.ndarray, p_std: np.ndarray | None,
                   lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Typical drift [u per scaled time] and sigma [u per sqrt scaled time] per component.

    Weighted least squares du ~ s f(u, p) (weights 1/s, the EM noise variance scaling) with f an
    additive cubic polynomial of the standardised inputs gives the drift scale (RMS of f) and,
    from its residuals, the noise scale sqrt(mean(res^2 / s) / lam). A linear f would do for the
    noise, but not for the drift scale: for a drift like z - z^3 on a symmetric support the best
    linear fit is ~0, and the networks (whose output is in units of the drift scale) would start
    far too small. Floors keep both scales positive for (near-)deterministic parts.
    Also returns the weighted least-squares linear drift (matrix [d + q, d] acting on [u, p_std],
    offset [d]) the model starts from.
    """
    inputs = u0 if p_std is None else np.hstack([u0, p_std])
    ones = np.ones((u0.shape[0], 1))
    root = np.sqrt(s)[:, None]

    def wls(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef, *_ = np.linalg.lstsq(feats * root, du / root, rcond=None)
        return coef, feats @ coef

    coef, _ = wls(np.hstack([inputs, ones]))
    _, cubic = wls(np.hstack([inputs, inputs**2, inputs**3, ones]))
    res = du - cubic * s[:, None]
    diff_scale = np.sqrt(np.mean(res**2 / s[:, None], axis=0) / lam)
    diff_scale = np.maximum(diff_scale, 1e-3 * diff_scale.max() + 1e-12)
    drift_scale = np.sqrt(np.mean(cubic**2, axis=0))
    drift_scale = np.maximum(drift_scale, 1e-2 * max(drift_scale.max(), diff_scale.max()))
    return drift_scale, diff_scale, coef[:-1], coef[-1]


def _set_buffers(model: SDEModel, sc: _Scales, drift_scale: np.ndarray, diff_scale: np.ndarray,
                 linear: np.ndarray, offset: np.ndarray) -> None:
    with torch.no_grad():
        model.drift_linear.copy_(torch.as_tensor(linear, dtype=model.drift_linear.dtype))
        model.drift_offset.copy_(torch.as_tensor(offset, dtype=model.drift_offset.dtype))
        for name, value in (("z_loc", sc.z_loc), ("z_scale", sc.z_scale), ("p_loc", sc.p_loc),
                            ("p_scale", sc.p_scale), ("time_scale", sc.time_scale),
                            ("drift_scale", drift_scale), ("diff_scale", diff_scale)):
            buf = getattr(model, name)
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))
        if model.kind == "constant_diagonal":
            model.sigma_const.zero_()


# ====================================================================== the loss on a batch
class _BatchLoss:
    """Mean NLL (standardised frame) of a batch row block [u0 | du_residual | s | p_std]."""

    def __init__(self, model: SDEModel, loss: str, lam: float, jitter: float,
                 drift_scheme: str = "euler", template: IntegratorTemplate | None = None):
        self.model, self.loss, self.lam = model, loss, float(lam)
        self.template = template  # rows are then [z0 | z1 | dt] in physical units
        self.heun = drift_scheme == "heun"
        self.d, self.q = model.dim, model.n_params
        self.structure = "diagonal" if model.diagonal else "triangular" if model.kind == "cholesky" else "general"
        self.jitter_rel = float(jitter)

    def per_sample(self, batch: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
        if self.template is not None:
            return self._templated(batch)
        d, q, m = self.d, self.q, self.model
        u0, du, s = batch[:, :d], batch[:, d:2 * d], batch[:, 2 * d]
        p_std = batch[:, 2 * d + 1:2 * d + 1 + q] if q else None
        if self.loss == "milstein":
            return self._milstein(u0, du, s, p_std, create_graph)
        mu, sigma = m.standardized(u0, p_std)
        if self.heun:  # mean increment of one Heun step: s (mu(u0) + mu(u0 + mu s)) / 2
            mu_end = m.standardized_drift(u0 + mu * s.unsqueeze(-1), p_std)
            mu = 0.5 * (mu + mu_end)
        jitter = self.jitter_rel * m.diff_scale.square() if self.structure == "general" else None
        return em_nll(du, s, mu, sigma, structure=self.structure, lam=self.lam, jitter=jitter)

    def _templated(self, batch: torch.Tensor) -> torch.Tensor:
        """NLL of the template's step: mean and covariance of the noisy part of z1 from the
        template, the learned force and noise at the template's sites of z0."""
        t = self.template
        d = t.dim
        z0, z1, dt = batch[:, :d], batch[:, d:2 * d], batch[:, 2 * d]
        force, noise = site_values(self.model, t.features(z0))
        return t.nll(z0, z1, dt, force, noise)

    def _milstein(self, u0, du, s, p_std, create_graph: bool) -> torch.Tensor:
        m = self.model
        if m.kind == "constant_diagonal":
            mu, sigma = m.standardized(u0, p_std)
            return milstein_nll(du, s, mu, sigma, torch.zeros_like(sigma))
        with torch.enable_grad():
            u = u0.detach().requires_grad_(True)
            mu, sigma = m.standardized(u, p_std)
            grads = []
            for i in range(self.d):
                (g,) = torch.autograd.grad(sigma[:, i].sum(), u, create_graph=create_graph, retain_graph=True)
                grads.append(g[:, i])
            dsigma = torch.stack(grads, dim=1)
            return milstein_nll(du, s, mu, sigma, dsigma)

    def values_over(self, data: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Per-pair NLL [n] (float64) over ``data`` without parameter gradients."""
        parts = []
        for start in range(0, data.shape[0], chunk):
            block = data[start:start + chunk]
            if self.loss == "milstein":
                value = self.per_sample(block, create_graph=False).detach()
            else:
                with torch.no_grad():
                    value = self.per_sample(block)
            parts.append(value.to(torch.float64))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=data.device)


# ====================================================================== optimisation helpers
def _start_at_linear_fit(model: SDEModel) -> None:
    """Zero the output layers: the untrained model is the weighted least-squares linear drift and
    the constant residual noise of ``_output_scales``. The networks then only add what the pairs
    support, instead of first unlearning a random function, which in noise-dominated data costs
    many noisy steps."""
    with torch.no_grad():
        out = model.net.out_a if model.net is not None else model.drift_net.out
        out.weight.zero_()
        out.bias.zero_()
        if model.net is not None:
            model.net.out_b.weight.zero_()  # its bias already gives sigma = diag(diff_scale)


class _LinearDriftSteps:
    """Optimiser steps of the linear drift (L, c) in units of ``drift_scale``.

    The network part of the drift is ``drift_scale * net``, so Adam's steps (~lr per parameter,
    whatever the gradient's size) are relative to the drift's own scale. L and c act on the
    standardised state directly; in data with short steps and weak signal their natural size is
    ``drift_scale`` (often << 1), and an unscaled Adam step of lr would jitter the linear drift by
    a large fraction of itself. Scaling each update by drift_scale is Adam on L / drift_scale.
    """

    def __init__(self, model: SDEModel):
        self.params = (model.drift_linear, model.drift_offset)
        self.scale = model.drift_scale.detach().clone()
        self.before: tuple[torch.Tensor, ...] = ()

    def remember(self) -> None:
        self.before = tuple(p.detach().clone() for p in self.params)

    def rescale(self) -> None:
        with torch.no_grad():
            for p, old in zip(self.params, self.before):
                p.copy_(old + (p - old) * self.scale)


class _PowerAverage:
    """Power-function exponential moving average of the weights (Karras et al. 2024, "Analyzing
    and improving the training dynamics of diffusion models", arXiv 2312.02696, eq. 3): after
    optimiser step t, avg <- b_t avg + (1 - b_t) w_t with b_t = (1 - 1/t)^(gamma + 1), which
    weighs the iterate of step s in proportion to s^gamma. The average spans a fixed fraction of
    the run (no step-count tuning, no bias towards the initial weights) and removes most of the
    noise that noisy gradients put into the last iterate (Polyak & Juditsky 1992)."""

    def __init__(self, model: SDEModel, gamma: float):
        self.model = copy.deepcopy(model)
        self.gamma = float(gamma)
        self.steps = 0

    def update(self, model: SDEModel) -> None:
        self.steps += 1
        weight = 1.0 - (1.0 - 1.0 / self.steps) ** (self.gamma + 1.0)
        with torch.no_grad():
            for avg, p in zip(self.model.parameters(), model.parameters()):
                avg.lerp_(p, weight)


# ====================================================================== checkpoints
def _fingerprint(z0: np.ndarray, z1: np.ndarray, dt: np.ndarray, params: np.ndarray | None) -> str:
    h = hashlib.sha1()
    for arr in (z0, z1, dt) + (() if params is None else (params,)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save(state, path)


# ====================================================================== public entry point
def fit_sde(z0: Any, z1: Any, dt: Any, *, params: Any = None, loss: str = "em", lam: float = 1.0,
            diffusion: str | None = None, drift_prior: DriftPrior | None = None,
            hidden: Sequence[int] = (64, 64, 64), activation: str = "silu", epochs: int = 200,
            batch_size: int = 2000, lr: float = 2e-3, weight_decay: float = 0.0,
            schedule: str = "plateau", patience: int | None = None, seed: int = 0,
            device: str | torch.device | None = None, validation_fraction: float = 0.1,
            checkpoint_dir: str | Path | None = None, checkpoint_every: int = 10,
            progress: bool = True, jitter: float = 1e-6, floor: float = 1e-4,
            dtype: str = "float32", grad_clip: float | None = None,
            callback: Callable[[int, SDEModel, dict[str, list]], None] | None = None,
            num_threads: int | None = 1, drift_scheme: str = "euler",
            weight_average: float | None = 7.0, template: IntegratorTemplate | None = None) -> FittedSDE:
    """Fit dz = mu(z, p) dt + sigma(z, p) dW to pairs z0 -> z1 after steps dt.

    Parameters
    ----------
    z0, z1: [N, d] states before / after the step, physical units [z] (any scale; standardised
        internally from the training pairs).
    dt: [N] per-pair step, or a scalar, in time units [t] (> 0).
    params: optional [N, q] conditioning inputs (e.g. temperature).
    loss: "em" (Euler-Maruyama Gaussian NLL), "milstein" (diagonal diffusion only) or "partial"
        (patch increments: covariance lam * dt * Sigma, lam = K the number of patches).
    lam: > 0; only "partial" uses it (lam = 1 is plain "em").
    diffusion: "diagonal", "cholesky", "spd", "constant" or "constant_diagonal"; None (default):
        "cholesky", or "diagonal" with a template.
    drift_prior: known part of the drift, ``prior(z [B, d] tensor, params [B, q] tensor or None)
        -> [B, d]`` in [z]/[t]; the network learns the residual.
    hidden, activation: widths and activation of the drift and diffusion MLPs.
    epochs, batch_size, lr, weight_decay: AdamW training settings (epochs is an upper bound).
    schedule: "plateau" (halve the learning rate after max(2, patience // 4) epochs without a
        significant validation improvement, see ``patience``), "cosine" or "none".
    patience: early stopping after max(patience, k // 2) epochs without a significant validation
        improvement, k the epoch of the last one; None: 20 epochs or 10^6 training pairs' worth
        of steps, whichever is longer (``PATIENCE_EPOCHS``, ``PATIENCE_SAMPLES``). Significant: the
        mean validation NLL is lower than at the last significant improvement by more than one
        standard error of the per-pair difference. In noise-dominated pairs the validation NLL
        moves by less than its own noise for long stretches while the fit still improves; a plain
        "no new minimum" rule then stops on noise, long before the networks have learned the drift.
    seed: seeds the split, the initial weights and the batch order (same seed -> same result);
        torch's global random state is left as it was.
    device: None/"cpu" or "cuda".
    validation_fraction: share of the pairs held out for early stopping and the schedule.
    checkpoint_dir: if given, a checkpoint is written every ``checkpoint_every`` epochs and at the
        end; a rerun with the same directory and data resumes from it.
    progress: show a tqdm progress bar.
    jitter: variance added to Sigma (relative to the data's noise scale) for the non-triangular
        "spd"/"constant" forms, which may be singular.
    floor: lower bound of positive sigma diagonals, relative to the data's noise scale.
    dtype: "float32" (fast) or "float64".
    grad_clip: optional max gradient norm.
    callback: optional ``callback(epoch, model, history)`` called after each finished epoch (after
        its checkpoint), e.g. for custom logging or monitoring.
    num_threads: torch CPU threads during the fit (restored afterwards). Default 1: the small
        MLPs of an SDE fit gain little from more CPU threads and lose up to 10x when the cores are
        shared (measured: 211 s with torch's default of 2 threads on a loaded 2-core machine,
        17 s with one), so the default is never slower than one thread. None keeps torch's
        setting; a larger number for big networks on an idle many-core machine.
        On the CPU with glibc, fitting also raises malloc's mmap and trim thresholds for the
        process (``matscale.sde.memory``: freed batch tensors are reused instead of page-faulted
        afresh, about 7 % of a step); ``MATSCALE_MALLOC_TUNING=0`` turns this off.
    drift_scheme: mean of the modelled increment for "em" and "partial": "euler" (mu(z0) dt) or
        "heun" ((mu(z0) + mu(z0 + mu(z0) dt)) dt / 2, exact to second order in dt). Use "heun" when
        dt is not short against the fastest relaxation in the data: Euler then learns the drift
        averaged over the step, low by the factor (1 - exp(-r dt)) / (r dt) for relaxation rate r
        (12 % at r dt = 0.26), Heun is within 2 %. Not with "milstein" or a drift_prior.
    weight_average: gamma >= 0 of a power-function moving average of the weights (profile
        ~ step^gamma, about the last 1 / (gamma + 1) of the run; Karras et al. 2024, arXiv
        2312.02696). The averaged weights are validated and returned: they carry much less of the
        gradient noise than the last iterate, which in noise-dominated pairs is most of the error.
        None: validate and return the raw weights.
    template: an :class:`~matscale.sde.templates.IntegratorTemplate` (e.g. ``SymplecticEuler``,
        ``WalshWave``): the networks learn only the template's per-site force and noise, the
        likelihood is that of the template's step (its known parts exact), and the returned SDE
        rolls out with that step. Needs loss "em", diffusion "diagonal" or "constant_diagonal",
        no params, no drift_prior, drift_scheme "euler"; the pairs are checked against the
        template's deterministic update (``check_pairs``). Evaluate the result with
        ``sde.learned_functions(x)``.

    Training starts from the weighted least-squares linear drift and the constant residual noise
    (the networks' output layers start at zero) and steps the linear part of the drift in units
    of the drift's scale, like the networks' output.

    Returns a FittedSDE with ``history`` and ``config``. Its weights: those validated last, or
    those with the lowest validation NLL if the last are worse by more than one standard error;
    and the starting linear model (``best_epoch`` -1) if the networks do not beat it by
    ``START_MARGIN`` standard errors on the validation pairs.
    Raises TrainingDivergedError (a FloatingPointError) on a NaN/inf loss.
    """
    z0a, z1a, dta, pa = _validate_inputs(z0, z1, dt, params)
    if diffusion is None:
        diffusion = "cholesky" if template is None else "diagonal"
    if template is not None:
        _validate_template(template, z0a, z1a, dta, pa, loss, diffusion, drift_prior, drift_scheme)
    _validate_options(loss, lam, diffusion, hidden, activation, epochs, batch_size, lr,
                      validation_fraction, schedule)
    if drift_scheme not in DRIFT_SCHEMES:
        raise ValueError(f"drift_scheme: unknown {drift_scheme!r}; allowed: {', '.join(DRIFT_SCHEMES)}")
    if drift_scheme == "heun" and (loss == "milstein" or drift_prior is not None):
        raise ValueError("drift_scheme: 'heun' needs loss 'em' or 'partial' and no drift_prior")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: must be 'float32' or 'float64', got {dtype!r}")
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every: must be >= 1, got {checkpoint_every}")
    if patience is not None and not (isinstance(patience, (int, np.integer)) and patience >= 1):
        raise ValueError(f"patience: must be an int >= 1 or None, got {patience!r}")
    if weight_average is not None and not (isinstance(weight_average, (int, float)) and math.isfinite(weight_average)
                                           and weight_average >= 0):
        raise ValueError(f"weight_average: must be a finite number >= 0 or None, got {weight_average!r}")
    if drift_prior is not None and not callable(drift_prior):
        raise TypeError(f"drift_prior: must be callable(z, params) -> [N, d], got {type(drift_prior).__name__}")
    dev = resolve_device(device)
    tdtype = getattr(torch, dtype)
    n, d = z0a.shape
    q = 0 if pa is None else pa.shape[1]

    # ---- split (seeded) and scales from the training part only
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    val_idx, train_idx = order[:n_val], order[n_val:]
    prior = np.zeros_like(z0a)
    if template is not None:
        scales, drift_scale, diff_scale, linear, offset = _template_scales(template, z0a[train_idx],
                                                                           z1a[train_idx], dta[train_idx])
        table = np.hstack([z0a, z1a, dta[:, None]])
    else:
        scales = _input_scales(z0a[train_idx], dta[train_idx], None if pa is None else pa[train_idx])
        if drift_prior is not None:
            prior = _evaluate_prior(drift_prior, z0a, pa)
        u0 = (z0a - scales.z_loc) / scales.z_scale
        s = dta / scales.time_scale
        du = (z1a - z0a - prior * dta[:, None]) / scales.z_scale
        p_std = None if pa is None else (pa - scales.p_loc) / scales.p_scale
        drift_scale, diff_scale, linear, offset = _output_scales(u0[train_idx], du[train_idx], s[train_idx],
                                                 None if p_std is None else p_std[train_idx],
                                                 lam if loss == "partial" else 1.0)
        table = np.hstack([u0, du, s[:, None]] + ([] if p_std is None else [p_std]))
    patience_epochs = _default_patience(len(train_idx)) if patience is None else int(patience)
    train_data = torch.as_tensor(table[train_idx], dtype=tdtype, device=dev)
    val_data = torch.as_tensor(table[val_idx], dtype=tdtype, device=dev)

    config: dict[str, Any] = {
        "dim": d, "n_params": q, "diffusion": diffusion, "hidden": [int(h) for h in hidden],
        "activation": activation, "floor": float(floor), "loss": loss, "lam": float(lam), "drift_scheme": drift_scheme,
        "jitter": float(jitter), "dtype": dtype,
        "drift_prior": None if drift_prior is None else getattr(drift_prior, "__name__", type(drift_prior).__name__),
        # the prior's values on the pairs: a resumed run must subtract the same known drift
        "drift_prior_fingerprint": (None if drift_prior is None
                                    else hashlib.sha1(np.ascontiguousarray(prior).tobytes()).hexdigest()),
        "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "weight_decay": float(weight_decay),
        "schedule": schedule, "patience": patience_epochs, "seed": int(seed),
        "weight_average": None if weight_average is None else float(weight_average),
        "validation_fraction": float(validation_fraction), "n_pairs": int(n), "n_train": int(len(train_idx)),
        "n_val": int(n_val), "data_fingerprint": _fingerprint(z0a, z1a, dta, pa),
        "units": "drift [z]/[t], diffusion [z]/sqrt([t]), history NLL in nats per pair of physical z",
        "matscale_version": __version__,
    }
    if template is not None:  # the rollout's step bound and support come from the recorded data
        config.update(template=template.record(), min_dt=float(dta.min()), median_dt=float(np.median(dta)),
                      z_min=z0a.min(axis=0).tolist(), z_max=z0a.max(axis=0).tolist())

    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads: must be >= 1 or None, got {num_threads}")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if dev.type == "cpu":
        retain_freed_memory()
    try:
        # initial weights from the seed without touching the caller's global RNG state (the
        # weights are drawn on the CPU; the batch order has its own generator in _train)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            model = build_model(config).to(dtype=tdtype)
        _start_at_linear_fit(model)
        _set_buffers(model, scales, drift_scale, diff_scale, linear, offset)
        model.to(dev)
        return _train(model, config, train_data, val_data, drift_prior=drift_prior, loss=loss, lam=lam,
                      epochs=int(epochs), batch_size=int(batch_size), lr=lr, weight_decay=weight_decay,
                      schedule=schedule, patience=patience_epochs, seed=seed, device=dev,
                      checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
                      checkpoint_every=int(checkpoint_every), progress=progress, jitter=jitter, grad_clip=grad_clip,
                      nll_offset=0.0 if template is not None else float(np.log(scales.z_scale).sum()),
                      callback=callback, template=template)
    finally:
        torch.set_num_threads(old_threads)


def _validate_template(template: Any, z0: np.ndarray, z1: np.ndarray, dt: np.ndarray,
                       params: np.ndarray | None, loss: str, diffusion: str, drift_prior: Any,
                       drift_scheme: str) -> None:
    """One-line errors for a template fit: the options it supports and pairs that follow it."""
    if not isinstance(template, IntegratorTemplate):
        raise TypeError(f"template: must be an IntegratorTemplate (e.g. SymplecticEuler), got {type(template).__name__}")
    if loss != "em":
        raise ValueError(f"loss: a template fit uses the template's own likelihood; pass loss='em', got {loss!r}")
    if diffusion not in TEMPLATE_DIFFUSIONS:
        raise ValueError(f"diffusion: a template learns a noise amplitude per output; allowed: "
                         f"{', '.join(TEMPLATE_DIFFUSIONS)}, got {diffusion!r}")
    if params is not None or drift_prior is not None or drift_scheme != "euler":
        raise ValueError("template: not combined with params, drift_prior or drift_scheme='heun' "
                         "(the template holds the known parts of the step)")
    if template.n_features < template.n_outputs:
        raise ValueError(f"template: {template.name!r} has fewer site features ({template.n_features}) "
                         f"than outputs ({template.n_outputs}); not supported")
    template.check_pairs(z0, z1, dt)


def _template_scales(template: IntegratorTemplate, z0: np.ndarray, z1: np.ndarray, dt: np.ndarray
                     ) -> tuple[_Scales, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scales and starting linear force of a template fit, from its training pairs.

    The site features are standardised (the model's "state" = the first n_outputs features, its
    conditioning inputs the rest); the outputs stay physical (time scale 1). Per site and output
    the residual is r = a force + sqrt(b) noise xi (``linear_response``); with s = a^2 / b and
    du = r a / b this is du = s force + sqrt(s) noise xi, the Euler form ``_output_scales`` fits.
    """
    x, r, a, b = template.linear_response(z0, z1, dt)
    loc, scale = x.mean(axis=0), _robust_std(x)
    k = template.n_outputs
    s = (a * a / b)[:, 0]
    drift_scale, diff_scale, linear, offset = _output_scales((x - loc) / scale, r * a / b, s, None, 1.0)
    scales = _Scales(loc[:k], scale[:k], loc[k:], scale[k:], 1.0)
    return scales, drift_scale, diff_scale, linear, offset


def _evaluate_prior(drift_prior: DriftPrior, z0: np.ndarray, params: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        out = drift_prior(torch.as_tensor(z0), None if params is None else torch.as_tensor(params))
    out = np.asarray(out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
    if out.shape != z0.shape:
        raise ValueError(f"drift_prior: returned shape {list(out.shape)}, expected {list(z0.shape)}")
    if not np.isfinite(out).all():
        raise ValueError("drift_prior: returned NaN or inf on the training states")
    return out


def _make_optimizer(model: SDEModel, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=device.type == "cuda")


def _make_scheduler(opt: torch.optim.Optimizer, schedule: str, epochs: int, patience: int):
    if schedule == "plateau":  # stepped with the reference NLL, which only falls on a significant improvement
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, patience // 4),
                                                          threshold=0.0, min_lr=opt.param_groups[0]["lr"] * 1e-3)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=opt.param_groups[0]["lr"] * 1e-2)
    return None


def _patience_left(bad_epochs: int, reference_epoch: int, patience: int) -> bool:
    """Early stopping: max(patience, k // 2) epochs without a significant improvement, k the
    epoch of the last one (the averaged weights change more slowly as the run gets longer)."""
    return bad_epochs < max(patience, (reference_epoch + 1) // 2)


def _default_patience(n_train: int) -> int:
    """Epochs of patience: PATIENCE_EPOCHS, or PATIENCE_SAMPLES training pairs if that is longer."""
    return max(PATIENCE_EPOCHS, math.ceil(PATIENCE_SAMPLES / max(n_train, 1)))


def _train(model: SDEModel, config: dict[str, Any], train_data: torch.Tensor, val_data: torch.Tensor, *,
           drift_prior, loss, lam, epochs, batch_size, lr, weight_decay, schedule, patience, seed, device,
           checkpoint_dir: Path | None, checkpoint_every: int, progress: bool, jitter: float,
           grad_clip: float | None, nll_offset: float, callback=None,
           template: IntegratorTemplate | None = None) -> FittedSDE:
    batch_loss = _BatchLoss(model, loss, lam, jitter, config["drift_scheme"], template)
    opt = _make_optimizer(model, lr, weight_decay, device)
    sched = _make_scheduler(opt, schedule, epochs, patience)
    gen = make_generator(seed + 1, device)
    linear_steps = _LinearDriftSteps(model)
    gamma = config.get("weight_average")
    average = None if gamma is None else _PowerAverage(model, gamma)
    evaluated = model if average is None else average.model  # the weights that are validated and returned
    val_loss = _BatchLoss(evaluated, loss, lam, jitter, config["drift_scheme"], template)
    history: dict[str, list] = {"train": [], "val": [], "lr": [], "seconds": [], "train_seconds": []}
    has_val = val_data.shape[0] > 0
    # "reference": the validated weights at the last significant improvement (per-pair NLL, epoch)
    ref: dict[str, Any] = {"values": None, "epoch": -1}
    best = {"value": math.inf, "epoch": -1, "state": copy.deepcopy(evaluated.state_dict())}
    bad_epochs, start_epoch = 0, 0
    ckpt_path = None if checkpoint_dir is None else checkpoint_dir / CHECKPOINT_FILE

    # the starting linear model (the same in a resumed run: it follows from the data and the seed)
    start = {"state": copy.deepcopy(model.state_dict()),
             "values": val_loss.values_over(val_data) if has_val else None}
    if ckpt_path is not None and ckpt_path.exists():
        start_epoch, bad_epochs = _resume(ckpt_path, config, model, opt, sched, gen, history, best, average, ref)
    elif has_val:  # the starting model is the first reference and candidate
        ref["values"] = start["values"]
        best["value"] = float(start["values"].mean())

    def result(stop_reason: str) -> FittedSDE:
        """The weights validated last, unless they are significantly worse (one standard error)
        than those with the lowest validation NLL; then the starting linear model unless the
        chosen weights beat it by START_MARGIN standard errors. In noise-dominated pairs the
        validation NLL cannot rank the later epochs, and its minimum falls on an early, less
        trained epoch about as often as not; the last weights had the most (and the least noisy)
        training."""
        epoch = best["epoch"]
        if stop_reason == "diverged" or not has_val or not history["train"]:
            model.load_state_dict(best["state"])
        else:
            last_epoch = len(history["train"]) - 1
            last_state = copy.deepcopy(evaluated.state_dict())
            last_values = val_loss.values_over(val_data)
            model.load_state_dict(best["state"])
            chosen = val_loss_of(model)
            if epoch != last_epoch and bool(torch.isfinite(last_values).all()):
                worse = last_values - chosen
                if float(worse.mean()) <= _standard_error(worse):
                    model.load_state_dict(last_state)
                    epoch, chosen = last_epoch, last_values
            if epoch >= 0:
                gain = start["values"] - chosen
                if not bool(torch.isfinite(gain).all()) or float(gain.mean()) <= START_MARGIN * _standard_error(gain):
                    model.load_state_dict(start["state"])
                    epoch = -1
        cfg = dict(config, epochs_run=len(history["train"]), best_epoch=epoch, stop_reason=stop_reason)
        return FittedSDE(model, cfg, history, drift_prior, template=template)

    def val_loss_of(m: SDEModel) -> torch.Tensor:
        return _BatchLoss(m, loss, lam, jitter, config["drift_scheme"], template).values_over(val_data)

    def checkpoint(epoch_done: int) -> None:
        if ckpt_path is None:
            return
        _save_checkpoint(ckpt_path, {
            "config_json": json.dumps(config), "history_json": json.dumps(history), "epoch": epoch_done,
            "bad_epochs": bad_epochs, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(), "generator": gen.get_state(),
            "best_value": best["value"], "best_epoch": best["epoch"], "best_state": best["state"],
            "average": None if average is None else average.model.state_dict(),
            "average_steps": 0 if average is None else average.steps,
            "reference_values": ref["values"], "reference_epoch": ref["epoch"]})

    n_train = train_data.shape[0]
    stop_reason = "max_epochs"
    if not _patience_left(bad_epochs, ref["epoch"], patience):  # the checkpointed run had already stopped early
        model.eval()
        return result("early_stopping")
    bar = tqdm(range(start_epoch, epochs), disable=not progress, desc="fit_sde", unit="epoch",
               initial=start_epoch, total=epochs)
    model.train()
    for epoch in bar:
        t_start = time.perf_counter()
        train_value = _run_epoch(model, batch_loss, opt, train_data, n_train, batch_size, gen, grad_clip,
                                 linear_steps, average)
        train_seconds = time.perf_counter() - t_start
        values = val_loss.values_over(val_data) if has_val else None
        val_value = float(values.mean()) if has_val else train_value
        if not (math.isfinite(train_value) and math.isfinite(val_value)):
            where = f" (last good checkpoint kept in {ckpt_path})" if ckpt_path is not None else ""
            raise TrainingDivergedError(
                f"fit_sde: non-finite loss at epoch {epoch} (train {train_value}, val {val_value}); "
                f"best weights from epoch {best['epoch']} restored{where}", result("diverged"))
        history["train"].append(train_value + nll_offset)
        history["val"].append(val_value + nll_offset)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["seconds"].append(time.perf_counter() - t_start)
        history["train_seconds"].append(train_seconds)
        if not math.isfinite(best["value"]) or val_value < best["value"] - 1e-6 * abs(best["value"]):
            best.update(value=val_value, epoch=epoch, state=copy.deepcopy(evaluated.state_dict()))
        if _significant(values, ref["values"], val_value, best):
            ref.update(values=values if has_val else val_value, epoch=epoch)
            bad_epochs = 0
        else:
            bad_epochs += 1
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(float(ref["values"].mean()) if has_val else ref["values"])
        elif sched is not None:
            sched.step()
        bar.set_postfix(train=f"{history['train'][-1]:.4f}", val=f"{history['val'][-1]:.4f}")
        done = epoch + 1
        if not _patience_left(bad_epochs, ref["epoch"], patience):
            stop_reason = "early_stopping"
            checkpoint(done)
            break
        if done % checkpoint_every == 0 or done == epochs:
            checkpoint(done)
        if callback is not None:
            callback(epoch, model, history)
    bar.close()
    model.eval()
    return result(stop_reason)


def _significant(values: torch.Tensor | None, reference: torch.Tensor | float | None, value: float,
                 best: dict[str, Any]) -> bool:
    """Is the validated model better than the reference by more than one standard error of the
    per-pair NLL difference (the same validation pairs, so the shared noise cancels)? Without
    validation pairs: is the training NLL a new minimum?"""
    if reference is None:
        return True
    if values is None:
        return best["value"] == value
    diff = reference - values
    return float(diff.mean()) > _standard_error(diff)


def _standard_error(x: torch.Tensor) -> float:
    n = x.shape[0]
    return float(x.std()) / math.sqrt(n) if n > 1 else 0.0


def _run_epoch(model: SDEModel, batch_loss: _BatchLoss, opt: torch.optim.Optimizer, data: torch.Tensor,
               n_train: int, batch_size: int, gen: torch.Generator, grad_clip: float | None,
               linear_steps: _LinearDriftSteps, average: _PowerAverage | None) -> float:
    perm = torch.randperm(n_train, generator=gen, device=data.device)
    total = torch.zeros((), dtype=data.dtype, device=data.device)
    for start in range(0, n_train, batch_size):
        batch = data.index_select(0, perm[start:start + batch_size])
        value = batch_loss.per_sample(batch).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        linear_steps.remember()
        opt.step()
        linear_steps.rescale()
        if average is not None:
            average.update(model)
        total += value.detach() * batch.shape[0]
    return float(total) / n_train


def _resume(path: Path, config: dict[str, Any], model: SDEModel, opt, sched, gen: torch.Generator,
            history: dict[str, list], best: dict[str, Any], average: _PowerAverage | None,
            ref: dict[str, Any]) -> tuple[int, int]:
    state = torch.load(path, map_location=model.z_loc.device, weights_only=True)
    saved = json.loads(state["config_json"])
    for key in RESUME_KEYS:
        if saved.get(key) != config.get(key):
            raise ValueError(f"checkpoint_dir: {path} holds a run with a different {key} "
                             f"({saved.get(key)!r} vs {config.get(key)!r}); use another directory")
    if "reference_epoch" not in state:
        raise ValueError(f"checkpoint_dir: {path} was written by an older matscale (no averaged weights); "
                         "delete it or use another directory")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state["scheduler"] is not None:
        sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"].cpu() if gen.device.type == "cpu" else state["generator"])
    history.update(json.loads(state["history_json"]))
    best.update(value=state["best_value"], epoch=state["best_epoch"], state=state["best_state"])
    if average is not None:
        average.model.load_state_dict(state["average"])
        average.steps = int(state["average_steps"])
    ref.update(values=state["reference_values"], epoch=int(state["reference_epoch"]))
    return int(state["epoch"]), int(state["bad_epochs"])
