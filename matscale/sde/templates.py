"""Integrator templates: learn an SDE through the one-step scheme that also rolls it out.

Dietrich, Makeev, Kevrekidis, Evangelou, Bertalan, Reich & Kevrekidis, "Learning effective
stochastic differential equations from microscopic simulations: linking stochastic numerics to
deep learning", Chaos 33, 023121 (2023), arXiv 2106.09004: the Gaussian likelihood of a pair
(z0, z1, dt) is that of one step of a numerical scheme whose unknown parts are networks. The
plain ``fit_sde`` uses the Euler-Maruyama step with a network for the whole drift and diffusion;
a *template* says which parts of the step are known (and exact), and the networks learn only
the rest. The same template then drives the rollout (``FittedSDE.sample``), so the model is
integrated with the scheme it was identified with.

The protocol (:class:`IntegratorTemplate`)
------------------------------------------
A state z [d] is split into *noisy* components (``noisy_index``, m of them: the new values carry
the step's Gaussian noise) and *deterministic* ones, which the template computes exactly from z0
and the new noisy values (``complete``). The learned functions are evaluated at ``n_sites`` sites
per state (one for a particle, every grid point for a field, shared weights), each with
``n_features`` inputs (``features(z)``) and ``n_outputs`` learned force components, each with its
own noise amplitude (a diagonal diffusion per site):

    x = features(z0)                                   [B, S, n_features]
    force, noise = networks(x)                         [B, S, n_outputs] each, physical units
    mean, cov = step_mean_cov(z0, dt, force, noise)    noisy part of z1: mean [B, m],
                                                       cov [B, m] (independent) or [B, m, m]
    loss = -log N(z1[noisy_index]; mean, cov)          (``nll``)
    rollout: z1 = complete(z0, mean + chol(cov) xi, dt),  xi ~ N(0, I_m)    (``step``)

The deterministic components of the data are not in the likelihood; ``check_pairs`` compares
them with ``complete(z0, z1[noisy_index], dt)`` and refuses data that do not follow the known
update (relative RMS residual above ``tolerance``: a wrong mass, time unit or column order).
The mean must be affine in ``force`` and the variance linear in ``noise**2`` site by site, with
noisy component i belonging to site i // n_outputs, output i % n_outputs
(``linear_response`` uses this for the starting linear fit).

A template is rebuilt from ``record()`` (its ``name`` and JSON ``params()``) by
:func:`template_from_record`; ``TEMPLATES`` maps names to classes.

Implementations
---------------
``SymplecticEuler``  Langevin dynamics dq = p/m dt, dp = F(q, p) dt + sigma(q, p) dW:
                     p1 = p0 + F dt + sigma sqrt(dt) xi, then q1 = q0 + p1 dt / m (exact given p1).
``WalshWave``        the stochastic wave equation u_tt = c^2 u_xx + f(u) + s(u) xi(x, t) on a
                     periodic grid with dx = c dt (J. B. Walsh, Illinois J. Math. 50, 991 (2006)).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .losses import gaussian_nll_diagonal, gaussian_nll_from_cholesky
from .models import SDEModel

SiteFn = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

#: relative tolerance on a fixed template step (float32 pairs carry ~1e-7 relative error)
FIXED_DT_RTOL = 1e-5
# rows per chunk when the template is evaluated on a whole data set (bounds the [B, m, m] covariances)
_CHUNK = 4096


class IntegratorTemplate(ABC):
    """A one-step scheme with known and learned parts (module docstring).

    Subclasses set ``name`` (class attribute) and, per instance, ``dim``, ``n_sites``,
    ``n_features``, ``n_outputs``, ``noisy_index``, ``fixed_dt`` (None, or the only step [t] the
    scheme takes), ``tolerance``, ``feature_names`` and ``output_names``, and implement
    ``params``, ``features``, ``step_mean_cov`` and ``complete``.
    """

    name: ClassVar[str]
    dim: int
    n_sites: int
    n_features: int
    n_outputs: int
    noisy_index: tuple[int, ...]
    fixed_dt: float | None = None
    tolerance: float = 0.25
    feature_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON scalars that rebuild the template: ``type(self)(**self.params())``."""

    @abstractmethod
    def features(self, z: torch.Tensor) -> torch.Tensor:
        """Inputs of the learned functions at every site: z [B, d] -> [B, S, n_features]."""

    @abstractmethod
    def step_mean_cov(self, z0: torch.Tensor, dt: torch.Tensor, force: torch.Tensor,
                      noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [B, m] and covariance ([B, m] variances or [B, m, m]) of the noisy part of the
        new state after one step dt [B] from z0 [B, d], given the learned force and noise
        amplitude [B, S, n_outputs] at the sites of z0."""

    @abstractmethod
    def complete(self, z0: torch.Tensor, noisy: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """The new state [B, d] from z0, its new noisy components [B, m] and the step dt [B]."""

    # ------------------------------------------------------------------ shared
    def record(self) -> dict[str, Any]:
        """What a saved model stores: name, params and the learned functions' shape."""
        return {"name": self.name, "params": self.params(), "n_features": self.n_features,
                "n_outputs": self.n_outputs}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def _index(self, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(self.noisy_index, dtype=torch.long, device=device)

    def noisy_part(self, z: torch.Tensor) -> torch.Tensor:
        """The noisy components z[:, noisy_index] [B, m]."""
        return z.index_select(1, self._index(z.device))

    def nll(self, z0: torch.Tensor, z1: torch.Tensor, dt: torch.Tensor, force: torch.Tensor,
            noise: torch.Tensor) -> torch.Tensor:
        """-log N(noisy part of z1; step mean, step covariance) per pair [B] (nats, physical units).
        A covariance that is not positive definite gives NaN (the trainer reports a divergence)."""
        mean, cov = self.step_mean_cov(z0, dt, force, noise)
        residual = self.noisy_part(z1) - mean
        if cov.dim() == 2:
            return gaussian_nll_diagonal(residual, cov.sqrt())
        chol, info = torch.linalg.cholesky_ex(cov)
        failed = info > 0
        if bool(failed.any()):
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            nll = gaussian_nll_from_cholesky(residual, torch.where(failed[:, None, None], eye, chol))
            return torch.where(failed, torch.full_like(nll, math.nan), nll)
        return gaussian_nll_from_cholesky(residual, chol)

    def step(self, z: torch.Tensor, dt: float, site_fn: SiteFn, generator: torch.Generator) -> torch.Tensor:
        """One step of the scheme from z [B, d]: learned functions ``site_fn(x) -> (force, noise)``
        at ``features(z)``, then mean + chol(cov) xi with xi = torch.randn([B, m], generator)."""
        with torch.no_grad():
            h = torch.full((z.shape[0],), float(dt), dtype=z.dtype, device=z.device)
            force, noise = site_fn(self.features(z))
            mean, cov = self.step_mean_cov(z, h, force, noise)
            xi = torch.randn(mean.shape, generator=generator, device=z.device, dtype=z.dtype)
            if cov.dim() == 2:
                new = mean + cov.sqrt() * xi
            else:
                new = mean + (torch.linalg.cholesky(cov) @ xi.unsqueeze(-1)).squeeze(-1)
            return self.complete(z, new, h)

    def check_step(self, dt: float, name: str = "dt") -> None:
        """Refuse a step the scheme does not take (fixed-step templates)."""
        if self.fixed_dt is not None and abs(dt - self.fixed_dt) > FIXED_DT_RTOL * self.fixed_dt:
            raise ValueError(f"{name}: template {self.name!r} steps exactly {self.fixed_dt:.8g} "
                             f"(dx / c), got {dt:.8g}; use that step or a multiple of it")

    def check_pairs(self, z0: np.ndarray, z1: np.ndarray, dt: np.ndarray) -> float:
        """Check pairs [N, d] against the template (state size, fixed step, the known
        deterministic update); returns the relative RMS residual of the deterministic part."""
        if z0.shape[1] != self.dim:
            raise ValueError(f"z0: template {self.name!r} needs states of {self.dim} components, "
                             f"got {z0.shape[1]}")
        if self.fixed_dt is not None:
            worst = int(np.argmax(np.abs(dt - self.fixed_dt)))
            self.check_step(float(dt[worst]))
        det = np.setdiff1d(np.arange(self.dim), np.asarray(self.noisy_index))
        if det.size == 0:
            return 0.0
        res_sq = inc_sq = 0.0
        for start in range(0, z0.shape[0], _CHUNK):
            a = torch.as_tensor(z0[start:start + _CHUNK])
            b = torch.as_tensor(z1[start:start + _CHUNK])
            done = self.complete(a, self.noisy_part(b), torch.as_tensor(dt[start:start + _CHUNK])).numpy()
            res_sq += float(np.sum((z1[start:start + _CHUNK][:, det] - done[:, det]) ** 2))
            inc_sq += float(np.sum((z1[start:start + _CHUNK][:, det] - z0[start:start + _CHUNK][:, det]) ** 2))
        rel = math.sqrt(res_sq / inc_sq) if inc_sq > 0 else (0.0 if res_sq == 0 else math.inf)
        if not rel <= self.tolerance:
            raise ValueError(f"z1: the deterministic components {det.tolist()[:4]}{'...' if det.size > 4 else ''} "
                             f"do not follow template {self.name!r} (relative RMS residual {rel:.3g} > "
                             f"tolerance {self.tolerance:g}); check the template's parameters, the time "
                             f"unit and the column order of z")
        return rel

    def linear_response(self, z0: np.ndarray, z1: np.ndarray, dt: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-site regression data for the starting fit, flattened over pairs and sites:
        features x [N S, n_features] and, per output, the residual r = z1_noisy - known part,
        its force coefficient a and its variance per unit noise**2, b ([N S, n_outputs] each):
        r = a force(x) + sqrt(b) noise(x) xi (off-diagonal covariances ignored)."""
        xs, rs, as_, bs = [], [], [], []
        for start in range(0, z0.shape[0], _CHUNK):
            a0 = torch.as_tensor(z0[start:start + _CHUNK])
            h = torch.as_tensor(dt[start:start + _CHUNK])
            x = self.features(a0)
            shape = (a0.shape[0], self.n_sites, self.n_outputs)
            zero, one = torch.zeros(shape, dtype=a0.dtype), torch.ones(shape, dtype=a0.dtype)
            known, cov = self.step_mean_cov(a0, h, zero, one)
            forced, _ = self.step_mean_cov(a0, h, one, one)
            var = cov if cov.dim() == 2 else torch.diagonal(cov, dim1=-2, dim2=-1)
            residual = self.noisy_part(torch.as_tensor(z1[start:start + _CHUNK])) - known
            xs.append(x.reshape(-1, self.n_features).numpy())
            rs.append(residual.reshape(-1, self.n_outputs).numpy())
            as_.append((forced - known).reshape(-1, self.n_outputs).numpy())
            bs.append(var.reshape(-1, self.n_outputs).numpy())
        return tuple(np.concatenate(v) for v in (xs, rs, as_, bs))  # type: ignore[return-value]


def site_values(model: SDEModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned force and noise amplitude [B, S, n_outputs] (physical units) at site inputs
    x [B, S, n_features]. The model is an ``SDEModel`` whose "state" is the first n_outputs
    features and whose conditioning inputs are the rest (``build_model`` of a template fit); its
    time scale is 1, so its standardised drift and sigma are the physical force and noise."""
    batch, sites, n_in = x.shape
    k = model.dim
    flat = x.reshape(batch * sites, n_in)
    u = (flat[:, :k] - model.z_loc) / model.z_scale
    p = (flat[:, k:] - model.p_loc) / model.p_scale if n_in > k else None
    force, noise = model.standardized(u, p)
    return force.view(batch, sites, k), noise.view(batch, sites, k)


# ====================================================================== Langevin: symplectic Euler
class SymplecticEuler(IntegratorTemplate):
    """Symplectic Euler for Langevin dynamics of ``n_dof`` coordinates with mass ``mass``:

        dq = p / m dt,   dp = F(q, p) dt + sigma(q, p) dW   (sigma diagonal, per coordinate)

    State z = (q_1..q_n, p_1..p_n); one site with features (q, p) and outputs F [p]/[t] and
    sigma [p]/sqrt([t]). Step: p1 = p0 + F dt + sigma sqrt(dt) xi, q1 = q0 + p1 dt / m. The
    likelihood is Gaussian in the momentum increment; the position update is known, and pairs
    whose q1 - q0 - p1 dt / m exceeds ``tolerance`` x the RMS of q1 - q0 are refused. Pairs from
    an exact (finely integrated) trajectory differ from the scheme by O(sigma sqrt(dt) / |p|)
    relative to the position increment (the momentum's own noise in the step), hence the
    default 0.25: it passes such data at dt <= 0.05 and stops a wrong mass or unit (residual ~1).
    """

    name = "symplectic_euler"

    def __init__(self, n_dof: int = 1, mass: float = 1.0, tolerance: float = 0.25):
        if not (isinstance(n_dof, (int, np.integer)) and n_dof >= 1):
            raise ValueError(f"n_dof: must be an int >= 1, got {n_dof!r}")
        if not (isinstance(mass, (int, float)) and math.isfinite(mass) and mass > 0):
            raise ValueError(f"mass: must be a finite number > 0, got {mass!r}")
        if not (isinstance(tolerance, (int, float)) and tolerance > 0):
            raise ValueError(f"tolerance: must be a number > 0, got {tolerance!r}")
        n = int(n_dof)
        self.n_dof, self.mass, self.tolerance = n, float(mass), float(tolerance)
        self.dim, self.n_sites, self.n_features, self.n_outputs = 2 * n, 1, 2 * n, n
        self.noisy_index = tuple(range(n, 2 * n))
        suffix = [""] if n == 1 else [str(i) for i in range(n)]
        self.feature_names = tuple(f"q{s}" for s in suffix) + tuple(f"p{s}" for s in suffix)
        self.output_names = tuple(f"F{s}" for s in suffix)

    def params(self) -> dict[str, Any]:
        return {"n_dof": self.n_dof, "mass": self.mass, "tolerance": self.tolerance}

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return z.unsqueeze(1)

    def step_mean_cov(self, z0, dt, force, noise):
        h = dt.unsqueeze(-1)
        return z0[:, self.n_dof:] + force[:, 0] * h, noise[:, 0].square() * h

    def complete(self, z0, noisy, dt):
        return torch.cat([z0[:, :self.n_dof] + noisy * (dt.unsqueeze(-1) / self.mass), noisy], dim=1)


# ====================================================================== stochastic wave: Walsh
class WalshWave(IntegratorTemplate):
    """Walsh's scheme for u_tt = c^2 u_xx + f(u) + s(u) xi(x, t), xi space-time white noise, on
    ``n_points`` periodic grid points x_j = j dx of a ring of length ``length``, with the step
    tied to the grid: dt = dx / c (``fixed_dt``).

    State z = (u(t) [N], u(t - dt) [N]). On that grid the d'Alembert identity is exact for the
    free equation: for the diamond D_j with corners (t +- dt, x_j), (t, x_j +- dx),

        u(t + dt, x_j) = u(t, x_{j+1}) + u(t, x_{j-1}) - u(t - dt, x_j)
                         + (1 / 2c) iint_{D_j} [f(u) + s(u) xi] dx dt,

    so the known part of the step is the first line, and the networks learn only the pointwise
    f [u]/[t]^2 and s (shared by all grid points), evaluated at the mean of the diamond's side
    corners, ubar_j = (u(t, x_{j+1}) + u(t, x_{j-1})) / 2 (one site per grid point, one feature):
    f, s at ubar_j are independent of the noise inside D_j (ubar_j lies on the edge of D_j's past
    light cone), an Ito-type choice. With area(D_j) = 2 c dt^2:

        mean_j = known_j + dt^2 f(ubar_j)
        Var_j  = s(ubar_j)^2 dt^2 / (2c),   Cov_{j, j+1} = s(ubar_j) s(ubar_{j+1}) dt^2 / (8c)

    (neighbouring diamonds overlap on a quarter of their area; diamonds two apart only touch),
    a periodic tridiagonal covariance, positive definite (eigenvalues of the correlation
    1 + cos(k) / 2 >= 1/2). The second half of the new state is u(t) itself, exactly.
    Units: u in [u], x in [x], t in [t], c in [x]/[t]; s in [u] [t]^(-3/2) [x]^(1/2)
    (so that s xi has the units of u_tt).
    """

    name = "walsh_wave"

    def __init__(self, n_points: int, length: float = 1.0, speed: float = 1.0):
        if not (isinstance(n_points, (int, np.integer)) and n_points >= 3):
            raise ValueError(f"n_points: must be an int >= 3, got {n_points!r}")
        for label, value in (("length", length), ("speed", speed)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{label}: must be a finite number > 0, got {value!r}")
        n = int(n_points)
        self.n_points, self.length, self.speed = n, float(length), float(speed)
        self.dx = self.length / n
        self.fixed_dt = self.dx / self.speed
        self.tolerance = 1e-5  # the second half of z1 is u(t) itself
        self.dim, self.n_sites, self.n_features, self.n_outputs = 2 * n, n, 1, 1
        self.noisy_index = tuple(range(n))
        self.feature_names, self.output_names = ("u",), ("f",)

    def params(self) -> dict[str, Any]:
        return {"n_points": self.n_points, "length": self.length, "speed": self.speed}

    def side_mean(self, u: torch.Tensor) -> torch.Tensor:
        """ubar_j = (u_{j+1} + u_{j-1}) / 2 on the ring, [B, N]."""
        return 0.5 * (torch.roll(u, -1, dims=-1) + torch.roll(u, 1, dims=-1))

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return self.side_mean(z[:, :self.n_points]).unsqueeze(-1)

    def step_mean_cov(self, z0, dt, force, noise):
        n = self.n_points
        u, u_prev = z0[:, :n], z0[:, n:]
        h2 = dt.square().unsqueeze(-1)
        mean = 2.0 * self.side_mean(u) - u_prev + h2 * force[..., 0]
        s = noise[..., 0]
        var = s.square() * h2 / (2.0 * self.speed)
        off = s * torch.roll(s, -1, dims=-1) * h2 / (8.0 * self.speed)   # Cov(j, j+1)
        cov = torch.diag_embed(var) + torch.diag_embed(off[:, :-1], offset=1) + torch.diag_embed(off[:, :-1], offset=-1)
        cov[:, n - 1, 0] = cov[:, 0, n - 1] = off[:, n - 1]   # the ring closes
        return mean, cov

    def complete(self, z0, noisy, dt):
        return torch.cat([noisy, z0[:, :self.n_points]], dim=1)


TEMPLATES: dict[str, type[IntegratorTemplate]] = {SymplecticEuler.name: SymplecticEuler, WalshWave.name: WalshWave}


def template_from_record(record: dict[str, Any]) -> IntegratorTemplate:
    """Rebuild a template from ``IntegratorTemplate.record()`` (one-line ValueError if unknown)."""
    name = record.get("name") if isinstance(record, dict) else None
    if name not in TEMPLATES:
        raise ValueError(f"template: unknown {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name](**record.get("params", {}))
