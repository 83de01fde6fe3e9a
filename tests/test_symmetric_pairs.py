"""train.symmetrize: mirror pairs for dynamics invariant under m -> -m (Ising at h = 0)."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.config import ConfigError, loads_config
from matscale.pipeline.stages import mirrored_pairs, odd_components

ISING_H0 = """
[system]
kind = "ising"
L = 16
T = 2.27
h = 0.0

[small]
p = [8]
n_runs = 10
n_sweeps = 5

[closure]
dim = 0
"""


def test_odd_components_names_and_error():
    assert odd_components("", ("m", "rho_dw")) == []
    assert odd_components("m", ("m", "rho_dw")) == [0]
    assert odd_components(" rho_dw , m", ("m", "rho_dw")) == [0, 1]
    with pytest.raises(ValueError, match="train.symmetrize names magnetisation"):
        odd_components("magnetisation", ("m", "rho_dw"))


def test_mirrored_pairs_negate_odd_components_of_state_and_increment():
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    dt, params = np.full(5, 0.2), rng.normal(size=(5, 1))
    a0, a1, adt, ap = mirrored_pairs(z0, z1, dt, params, [0])
    assert a0.shape == (10, 2) and adt.shape == (10,) and ap.shape == (10, 1)
    np.testing.assert_array_equal(a0[:5], z0)
    np.testing.assert_array_equal(a0[5:, 0], -z0[:, 0])
    np.testing.assert_array_equal(a0[5:, 1], z0[:, 1])
    np.testing.assert_array_equal((a1 - a0)[5:, 0], -(z1 - z0)[:, 0])   # increment mirrored
    np.testing.assert_array_equal((a1 - a0)[5:, 1], (z1 - z0)[:, 1])
    np.testing.assert_array_equal(ap[5:], params)
    # the augmented set is closed under the mirror: mirroring it again gives the same pairs
    b0, b1, _, _ = mirrored_pairs(a0[5:], a1[5:], adt[5:], None, [0])
    np.testing.assert_array_equal(b0, np.concatenate([a0[5:], a0[:5]]))
    np.testing.assert_array_equal(b1, np.concatenate([a1[5:], a1[:5]]))
    # off: the very same arrays
    same = mirrored_pairs(z0, z1, dt, params, [])
    assert same[0] is z0 and same[1] is z1 and same[3] is params


def test_config_accepts_symmetrize_only_without_field_and_closure():
    assert loads_config(ISING_H0).train.symmetrize == ""
    assert loads_config(ISING_H0 + '\n[train]\nsymmetrize = "m"\n').train.symmetrize == "m"
    with pytest.raises(ConfigError, match="train.symmetrize.*system.h = 0"):
        loads_config(ISING_H0.replace("h = 0.0", "h = 0.1") + '\n[train]\nsymmetrize = "m"\n')
    with pytest.raises(ConfigError, match="train.symmetrize.*closure.dim = 0"):
        loads_config(ISING_H0.replace("dim = 0", "dim = 1") + '\n[train]\nsymmetrize = "m"\n')


def test_mirror_pairs_teach_the_drift_on_the_unvisited_side():
    """Pairs of dm = (m - m³) dt + s dW, drho = -(rho - 0.2) dt (z = (m, rho)), observed at
    m in [0.3, 1] only. With the mirror pairs the learned drift at m = -0.6 is -(0.6 - 0.6³):
    the flip symmetry supplies the half of the state space the data never visited (without them
    this network extrapolates to +0.67 there: wrong sign)."""
    from matscale.sde import fit_sde

    s, dt, n = 0.1, 0.1, 4000
    rng = np.random.default_rng(1)
    z0 = np.column_stack([rng.uniform(0.3, 1.0, n), rng.uniform(0.1, 0.3, n)])
    drift = np.column_stack([z0[:, 0] - z0[:, 0] ** 3, -(z0[:, 1] - 0.2)])
    z1 = z0 + drift * dt + s * np.sqrt(dt) * rng.normal(size=(n, 2))
    a0, a1, adt, _ = mirrored_pairs(z0, z1, np.full(n, dt), None, [0])
    sde = fit_sde(a0, a1, adt, loss="em", hidden=(32, 32), epochs=30, batch_size=512, lr=3e-3,
                  seed=0, progress=False, num_threads=1)
    mu = sde.drift(np.array([[0.6, 0.2], [-0.6, 0.2]]))[:, 0]
    exact = 0.6 - 0.6 ** 3
    # Standard error of the drift from the ~n·0.2/0.7 ≈ 1100 pairs per side within ±0.1 of
    # |m| = 0.6: s / sqrt(dt · 1100) ≈ 0.01; the tolerance 0.05 is ~5 of them plus room for the
    # network's smoothing bias.
    np.testing.assert_allclose(mu, [exact, -exact], atol=0.05)
    assert abs(mu[0] + mu[1]) < 0.05  # odd in m up to the same tolerance
