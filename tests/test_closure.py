"""Patch-additive closure: exact additivity, partial-increment convention, seeding, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.closure import ClosureModel, patch_additivity_defect, train_closure

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
