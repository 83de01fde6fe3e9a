"""Batched, seeded Euler-Maruyama and Milstein rollouts on CPU or CUDA.

The coefficient functions take a state batch z [B, d] (physical units) and return
    drift_fn(z)          -> mu [B, d]                       in [z]/[t]
    sigma_fn(z)          -> sigma [B, d, d] or diagonal [B, d] in [z]/sqrt([t])
All paths advance together; the only Python loop is over time steps.

``integrate`` takes ``n_steps`` equal steps. ``integrate_grid`` records the state on a time grid
and takes as many equal substeps inside each grid interval as needed to keep every step at or
below ``max_step`` (``substep_counts``); it can stop at the first grid point holding a NaN/inf.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

METHODS = ("em", "milstein")

DriftFn = Callable[[torch.Tensor], torch.Tensor]
SigmaFn = Callable[[torch.Tensor], torch.Tensor]
CoefficientsFn = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
StepFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

# relative slack when a grid interval is an integer multiple of max_step up to rounding (float32
# times carry ~1e-7 relative error: 10.1 - 4.1 = 6.0000005 is still 30 steps of 0.2)
_STEP_SLACK = 1e-6


def _apply_noise(sigma: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    if sigma.dim() == dw.dim():  # diagonal sigma [B, d]
        return sigma * dw
    return (sigma @ dw.unsqueeze(-1)).squeeze(-1)


def _em_step(coefficients_fn: CoefficientsFn, z: torch.Tensor, dt: float, generator: torch.Generator) -> torch.Tensor:
    dw = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) * dt ** 0.5
    with torch.no_grad():
        mu, sigma = coefficients_fn(z)
        return z + mu * dt + _apply_noise(sigma, dw)


def _milstein_step(drift_fn: DriftFn, sigma_fn: SigmaFn, z: torch.Tensor, dt: float,
                   generator: torch.Generator) -> torch.Tensor:
    dw = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) * dt ** 0.5
    sigma, dsigma = diagonal_sigma_and_derivative(sigma_fn, z)
    with torch.no_grad():
        return z + drift_fn(z) * dt + sigma * dw + 0.5 * sigma * dsigma * (dw.square() - dt)


def _joint(drift_fn: DriftFn, sigma_fn: SigmaFn, coefficients_fn: CoefficientsFn | None) -> CoefficientsFn:
    return coefficients_fn or (lambda z: (drift_fn(z), sigma_fn(z)))


def euler_maruyama(drift_fn: DriftFn, sigma_fn: SigmaFn, z0: torch.Tensor, n_steps: int, dt: float,
                   generator: torch.Generator, coefficients_fn: CoefficientsFn | None = None) -> torch.Tensor:
    """z_{k+1} = z_k + mu(z_k) dt + sigma(z_k) dW, dW ~ N(0, dt I). Returns [B, n_steps + 1, d].

    ``coefficients_fn(z) -> (mu, sigma)``, when given, replaces the two separate calls (one
    network pass per step instead of two)."""
    coefficients_fn = _joint(drift_fn, sigma_fn, coefficients_fn)
    paths = z0.new_empty(z0.shape[0], n_steps + 1, z0.shape[1])
    paths[:, 0] = z0
    z = z0
    for k in range(n_steps):
        z = _em_step(coefficients_fn, z, dt, generator)
        paths[:, k + 1] = z
    return paths


def diagonal_sigma_and_derivative(sigma_fn: SigmaFn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal sigma_i(z) [B, d] and d sigma_i / d z_i [B, d] by autograd (no graph kept)."""
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        sigma = sigma_fn(zg)
        if sigma.dim() != 2:
            raise ValueError("method: 'milstein' needs a diagonal diffusion ('diagonal' or 'constant_diagonal')")
        if not sigma.requires_grad:
            return sigma.detach(), torch.zeros_like(sigma)
        columns = []
        for i in range(z.shape[1]):
            (grad,) = torch.autograd.grad(sigma[:, i].sum(), zg, retain_graph=i + 1 < z.shape[1], allow_unused=True)
            columns.append(torch.zeros_like(z[:, i]) if grad is None else grad[:, i])
    return sigma.detach(), torch.stack(columns, dim=1).detach()


def milstein(drift_fn: DriftFn, sigma_fn: SigmaFn, z0: torch.Tensor, n_steps: int, dt: float,
             generator: torch.Generator) -> torch.Tensor:
    """Milstein for diagonal noise:
    z_i += mu_i dt + sigma_i dW_i + 1/2 sigma_i (d sigma_i/d z_i) (dW_i^2 - dt). Returns [B, n_steps + 1, d]."""
    paths = z0.new_empty(z0.shape[0], n_steps + 1, z0.shape[1])
    paths[:, 0] = z0
    z = z0
    for k in range(n_steps):
        z = _milstein_step(drift_fn, sigma_fn, z, dt, generator)
        paths[:, k + 1] = z
    return paths


def integrate(drift_fn: DriftFn, sigma_fn: SigmaFn, z0: torch.Tensor, n_steps: int, dt: float,
              generator: torch.Generator, method: str = "em",
              coefficients_fn: CoefficientsFn | None = None) -> torch.Tensor:
    """Dispatch to ``euler_maruyama`` or ``milstein`` by name."""
    if method == "em":
        return euler_maruyama(drift_fn, sigma_fn, z0, n_steps, dt, generator, coefficients_fn)
    if method == "milstein":
        return milstein(drift_fn, sigma_fn, z0, n_steps, dt, generator)
    raise ValueError(f"method: unknown {method!r}; allowed: {', '.join(METHODS)}")


def substep_counts(intervals: Sequence[float] | np.ndarray, max_step: float | None) -> np.ndarray:
    """Equal substeps per grid interval so that no step exceeds ``max_step`` (None: one step
    per interval). An interval within a relative 1e-6 of k * max_step takes k substeps."""
    lengths = np.asarray(intervals, dtype=np.float64).reshape(-1)
    if max_step is None:
        return np.ones(lengths.shape, dtype=np.int64)
    return np.maximum(1, np.ceil(lengths / float(max_step) * (1.0 - _STEP_SLACK))).astype(np.int64)


def integrate_grid(drift_fn: DriftFn, sigma_fn: SigmaFn, z0: torch.Tensor, intervals: Sequence[float] | np.ndarray,
                   generator: torch.Generator, method: str = "em", *, max_step: float | None = None,
                   coefficients_fn: CoefficientsFn | None = None,
                   stop_on_nonfinite: bool = False,
                   progress: str | None = None,
                   step_fn: StepFn | None = None) -> tuple[torch.Tensor, np.ndarray, int | None]:
    """Roll out over consecutive grid intervals (lengths ``intervals`` [n], each > 0) and record
    the state at the n + 1 grid points.

    Interval k is crossed in ``substep_counts(intervals, max_step)[k]`` equal steps. With one
    substep per interval of length dt this draws exactly the numbers of ``integrate(.., n, dt, ..)``
    (same seed -> same paths). Returns ``(paths [B, n + 1, d], substeps [n], first_bad)``:
    ``first_bad`` is the first grid index holding a NaN/inf state (None when all are finite).
    With ``stop_on_nonfinite`` the rollout stops there and later grid points are NaN.
    ``progress``: a description to show a progress bar over the grid intervals (None: quiet).
    ``step_fn(z, h, generator) -> z_next``, when given, is the step (e.g. an integrator
    template's, :mod:`matscale.sde.templates`) in place of ``method``'s.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; allowed: {', '.join(METHODS)}")
    lengths = np.asarray(intervals, dtype=np.float64).reshape(-1)
    counts = substep_counts(lengths, max_step)
    joint = _joint(drift_fn, sigma_fn, coefficients_fn)
    paths = z0.new_full((z0.shape[0], len(lengths) + 1, z0.shape[1]), math.nan)
    paths[:, 0] = z0
    z = z0
    first_bad = None if bool(torch.isfinite(z0).all()) else 0
    from matscale.io import progress as bar

    steps = bar(enumerate(zip(lengths, counts)), total=len(lengths), desc=progress or "",
                enabled=progress is not None, unit="step")
    for k, (length, n_sub) in steps:
        if first_bad is not None and stop_on_nonfinite:
            break
        h = float(length) if n_sub == 1 else float(length) / int(n_sub)
        for _ in range(int(n_sub)):
            if step_fn is not None:
                z = step_fn(z, h, generator)
            elif method == "em":
                z = _em_step(joint, z, h, generator)
            else:
                z = _milstein_step(drift_fn, sigma_fn, z, h, generator)
        paths[:, k + 1] = z
        if first_bad is None and not bool(torch.isfinite(z).all()):
            first_bad = k + 1
    return paths, counts, first_bad
