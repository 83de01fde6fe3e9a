"""Benchmark SDEs of "seed 000" (Dietrich et al., arXiv 2106.09004) as scattered snapshot pairs.

Each benchmark draws N initial states uniformly over a box (the data support), a random step
h ~ U(h_min, h_max) per pair, and integrates the known SDE from z0 over h with ``n_substeps``
fine Euler-Maruyama sub-steps. Only (z0, z1, h) is kept: no trajectories. The true drift and
diffusion come with the data, so recovery can be measured.

Systems (``KNOWN_SDES``), time and state in arbitrary reduced units:
    "ornstein_uhlenbeck"   d=1  dz = theta (m - z) dt + s dW
    "double_well"          d=1  dz = (z - z^3) dt + (a + b z^2) dW            (state-dependent)
    "nonsmooth_2d"         d=2  spiral drift, sigma_i = s_i (|z_i| + c)        (non-smooth, diagonal)
    "linear_3d"            d=3  dz = A z dt + B dW, B a full constant matrix
    "langevin_oscillator"  d=2  dx = v dt, dv = (-w^2 x - g v) dt + s dW       (singular Sigma)

``patch_increments`` makes synthetic partial-evolution data for the "partial" loss: increments
with mean mu h and covariance K h Sigma (K patches).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class KnownSDE:
    """A known SDE dz = drift(z) dt + diffusion(z) dW on a box support.

    drift: [N, d] -> [N, d]; diffusion: [N, d] -> [N, d, d] (sigma, Sigma = sigma sigma^T).
    low, high: [d] corners of the sampling box for z0.
    diagonal: True when sigma is diagonal (Milstein applies).
    state_dependent: True when sigma depends on z.
    h_range: default range of the random step h, chosen so that max|d mu/dz| * h <~ 0.03
        (the O(h) bias of the Euler-Maruyama likelihood stays ~1-3 %).
    """

    name: str
    drift: ArrayFn
    diffusion: ArrayFn
    low: np.ndarray
    high: np.ndarray
    diagonal: bool
    state_dependent: bool
    h_range: tuple[float, float] = (0.01, 0.03)
    description: str = ""

    @property
    def dim(self) -> int:
        return len(self.low)

    def covariance(self, z: np.ndarray) -> np.ndarray:
        sig = self.diffusion(z)
        return sig @ np.swapaxes(sig, -1, -2)


@dataclass
class SDEPairs:
    """Scattered pairs from a known SDE plus its true coefficients.

    z0, z1: [N, d]; dt: [N]; ``sde`` the generating KnownSDE; ``n_patches`` K (1 for plain pairs).
    """

    z0: np.ndarray
    z1: np.ndarray
    dt: np.ndarray
    sde: KnownSDE
    n_patches: int = 1
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.sde.name

    @property
    def dim(self) -> int:
        return self.z0.shape[1]

    def drift(self, z: np.ndarray) -> np.ndarray:
        return self.sde.drift(np.asarray(z, dtype=float))

    def diffusion(self, z: np.ndarray) -> np.ndarray:
        return self.sde.diffusion(np.asarray(z, dtype=float))

    def covariance(self, z: np.ndarray) -> np.ndarray:
        return self.sde.covariance(np.asarray(z, dtype=float))


# ============================================================================ the systems
def _diag(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape + (values.shape[-1],))
    idx = np.arange(values.shape[-1])
    out[..., idx, idx] = values
    return out


def _constant(matrix: np.ndarray) -> ArrayFn:
    matrix = np.asarray(matrix, dtype=float)
    return lambda z: np.broadcast_to(matrix, (z.shape[0],) + matrix.shape).copy()


def ornstein_uhlenbeck_sde(theta: float = 1.0, mean: float = 0.5, noise: float = 0.25) -> KnownSDE:
    """dz = theta (mean - z) dt + noise dW on z in [-2, 2] (d = 1)."""
    return KnownSDE("ornstein_uhlenbeck", lambda z: theta * (mean - z), _constant([[noise]]),
                    np.array([-2.0]), np.array([2.0]), diagonal=True, state_dependent=False,
                    description=f"theta={theta}, mean={mean}, noise={noise}")


def double_well_sde(a: float = 0.015, b: float = 0.0125) -> KnownSDE:
    """dz = (z - z^3) dt + (a + b z^2) dW on z in [-1.3, 1.3] (d = 1)."""
    return KnownSDE("double_well", lambda z: z - z**3, lambda z: (a + b * z**2)[:, :, None],
                    np.array([-1.3]), np.array([1.3]), diagonal=True, state_dependent=True,
                    h_range=(0.001, 0.005), description=f"sigma = {a} + {b} z^2")


def nonsmooth_2d_sde(scale: tuple[float, float] = (0.06, 0.04), offset: float = 0.5) -> KnownSDE:
    """Spiral drift (-z1 + z2, -z1 - 0.5 z2^3), sigma = diag(s_i (|z_i| + c)) on [-1.5, 1.5]^2."""
    s = np.asarray(scale, dtype=float)

    def drift(z: np.ndarray) -> np.ndarray:
        return np.stack([-z[:, 0] + z[:, 1], -z[:, 0] - 0.5 * z[:, 1] ** 3], axis=1)

    return KnownSDE("nonsmooth_2d", drift, lambda z: _diag(s * (np.abs(z) + offset)),
                    np.array([-1.5, -1.5]), np.array([1.5, 1.5]), diagonal=True, state_dependent=True,
                    h_range=(0.003, 0.009), description=f"sigma_i = {tuple(s)}_i (|z_i| + {offset})")


LINEAR_3D_A = np.array([[-1.0, 0.5, 0.0], [-0.5, -1.0, 0.3], [0.0, -0.3, -0.8]])
LINEAR_3D_B = np.array([[0.25, 0.0, 0.0], [0.1, 0.2, 0.0], [-0.05, 0.08, 0.15]])


def linear_3d_sde() -> KnownSDE:
    """dz = A z dt + B dW with a full constant B (``LINEAR_3D_A``, ``LINEAR_3D_B``) on [-2, 2]^3."""
    return KnownSDE("linear_3d", lambda z: z @ LINEAR_3D_A.T, _constant(LINEAR_3D_B),
                    np.full(3, -2.0), np.full(3, 2.0), diagonal=False, state_dependent=False,
                    description="A, B in matscale.datasets.LINEAR_3D_A/_B")


def langevin_oscillator_sde(omega: float = 1.0, gamma: float = 0.5, noise: float = 0.25) -> KnownSDE:
    """dx = v dt, dv = (-omega^2 x - gamma v) dt + noise dW on (x, v) in [-2, 2]^2.

    Sigma = [[0, 0], [0, noise^2]] is singular: fit it with diffusion "constant" (or another
    form that can be singular) and measure the Sigma error relative to ||Sigma||_F = Sigma_vv.
    """
    def drift(z: np.ndarray) -> np.ndarray:
        return np.stack([z[:, 1], -omega**2 * z[:, 0] - gamma * z[:, 1]], axis=1)

    return KnownSDE("langevin_oscillator", drift, _constant([[0.0, 0.0], [0.0, noise]]),
                    np.full(2, -2.0), np.full(2, 2.0), diagonal=False, state_dependent=False,
                    description=f"omega={omega}, gamma={gamma}, noise on v only = {noise}")


KNOWN_SDES: dict[str, Callable[[], KnownSDE]] = {
    "ornstein_uhlenbeck": ornstein_uhlenbeck_sde,
    "double_well": double_well_sde,
    "nonsmooth_2d": nonsmooth_2d_sde,
    "linear_3d": linear_3d_sde,
    "langevin_oscillator": langevin_oscillator_sde,
}


def known_sde(name: str) -> KnownSDE:
    """The benchmark SDE called ``name`` (default parameters)."""
    if name not in KNOWN_SDES:
        raise ValueError(f"name: unknown benchmark {name!r}; allowed: {', '.join(KNOWN_SDES)}")
    return KNOWN_SDES[name]()


# ============================================================================ data generation
def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_common(n_pairs: int, h_range: tuple[float, float]) -> None:
    if int(n_pairs) < 1:
        raise ValueError(f"n_pairs: must be >= 1, got {n_pairs}")
    if not (0 < h_range[0] <= h_range[1]):
        raise ValueError(f"h_range: need 0 < h_min <= h_max, got {h_range}")


def _scattered_states(sde: "KnownSDE | str", n_pairs: int, seed: "int | np.random.Generator",
                      h_range: "tuple[float, float] | None"):
    """(sde, h_range, rng, z0 ~ U(box) [n_pairs, d], h ~ U(h_range) [n_pairs]) after validation."""
    sde = known_sde(sde) if isinstance(sde, str) else sde
    h_range = sde.h_range if h_range is None else h_range
    _check_common(n_pairs, h_range)
    rng = _rng(seed)
    z0 = rng.uniform(sde.low, sde.high, size=(n_pairs, sde.dim))
    h = rng.uniform(h_range[0], h_range[1], size=n_pairs)
    return sde, h_range, rng, z0, h


def simulate_pairs(sde: KnownSDE | str, n_pairs: int = 50_000, *, seed: int | np.random.Generator = 0,
                   h_range: tuple[float, float] | None = None, n_substeps: int = 20) -> SDEPairs:
    """Scattered pairs (z0, z1, h): z0 ~ U(box), h ~ U(h_range) (default: the system's), z1 from
    ``n_substeps`` fine Euler-Maruyama steps of size h / n_substeps (vectorised over all pairs)."""
    if int(n_substeps) < 1:
        raise ValueError(f"n_substeps: must be >= 1, got {n_substeps}")
    sde, h_range, rng, z0, h = _scattered_states(sde, n_pairs, seed, h_range)
    step = (h / n_substeps)[:, None]
    z = z0.copy()
    for _ in range(int(n_substeps)):
        dw = rng.standard_normal(z.shape) * np.sqrt(step)
        z = z + sde.drift(z) * step + np.einsum("nij,nj->ni", sde.diffusion(z), dw)
    return SDEPairs(z0, z, h, sde, 1, seed if isinstance(seed, int) else None,
                    {"h_range": tuple(h_range), "n_substeps": int(n_substeps), "units": "reduced"})


def patch_increments(sde: KnownSDE | str, n_pairs: int = 50_000, n_patches: int = 16, *,
                     seed: int | np.random.Generator = 0, h_range: tuple[float, float] | None = None) -> SDEPairs:
    """Synthetic partial-evolution data: z1 - z0 ~ N(mu(z0) h, K h Sigma(z0)), K = ``n_patches``.

    The large-system (mu, Sigma) are those of ``sde``; the increment of one evolved patch, scaled
    to the global observable, has the right mean but K times the covariance. Fitting with
    loss="partial", lam=K recovers (mu, Sigma); lam=1 returns K Sigma.
    """
    if int(n_patches) < 1:
        raise ValueError(f"n_patches: must be >= 1, got {n_patches}")
    sde, h_range, rng, z0, h = _scattered_states(sde, n_pairs, seed, h_range)
    noise = np.einsum("nij,nj->ni", sde.diffusion(z0), rng.standard_normal(z0.shape))
    z1 = z0 + sde.drift(z0) * h[:, None] + np.sqrt(n_patches * h)[:, None] * noise
    return SDEPairs(z0, z1, h, sde, int(n_patches), seed if isinstance(seed, int) else None,
                    {"h_range": tuple(h_range), "units": "reduced"})


# ============================================================================ recovery metrics
def relative_l2(estimate: np.ndarray, truth: np.ndarray) -> float:
    """||estimate - truth||_2 / ||truth||_2 over all entries (Frobenius for matrices)."""
    estimate, truth = np.asarray(estimate, dtype=float), np.asarray(truth, dtype=float)
    return float(np.linalg.norm((estimate - truth).ravel()) / np.linalg.norm(truth.ravel()))


def recovery_errors(fitted, data: SDEPairs, z: np.ndarray | None = None) -> dict[str, float]:
    """Relative L2 errors of a fitted SDE's drift and Sigma over the data support.

    ``z`` defaults to the pairs' z0 (the support the data cover). Returns {"drift", "covariance"}.
    """
    z = data.z0 if z is None else np.asarray(z, dtype=float)
    return {"drift": relative_l2(fitted.drift(z), data.drift(z)),
            "covariance": relative_l2(fitted.covariance(z), data.covariance(z))}
