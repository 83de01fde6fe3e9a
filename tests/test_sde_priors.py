"""Gray-box drift priors (matscale.sde.priors): the least-squares fit, torch/numpy agreement,
files, errors, and a fit_sde run that adds the prior to the networks' drift."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matscale.partial import moment_pairs
from matscale.sde import fit_sde
from matscale.sde.fitted import load_sde
from matscale.sde.priors import PiecewiseLinearDrift, PolynomialDrift, load_prior


def test_fit_recovers_a_polynomial_and_matches_weighted_least_squares() -> None:
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, size=(500, 2))
    drift = np.stack([0.3 * z[:, 0] - 1.2 * z[:, 0] ** 3, z[:, 1]], axis=1)
    prior = PolynomialDrift.fit(z, drift, powers=(1, 3, 5), component=0)
    np.testing.assert_allclose(prior.coefficients, [0.3, -1.2, 0.0], atol=1e-10)
    # with noise and weights: the weighted normal equations
    noisy = drift + rng.normal(0, 0.1, size=drift.shape)
    w = rng.uniform(0.5, 2.0, size=len(z))
    prior = PolynomialDrift.fit(z, noisy, w, powers=(0, 1, 2), component=0)
    X = z[:, :1] ** np.array([0, 1, 2])
    expected = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * noisy[:, 0]))
    np.testing.assert_allclose(prior.coefficients, expected, rtol=1e-10)


def test_torch_and_numpy_values_agree_and_other_components_are_zero() -> None:
    prior = PolynomialDrift(dim=3, component=1, variable=0, powers=(1, 3), coefficients=(0.5, -2.0))
    z = np.random.default_rng(1).normal(size=(7, 3))
    expected = np.zeros_like(z)
    expected[:, 1] = 0.5 * z[:, 0] - 2.0 * z[:, 0] ** 3
    np.testing.assert_allclose(prior.values_at(z), expected, rtol=1e-12)
    np.testing.assert_allclose(prior(torch.as_tensor(z)).numpy(), expected, rtol=1e-12)


def test_file_round_trip_and_errors(tmp_path) -> None:
    prior = PolynomialDrift(dim=2, component=0, variable=0, powers=(1, 3), coefficients=(0.25, -1.0))
    assert PolynomialDrift.load(prior.save(tmp_path / "p.json")) == prior
    (tmp_path / "bad.json").write_text("{\"class\": \"PolynomialDrift\", \"dim\": 2}")
    with pytest.raises(ValueError, match="bad.json: not a drift prior file"):
        PolynomialDrift.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.json: file not found"):
        PolynomialDrift.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="component=2"):
        PolynomialDrift(dim=2, component=2, variable=0, powers=(1,), coefficients=(1.0,))
    with pytest.raises(ValueError, match="powers"):
        PolynomialDrift(dim=2, component=0, variable=0, powers=(1, 3), coefficients=(1.0,))
    with pytest.raises(ValueError, match="weights"):
        PolynomialDrift.fit(np.zeros((10, 2)), np.zeros((10, 2)), -np.ones(10), powers=(1,))


def test_fit_sde_adds_the_prior_and_a_reload_needs_it(tmp_path) -> None:
    """Exact-moment pairs of the double well b(z) = z − z³ with a = 0.01: the prior (degree 3)
    takes the whole drift, the fitted μ equals b within 2 % of its range, and the saved SDE
    reloads with the prior (without it load_sde refuses)."""
    torch.set_num_threads(1)
    z = np.random.default_rng(2).uniform(-1.3, 1.3, size=(3000, 1))
    drift = z - z ** 3
    diffusion = np.full((len(z), 1, 1), 0.01)
    prior = PolynomialDrift.fit(z, drift, 1.0 / diffusion[:, 0, 0], powers=(1, 3), component=0)
    np.testing.assert_allclose(prior.coefficients, [1.0, -1.0], atol=1e-10)
    z0, z1, dt = moment_pairs(z, drift, diffusion, 0.1)
    sde = fit_sde(z0, z1, dt, loss="em", hidden=(16,), epochs=3, batch_size=500, seed=0, progress=False,
                  drift_prior=prior, num_threads=1)
    grid = np.linspace(-1.2, 1.2, 25)[:, None]
    mu = np.asarray(sde.drift(grid))
    assert np.max(np.abs(mu - (grid - grid ** 3))) < 0.02 * 0.77  # 0.77: the range of b on the grid
    sde.save(tmp_path / "sde")
    again = load_sde(tmp_path / "sde", drift_prior=prior)
    np.testing.assert_allclose(np.asarray(again.drift(grid)), mu, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="drift_prior"):
        load_sde(tmp_path / "sde")


def test_piecewise_linear_prior_fits_locally_and_round_trips(tmp_path) -> None:
    """An odd drift that is small in the middle and steep in the tails (the shape near T_c):
    the piecewise-linear fit follows the middle to 1e-6 where a polynomial of degree 9 is
    pulled off by the tails; torch equals numpy; the file round-trips through load_prior."""
    m = np.random.default_rng(3).uniform(-0.95, 0.95, size=(20000, 1))
    x = np.abs(m[:, 0])
    b = np.sign(m[:, 0]) * np.where(x < 0.7, 2e-3 * np.sin(np.pi * x / 0.7), -0.08 * (x - 0.7) ** 2 / 0.0625)
    knots = np.linspace(0.0, 0.95, 39)
    spline = PiecewiseLinearDrift.fit(m, b[:, None], knots=knots, odd=True)
    poly = PolynomialDrift.fit(m, b[:, None], powers=(1, 3, 5, 7, 9))
    middle = np.linspace(0.05, 0.65, 13)[:, None]
    exact = 2e-3 * np.sin(np.pi * middle[:, 0] / 0.7)
    assert np.max(np.abs(spline.values_at(middle)[:, 0] - exact)) < 1e-4    # knot spacing 0.025: ~3 % of 2e-3
    assert np.max(np.abs(poly.values_at(middle)[:, 0] - exact)) > 2e-4
    np.testing.assert_allclose(spline.values_at(-middle)[:, 0], -spline.values_at(middle)[:, 0])
    np.testing.assert_allclose(spline(torch.as_tensor(middle)).numpy(), spline.values_at(middle), rtol=1e-12)
    assert load_prior(spline.save(tmp_path / "s.json")) == spline
    with pytest.raises(ValueError, match="knots"):
        PiecewiseLinearDrift(dim=1, component=0, variable=0, knots=(0.0,), values=(1.0,))
