"""Gray-box drift priors: known or separately estimated parts of the drift μ(z), added to the
networks' output (``fit_sde(..., drift_prior=...)``; the networks then learn the remainder).

:class:`PolynomialDrift` is a polynomial in one observable, fitted by weighted least squares to
exact drifts (e.g. ``system.generator_moments``). Near a critical point the drift of the order
parameter is ~1e-3 per time unit against a state-to-state scatter several times larger, and the
stationary density ∝ exp(∫ 2μ/a) turns a drift that is a few 1e-4 too weak where few states
lie (around m = 0) into a visibly wrong P(m). A least-squares polynomial has no such shrinkage:
with it as the prior the networks only add the dependence on the other observables.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PolynomialDrift", "PiecewiseLinearDrift", "load_prior", "WEIGHTS_NOTE"]

WEIGHTS_NOTE = """Per-state weights such as 1/a(x) bias a drift prior when the weight and the drift are
correlated at fixed z: for the 2-D Ising model near T_c, states with more domain walls have both
a larger diffusion a(x) of m and a different drift b(x), so weights 1/a fit E[b/a | m] / E[1/a | m]
instead of E[b | m], the drift of the effective dynamics whose stationary density is P(m). At
L = 64, T = 2.28 (32 000 states) the implied ⟨|M|⟩ moves from 0.544 (unweighted, any degree 7–13,
and local bin means alike) to 0.508 with weights 1/a, four direct error bars."""


def _regression_inputs(name: str, z: np.ndarray, drift: np.ndarray, weights: np.ndarray | None,
                       component: int, variable: int | None, n_parameters: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Checked ``(z, target = drift[:, component], weights, variable)`` of a weighted fit with
    ``n_parameters`` unknowns (more states than that are needed)."""
    z = np.asarray(z, dtype=np.float64)
    target = np.asarray(drift, dtype=np.float64)[:, component]
    variable = component if variable is None else int(variable)
    if z.ndim != 2 or len(target) != len(z) or len(z) <= n_parameters:
        raise ValueError(f"{name}.fit: z {z.shape} and drift {np.shape(drift)} need one row per state and more "
                         f"states than parameters ({n_parameters})")
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(z),) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name}.fit: weights must be finite, >= 0, shape ({len(z)},)")
    return z, target, w, variable


class _DriftPrior:
    """What the priors share (frozen dataclasses with ``dim``, ``component``, ``variable``):
    the index checks and the JSON file (``save``; :func:`load_prior` reads any of them)."""

    dim: int
    component: int
    variable: int

    def _check_indices(self) -> None:
        if not (0 <= self.component < self.dim and 0 <= self.variable < self.dim):
            raise ValueError(f"{type(self).__name__}: component={self.component} and variable={self.variable} "
                             f"out of range (allowed: 0 .. dim - 1 = {self.dim - 1})")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the prior as JSON (:func:`load_prior` reads it back)."""
        path = Path(path)
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        path.write_text(json.dumps({"class": type(self).__name__, **fields}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        """The prior of this class written by :meth:`save`."""
        prior = load_prior(path)
        if not isinstance(prior, cls):
            raise ValueError(f"{path}: a {type(prior).__name__}, not a {cls.__name__}; use load_prior")
        return prior


@dataclass(frozen=True)
class PolynomialDrift(_DriftPrior):
    """μ_prior(z)_c = Σ_k coefficients[k] · z_v^powers[k] for the ``component`` c, 0 elsewhere,
    with v = ``variable``; ``dim`` is the length of z. Units: drift of z_c per time unit."""

    dim: int
    component: int
    variable: int
    powers: tuple[int, ...]
    coefficients: tuple[float, ...]

    def __post_init__(self) -> None:
        self._check_indices()
        if len(self.powers) != len(self.coefficients) or not self.powers or min(self.powers) < 0:
            raise ValueError(f"PolynomialDrift: powers {self.powers} must be >= 0 and as many as the "
                             f"coefficients ({len(self.coefficients)})")

    @classmethod
    def fit(cls, z: np.ndarray, drift: np.ndarray, weights: np.ndarray | None = None, *,
            powers: tuple[int, ...], component: int = 0, variable: int | None = None) -> "PolynomialDrift":
        """Weighted least squares of ``drift[:, component]`` on ``z[:, variable]^powers``
        (``variable`` defaults to ``component``; ``weights [B]``, default 1). Weights change what
        is estimated: the fit targets E[w b | z_v] / E[w | z_v], which is the conditional mean drift
        E[b | z_v] only when w does not vary between states at the same z_v (see :data:`WEIGHTS_NOTE`)."""
        z, target, w, variable = _regression_inputs("PolynomialDrift", z, drift, weights, component, variable,
                                                    len(powers))
        basis = z[:, variable:variable + 1] ** np.asarray(powers)[None, :]
        root = np.sqrt(w)[:, None]
        coefficients = np.linalg.lstsq(basis * root, target * root[:, 0], rcond=None)[0]
        return cls(z.shape[1], int(component), variable, tuple(int(k) for k in powers),
                   tuple(float(c) for c in coefficients))

    def values_at(self, z: np.ndarray) -> np.ndarray:
        """``float64 [B, dim]``: the prior at ``z [B, dim]`` (numpy)."""
        z = np.asarray(z, dtype=np.float64)
        out = np.zeros_like(z)
        out[:, self.component] = (z[:, self.variable:self.variable + 1] ** np.asarray(self.powers)) @ np.asarray(self.coefficients)
        return out

    def __call__(self, z: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        x = z[:, self.variable]
        column = torch.zeros_like(x)
        for k, c in zip(self.powers, self.coefficients):
            column = column + c * x ** k
        out = torch.zeros_like(z)
        out[:, self.component] = column
        return out


def load_prior(path: str | os.PathLike) -> "PolynomialDrift | PiecewiseLinearDrift":
    """A prior written by ``save`` of any class; a one-line error names a missing or damaged file."""
    path = Path(path)
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        kind = raw.pop("class")
        if kind not in _PRIORS:
            raise ValueError(f"unknown class {kind!r}")
        return _PRIORS[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found; rerun the stage that wrote it") from None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a drift prior file ({err}); rerun the stage that wrote it") from None


@dataclass(frozen=True)
class PiecewiseLinearDrift(_DriftPrior):
    """μ_prior(z)_c = f(z_v) for the ``component`` c (0 elsewhere): f linear between the
    ``knots`` (increasing), with the ``values`` there, and continued linearly beyond the end
    knots; with ``odd`` = True, f(x) = sign(x) f(|x|) and the knots lie in [0, ∞).
    Units: drift of z_c per time unit.

    Unlike a polynomial, a piecewise-linear fit is local: a steep drift in the tails (|m| → 1
    near a critical point, where b ~ 1e-2) does not pull the fit where the drift is small and
    decisive (|m| < 0.7, b ~ 1e-3)."""

    dim: int
    component: int
    variable: int
    knots: tuple[float, ...]
    values: tuple[float, ...]
    odd: bool = False

    def __post_init__(self) -> None:
        self._check_indices()
        if len(self.knots) < 2 or len(self.knots) != len(self.values) or np.any(np.diff(self.knots) <= 0):
            raise ValueError(f"PiecewiseLinearDrift: knots must be >= 2, increasing and as many as the values "
                             f"(got {len(self.knots)} knots, {len(self.values)} values)")

    @staticmethod
    def _hats(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
        """Basis [B, K] of linear interpolation between the knots (linear beyond the ends)."""
        i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
        t = (x - knots[i]) / (knots[i + 1] - knots[i])
        basis = np.zeros((len(x), len(knots)))
        rows = np.arange(len(x))
        basis[rows, i] = 1.0 - t
        basis[rows, i + 1] = t
        return basis

    @classmethod
    def fit(cls, z: np.ndarray, drift: np.ndarray, weights: np.ndarray | None = None, *,
            knots: np.ndarray, component: int = 0, variable: int | None = None,
            odd: bool = False) -> "PiecewiseLinearDrift":
        """Weighted least squares of ``drift[:, component]`` on the piecewise-linear basis of
        ``z[:, variable]`` (with ``odd``: of |z_v|, the drift times sign(z_v)). Knots without data
        nearby are tied to their neighbours by a small ridge (1e-9 of the mean weight). Weights:
        as in :meth:`PolynomialDrift.fit`."""
        knots = np.asarray(knots, dtype=np.float64)
        z, target, w, variable = _regression_inputs("PiecewiseLinearDrift", z, drift, weights, component, variable,
                                                    0)  # the ridge ties knots without data
        x = z[:, variable]
        if odd:
            target = target * np.sign(x)
            x = np.abs(x)
        basis = cls._hats(x, knots)
        gram = basis.T @ (w[:, None] * basis)
        ridge = 1e-9 * float(np.mean(w)) * len(x)
        diff = np.diff(np.eye(len(knots)), axis=0)  # smoothness tie between neighbouring knots
        values = np.linalg.solve(gram + ridge * diff.T @ diff, basis.T @ (w * target))
        return cls(z.shape[1], int(component), variable, tuple(float(k) for k in knots),
                   tuple(float(v) for v in values), bool(odd))

    def values_at(self, z: np.ndarray) -> np.ndarray:
        """``float64 [B, dim]``: the prior at ``z [B, dim]`` (numpy)."""
        z = np.asarray(z, dtype=np.float64)
        x = z[:, self.variable]
        sign = np.sign(x) if self.odd else np.ones_like(x)
        out = np.zeros_like(z)
        out[:, self.component] = sign * (self._hats(np.abs(x) if self.odd else x, np.asarray(self.knots))
                                         @ np.asarray(self.values))
        return out

    def __call__(self, z: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        x = z[:, self.variable]
        sign = torch.sign(x) if self.odd else torch.ones_like(x)
        x = x.abs() if self.odd else x
        knots = torch.as_tensor(self.knots, dtype=z.dtype, device=z.device)
        values = torch.as_tensor(self.values, dtype=z.dtype, device=z.device)
        i = torch.clamp(torch.searchsorted(knots, x.contiguous(), right=True) - 1, 0, len(self.knots) - 2)
        t = (x - knots[i]) / (knots[i + 1] - knots[i])
        out = torch.zeros_like(z)
        out[:, self.component] = sign * (values[i] * (1 - t) + values[i + 1] * t)
        return out


_PRIORS = {cls.__name__: cls for cls in (PolynomialDrift, PiecewiseLinearDrift)}
