"""NNK barrier network: golden values, fast path == dense reference, cache, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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


# ---------------------------------------------------------------- symmetrised and consistent NNK
EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
V1 = np.array([[0.00, -0.02, 0.01], [-0.02, 0.03, -0.06], [0.01, -0.06, 0.02]])


@pytest.fixture(scope="module")
def symmetric() -> NNKBarrierModel:
    return NNKBarrierModel(symmetrise=True)


def test_symmetrised_mirror_images_give_identical_barriers(model, symmetric):
    from matscale.systems.alloy.balance import mirror_deviations

    lattice = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=11)
    v = int(lattice.vacancies[0])
    assert mirror_deviations(lattice, model, v).max() > 5e-3  # the published network: up to ~0.04 eV
    assert mirror_deviations(lattice, symmetric, v).max() == 0.0  # bit for bit, all 48 operations


def test_symmetrised_is_the_mean_of_raw_over_the_jump_stabiliser(model, symmetric):
    from matscale.systems.alloy.balance import transformed_about
    from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS
    from matscale.systems.alloy.nnk import jump_stabiliser

    lattice = random_solid_solution(EQUIMOLAR, 6, n_vacancies=1, rng=5)
    v = int(lattice.vacancies[0])
    fast = symmetric.hop_barriers(lattice, [v])[0]
    assert np.allclose(fast, symmetric.dense_barriers(lattice, v), atol=2e-5)
    for d, step in enumerate(NEIGHBOR_OFFSETS[1]):
        # S(c, s) = mean over the operations g fixing s of raw(g · c, s): independent of the
        # kernel's image tables
        ops = jump_stabiliser(step)
        mean = np.mean([model.dense_barriers(transformed_about(lattice, g, v), v)[d] for g in ops])
        assert abs(fast[d] - mean) < 2e-5
    assert not np.allclose(fast, model.hop_barriers(lattice, [v])[0], atol=1e-3)


def test_symmetrised_cache_and_vacancy_targets(symmetric):
    lattice = random_solid_solution(EQUIMOLAR, 6, n_vacancies=12, rng=4)
    vac = lattice.vacancies
    cached = NNKBarrierModel(symmetrise=True, cache_size=1024)
    first = cached.hop_barriers(lattice, vac)
    second = cached.hop_barriers(lattice, vac[::-1])[::-1]
    assert cached.cache_info["hits"] >= len(vac) and np.array_equal(first, second)
    assert np.array_equal(first, NNKBarrierModel(symmetrise=True, cache_size=0).hop_barriers(lattice, vac))
    targets = lattice.neighbors(1)[vac]
    assert np.array_equal(np.isinf(first), lattice.species[targets] == 0)


def test_symmetrised_fused_and_generic_kmc_agree(symmetric):
    from matscale.systems.alloy.kmc import KMCEventLog, VacancyKMC

    start = random_solid_solution(EQUIMOLAR, 6, n_vacancies=2, rng=8)
    logs = []
    for fused in (True, False):
        lattice = start.copy()
        kmc = VacancyKMC(lattice, NNKBarrierModel(symmetrise=True), 1500.0)
        kmc.fused = fused
        log = KMCEventLog()
        kmc.evolve(lattice, n_events=300, rng=np.random.default_rng(3), event_log=log)
        logs.append((log.as_arrays(), lattice.species.copy()))
    (a, sa), (b, sb) = logs
    assert np.array_equal(a["to_site"], b["to_site"]) and np.array_equal(sa, sb)
    assert np.allclose(a["time_s"], b["time_s"], rtol=1e-9)


def test_consistent_forward_minus_backward_is_the_energy_change(symmetric):
    from matscale.calculators.pair import ShellPairModel
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel

    energy = ShellPairModel({1: V1})
    consistent = ConsistentNNKBarrierModel(energy)
    lattice = random_solid_solution(EQUIMOLAR, 6, n_vacancies=1, rng=9)
    v = int(lattice.vacancies[0])
    forward, backward = consistent.nnk_pair(lattice, [v])
    barriers = consistent.hop_barriers(lattice, [v])[0]
    assert np.array_equal(forward[0], symmetric.hop_barriers(lattice, [v])[0])  # same numbers, bit for bit
    for d, t in enumerate(lattice.neighbors(1)[v]):
        after = lattice.copy()
        after.species[v], after.species[t] = after.species[t], 0
        back = 7 - d  # NEIGHBOR_OFFSETS[1] is product((-1, 1), repeat=3): -s has index 7 - d
        assert backward[0, d] == symmetric.hop_barriers(after, [t])[0, back]
        reverse = consistent.hop_barriers(after, [t])[0, back]
        delta = energy.swap_delta(lattice, v, t)
        assert abs((barriers[d] - reverse) - delta) < 1e-12
        assert barriers[d] >= max(delta, 0.0)
        assert abs(barriers[d] - (0.5 * (forward[0, d] + backward[0, d]) + 0.5 * delta)) < 1e-12


def test_consistent_model_in_kmc_and_errors():
    from matscale.calculators.pair import ShellPairModel
    from matscale.systems.alloy.kmc import VacancyKMC
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel

    consistent = ConsistentNNKBarrierModel(ShellPairModel({1: V1}))
    assert consistent.vacancy_centred is False and consistent.interaction_range == pytest.approx(7.5)
    lattice = random_solid_solution(EQUIMOLAR, 6, n_vacancies=2, rng=2)
    counts = lattice.species_counts()
    _, elapsed = VacancyKMC(lattice, consistent, 1500.0).evolve(lattice, n_events=100, rng=np.random.default_rng(0))
    assert elapsed > 0 and np.array_equal(lattice.species_counts(), counts)
    with pytest.raises(TypeError, match="LocalEnergyModel"):
        ConsistentNNKBarrierModel(object())
    with pytest.raises(ValueError, match="vacancy"):
        consistent.hop_barriers(lattice, [int(np.flatnonzero(lattice.species)[0])])
    with pytest.raises(TypeError, match="symmetrise"):
        NNKBarrierModel(symmetrise="yes")


CONFIG = """
[system]
kind = "nbmota"
cells = 4
temperatures = [1500.0]
vacancy_fraction = 0.0625
barrier = "{barrier}"
{extra}
[small]
p = 2
"""


def test_config_barrier_choices():
    from matscale.config import ConfigError, loads_config
    from matscale.systems.registry import build_system
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel

    built = {b: build_system(loads_config(CONFIG.format(barrier=b, extra="")).system).barrier_model
             for b in ("nnk", "nnk_symmetric", "nnk_consistent")}
    assert type(built["nnk"]) is NNKBarrierModel and not built["nnk"].symmetrise
    assert type(built["nnk_symmetric"]) is NNKBarrierModel and built["nnk_symmetric"].symmetrise
    assert isinstance(built["nnk_consistent"], ConsistentNNKBarrierModel) and built["nnk_consistent"].nnk.symmetrise
    assert type(built["nnk_consistent"].energy_model).__name__ == "LatticeEAM"
    with pytest.raises(ConfigError, match=r"system\.barrier='nnk_raw' is not allowed.*nnk_symmetric, nnk_consistent"):
        loads_config(CONFIG.format(barrier="nnk_raw", extra=""))
    with pytest.raises(ConfigError, match="system.elements.*barrier='nnk_consistent'"):
        loads_config(CONFIG.format(barrier="nnk_consistent", extra='elements = ["Nb", "Mo", "W"]'))
    with pytest.raises(ConfigError, match="system.ase_calculator"):
        loads_config(CONFIG.format(barrier="nnk_consistent", extra='energy = "ase"'))


@pytest.mark.parametrize("symmetrise", [False, True])
def test_torch_path_agrees_with_the_numba_kernel(symmetrise):
    """hop_barriers_torch (the batched torch path that runs on CUDA) against the numba kernel on
    CPU: the same float32 network, so the barriers agree to float32 rounding of sums of ~10
    terms of order 1 eV (bound 1e-5 eV); blocked jumps (target = vacancy) are inf in both."""
    from matscale.alloy import random_solid_solution

    lat = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 8, n_vacancies=4, rng=0)
    vac = np.flatnonzero(lat.species == 0)
    lat.species[lat.neighbors(1)[vac[0], 2]] = 0  # a divacancy: two blocked jumps
    vac = np.flatnonzero(lat.species == 0)
    model = NNKBarrierModel(symmetrise=symmetrise)
    numba_path = model.hop_barriers(lat, vac)
    torch_path = model.hop_barriers_torch(lat, vac, device="cpu")
    finite = np.isfinite(numba_path)
    np.testing.assert_array_equal(finite, np.isfinite(torch_path))
    assert (~finite).sum() == 2
    np.testing.assert_allclose(torch_path[finite], numba_path[finite], atol=1e-5)
    if torch.cuda.is_available():  # on a GPU machine, CUDA against CPU
        np.testing.assert_allclose(model.hop_barriers_torch(lat, vac, device="cuda")[finite],
                                   numba_path[finite], atol=1e-4)
