"""The stochastic wave equation on a ring, simulated with Walsh's scheme on a fine grid.

    u_tt = c^2 u_xx + f(u) + s(u) xi(x, t),   x on a ring of length L, xi space-time white noise,
    f(u) = -k u - g u^3   (a hardening phi^4 restoring force),   s(u) = s0 + s2 u^2.

Units: u dimensionless, x in [x], t in [t], c in [x]/[t]; f in [u]/[t]^2, s in
[u] [t]^(-3/2) [x]^(1/2). Defaults L = 1, c = 1, k = g = 1, s0 = 0.1, s2 = 0.05.

Simulation (J. B. Walsh, "On numerical solutions of the stochastic wave equation", Illinois
J. Math. 50, 991 (2006)): on the characteristic grid x_j = j h_x, t_n = n h with h_x = c h
(``n_fine`` points, h = L / (c n_fine)) the d'Alembert identity over the diamond with corners
(t_n +- h, x_j), (t_n, x_j +- h_x) gives the step

    u_{n+1, j} = u_{n, j+1} + u_{n, j-1} - u_{n-1, j} + h^2 f(ubar) + s(ubar) h / sqrt(2c) xi_{n, j},

ubar = (u_{n, j+1} + u_{n, j-1}) / 2, xi_{n, j} ~ N(0, 1) independent. The points with n + j even
form one lattice (the diamonds of their steps tile space-time) and those with n + j odd another;
they do not interact, and the data use only the even one. Walsh's scheme converges to the SPDE
as h -> 0; this fine scheme is the "true" system here.

Data: a data step dt = r h with r even (so that every data point (n r, j r) is on the even
lattice) lives on the coarse grid of N = n_fine / r points, dx = c dt, and a data state is
z = (u(t) [N], u(t - dt) [N]) on that grid, the state of :class:`matscale.sde.WalshWave`. The
coarse d'Alembert identity holds exactly for the fine data (a coarse diamond is a union of fine
ones), so the data differ from one coarse Walsh step only through f and s varying inside the
diamond. ``pairs(n, dt, rng)`` starts every pair from its own random smooth field, evolves it
for a random time (``burn_in``, a multiple of dt) and records (z0, z1).

Initial fields: u(x, 0) = a0 + sum_{k=1..3} [a_k cos(2 pi k x / L) + b_k sin(2 pi k x / L)],
a0 ~ U(mean_range), a_k, b_k ~ N(0, (amplitude / k)^2); initial velocity of the same form with
zero mean and ``velocity`` in place of amplitude; u(x, -h) = u(x, 0) - h v(x, 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_MODES = 3  # Fourier modes of the random initial fields


@dataclass(frozen=True)
class StochasticWave:
    """The stochastic wave equation on a ring (module docstring)."""

    n_fine: int = 128                  # fine grid points of the simulation
    length: float = 1.0                # L [x]
    speed: float = 1.0                 # c [x]/[t]
    stiffness: float = 1.0             # k [1/t^2]
    cubic: float = 1.0                 # g [1/t^2]
    noise0: float = 0.1                # s0
    noise2: float = 0.05               # s2
    mean_range: tuple[float, float] = (-1.0, 1.0)   # initial mean field a0
    amplitude: float = 0.3             # initial mode amplitudes (u)
    velocity: float = 0.3              # initial velocity mode amplitudes [u]/[t]
    burn_in: tuple[float, float] = (0.25, 0.75)     # evolution time before a pair [t]

    def __post_init__(self) -> None:
        if not (isinstance(self.n_fine, (int, np.integer)) and self.n_fine >= 6 and self.n_fine % 2 == 0):
            raise ValueError(f"n_fine: must be an even int >= 6, got {self.n_fine!r}")
        for name in ("length", "speed", "noise0"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        for name in ("stiffness", "cubic", "noise2", "amplitude", "velocity"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        for name in ("mean_range", "burn_in"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name}: must be (low, high) with low <= high, got {getattr(self, name)!r}")
        if self.burn_in[0] < 0:
            raise ValueError(f"burn_in: must be >= 0, got {self.burn_in!r}")

    # ------------------------------------------------------------------ the true coefficients
    @property
    def fine_dt(self) -> float:
        """Fine step h = L / (c n_fine) [t]."""
        return self.length / (self.speed * self.n_fine)

    def f(self, u: np.ndarray) -> np.ndarray:
        """f(u) = -k u - g u^3 [u]/[t]^2."""
        return -self.stiffness * u - self.cubic * u ** 3

    def s(self, u: np.ndarray) -> np.ndarray:
        """s(u) = s0 + s2 u^2 [u] [t]^(-3/2) [x]^(1/2)."""
        return self.noise0 + self.noise2 * np.asarray(u) ** 2

    def stride(self, dt: float) -> int:
        """r = dt / h, checked: an even integer dividing n_fine with at least 3 coarse points."""
        ratio = dt / self.fine_dt
        r = int(round(ratio))
        if not (math.isfinite(ratio) and abs(ratio - r) <= 1e-9 * max(1.0, ratio) and r >= 2 and r % 2 == 0
                and self.n_fine % r == 0 and self.n_fine // r >= 3):
            allowed = [k * self.fine_dt for k in range(2, self.n_fine // 3 + 1, 2) if self.n_fine % k == 0]
            raise ValueError(f"dt: must be an even multiple r of the fine step {self.fine_dt:.6g} with r "
                             f"dividing n_fine={self.n_fine} (allowed: {', '.join(f'{a:.6g}' for a in allowed)}), got {dt!r}")
        return r

    def coarse_points(self, dt: float) -> int:
        """N = n_fine / r: grid points of the data at step dt."""
        return self.n_fine // self.stride(dt)

    # ------------------------------------------------------------------ simulation
    def initial_fields(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(u(0), u(-h)) [n, n_fine] of random smooth fields (module docstring)."""
        x = np.arange(self.n_fine) * (self.length / self.n_fine)
        k = np.arange(1, N_MODES + 1)
        phase = 2.0 * math.pi * k[:, None] * x[None, :] / self.length          # [modes, n_fine]
        basis_c, basis_s = np.cos(phase), np.sin(phase)

        def field(scale: float) -> np.ndarray:
            a = rng.standard_normal((n, N_MODES)) * (scale / k)
            b = rng.standard_normal((n, N_MODES)) * (scale / k)
            return a @ basis_c + b @ basis_s

        u0 = rng.uniform(*self.mean_range, (n, 1)) + field(self.amplitude)
        v0 = field(self.velocity)
        return u0, u0 - self.fine_dt * v0

    def step(self, u: np.ndarray, u_prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One fine Walsh step: u(t + h) [B, n_fine] from u(t), u(t - h)."""
        h = self.fine_dt
        ubar = np.empty_like(u)
        np.add(u[:, 2:], u[:, :-2], out=ubar[:, 1:-1])
        ubar[:, 0] = u[:, 1] + u[:, -1]
        ubar[:, -1] = u[:, 0] + u[:, -2]
        ubar *= 0.5
        sq = ubar * ubar
        noise = rng.standard_normal(u.shape)
        noise *= (self.noise0 + self.noise2 * sq) * (h / math.sqrt(2.0 * self.speed))
        new = ubar * (2.0 - h * h * (self.stiffness + self.cubic * sq))
        new -= u_prev
        new += noise
        return new

    def simulate(self, u: np.ndarray, u_prev: np.ndarray, n_steps: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Advance fields [B, n_fine] by n_steps fine steps; returns (u, u_prev) at the end."""
        u, u_prev = np.array(u, dtype=np.float64), np.array(u_prev, dtype=np.float64)
        for _ in range(int(n_steps)):
            u, u_prev = self.step(u, u_prev, rng), u
        return u, u_prev

    def pairs(self, n: int, dt: float, rng: np.random.Generator, chunk: int = 4096
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n scattered pairs at data step dt: z = (u(t), u(t - dt)) on the N = n_fine / r point
        grid, z0 after a random burn-in (uniform over the multiples of dt in ``burn_in``, at
        least dt), z1 one data step later. Returns (z0 [n, 2N], z1 [n, 2N], dt [n])."""
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n: must be an int >= 1, got {n!r}")
        r = self.stride(dt)
        lo = max(1, int(math.ceil(self.burn_in[0] / dt - 1e-9)))
        hi = max(lo, int(math.floor(self.burn_in[1] / dt + 1e-9)))
        parts, z1s = [], []
        for start in range(0, int(n), chunk):
            b = min(chunk, int(n) - start)
            m = rng.integers(lo, hi + 1, b)           # z0 at coarse time m, z1 at m + 1
            u, u_prev = self.initial_fields(b, rng)
            frames = {}
            for k in range(hi + 2):
                if k > 0:
                    u, u_prev = self.simulate(u, u_prev, r, rng)
                frames[k] = u[:, ::r]
                frames.pop(k - 3, None)
                if k >= 2:   # coarse times k - 2, k - 1, k complete the pairs with m == k - 1
                    sel = m == k - 1
                    parts.append((np.flatnonzero(sel) + start,
                                np.hstack([frames[k - 1][sel], frames[k - 2][sel]]),
                                np.hstack([frames[k][sel], frames[k - 1][sel]])))
        index = np.concatenate([s[0] for s in parts])
        order = np.argsort(index)
        z0 = np.concatenate([s[1] for s in parts])[order]
        z1 = np.concatenate([s[2] for s in parts])[order]
        return z0, z1, np.full(int(n), float(dt))
