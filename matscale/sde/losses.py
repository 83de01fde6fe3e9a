"""Negative log-likelihoods of one-step transitions, per sample, in the standardised frame.

Notation (all tensors in standardised units, see ``models.py``):
    du  [B, d]  increment minus the known prior part, z1 - z0 - prior * dt
    s   [B]     step in scaled time (> 0)
    mu  [B, d]  network drift per unit scaled time
    sigma       [B, d] (diagonal) or [B, d, d]

Losses (``LOSSES``):
    "em"        exact Gaussian NLL of the Euler-Maruyama step, N(mu s, s sigma sigma^T), with the
                1/2 and log(2 pi) terms, through a Cholesky factor (triangular solves, no inverse)
    "partial"   L_p of arXiv 2511.12842: N(mu s, lam s sigma sigma^T) for a patch increment,
                lam = K the number of patches; lam = 1 is "em"
    "milstein"  density of the Milstein step for diagonal diffusion (see ``milstein_nll``)
"""
from __future__ import annotations

import math

import torch

LOSSES = ("em", "milstein", "partial")
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Milstein density: below this discriminant (edge of the noncentral chi^2 support, where the
# density is singular or zero) the Gaussian Euler-Maruyama density is used instead.
MILSTEIN_MIN_DISCRIMINANT = 1e-2
_TINY_RHO = 1e-8


def gaussian_nll_from_cholesky(residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """-log N(residual; 0, C C^T) per sample for lower-triangular ``chol`` C [B, d, d]."""
    white = torch.linalg.solve_triangular(chol, residual.unsqueeze(-1), upper=False).squeeze(-1)
    log_det_half = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * white.square().sum(-1) + log_det_half + residual.shape[-1] * HALF_LOG_2PI


def gaussian_nll_diagonal(residual: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """-log N(residual; 0, diag(std^2)) per sample; residual, std: [B, d]."""
    return (0.5 * (residual / std).square() + torch.log(std)).sum(-1) + residual.shape[-1] * HALF_LOG_2PI


def em_nll(du: torch.Tensor, s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, *,
           structure: str, lam: float = 1.0, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian NLL of du ~ N(mu s, lam s sigma sigma^T) per sample [B].

    ``structure``: "diagonal" (sigma is [B, d], positive), "triangular" (sigma lower triangular
    with positive diagonal: lam s Sigma = (sqrt(lam s) sigma)(...)^T needs no factorisation) or
    "general" (any sigma; Sigma + jitter is Cholesky-factorised). ``jitter`` [d] is the variance
    per unit scaled time added to the diagonal of Sigma for "general" (singular sigma allowed).
    """
    residual = du - mu * s.unsqueeze(-1)
    root = torch.sqrt(lam * s)
    if structure == "diagonal":
        return gaussian_nll_diagonal(residual, sigma * root.unsqueeze(-1))
    if structure == "triangular":
        return gaussian_nll_from_cholesky(residual, sigma * root[:, None, None])
    cov = lam * (sigma @ sigma.transpose(-1, -2))
    if jitter is not None:
        cov = cov + torch.diag_embed(jitter.expand_as(mu))
    chol, info = torch.linalg.cholesky_ex(cov * s[:, None, None])
    failed = info > 0  # not positive definite: NaN, which the trainer reports as a divergence
    if bool(failed.any()):
        eye = torch.eye(mu.shape[-1], dtype=mu.dtype, device=mu.device)
        chol = torch.where(failed[:, None, None], eye, chol)
        nll = gaussian_nll_from_cholesky(residual, chol)
        return torch.where(failed, torch.full_like(nll, float("nan")), nll)
    return gaussian_nll_from_cholesky(residual, chol)


def milstein_nll(du: torch.Tensor, s: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                 dsigma: torch.Tensor) -> torch.Tensor:
    """NLL of the Milstein step for diagonal diffusion, per sample [B].

    Per component i (sigma_i > 0, dsigma_i = d sigma_i / d u_i, xi ~ N(0, 1)):
        du_i = mu_i s + b xi + a (xi^2 - 1),   b = sigma_i sqrt(s),  a = sigma_i dsigma_i s / 2.
    (xi + b/2a)^2 is noncentral chi^2 with one degree of freedom (Bessel order -1/2, i.e. the
    cosh form). With e = (du_i - mu_i s)/b and rho = a/b the two roots of rho xi^2 + xi - rho = e are
        xi_+ = 2 (rho + e) / (1 + sqrt(D)),   xi_- = -(1 + sqrt(D)) / (2 rho),   D = 1 + 4 rho (rho + e),
    and the density is p(du_i) = [phi(xi_+) + phi(xi_-)] / (b sqrt(D)); it tends to the Gaussian as
    rho -> 0. Where D < MILSTEIN_MIN_DISCRIMINANT (support edge: singular or zero density) the
    Euler-Maruyama Gaussian is used instead. Cross-derivatives d sigma_i / d u_j (j != i) are
    not part of this scheme.
    """
    b = sigma * torch.sqrt(s).unsqueeze(-1)
    e = (du - mu * s.unsqueeze(-1)) / b
    rho = 0.5 * dsigma * torch.sqrt(s).unsqueeze(-1)
    disc = 1.0 + 4.0 * rho * (rho + e)
    usable = disc > MILSTEIN_MIN_DISCRIMINANT
    root_d = torch.sqrt(torch.where(usable, disc, torch.ones_like(disc)))
    rho_safe = torch.where(rho.abs() < _TINY_RHO, torch.full_like(rho, _TINY_RHO) * torch.where(rho < 0, -1.0, 1.0), rho)
    xi_plus = 2.0 * (rho + e) / (1.0 + root_d)
    xi_minus = -(1.0 + root_d) / (2.0 * rho_safe)
    log_mix = torch.logsumexp(torch.stack([-0.5 * xi_plus.square(), -0.5 * xi_minus.square()]), dim=0)
    nll_milstein = -log_mix + HALF_LOG_2PI + torch.log(root_d) + torch.log(b)
    nll_gauss = 0.5 * e.square() + HALF_LOG_2PI + torch.log(b)
    return torch.where(usable, nll_milstein, nll_gauss).sum(-1)
