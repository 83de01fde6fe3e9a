"""NNK barrier network: golden values, fast path == dense reference, cache, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matscale.potentials import potential_path
from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel

GOLDEN = json.loads(potential_path("nnk/golden_barriers.json").read_text())


@pytest.fixture(scope="module")
def model() -> NNKBarrierModel:
    return NNKBarrierModel()


def _golden_lattice(record: dict) -> tuple[BCCLattice, int, np.ndarray]:
    lattice = BCCLattice(int(record["cells_per_side"]), species=np.array(record["species"]))
    vacancy = int(record["vacancy_site"])
    lattice.species[vacancy] = 0
    return lattice, vacancy, np.array([j["barrier_eV"] for j in record["jumps"]])


@pytest.mark.parametrize("index", range(len(GOLDEN)))
def test_golden_barriers_to_1e4_eV(model, index):
    lattice, vacancy, golden = _golden_lattice(GOLDEN[index])
    assert np.max(np.abs(model.hop_barriers(lattice, [vacancy])[0] - golden)) < 1e-4
    assert np.max(np.abs(model.dense_barriers(lattice, vacancy) - golden)) < 1e-4
    neighbors, barriers = model.jump_barriers(lattice.to_atoms(), vacancy)
    assert neighbors.tolist() == [j["neighbor_site"] for j in GOLDEN[index]["jumps"]]
    assert np.max(np.abs(barriers - golden)) < 1e-4


def test_batched_cached_and_dense_paths_agree():
    lattice = random_solid_solution({"Nb": 0.3, "Mo": 0.3, "Ta": 0.4}, 6, n_vacancies=12, rng=4)
    vac = lattice.vacancies
    fast = NNKBarrierModel(cache_size=0).hop_barriers(lattice, vac)
    cached = NNKBarrierModel(cache_size=1024)
    first = cached.hop_barriers(lattice, vac)
    second = cached.hop_barriers(lattice, vac[::-1])[::-1]
    assert cached.cache_info["hits"] >= len(vac) and np.array_equal(first, second)
    assert np.array_equal(np.isinf(fast), np.isinf(first))
    finite = np.isfinite(fast)
    assert np.allclose(fast[finite], first[finite], atol=1e-6)
    for row, site in enumerate(vac):
        dense = cached.dense_barriers(lattice, site)
        targets = lattice.neighbors(1)[site]
        assert np.array_equal(np.isinf(fast[row]), lattice.species[targets] == 0)
        ok = lattice.species[targets] != 0
        assert np.allclose(fast[row][ok], dense[ok], atol=2e-5)  # float32 vs float64 forward


def test_barriers_are_physical_and_depend_only_on_the_cutoff_sphere(model):
    lattice = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 8, n_vacancies=1, rng=7)
    v = int(lattice.vacancies[0])
    base = model.hop_barriers(lattice, [v])[0]
    assert np.all((base > 0.3) & (base < 4.0))
    far = np.setdiff1d(np.arange(lattice.n_sites), lattice.sites_within(v, model.interaction_range))
    changed = lattice.copy()
    changed.species[far] = np.where(changed.species[far] == 1, 2, 1)
    assert np.array_equal(model.hop_barriers(changed, [v])[0], base)
    near = lattice.sites_within(v, 3.0)
    near = near[(near != v)][:1]
    changed = lattice.copy()
    changed.species[near] = 1 + changed.species[near] % 3
    assert not np.allclose(model.hop_barriers(changed, [v])[0], base)


def test_bad_lattice_rejected(model):
    with pytest.raises(ValueError, match="elements"):
        model.hop_barriers(BCCLattice(4, elements=("Mo", "Nb", "Ta")), [0])
    with pytest.raises(ValueError, match="lattice_constant"):
        model.hop_barriers(BCCLattice(4, 3.6), [0])
    with pytest.raises(FileNotFoundError, match="not found"):
        NNKBarrierModel("/nonexistent/weights.npz")
