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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PolynomialDrift"]


@dataclass(frozen=True)
class PolynomialDrift:
    """μ_prior(z)_c = Σ_k coefficients[k] · z_v^powers[k] for the ``component`` c, 0 elsewhere,
    with v = ``variable``; ``dim`` is the length of z. Units: drift of z_c per time unit."""

    dim: int
    component: int
    variable: int
    powers: tuple[int, ...]
    coefficients: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (0 <= self.component < self.dim and 0 <= self.variable < self.dim):
            raise ValueError(f"PolynomialDrift: component={self.component} and variable={self.variable} "
                             f"out of range (allowed: 0 .. dim - 1 = {self.dim - 1})")
        if len(self.powers) != len(self.coefficients) or not self.powers or min(self.powers) < 0:
            raise ValueError(f"PolynomialDrift: powers {self.powers} must be >= 0 and as many as the "
                             f"coefficients ({len(self.coefficients)})")

    @classmethod
    def fit(cls, z: np.ndarray, drift: np.ndarray, weights: np.ndarray | None = None, *,
            powers: tuple[int, ...], component: int = 0, variable: int | None = None) -> "PolynomialDrift":
        """Weighted least squares of ``drift[:, component]`` on ``z[:, variable]^powers``
        (``variable`` defaults to ``component``; ``weights [B]``, e.g. 1/a, default 1)."""
        z = np.asarray(z, dtype=np.float64)
        target = np.asarray(drift, dtype=np.float64)[:, component]
        variable = component if variable is None else int(variable)
        if z.ndim != 2 or len(target) != len(z) or len(z) <= len(powers):
            raise ValueError(f"PolynomialDrift.fit: z {z.shape} and drift {np.shape(drift)} need more states "
                             f"than powers ({len(powers)}) and one row per state")
        w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(z),) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"PolynomialDrift.fit: weights must be finite, >= 0, shape ({len(z)},)")
        basis = z[:, variable:variable + 1] ** np.asarray(powers)[None, :]
        root = np.sqrt(w)[:, None]
        coefficients = np.linalg.lstsq(basis * root, target * root[:, 0], rcond=None)[0]
        return cls(z.shape[1], int(component), variable, tuple(int(k) for k in powers),
                   tuple(float(c) for c in coefficients))

    def values(self, z: np.ndarray) -> np.ndarray:
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

    def save(self, path: str | os.PathLike) -> Path:
        """Write the prior as JSON (``load`` reads it back)."""
        path = Path(path)
        path.write_text(json.dumps({"class": "PolynomialDrift", **self.__dict__, "powers": list(self.powers),
                                    "coefficients": list(self.coefficients)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PolynomialDrift":
        """The prior written by :meth:`save`; a one-line error names a missing or damaged file."""
        path = Path(path)
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            if raw.pop("class") != "PolynomialDrift":
                raise ValueError("not a PolynomialDrift")
            return cls(int(raw["dim"]), int(raw["component"]), int(raw["variable"]),
                       tuple(int(k) for k in raw["powers"]), tuple(float(c) for c in raw["coefficients"]))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file not found; rerun the stage that wrote it") from None
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a PolynomialDrift file ({err}); rerun the stage that wrote it") from None
