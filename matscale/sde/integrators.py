"""Batched, seeded Euler-Maruyama and Milstein rollouts on CPU or CUDA.

The coefficient functions take a state batch z [B, d] (physical units) and return
    drift_fn(z)          -> mu [B, d]                       in [z]/[t]
    sigma_fn(z)          -> sigma [B, d, d] or diagonal [B, d] in [z]/sqrt([t])
All paths advance together; the only Python loop is over time steps.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

METHODS = ("em", "milstein")

DriftFn = Callable[[torch.Tensor], torch.Tensor]
SigmaFn = Callable[[torch.Tensor], torch.Tensor]
CoefficientsFn = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def _apply_noise(sigma: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    if sigma.dim() == dw.dim():  # diagonal sigma [B, d]
        return sigma * dw
    return (sigma @ dw.unsqueeze(-1)).squeeze(-1)


def euler_maruyama(drift_fn: DriftFn, sigma_fn: SigmaFn, z0: torch.Tensor, n_steps: int, dt: float,
                   generator: torch.Generator, coefficients_fn: CoefficientsFn | None = None) -> torch.Tensor:
    """z_{k+1} = z_k + mu(z_k) dt + sigma(z_k) dW, dW ~ N(0, dt I). Returns [B, n_steps + 1, d].

    ``coefficients_fn(z) -> (mu, sigma)``, when given, replaces the two separate calls (one
    network pass per step instead of two)."""
    if coefficients_fn is None:
        coefficients_fn = lambda z: (drift_fn(z), sigma_fn(z))  # noqa: E731
    paths = z0.new_empty(z0.shape[0], n_steps + 1, z0.shape[1])
    paths[:, 0] = z0
    z = z0
    sqrt_dt = dt ** 0.5
    with torch.no_grad():
        for k in range(n_steps):
            dw = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) * sqrt_dt
            mu, sigma = coefficients_fn(z)
            z = z + mu * dt + _apply_noise(sigma, dw)
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
    sqrt_dt = dt ** 0.5
    for k in range(n_steps):
        dw = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) * sqrt_dt
        sigma, dsigma = diagonal_sigma_and_derivative(sigma_fn, z)
        with torch.no_grad():
            z = z + drift_fn(z) * dt + sigma * dw + 0.5 * sigma * dsigma * (dw.square() - dt)
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
