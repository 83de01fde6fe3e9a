"""Write ``ou_pairs.npz`` next to this file: 20 000 Euler–Maruyama pairs of the Ornstein–Uhlenbeck
process dz = -z dt + 0.5 dW (z0 ~ N(0, 1), steps dt ~ U(0.01, 0.05)), the input of
``fit_pairs.toml``. Usage: ``python inputs/make_ou_pairs.py``."""
from pathlib import Path

import numpy as np

rng = np.random.default_rng(0)
n = 20_000
z0 = rng.normal(size=(n, 1))
dt = rng.uniform(0.01, 0.05, n)
z1 = z0 - z0 * dt[:, None] + 0.5 * np.sqrt(dt)[:, None] * rng.normal(size=(n, 1))
out = Path(__file__).resolve().parent / "ou_pairs.npz"
np.savez(out, z0=z0, z1=z1, dt=dt)
print(f"wrote {out}")
