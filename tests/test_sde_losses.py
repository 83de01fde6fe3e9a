"""Exactness of the transition likelihoods in matscale.sde.losses (deterministic checks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import quad

from matscale.sde.losses import em_nll, milstein_nll



@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _random_case(seed: int, batch: int = 5, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    du = torch.randn(batch, d, generator=g)
    s = torch.rand(batch, generator=g) + 0.1
    mu = torch.randn(batch, d, generator=g)
    lower = torch.tril(torch.randn(batch, d, d, generator=g), -1)
    sigma = lower + torch.diag_embed(torch.rand(batch, d, generator=g) + 0.5)
    return du, s, mu, sigma


@pytest.mark.parametrize("lam", [1.0, 7.0])
def test_em_nll_is_exact_gaussian_nll(lam):
    du, s, mu, sigma = _random_case(0)
    got = em_nll(du, s, mu, sigma, structure="triangular", lam=lam).numpy()
    general = em_nll(du, s, mu, sigma, structure="general", lam=lam).numpy()
    for b in range(du.shape[0]):
        cov = lam * s[b].item() * (sigma[b] @ sigma[b].T).numpy()
        want = -stats.multivariate_normal(mean=(mu[b] * s[b]).numpy(), cov=cov).logpdf(du[b].numpy())
        assert got[b] == pytest.approx(want, rel=1e-10)
        assert general[b] == pytest.approx(want, rel=1e-10)


def test_em_nll_diagonal_matches_triangular():
    du, s, mu, sigma = _random_case(1)
    diag = torch.diagonal(sigma, dim1=-2, dim2=-1)
    a = em_nll(du, s, mu, diag, structure="diagonal")
    b = em_nll(du, s, mu, torch.diag_embed(diag), structure="triangular")
    torch.testing.assert_close(a, b)


def test_em_nll_general_accepts_singular_sigma_with_jitter():
    du, s, mu, _ = _random_case(2, d=2)
    sigma = torch.tensor([[0.0, 0.0], [0.0, 0.7]]).expand(du.shape[0], 2, 2)
    out = em_nll(du, s, mu, sigma, structure="general", jitter=torch.full((2,), 1e-6))
    assert torch.isfinite(out).all()


def _milstein_density(y, sig, dsig, mu, s):
    """p(du) from the implementation, for scalar inputs."""
    t = lambda x: torch.tensor([[x]])
    return float(torch.exp(-milstein_nll(t(y), torch.tensor([s]), t(mu), t(sig), t(dsig))))


@pytest.mark.parametrize("dsig", [0.8, -1.5])
def test_milstein_density_matches_noncentral_chi2(dsig):
    sig, mu, s = 0.7, 0.3, 0.2
    b, a = sig * np.sqrt(s), 0.5 * sig * dsig * s
    shift = mu * s - a - b**2 / (4 * a)  # du = a (xi + b / 2a)^2 + shift
    nc = (b / (2 * a)) ** 2
    for y in np.linspace(-0.4, 0.6, 11):
        w = (y - shift) / a
        if w <= 0:
            continue
        want = stats.ncx2.pdf(w, df=1, nc=nc) / abs(a)
        disc = 1 + 4 * (a / b) * (a / b + (y - mu * s) / b)
        if disc > 1e-2:  # inside the region where the Milstein density (not the fallback) is used
            assert _milstein_density(y, sig, dsig, mu, s) == pytest.approx(want, rel=1e-8)


def test_milstein_density_normalised_and_gaussian_limit():
    # rho = dsig sqrt(s) / 2 = 0.047: the support edge sits 5.3 standard deviations below the mean,
    # so the Gaussian fallback beyond it carries < 1e-6 of mass and the integral must be 1
    sig, dsig, mu, s = 0.5, 0.3, -0.2, 0.1
    total, _ = quad(lambda y: _milstein_density(y, sig, dsig, mu, s), -3, 3, limit=400, points=[mu * s])
    assert total == pytest.approx(1.0, abs=1e-5)
    y = 0.13
    gauss = stats.norm(mu * s, sig * np.sqrt(s)).pdf(y)
    assert _milstein_density(y, sig, 0.0, mu, s) == pytest.approx(gauss, rel=1e-10)
    assert _milstein_density(y, sig, 1e-9, mu, s) == pytest.approx(gauss, rel=1e-6)


def test_milstein_outside_support_falls_back_to_gaussian():
    sig, dsig, mu, s = 0.5, 3.0, 0.0, 0.5
    y = -2.0  # far below the lower edge of the (positively skewed) Milstein support
    gauss = stats.norm(0.0, sig * np.sqrt(s)).pdf(y)
    assert _milstein_density(y, sig, dsig, mu, s) == pytest.approx(gauss, rel=1e-10)
