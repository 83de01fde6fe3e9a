"""Swap Monte Carlo: exact Boltzmann sampling on an enumerable cell, observers, restart, I/O."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from matscale.calculators.pair import ShellPairModel
from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K
from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution
from matscale.systems.alloy.sro import WarrenCowleyObserver
from matscale.systems.alloy.swap import SwapMCDataContainer, SwapMCEnsemble

V1 = np.array([[0.00, -0.02, 0.01], [-0.02, 0.03, -0.06], [0.01, -0.06, 0.02]])
V2 = np.array([[0.01, 0.00, 0.00], [0.00, -0.02, 0.03], [0.00, 0.03, -0.01]])


def test_swap_delta_matches_total_energy_difference():
    model = ShellPairModel({1: V1, 2: V2, 3: 0.5 * V2})
    # a box of one cell along x: shell-2 neighbours include the site's own periodic image
    lattice = random_solid_solution({"Nb": 0.3, "Mo": 0.3, "Ta": 0.4}, (1, 2, 3), n_vacancies=2, rng=1)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, lattice.n_sites, size=(30, 2))
    pairs = np.vstack([pairs, [[0, lattice.neighbors(1)[0, 3]]]])
    batched = model.swap_deltas(lattice, pairs)
    for (a, b), delta in zip(pairs, batched):
        swapped = lattice.copy()
        swapped.species[[a, b]] = swapped.species[[b, a]]
        exact = model.energy(swapped) - model.energy(lattice)
        assert model.swap_delta(lattice, a, b) == pytest.approx(exact, abs=1e-12)
        assert delta == pytest.approx(exact, abs=1e-12)
    assert model.interaction_range == pytest.approx(np.sqrt(2) * 3.24)


@pytest.mark.parametrize("neighbor_shell", [None, 1])
def test_samples_the_exact_boltzmann_distribution(neighbor_shell):
    """8-site cell, 4 Mo + 4 Ta: all 70 configurations enumerated."""
    model = ShellPairModel({1: V1[1:, 1:], 2: V2[1:, 1:]})
    lattice = BCCLattice((1, 2, 2), elements=("Mo", "Ta"))
    configs = [c for c in itertools.product((1, 2), repeat=8) if c.count(1) == 4]
    energies = []
    for c in configs:
        lattice.species[:] = c
        energies.append(model.energy(lattice))
    temperature = 4000.0  # broad distribution: all 70 states visited
    weights = np.exp(-(np.array(energies) - min(energies)) / (BOLTZMANN_EV_PER_K * temperature))
    exact = weights / weights.sum()
    index = {c: i for i, c in enumerate(configs)}
    lattice.species[:] = configs[0]
    ensemble = SwapMCEnsemble(lattice, model, temperature, rng=7, neighbor_shell=neighbor_shell)
    ensemble.attach_observer(lambda lat: index[tuple(lat.species.tolist())], interval=10, tag="config")
    ensemble.run(200_000)
    _, observed = ensemble.data_container.get("config")
    freq = np.bincount(observed[:, 0].astype(int), minlength=len(configs)) / len(observed)
    # samples 10 trials apart are nearly independent here; allow an effective sample size of n/4
    # and 5 standard deviations per configuration
    n_eff = len(observed) / 4
    assert np.all(np.abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n_eff) + 1e-3)
    assert 0.0 < ensemble.acceptance_ratio < 1.0


def test_vacancies_never_swap_and_energy_change_is_tracked():
    model = ShellPairModel({1: V1})
    lattice = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 3, n_vacancies=4, rng=3)
    vacancies = lattice.vacancies.copy()
    e_start = model.energy(lattice)
    ensemble = SwapMCEnsemble(lattice, model, 600.0, np.random.default_rng(2), neighbor_shell=None)
    ensemble.run(3000)
    assert np.array_equal(lattice.vacancies, vacancies)
    assert ensemble.energy_change == pytest.approx(model.energy(lattice) - e_start, abs=1e-9)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_restart_reproduces_an_uninterrupted_run(tmp_path, suffix):
    model = ShellPairModel({1: V1, 2: V2})
    start = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 3, n_vacancies=1, rng=4)

    straight = SwapMCEnsemble(start.copy(), model, 800.0, rng=11)
    straight.attach_observer(WarrenCowleyObserver((1,)), interval=500)
    straight.run(5000)

    first = SwapMCEnsemble(start.copy(), model, 800.0, rng=11)
    first.attach_observer(WarrenCowleyObserver((1,)), interval=500)
    first.run(2000)
    path = first.data_container.save(tmp_path / f"mc{suffix}")
    resumed = SwapMCEnsemble(start.copy(), model, 800.0, rng=np.random.default_rng(), data_container=path)
    resumed.attach_observer(WarrenCowleyObserver((1,)), interval=500)
    resumed.run(3000)

    assert np.array_equal(resumed.lattice.species, straight.lattice.species)
    s1, v1 = straight.data_container.get("warren_cowley")
    s2, v2 = resumed.data_container.get("warren_cowley")
    assert np.array_equal(s1, s2) and np.allclose(v1, v2)
    assert resumed.n_accepted == straight.n_accepted
    loaded = SwapMCDataContainer.load(resumed.data_container.save(tmp_path / f"again{suffix}"))
    assert loaded.metadata["temperature_K"] == 800.0 and loaded.metadata["seed"] == 11
    assert loaded.acceptance_ratio == pytest.approx(straight.acceptance_ratio)


class _OtherPairModel(ShellPairModel):
    """Another energy model class (same interface)."""


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_restart_with_other_physics_is_refused(tmp_path, suffix):
    """A restart (or an appended container) must run the saved ensemble: another temperature,
    neighbour shell or energy model is a one-line error naming the field, the saved and the
    requested value, and leaves the lattice untouched (it used to overwrite the metadata and mix
    observations of two ensembles in one container)."""
    model = ShellPairModel({1: V1})
    start = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 2, n_vacancies=1, rng=5)
    first = SwapMCEnsemble(start.copy(), model, 800.0, rng=3, neighbor_shell=1)
    first.run(200)
    path = first.data_container.save(tmp_path / f"mc{suffix}")
    cases = [(dict(temperature_K=900.0), "temperature_K", "800.0 saved, 900.0 requested"),
             (dict(neighbor_shell=2), "neighbor_shell", "1 saved, 2 requested"),
             (dict(neighbor_shell=None), "neighbor_shell", "1 saved, None requested"),
             (dict(energy_model=_OtherPairModel({1: V1})), "energy_model",
              "'ShellPairModel' saved, '_OtherPairModel' requested")]
    for overrides, field, values in cases:
        args = dict(energy_model=model, temperature_K=800.0, neighbor_shell=1) | overrides
        lattice = start.copy()
        for container in (path, first.data_container):
            with pytest.raises(ValueError) as info:
                SwapMCEnsemble(lattice, args["energy_model"], args["temperature_K"], rng=np.random.default_rng(),
                               neighbor_shell=args["neighbor_shell"], data_container=container)
            message = str(info.value)
            assert message.startswith(f"data_container: {field} differs") and values in message
            assert "\n" not in message
            assert np.array_equal(lattice.species, start.species)  # nothing restored
    resumed = SwapMCEnsemble(start.copy(), model, 800.0, rng=np.random.default_rng(), data_container=path)
    assert resumed.n_trials == 200 and resumed.data_container.metadata["temperature_K"] == 800.0


def test_bad_arguments():
    lattice = random_solid_solution({"Nb": 0.5, "Mo": 0.5}, 2, rng=0)
    model = ShellPairModel({1: V1})
    with pytest.raises(ValueError, match="neighbor_shell"):
        SwapMCEnsemble(lattice, model, 300, rng=0, neighbor_shell=4)
    with pytest.raises(ValueError, match="temperature_K"):
        SwapMCEnsemble(lattice, model, 0, rng=0)
    ensemble = SwapMCEnsemble(lattice, model, 300, rng=0)
    with pytest.raises(ValueError, match="interval"):
        ensemble.attach_observer(lambda lat: 0.0, interval=0)
    with pytest.raises(ValueError, match="symmetric"):
        ShellPairModel({1: np.array([[0.0, 1.0], [0.0, 0.0]])})
