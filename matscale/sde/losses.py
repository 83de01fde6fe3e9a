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

import numba
import torch

LOSSES = ("em", "milstein", "partial")
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Milstein density: below this discriminant (edge of the noncentral chi^2 support, where the
# density is singular or zero) the Gaussian Euler-Maruyama density is used instead.
MILSTEIN_MIN_DISCRIMINANT = 1e-2
_TINY_RHO = 1e-8


# Up to this dimension the triangular solves are written out as substitution over [B] columns:
# d (d + 1) / 2 vector ops, where the batched LAPACK solve pays one tiny triangular solve per
# sample (about 4x slower at d = 4 and B = 2000 on a CPU).
SUBSTITUTION_MAX_DIM = 8


def solve_lower(chol: torch.Tensor, rhs: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """C^-1 b (or C^-T b with ``transpose``) per sample for lower-triangular ``chol`` C [B, d, d]
    and ``rhs`` b [B, d]."""
    d = rhs.shape[-1]
    if d > SUBSTITUTION_MAX_DIM:
        mat = chol.transpose(-1, -2) if transpose else chol
        return torch.linalg.solve_triangular(mat, rhs.unsqueeze(-1), upper=transpose).squeeze(-1)
    entries = chol.reshape(chol.shape[0], d * d).unbind(-1)
    columns = rhs.unbind(-1)
    order = range(d - 1, -1, -1) if transpose else range(d)
    solution: dict[int, torch.Tensor] = {}
    for i in order:
        acc = columns[i]
        for j in solution:  # the entries already solved
            acc = torch.addcmul(acc, entries[j * d + i] if transpose else entries[i * d + j], solution[j], value=-1.0)
        solution[i] = acc / entries[i * d + i]
    return torch.stack([solution[i] for i in range(d)], dim=-1)


class _LowerGaussianNLLTorch(torch.autograd.Function):
    """-log N(r; 0, C C^T) per sample with its gradient written out (first derivatives only);
    torch ops, for any device.

    With w = C^-1 r and v = C^-T w: d/dr = v and d/dC_ij = -v_i w_j + delta_ij / C_ii on the
    lower triangle. Hand-written because this loss runs on every training batch: two
    substitutions and d (d + 1) / 2 column products instead of a graph node per vector op and
    broadcasts over [B, d, d] (slow for d this small).
    """

    @staticmethod
    def forward(ctx, residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
        white = solve_lower(chol, residual)
        diag = torch.diagonal(chol, dim1=-2, dim2=-1).contiguous()
        ctx.save_for_backward(chol, white, diag)
        return 0.5 * white.square().sum(-1) + torch.log(diag).sum(-1) + residual.shape[-1] * HALF_LOG_2PI

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        chol, white, diag = ctx.saved_tensors
        back = solve_lower(chol, white, transpose=True) * grad.unsqueeze(-1)
        grad_r = back if ctx.needs_input_grad[0] else None
        grad_c = None
        if ctx.needs_input_grad[1]:
            d = white.shape[-1]
            v, w = back.unbind(-1), white.unbind(-1)
            on_diag = (grad.unsqueeze(-1) / diag - back * white).unbind(-1)
            zero = torch.zeros_like(grad)
            entries = [on_diag[i] if i == j else -v[i] * w[j] if j < i else zero
                       for i in range(d) for j in range(d)]
            grad_c = torch.stack(entries, dim=-1).view_as(chol)
        return grad_r, grad_c


@numba.njit(cache=True, error_model="numpy")
def _lower_nll_forward(residual, chol, white, nll):  # pragma: no cover - compiled
    """Per row b: white = C^-1 r by forward substitution, nll = |white|^2 / 2 + sum log C_ii
    + d log(2 pi) / 2."""
    n, d = residual.shape
    const = d * HALF_LOG_2PI
    for b in range(n):
        quad = 0.0
        log_det = 0.0
        for i in range(d):
            acc = residual[b, i]
            for j in range(i):
                acc -= chol[b, i, j] * white[b, j]
            w_i = acc / chol[b, i, i]
            white[b, i] = w_i
            quad += w_i * w_i
            log_det += math.log(chol[b, i, i])
        nll[b] = 0.5 * quad + log_det + const


@numba.njit(cache=True, error_model="numpy")
def _lower_nll_backward(chol, white, grad, grad_r, grad_c):  # pragma: no cover - compiled
    """Per row b: v = C^-T white by back substitution; grad_r = g v, grad_c = g (-v w^T +
    diag(1 / C_ii)) on the lower triangle, 0 above."""
    n, d = white.shape
    for b in range(n):
        for i in range(d - 1, -1, -1):
            acc = white[b, i]
            for j in range(i + 1, d):
                acc -= chol[b, j, i] * grad_r[b, j]
            grad_r[b, i] = acc / chol[b, i, i]
        g = grad[b]
        for i in range(d):
            v_i = grad_r[b, i]
            for j in range(i):
                grad_c[b, i, j] = -g * v_i * white[b, j]
            grad_c[b, i, i] = g * (1.0 / chol[b, i, i] - v_i * white[b, i])
            for j in range(i + 1, d):
                grad_c[b, i, j] = 0.0
            grad_r[b, i] = g * v_i


class _LowerGaussianNLLCPU(torch.autograd.Function):
    """The same NLL and gradient as ``_LowerGaussianNLLTorch``, each as one compiled pass over
    the rows (CPU tensors): at d = 4 and B = 2000 the torch version is some 40 vector ops of
    5-15 us each, about 0.6 ms per training batch; this is some 20 us."""

    @staticmethod
    def forward(ctx, residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
        r = residual.detach().contiguous()
        c = chol.detach().contiguous()
        white = torch.empty_like(r)
        nll = r.new_empty(r.shape[0])
        _lower_nll_forward(r.numpy(), c.numpy(), white.numpy(), nll.numpy())
        ctx.save_for_backward(c, white)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        chol, white = ctx.saved_tensors
        grad_r = torch.empty_like(white)
        grad_c = torch.empty_like(chol)
        _lower_nll_backward(chol.numpy(), white.numpy(), grad.detach().contiguous().to(white.dtype).numpy(),
                            grad_r.numpy(), grad_c.numpy())
        return (grad_r if ctx.needs_input_grad[0] else None), (grad_c if ctx.needs_input_grad[1] else None)


_COMPILED_DTYPES = (torch.float32, torch.float64)


def _compiled_applies(residual: torch.Tensor, chol: torch.Tensor) -> bool:
    return (residual.device.type == "cpu" and chol.device.type == "cpu" and residual.dtype in _COMPILED_DTYPES
            and chol.dtype == residual.dtype and residual.dim() == 2 and chol.dim() == 3)


def gaussian_nll_from_cholesky(residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """-log N(residual; 0, C C^T) per sample for lower-triangular ``chol`` C [B, d, d]."""
    kernel = _LowerGaussianNLLCPU if _compiled_applies(residual, chol) else _LowerGaussianNLLTorch
    return kernel.apply(residual, chol)


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
