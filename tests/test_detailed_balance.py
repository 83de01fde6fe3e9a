"""Detailed balance: with KRA barriers the equilibrium SRO of vacancy kMC equals swap MC's.

KRA barriers E_b = E0(moving species) + ΔE/2 (D's form adds max(·, ΔE, 0), which keeps
E_b(forward) − E_b(backward) = ΔE) make the kMC stationary distribution the Boltzmann
distribution of the energy model. The swap MC samples the same distribution with the vacancy
held fixed; by translation symmetry the SRO statistics agree exactly. kMC averages are taken at
equally spaced *times* (evolve(duration=τ)), swap MC averages at equally spaced trials.
Tolerance: 4.5 combined standard errors, each from 20 batch means (valid when a batch is much
longer than the correlation time; batches here hold ≥ 20 kMC hops per atom).

Kolmogorov's criterion (matscale.systems.alloy.balance): around closed loops of vacancy hops
that restore the configuration, Σ (E_forward − E_backward) vanishes to float rounding for every
model built on an energy (KRA on a pair model or EAM, the consistent NNK law) and not for the
published NNK network, symmetrised or not.
"""
from __future__ import annotations

import numpy as np
import pytest

from matscale.calculators.pair import PairKRABarrierModel, ShellPairModel
from matscale.systems.alloy.kmc import VacancyKMC
from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS, random_solid_solution
from matscale.systems.alloy.sro import WarrenCowleyObserver
from matscale.systems.alloy.swap import SwapMCEnsemble

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
V1 = np.array([[0.00, -0.02, 0.01], [-0.02, 0.03, -0.06], [0.01, -0.06, 0.02]])
V2 = np.array([[0.01, 0.00, 0.00], [0.00, -0.02, 0.03], [0.00, 0.03, -0.01]])
NEIGHBOR_STEPS = NEIGHBOR_OFFSETS[1]


def _batch_mean_and_error(series: np.ndarray, n_batches: int = 20) -> tuple[np.ndarray, np.ndarray]:
    batches = np.array_split(series, n_batches)
    means = np.array([b.mean(axis=0) for b in batches])
    return means.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(n_batches)


def _kmc_sro(lattice, barrier_model, temperature, n_samples, hops_per_sample, seed):
    kmc = VacancyKMC(lattice, barrier_model, temperature)
    rng = np.random.default_rng(seed)
    observe = WarrenCowleyObserver((1, 2))
    kmc.evolve(lattice, n_events=50 * lattice.n_sites, rng=rng)  # equilibrate
    _, elapsed = kmc.evolve(lattice, n_events=2000, rng=rng)
    tau = hops_per_sample * elapsed / 2000  # time per sample, about hops_per_sample hops
    samples = []
    for _ in range(n_samples):
        kmc.evolve(lattice, duration=tau, rng=rng)
        samples.append(observe(lattice))
    return np.array(samples)


def _swap_sro(lattice, energy_model, temperature, n_samples, trials_per_sample, seed):
    ensemble = SwapMCEnsemble(lattice, energy_model, temperature, rng=seed, neighbor_shell=None)
    ensemble.run(50 * lattice.n_sites)
    ensemble.attach_observer(WarrenCowleyObserver((1, 2)), interval=trials_per_sample)
    ensemble.run(n_samples * trials_per_sample)
    return ensemble.data_container.get("warren_cowley")[1]


def _assert_same_equilibrium(kmc_series, mc_series):
    m1, e1 = _batch_mean_and_error(kmc_series)
    m2, e2 = _batch_mean_and_error(mc_series)
    z = np.abs(m1 - m2) / np.sqrt(e1**2 + e2**2)
    assert np.all(z < 4.5), f"kMC {np.round(m1, 3)} vs MC {np.round(m2, 3)}, z = {np.round(z, 1)}"
    # the test has power: the ordering is far from random
    assert np.max(np.abs(m2)) > 10 * np.max(e2)


def test_kmc_and_swap_mc_agree_pair_model():
    energy = ShellPairModel({1: V1, 2: V2})
    barriers = PairKRABarrierModel(energy, {"Nb": 0.5, "Mo": 0.6, "Ta": 0.7})
    temperature = 3000.0  # high T: short correlation times, SRO still strong (|α| ≈ 0.4)
    start = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=0)
    kmc_series = _kmc_sro(start.copy(), barriers, temperature, 3000, 60, seed=1)
    mc_series = _swap_sro(start.copy(), energy, temperature, 3000, 60, seed=2)
    _assert_same_equilibrium(kmc_series, mc_series)


def test_kmc_and_swap_mc_agree_zhou_eam():
    lattice_eam = pytest.importorskip("matscale.calculators.lattice_eam")
    kra = pytest.importorskip("matscale.systems.alloy.kra")
    start = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=3)
    energy = lattice_eam.LatticeEAM.from_setfl("NbMoTa_Zhou04.eam.alloy", start)
    barriers = kra.KRABarrierModel(energy, {"Nb": 0.5, "Mo": 0.6, "Ta": 0.7})
    temperature = 2500.0
    kmc_series = _kmc_sro(start.copy(), barriers, temperature, 1500, 60, seed=4)
    mc_series = _swap_sro(start.copy(), energy, temperature, 1500, 60, seed=5)
    _assert_same_equilibrium(kmc_series, mc_series)


def _cycle_models():
    """name -> (factory(lattice), thermodynamically consistent?)."""
    from matscale.calculators.lattice_eam import LatticeEAM
    from matscale.systems.alloy.kra import KRABarrierModel
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel, NNKBarrierModel

    e0 = {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}
    return {
        "kra_pair": (lambda lat: PairKRABarrierModel(ShellPairModel({1: V1, 2: V2}), e0), True),
        "kra_eam": (lambda lat: KRABarrierModel(LatticeEAM.from_setfl("NbMoTa_Zhou04.eam.alloy", lat), e0), True),
        "nnk": (lambda lat: NNKBarrierModel(), False),
        "nnk_symmetric": (lambda lat: NNKBarrierModel(symmetrise=True), False),
        "nnk_consistent_eam": (lambda lat: ConsistentNNKBarrierModel(
            LatticeEAM.from_setfl("NbMoTa_Zhou04.eam.alloy", lat)), True),
        "nnk_consistent_raw_pair": (lambda lat: ConsistentNNKBarrierModel(
            ShellPairModel({1: V1, 2: V2}), NNKBarrierModel()), True),
    }


@pytest.mark.parametrize("name", list(_cycle_models()))
def test_kolmogorov_cycle_sums(name):
    from matscale.systems.alloy.balance import kolmogorov_cycle_sums

    factory, consistent = _cycle_models()[name]
    lattice = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=21)
    sums = kolmogorov_cycle_sums(lattice, factory(lattice), n_loops=6, rng=0)
    if consistent:
        assert np.max(np.abs(sums)) < 1e-9, f"cycle sums {sums} eV"
    else:  # the published network breaks detailed balance: |sum| ~ 0.01-0.3 eV per 12-hop loop
        assert np.max(np.abs(sums)) > 1e-2, f"cycle sums {sums} eV"


def test_cycle_loops_restore_the_configuration():
    from matscale.systems.alloy.balance import closed_loops, cycle_sum

    loops = closed_loops(4)
    assert len(loops) == 96 and np.all(NEIGHBOR_STEPS[loops].sum(axis=1) == 0)
    lattice = random_solid_solution(EQUIMOLAR, 4, n_vacancies=1, rng=1)
    v = int(lattice.vacancies[0])
    energy = ShellPairModel({1: V1})
    total, hops = cycle_sum(lattice, PairKRABarrierModel(energy, {"Nb": 0.5, "Mo": 0.6, "Ta": 0.7}), v, loops[0])
    assert hops in (4, 8, 12) and abs(total) < 1e-12
    with pytest.raises(ValueError, match="closed"):
        cycle_sum(lattice, PairKRABarrierModel(energy, {"Nb": 0.5, "Mo": 0.6, "Ta": 0.7}), v, [0, 1, 2])
