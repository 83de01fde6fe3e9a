"""The hand-written training kernels of matscale.sde against torch's autograd (float64).

The twin MLP's gradient (``models._TwinMLPTraining``) and the lower-triangular Gaussian NLL
(``losses._LowerGaussianNLLCPU``, compiled; ``losses._LowerGaussianNLLTorch``, any device) are
checked by finite differences (``torch.autograd.gradcheck``) and against the plain autograd
versions of the same functions, to rounding error. The malloc tuning is checked in a fresh
process, since it is process-wide.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from matscale.sde import fit_sde
from matscale.sde.losses import (SUBSTITUTION_MAX_DIM, _LowerGaussianNLLCPU, _LowerGaussianNLLTorch,
                                 gaussian_nll_from_cholesky, solve_lower)
from matscale.sde.models import ACTIVATIONS, SDEModel, TwinMLP, _TwinMLPTraining


def _lower(batch: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chol = torch.tril(torch.randn(batch, d, d, generator=g, dtype=torch.float64), -1)
    return chol + torch.diag_embed(torch.rand(batch, d, generator=g, dtype=torch.float64) + 0.5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(6,), (6, 5), (5, 7, 4)])
def test_twin_mlp_gradient_matches_autograd(activation, hidden):
    torch.manual_seed(0)
    net = TwinMLP(3, hidden, 2, 5, activation).double()
    x = 2.0 * torch.randn(9, 3, dtype=torch.float64)
    out_a, out_b = net(x)  # data input: the hand-written path
    ref_a, ref_b = net._forward_autograd(x)
    torch.testing.assert_close(out_a, ref_a, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out_b, ref_b, rtol=1e-13, atol=1e-13)
    params = net._flat_parameters()
    weights_a, weights_b = torch.randn(2, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    got = torch.autograd.grad((out_a * weights_a).sum() + (out_b.square() * weights_b).sum(), params)
    want = torch.autograd.grad((ref_a * weights_a).sum() + (ref_b.square() * weights_b).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_twin_mlp_without_gradients_matches_autograd(activation):
    """Rollouts evaluate one network after the other with in-place activations: same values."""
    torch.manual_seed(3)
    net = TwinMLP(3, (6, 5), 2, 4, activation).double()
    x = 2.0 * torch.randn(9, 3, dtype=torch.float64)
    x_before = x.clone()
    with torch.no_grad():
        out_a, out_b = net(x)
        drift_only = net.forward_a(x)
    ref_a, ref_b = net._forward_autograd(x)
    torch.testing.assert_close(out_a, ref_a, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out_b, ref_b, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(drift_only, ref_a, rtol=1e-13, atol=1e-13)
    assert torch.equal(x, x_before)  # the input itself is never overwritten


@pytest.mark.parametrize("activation", ["silu", "tanh"])
def test_twin_mlp_gradcheck_including_the_input(activation):
    torch.manual_seed(1)
    net = TwinMLP(2, (4, 3), 2, 3, activation).double()
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda xx, *p: _TwinMLPTraining.apply(activation, xx, *p),
                                    (x, *net._flat_parameters()))


def test_twin_mlp_uses_autograd_where_second_derivatives_are_needed():
    torch.manual_seed(2)
    net = TwinMLP(2, (4,), 2, 2, "silu").double()
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    _, out_b = net(x)  # input requires grad: torch's graph, differentiable twice
    (g,) = torch.autograd.grad(out_b.sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(gg).all()


@pytest.mark.parametrize("d", [1, 2, 4, SUBSTITUTION_MAX_DIM, SUBSTITUTION_MAX_DIM + 3])
def test_triangular_solves_match_lapack(d):
    chol = _lower(7, d, seed=d)
    rhs = torch.randn(7, d, dtype=torch.float64)
    want = torch.linalg.solve_triangular(chol, rhs.unsqueeze(-1), upper=False).squeeze(-1)
    want_t = torch.linalg.solve_triangular(chol.transpose(1, 2), rhs.unsqueeze(-1), upper=True).squeeze(-1)
    torch.testing.assert_close(solve_lower(chol, rhs), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(solve_lower(chol, rhs, transpose=True), want_t, rtol=1e-12, atol=1e-12)


def _reference_nll(residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """-log N(residual; 0, C C^T) through LAPACK and autograd only."""
    white = torch.linalg.solve_triangular(chol, residual.unsqueeze(-1), upper=False).squeeze(-1)
    d = residual.shape[-1]
    return (0.5 * white.square().sum(-1) + torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            + 0.5 * d * torch.log(torch.tensor(2.0 * torch.pi, dtype=torch.float64)))


@pytest.mark.parametrize("kernel", [_LowerGaussianNLLCPU, _LowerGaussianNLLTorch])
@pytest.mark.parametrize("d", [1, 3, 4, SUBSTITUTION_MAX_DIM + 2])
def test_lower_gaussian_nll_value_and_gradient(kernel, d):
    chol = _lower(11, d, seed=10 + d).requires_grad_(True)
    residual = torch.randn(11, d, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(11, dtype=torch.float64)
    got = kernel.apply(residual, chol)
    want = _reference_nll(residual, chol)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_got = torch.autograd.grad((got * weights).sum(), (residual, chol))
    g_want = torch.autograd.grad((want * weights).sum(), (residual, chol))
    torch.testing.assert_close(g_got[0], g_want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_got[1], torch.tril(g_want[1]), rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda r, c: kernel.apply(r, torch.tril(c)), (residual, chol))


def test_compiled_nll_in_float32_agrees_with_float64():
    chol = _lower(200, 4, seed=3)
    residual = torch.randn(200, 4, dtype=torch.float64)
    want = gaussian_nll_from_cholesky(residual, chol)
    got = gaussian_nll_from_cholesky(residual.float(), chol.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_cholesky_sigma_places_entries_exactly():
    """The placement matmuls put softplus(raw) + floor on the diagonal and raw below it."""
    model = SDEModel(3, diffusion="cholesky", hidden=(4,)).double()
    raw = torch.randn(6, 6, dtype=torch.float64)
    sigma = model._sigma_from_raw(raw, 6)
    positive = torch.nn.functional.softplus(raw) + model.floor  # the same vectorised softplus
    rows, cols = torch.tril_indices(3, 3)
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
        want = positive[:, k] if i == j else raw[:, k]
        assert torch.equal(sigma[:, i, j], want * model.diff_scale[i])
    assert torch.equal(torch.triu(sigma, 1), torch.zeros_like(sigma))


_MALLOC_SCRIPT = """
import numpy as np
from matscale.sde import fit_sde
from matscale.sde.memory import retain_freed_memory
rng = np.random.default_rng(0)
z0 = rng.standard_normal((400, 1)); z1 = z0 + 0.1 * rng.standard_normal((400, 1))
fit_sde(z0, z1, 0.01, hidden=(8,), epochs=1, progress=False)
print(retain_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc tuning is for glibc on Linux")
@pytest.mark.parametrize("setting, expected", [("1", "True"), ("0", "False")])
def test_malloc_tuning_applies_on_linux_and_can_be_switched_off(setting, expected):
    env = dict(os.environ, MATSCALE_MALLOC_TUNING=setting, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _MALLOC_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected


def test_fit_is_the_same_with_the_hand_written_kernels_and_without(monkeypatch):
    """A short fit with the hand-written MLP gradient and compiled NLL equals the same fit
    through torch's autograd and LAPACK, to float32 rounding accumulated over the steps."""
    import matscale.sde.losses as losses
    import matscale.sde.models as models

    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(3000, 2, generator=gen, dtype=torch.float64).numpy()
    z1 = z0 - 0.05 * z0 + 0.2 * torch.randn(3000, 2, generator=gen, dtype=torch.float64).numpy()
    kwargs = dict(hidden=(16, 16), epochs=3, batch_size=500, progress=False, weight_average=None,
                  dtype="float64")
    fast = fit_sde(z0, z1, 0.05, **kwargs)
    monkeypatch.setattr(models.TwinMLP, "forward", models.TwinMLP._forward_autograd)
    monkeypatch.setattr(losses, "_compiled_applies", lambda *a: False)
    monkeypatch.setattr(losses, "SUBSTITUTION_MAX_DIM", 0)
    slow = fit_sde(z0, z1, 0.05, **kwargs)
    for name, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, slow.model.state_dict()[name], rtol=1e-9, atol=1e-9)
