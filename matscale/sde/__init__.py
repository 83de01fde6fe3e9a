"""SDE identification: fit dz = mu(z, p) dt + sigma(z, p) dW to scattered pairs and roll it out.

Public API::

    from matscale.sde import fit_sde, FittedSDE, load_sde
    sde = fit_sde(z0, z1, dt, loss="em", diffusion="cholesky")
    sde.drift(z), sde.diffusion(z), sde.covariance(z)
    paths = sde.sample(z0[0], n_steps=100, dt=0.01, n_paths=64, seed=1)
    paths = sde.sample(z0[0], ts=[0.0, 5.0, 10.0], n_paths=64, seed=1)   # substeps <= 2 x training dt
    ys = torchsde.sdeint(sde.conditioned(params), y0, ts, method="euler", dt=sde.safe_step)
    sde.save("run/sde"); sde2 = load_sde("run/sde")
    sde = fit_sde(z0, z1, dt, template=SymplecticEuler(mass=1.0))    # learn F, sigma of dp only
    force, noise = sde.learned_functions(x)                         # x: the template's site inputs
    prior = PolynomialDrift.fit(z, b, 1 / a, powers=(1, 3, 5))       # gray-box drift prior of z_0
    sde = fit_sde(z0, z1, dt, drift_prior=prior); load_sde("run/sde", drift_prior=prior)
"""
from __future__ import annotations

from .fitted import SAFE_STEP_FACTOR, ConditionedSDE, FittedSDE, NonFiniteRolloutError, load_sde
from .integrators import METHODS, euler_maruyama, integrate, integrate_grid, milstein, substep_counts
from .losses import LOSSES, em_nll, milstein_nll
from .models import DIFFUSION_KINDS, SDEModel
from .priors import PolynomialDrift
from .templates import TEMPLATES, IntegratorTemplate, SymplecticEuler, WalshWave, template_from_record
from .trainer import TrainingDivergedError, fit_sde

__all__ = [
    "fit_sde", "FittedSDE", "load_sde", "TrainingDivergedError", "SDEModel",
    "ConditionedSDE", "NonFiniteRolloutError", "SAFE_STEP_FACTOR",
    "LOSSES", "DIFFUSION_KINDS", "METHODS", "em_nll", "milstein_nll",
    "integrate", "integrate_grid", "substep_counts", "euler_maruyama", "milstein",
    "IntegratorTemplate", "SymplecticEuler", "WalshWave", "TEMPLATES", "template_from_record",
    "PolynomialDrift",
]
