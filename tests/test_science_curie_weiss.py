"""Curie–Weiss through the real pipeline: the L_p-trained SDE recovers the mean-field limit.

For heat-bath Glauber with unit attempt rate and N -> infinity (spec §3.6):
    μ(m) = tanh(β(m + h)) − m,      σ²(m) = 2 (1 − m tanh(β(m + h))) / N.
The pipeline here is the paper's setting for the drift target (n = 64², n_s = 16², K = 16,
T = 1.1, h = 0.1) with smaller data volumes: small 16² runs -> tile + LocalRelax -> partial
evolution of one patch with the global field frozen -> fit_sde(loss="partial", lam=K).

Tolerances. The partial step δt = 0.05 biases the increment mean by the factor
(1 − e^{−δt})/δt ≈ 0.975 (2.5 %). The statistical error of the drift from N pairs: each pair's
increment has variance K σ² δt, so a local estimate from n_b ≈ N/20 pairs per bin of m has a
standard error sqrt(K σ²/(δt n_b)) ≈ sqrt(16 · 3.7e-4 / (0.05 · 4000)) ≈ 0.005 (the network
smooths over several bins, which lowers it further), against drifts of order 0.1–0.25 over the
support: 2–3 % in relative L2. Together: 5 % (the issue's bound).
σ² is estimated far more precisely (≈ 1/sqrt(N)); the bias above plus finite-N corrections give
the 8 % allowance.
"""
from __future__ import annotations

import numpy as np
import pytest

import matscale
from matscale.config import loads_config
from matscale.pipeline import run_pipeline

CONFIG = """
name = "curie-weiss drift test"
[system]
kind = "curie_weiss"
L = 64
T = 1.1
h = 0.1

[small]
p = 16
n_runs = 200
n_sweeps = 50
sweep_time = 2.6272
seed = 0

[upsampling]
n_configs = 20000
n_random = 80000        # for Curie–Weiss the state is m alone: random configurations cover the
                        # whole support evenly (≈ 4000 pairs per 0.1 of m)
seed = 1

[partial]
duration = 0.05
seed = 2

[closure]
dim = 0

[train]
method = "ours"
diffusion = "diagonal"
epochs = 40
batch_size = 1024
lr = 1e-2
seed = 42

[reference]
magnetizations = [0.0]
n_runs = 20
duration = 26.272
grid_dt = 2.6272

[evaluate]
n_paths = 20
paper_paths = 20
mmd_bootstrap = 0
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cw")
    run_pipeline(loads_config(CONFIG), out, stop_after="fit")
    return matscale.load(out)


def _support(model) -> np.ndarray:
    """m values covered by the training pairs (5th–95th percentile), as a grid [G, 1]."""
    import h5py

    with h5py.File(model.folder / "encode" / "pairs.h5", "r") as f:
        z0 = f["z0"][:, 0]
    lo, hi = np.percentile(z0, [5, 95])
    return np.linspace(lo, hi, 60)[:, None]


def test_learned_drift_matches_mean_field(fitted):
    beta, h = 1 / 1.1, 0.1
    m = _support(fitted)
    mu = fitted.sde.drift(m)[:, 0]
    exact = np.tanh(beta * (m[:, 0] + h)) - m[:, 0]
    rel = np.linalg.norm(mu - exact) / np.linalg.norm(exact)
    assert rel <= 0.05, f"drift relative L2 error {rel:.3f} > 5 %"


def test_learned_diffusion_matches_mean_field(fitted):
    beta, h, N = 1 / 1.1, 0.1, 64 * 64
    m = _support(fitted)
    var = fitted.sde.covariance(m)[:, 0, 0]
    exact = 2 * (1 - m[:, 0] * np.tanh(beta * (m[:, 0] + h))) / N
    rel = np.linalg.norm(var - exact) / np.linalg.norm(exact)
    assert rel <= 0.08, f"σ² relative L2 error {rel:.3f} > 8 %"
