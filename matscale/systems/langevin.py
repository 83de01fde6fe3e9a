"""A stochastically forced Langevin oscillator in a double well, with position-dependent noise.

The example system of template learning for second-order dynamics (Dietrich et al., Chaos 33,
023121 (2023), arXiv 2106.09004): a particle of mass m in the double well
V(q) = (q^2 - 1)^2 / 4 with linear friction and multiplicative noise,

    dq = p / m dt,
    dp = F(q, p) dt + sigma(q) dW,   F(q, p) = q - q^3 - gamma p,   sigma(q) = sigma0 + sigma2 q^2.

Reduced units: q, p, t dimensionless (m = 1 by default); F in [p]/[t], sigma in [p]/sqrt([t]).

Simulation: symplectic Euler-Maruyama with ``inner_steps`` fine steps per data step
(p <- p + F h + sigma sqrt(h) xi, then q <- q + p h / m, h = dt / inner_steps; weak order 1,
so the fine step sets the accuracy of the "true" pairs). ``pairs(n, dt, rng)`` draws n
scattered starting states uniformly on the data support ``q_range x p_range`` and advances
each by one data step dt: the pairs (z0, z1, dt) of the identification, z = (q, p).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LangevinOscillator:
    """Double-well Langevin oscillator (module docstring). All fields in reduced units."""

    mass: float = 1.0
    friction: float = 0.5            # gamma [1/t]
    sigma0: float = 0.2              # noise at q = 0 [p]/sqrt([t])
    sigma2: float = 0.1              # curvature of the noise in q [p]/sqrt([t]) / [q]^2
    q_range: tuple[float, float] = (-2.0, 2.0)   # data support in q
    p_range: tuple[float, float] = (-2.0, 2.0)   # data support in p
    inner_steps: int = 50            # fine simulation steps per data step

    def __post_init__(self) -> None:
        for name in ("mass", "sigma0"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        for name in ("friction", "sigma2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        for name in ("q_range", "p_range"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"{name}: must be (low, high) with low < high, got {getattr(self, name)!r}")
        if not (isinstance(self.inner_steps, (int, np.integer)) and self.inner_steps >= 1):
            raise ValueError(f"inner_steps: must be an int >= 1, got {self.inner_steps!r}")

    # ------------------------------------------------------------------ the true coefficients
    def force(self, q: np.ndarray, p: np.ndarray) -> np.ndarray:
        """F(q, p) = q - q^3 - gamma p [p]/[t]."""
        return q - q ** 3 - self.friction * p

    def noise(self, q: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
        """sigma(q) = sigma0 + sigma2 q^2 [p]/sqrt([t]) (independent of p)."""
        return self.sigma0 + self.sigma2 * np.asarray(q) ** 2

    def drift(self, z: np.ndarray) -> np.ndarray:
        """Drift of the state z = (q, p) [N, 2]: (p / m, F) [N, 2]."""
        q, p = z[:, 0], z[:, 1]
        return np.stack([p / self.mass, self.force(q, p)], axis=1)

    def diffusion(self, z: np.ndarray) -> np.ndarray:
        """Diffusion matrix [N, 2, 2]: only the (p, p) entry, sigma(q), is nonzero."""
        out = np.zeros((z.shape[0], 2, 2))
        out[:, 1, 1] = self.noise(z[:, 0])
        return out

    # ------------------------------------------------------------------ simulation
    def simulate(self, z: np.ndarray, n_steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
        """Trajectories from states z [B, 2], recorded every dt: [B, n_steps + 1, 2]
        (``inner_steps`` symplectic Euler-Maruyama steps per dt)."""
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt: must be a finite number > 0, got {dt!r}")
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != 2:
            raise ValueError(f"z: expected shape [B, 2] (q, p), got {list(z.shape)}")
        h = dt / self.inner_steps
        root = math.sqrt(h)
        q, p = z[:, 0].copy(), z[:, 1].copy()
        out = np.empty((z.shape[0], n_steps + 1, 2))
        out[:, 0] = z
        for k in range(n_steps):
            for _ in range(self.inner_steps):
                p += self.force(q, p) * h + self.noise(q) * root * rng.standard_normal(q.shape)
                q += p * (h / self.mass)
            out[:, k + 1, 0], out[:, k + 1, 1] = q, p
        return out

    def support_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n states [n, 2] uniform on the data support q_range x p_range."""
        (q0, q1), (p0, p1) = self.q_range, self.p_range
        return np.stack([rng.uniform(q0, q1, n), rng.uniform(p0, p1, n)], axis=1)

    def pairs(self, n: int, dt: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n scattered pairs: z0 uniform on the data support, z1 one data step dt later;
        returns (z0 [n, 2], z1 [n, 2], dt [n])."""
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n: must be an int >= 1, got {n!r}")
        z0 = self.support_sample(int(n), rng)
        z1 = self.simulate(z0, 1, dt, rng)[:, 1]
        return z0, z1, np.full(int(n), float(dt))
