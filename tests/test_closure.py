"""Patch-additive closure: exact additivity, partial-increment convention, seeding, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.closure import ClosureModel, patch_additivity_defect, system_site_values, train_closure

L, P = 16, 8
K = (L // P) ** 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # Random spin configurations with a spread of magnetizations (so the latents vary).
    m0 = rng.uniform(-1, 1, size=(120, 1, 1))
    configs = np.where(rng.uniform(size=(120, L, L)) < (1 + m0) / 2, 1, -1).astype(np.int8)
    phys = configs.mean(axis=(1, 2))[:, None]
    return configs, phys


@pytest.fixture(scope="module")
def model(data):
    configs, phys = data
    return train_closure(configs, phys, P, d_closure=2, epochs=2, batch_size=64, seed=7)


def test_encoder_is_exactly_patch_additive(model, data):
    configs, _ = data
    # float32 network: mean of K per-patch codes vs the batched encode differ only by rounding.
    assert patch_additivity_defect(model, configs[:50]) < 1e-5


def test_partial_increment_convention(model, data):
    """Changing one patch I: K x (global increment of ẑ) = E(after) − E(before)."""
    configs, _ = data
    before = configs[:20].copy()
    after = before.copy()
    r0, c0 = P, 0  # patch I = 2 in row-major order for L/p = 2
    after[:, r0:r0 + P, c0:c0 + P] *= -1
    global_increment = model.encode(after) - model.encode(before)
    patch_increment = (model.encode_patches(after[:, r0:r0 + P, c0:c0 + P])
                       - model.encode_patches(before[:, r0:r0 + P, c0:c0 + P]))
    np.testing.assert_allclose(K * global_increment, patch_increment, atol=5e-5)


def test_normalisation_from_training_data_minmax(model, data):
    configs, _ = data
    z = model.encode(configs)
    assert z.shape == (len(configs), 2)
    np.testing.assert_allclose(z.min(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.max(0), 1.0, atol=1e-5)


def test_zscore_normalisation(data):
    configs, phys = data
    m = train_closure(configs, phys, P, d_closure=1, epochs=1, batch_size=64, seed=1,
                      normalization="zscore")
    z = m.encode(configs)[:, 0]
    assert abs(z.mean()) < 1e-4 and abs(z.std(ddof=1) - 1) < 1e-4


def test_same_seed_same_model_and_save_load(model, data, tmp_path):
    configs, phys = data
    again = train_closure(configs, phys, P, d_closure=2, epochs=2, batch_size=64, seed=7)
    np.testing.assert_array_equal(again.encode(configs), model.encode(configs))
    other = train_closure(configs, phys, P, d_closure=2, epochs=2, batch_size=64, seed=8)
    assert not np.allclose(other.encode(configs), model.encode(configs))
    model.save(tmp_path)
    loaded = ClosureModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.encode(configs), model.encode(configs))
    assert loaded.history["loss"] == model.history["loss"]


def test_decoder_reconstructs_the_right_shape(model, data):
    configs, phys = data
    x = model.decode(phys[:3], model.encode(configs[:3]))
    assert x.shape == (3, L, L) and set(np.unique(x)) <= {-1, 1}


def test_bad_input_errors(model, data):
    configs, phys = data
    with pytest.raises(ValueError, match="configs"):
        model.encode(configs[:, :8, :8])
    with pytest.raises(ValueError, match="patches"):
        model.encode_patches(configs[:, :4, :4])
    with pytest.raises(ValueError, match="p=5"):
        train_closure(configs, phys, 5)
    with pytest.raises(ValueError, match="epochs"):
        train_closure(configs, phys, P, epochs=0)


def test_closure_saved_before_the_generic_fields_loads_as_a_spin_closure(model, data, tmp_path):
    import json

    configs, _ = data
    model.save(tmp_path)
    record = json.loads((tmp_path / "closure.json").read_text())
    for key in ("grid_dim", "cell_shape", "site_values"):
        del record["architecture"][key]
    (tmp_path / "closure.json").write_text(json.dumps(record))
    loaded = ClosureModel.load(tmp_path)
    assert loaded.arch == model.arch
    np.testing.assert_array_equal(loaded.encode(configs[:10]), model.encode(configs[:10]))


def test_spin_site_classes():
    from matscale.systems.spin import CurieWeiss, Ising2D

    ising = Ising2D(8, 2.5)
    s = np.array([[-1, 1], [1, -1]], dtype=np.int8)
    np.testing.assert_array_equal(ising.site_class_index(s), [[0, 1], [1, 0]])
    assert ising.site_classes == 2 and system_site_values(ising) == (-1, 1)
    assert system_site_values(CurieWeiss(8, 1.0)) == (-1, 1)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        ising.site_class_index(np.zeros(3, dtype=np.int8))


def test_one_dimensional_two_class_closure_is_patch_additive():
    """A 1-D chain of ±1 sites (grid_dim = 1, Conv1d): encode = mean of the K patch codes."""
    rng = np.random.default_rng(3)
    configs = np.where(rng.uniform(size=(40, 32)) < rng.uniform(size=(40, 1)), 1, -1).astype(np.int8)
    m = train_closure(configs, configs.mean(1, keepdims=True), 8, grid_dim=1, d_closure=1, epochs=1,
                      batch_size=16, seed=0)
    per_patch = m.encode_patches(configs.reshape(40 * 4, 8)).reshape(40, 4, 1).mean(1)
    np.testing.assert_allclose(m.encode(configs), per_patch, atol=1e-5)


# -- the alloy: 3-D grid, two sites per cell, four site classes (vacancy + Nb, Mo, Ta) ----------
ALLOY_CELLS, ALLOY_P = 8, 4
ALLOY_K = (ALLOY_CELLS // ALLOY_P) ** 3


@pytest.fixture(scope="module")
def alloy():
    from matscale.systems.alloy.system import AlloySystem

    system = AlloySystem(ALLOY_CELLS, 2000.0, vacancy_fraction=1 / 128)
    states = system.random_states(64, np.random.default_rng(0))
    model = train_closure(states, system.observables(states), ALLOY_P, grid_dim=3,
                          site_values=system_site_values(system), d_closure=2, epochs=4,
                          batch_size=16, seed=1)
    return system, states, model


def _alloy_patches(states: np.ndarray, k: int) -> np.ndarray:
    from matscale.geometry import extract_blocks, patch_origins

    origins = patch_origins(np.full(len(states), k), ALLOY_CELLS, ALLOY_P, 3)
    return extract_blocks(states, origins, ALLOY_P, 3)


def test_alloy_site_classes(alloy):
    system, states, model = alloy
    assert system.site_classes == 4 and system_site_values(system) == (0, 1, 2, 3)
    np.testing.assert_array_equal(system.site_class_index(states[:2]), states[:2])
    assert model.arch.n_classes == 4 and model.arch.cell_shape == (2,) and model.arch.site_channels == 8
    with pytest.raises(ValueError, match="species codes"):
        system.site_class_index(np.array([4], dtype=np.int8))


def test_alloy_encode_is_the_mean_of_the_patch_codes(alloy):
    _, states, model = alloy
    x = states[:12]
    per_patch = np.stack([model.encode_patches(_alloy_patches(x, k)) for k in range(ALLOY_K)], axis=1)
    np.testing.assert_allclose(model.encode(x), per_patch.mean(axis=1), atol=1e-5)
    assert patch_additivity_defect(model, x) < 1e-5


def test_alloy_one_patch_change_moves_encode_by_its_patch_share(alloy):
    """Shuffle the species inside patch 5 only: Δencode = (E(after) − E(before)) / K."""
    from matscale.geometry import patch_origins

    _, states, model = alloy
    before = states[:12].copy()
    after = before.copy()
    i, j, k = patch_origins(np.array(5), ALLOY_CELLS, ALLOY_P, 3)
    window = (slice(None), slice(i, i + ALLOY_P), slice(j, j + ALLOY_P), slice(k, k + ALLOY_P))
    rng = np.random.default_rng(1)
    for b in range(len(after)):
        block = after[b][window[1:]]
        after[b][window[1:]] = rng.permutation(block.ravel()).reshape(block.shape)
    outside = after.copy()
    outside[window] = before[window]
    assert np.array_equal(outside, before) and not np.array_equal(after, before)
    patch_change = model.encode_patches(_alloy_patches(after, 5)) - model.encode_patches(_alloy_patches(before, 5))
    assert np.abs(patch_change).max() > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(model.encode(after) - model.encode(before), patch_change / ALLOY_K, atol=1e-5)


def test_alloy_reconstruction_loss_decreases_and_model_round_trips(alloy, tmp_path):
    system, states, model = alloy
    loss = model.history["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0]
    decoded = model.decode(system.observables(states[:2]), model.encode(states[:2]))
    assert decoded.shape == (2, ALLOY_CELLS, ALLOY_CELLS, ALLOY_CELLS, 2) and decoded.dtype == np.int8
    assert set(np.unique(decoded)) <= {0, 1, 2, 3}
    model.save(tmp_path)
    loaded = ClosureModel.load(tmp_path)
    assert loaded.arch == model.arch
    np.testing.assert_array_equal(loaded.encode(states[:4]), model.encode(states[:4]))
    with pytest.raises(ValueError, match="site value 5"):
        model.encode(np.where(states[:2] == 3, 5, states[:2]).astype(np.int8))


def _best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best one-threshold classifier of ``labels`` (0/1) on scalar ``values``."""
    return max(max(np.mean((values > t) == labels), np.mean((values <= t) == labels)) for t in values)


def test_closure_carries_what_the_observables_miss():
    """Vertical and horizontal stripes of width 4 (3 % of spins flipped) have the same
    distribution of (m, ρ_dw) — m ≈ 0, ρ_dw ≈ 0.125 — so (m, ρ_dw) cannot tell them apart; a
    one-dimensional closure trained only by reconstruction must. Held-out accuracy of the best
    threshold: on the closure ≥ 0.95; on m or ρ_dw ≤ 0.70 (for 200 uninformative values the best
    threshold reaches ≈ 0.5 + 1.2/√200 ≈ 0.58 on average; 0.70 is > 4 standard deviations of
    that maximum above it). And the decoder needs it: replacing the closure value by its mean
    at least doubles the reconstruction error on held-out states."""
    from matscale.observables import spin_observables

    rng = np.random.default_rng(0)
    n, L = 1200, 16
    stripe = np.where((np.arange(L) // 4) % 2 == 0, 1, -1).astype(np.int8)
    vertical = np.tile(stripe, (L, 1))
    labels = rng.integers(0, 2, n)
    configs = np.stack([vertical if v else vertical.T for v in labels])
    configs = np.where(rng.random(configs.shape) < 0.03, -configs, configs).astype(np.int8)
    phys = spin_observables(configs)
    model = train_closure(configs[:1000], phys[:1000], 8, d_closure=1, epochs=8, seed=0)
    z = model.encode(configs[1000:])
    held_out = labels[1000:]
    assert _best_threshold_accuracy(z[:, 0], held_out) >= 0.95
    for k in range(2):
        assert _best_threshold_accuracy(phys[1000:, k], held_out) <= 0.70
    errors = np.mean(model.decode(phys[1000:], z) != configs[1000:])
    ablated = np.mean(model.decode(phys[1000:], np.full_like(z, z.mean())) != configs[1000:])
    assert ablated >= 2 * errors, (errors, ablated)


def test_continuous_closure_recovers_what_the_means_miss():
    """Predator–prey states u = m + k cos(10πx) + noise: the means (u_mean, v_mean) equal (m, 1 − m)
    whatever the pattern amplitude k, so they cannot tell k; a one-dimensional closure of the
    continuous fields, trained by reconstruction (MSE of standardised values), must. Held-out
    |correlation(closure, k)| ≥ 0.9 (k uniform on 12 values, 160 states: for no information the
    correlation's standard deviation is 1/√160 ≈ 0.08); |correlation(u_mean, k)| ≤ 0.3."""
    from matscale.closure import system_site_values
    from matscale.systems.spde import PredatorPrey

    system = PredatorPrey(40)
    rng = np.random.default_rng(3)
    n = 800
    m = rng.uniform(0.45, 0.55, n)
    k = rng.choice(np.linspace(0.0, 0.15, 12), n)
    states = np.stack([system.initial_state(a, b) for a, b in zip(m, k)])
    states = states + 0.01 * rng.normal(size=states.shape)
    assert system_site_values(system) == ()
    phys = system.observables(states)
    model = train_closure(states[:640], phys[:640], 20, grid_dim=1, site_values=(), d_closure=1,
                          epochs=15, seed=0)
    z = model.encode(states[640:])[:, 0]
    assert abs(np.corrcoef(z, k[640:])[0, 1]) >= 0.9
    assert abs(np.corrcoef(phys[640:, 0], k[640:])[0, 1]) <= 0.3
    assert model.decode(phys[640:], model.encode(states[640:])).shape == states[640:].shape
    assert patch_additivity_defect(model, states[640:]) < 1e-5
