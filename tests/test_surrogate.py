"""Cluster-expansion surrogate: exact local ΔE, icet conversion, accuracy against the Zhou EAM,
and swap MC / KRA kMC on the surrogate."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.calculators.base import LocalEnergyModel
from matscale.calculators.lattice_eam import LatticeEAM
from matscale.calculators.surrogate import ClusterExpansionEnergy, bcc_orbits, fit_surrogate
from matscale.systems.alloy.lattice import random_solid_solution

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
ELEMENTS = ("Nb", "Mo", "Ta")


@pytest.fixture(scope="module")
def eam():
    return LatticeEAM.from_setfl()


@pytest.fixture(scope="module")
def fitted(eam):
    """Surrogate of the Zhou EAM (numpy backend, ~4 s): 140 configurations of 128 sites (random
    and swap-MC snapshots at 800/1500/3000 K, 0 or 1 vacancy), energies + 8 swaps and every hop
    per training configuration."""
    return fit_surrogate(eam, EQUIMOLAR, cutoffs=(7.0, 4.0), backend="numpy", mc_with="reference",
                         n_moves_per_config=8, rng=1)


def _random_model(seed=0):
    model = ClusterExpansionEnergy(ELEMENTS, 3.24, (7.0, 4.0))
    model.params = np.random.default_rng(seed).normal(size=model.n_params)
    return model


def test_orbits_of_bcc():
    orbits = bcc_orbits(3.24, (7.0, 4.0))
    pairs = [o for o in orbits if o["order"] == 2]
    # shells of BCC within 7 Å: 8, 6, 12, 24, 8, 6 neighbours
    assert [len(o["templates"]) for o in pairs] == [8, 6, 12, 24, 8, 6]
    np.testing.assert_allclose([o["radius"] for o in pairs], 3.24 * np.sqrt([3 / 4, 1, 2, 11 / 4, 3, 4]), atol=1e-6)
    triplets = [o for o in orbits if o["order"] == 3]
    assert len(triplets) == 1 and triplets[0]["radius"] == pytest.approx(3.24)
    with pytest.raises(ValueError, match="cutoffs"):
        bcc_orbits(3.24, (7.0, 4.0, 3.0))


@pytest.mark.parametrize("cells", [(1, 2, 3), (2, 2, 2), (5, 5, 5)])
def test_swap_delta_is_the_exact_local_difference(cells):
    """Random interactions, vacancies included, boxes with self-images: ΔE equals the
    difference of total energies to round-off."""
    model = _random_model()
    assert isinstance(model, LocalEnergyModel)
    rng = np.random.default_rng(3)
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=2, rng=rng)
    pairs = np.array([rng.choice(lat.n_sites, 2, replace=False) for _ in range(15)])
    ref = []
    for a, b in pairs:
        s = lat.species.copy()
        s[[a, b]] = s[[b, a]]
        ref.append(model.total_energy(lat, s) - model.total_energy(lat))
    np.testing.assert_allclose(model.swap_deltas(lat, pairs), ref, atol=1e-9, rtol=0)
    a, b = pairs[0]
    assert model.swap_delta(lat, a, b) == pytest.approx(ref[0], abs=1e-9)


def test_interaction_range_bounds_what_a_swap_sees():
    """A species change farther than interaction_range from both sites leaves ΔE unchanged; a
    change within it changes ΔE (random interactions)."""
    model = _random_model(1)
    lat = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=np.random.default_rng(2))
    a = 0
    b = int(lat.neighbors(1)[a][0])
    while lat.species[a] == lat.species[b]:
        lat.species[b] = 1 + lat.species[b] % 3
    d0 = model.swap_delta(lat, a, b)
    near = lat.sites_within(np.array([a, b]), model.interaction_range)
    far = np.setdiff1d(np.arange(lat.n_sites), near)
    for x in far[:20]:
        lat.species[x] = 1 + lat.species[x] % 3
    assert model.swap_delta(lat, a, b) == pytest.approx(d0, abs=1e-12)
    x = int(np.setdiff1d(near, [a, b])[-1])  # an outermost site within range
    lat.species[x] = 1 + lat.species[x] % 3
    assert abs(model.swap_delta(lat, a, b) - d0) > 1e-6


def test_surrogate_of_eam_held_out_errors(fitted):
    """Held-out errors against the EAM (35 configurations not used in the fit). Bounds: the fit
    gives 0.07 meV/site, 2.5 meV (swaps) and 8.2 meV (hops); the bounds leave ~2x room and stay
    below 10 % of the spread of the reference ΔE (95 meV swaps, 125 meV hops)."""
    m = fitted.metrics
    assert m["n_test"] >= 30 and m["n_swap"] >= 300 and m["n_hop"] >= 100
    assert m["energy_rmse_meV_per_site"] < 0.3
    assert m["swap_rmse_meV"] < 5.0 and m["swap_rmse_meV"] < 0.1 * m["swap_spread_meV"]
    assert m["hop_rmse_meV"] < 15.0 and m["hop_rmse_meV"] < 0.15 * m["hop_spread_meV"]
    assert fitted.model.interaction_range == pytest.approx(6.49, abs=0.01)


def test_icet_fit_is_converted_exactly(eam):
    """icet backend: the occupation-basis model predicts what icet's ClusterExpansion predicts."""
    pytest.importorskip("icet")
    fit = fit_surrogate(eam, EQUIMOLAR, cutoffs=(5.0,), backend="icet", n_random=15,
                        n_per_temperature=3, temperatures_K=(1500.0,), n_moves_per_config=4, rng=2)
    # a small fit (27 configurations, 4 pair shells): 7.6 meV swap RMSE, spread ~95 meV
    assert fit.metrics["backend"] == "icet" and fit.metrics["swap_rmse_meV"] < 15.0
    rng = np.random.default_rng(5)
    for n_vac in (0, 3):
        lat = random_solid_solution(EQUIMOLAR, 4, n_vacancies=n_vac, rng=rng)
        expected = fit.icet_expansion.predict(lat.to_atoms()) * lat.n_sites
        assert fit.model.total_energy(lat) == pytest.approx(expected, abs=1e-8)


def _first_shell_sro(model, seeds, temperature_K):
    """Mean first-shell Warren-Cowley α (upper triangle) per independent replica: 250 sites,
    60 sweeps of first-shell swaps to equilibrate, then 10 snapshots 6 sweeps apart."""
    from matscale.systems.alloy.sro import warren_cowley
    from matscale.systems.alloy.swap import SwapMCEnsemble

    iu = np.triu_indices(3)
    out = []
    for seed in seeds:
        lat = random_solid_solution(EQUIMOLAR, 5, n_vacancies=0, rng=seed)
        ensemble = SwapMCEnsemble(lat, model, temperature_K, seed, neighbor_shell=1)
        ensemble.run(60 * lat.n_sites)
        snaps = []
        for _ in range(10):
            ensemble.run(6 * lat.n_sites)
            snaps.append(warren_cowley(lat, (1,))[0][iu])
        out.append(np.mean(snaps, axis=0))
    return np.array(out)


def test_swap_mc_on_the_surrogate_reproduces_eam_sro(eam, fitted):
    """First-shell SRO at 1000 K: EAM and surrogate agree within statistical error. Error of
    each mean: standard deviation over 6 independent replicas / sqrt(6); each of the 6 pair
    types must agree within 3.5 combined standard errors (Bonferroni over 6 tests at ~0.3 %
    each), and the strongest order parameter (α_MoMo ~ 0.14) must be resolved (> 5 σ)."""
    seeds = range(6)
    ref = _first_shell_sro(eam, seeds, 1000.0)
    ce = _first_shell_sro(fitted.model, [100 + s for s in seeds], 1000.0)
    se = np.sqrt(ref.var(axis=0, ddof=1) / len(ref) + ce.var(axis=0, ddof=1) / len(ce))
    diff = ref.mean(axis=0) - ce.mean(axis=0)
    assert np.all(np.abs(diff) < 3.5 * se), (diff, se)
    momo = 3  # upper-triangle order: NbNb, NbMo, NbTa, MoMo, MoTa, TaTa
    assert ref.mean(axis=0)[momo] > 5 * se[momo]


def test_kra_kmc_runs_on_the_surrogate(eam, fitted):
    """KRA barriers from the surrogate are within the hop-ΔE error / 2 of KRA on the EAM, and a
    vacancy kMC runs on it (composition conserved, time advances)."""
    from matscale.systems.alloy.kmc import VacancyKMC
    from matscale.systems.alloy.kra import KRABarrierModel

    e0 = {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}
    lat = random_solid_solution(EQUIMOLAR, 6, n_vacancies=2, rng=np.random.default_rng(9))
    kra_ce = KRABarrierModel(fitted.model, e0)
    kra_eam = KRABarrierModel(eam, e0)
    b_ce = kra_ce.hop_barriers(lat, lat.vacancies)
    b_eam = kra_eam.hop_barriers(lat, lat.vacancies)
    finite = np.isfinite(b_eam)
    assert np.array_equal(finite, np.isfinite(b_ce))
    # |Δbarrier| ≤ |ΔE error| / 2 ≤ 0.5 × (max held-out hop error + margin)
    assert np.max(np.abs(b_ce[finite] - b_eam[finite])) < 0.5 * 1e-3 * (fitted.metrics["hop_max_meV"] + 20.0)
    kmc = VacancyKMC(lat, kra_ce, 1200.0)
    before = np.bincount(lat.species, minlength=4)
    _, elapsed = kmc.evolve(lat, n_events=200, rng=np.random.default_rng(1))
    assert elapsed > 0 and np.array_equal(np.bincount(lat.species, minlength=4), before)


def test_save_load_and_errors(tmp_path, fitted):
    path = fitted.model.save(tmp_path / "ce.npz")
    loaded = ClusterExpansionEnergy.load(path)
    lat = random_solid_solution(EQUIMOLAR, 4, n_vacancies=1, rng=np.random.default_rng(0))
    assert loaded.total_energy(lat) == pytest.approx(fitted.model.total_energy(lat), abs=1e-9)
    assert loaded.metadata["reference"] == "LatticeEAM"
    assert len(loaded.parameter_labels()) == loaded.n_params
    with pytest.raises(ValueError, match="lattice.elements"):
        loaded.swap_delta(random_solid_solution({"Cu": 0.5, "Au": 0.5}, 3, rng=0), 0, 1)
    with pytest.raises(ValueError, match="lattice_constant"):
        loaded.swap_delta(random_solid_solution(EQUIMOLAR, 3, lattice_constant=3.3, rng=0), 0, 1)
    with pytest.raises(ValueError, match="params must have shape"):
        ClusterExpansionEnergy(ELEMENTS, 3.24, (7.0,), np.zeros(3))
    with pytest.raises(ValueError, match="mc_with"):
        fit_surrogate(None, EQUIMOLAR, mc_with="chgnet")
    with pytest.raises(TypeError, match="reference must be"):
        fit_surrogate(object(), EQUIMOLAR)
