"""Tracer diffusion: displacement tracking through kMC hops, the constant-barrier analytic limit
(BCC correlation factor 0.7272, uncorrelated vacancy walk), Arrhenius fits and the study."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from matscale.calculators.base import BarrierModel
from matscale.calculators.pair import PairKRABarrierModel, ShellPairModel
from matscale.config import ConfigError
from matscale.systems.alloy.diffusion import (
    BCC_CORRELATION_FACTOR,
    ConstantBarrierModel,
    arrhenius_fit,
    tracer_diffusion,
    vacancy_diffusivity_constant_barrier,
)
from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, DisplacementTracker, KMCEventLog, VacancyKMC
from matscale.systems.alloy.lattice import SHELL_DISTANCES, BCCLattice, random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
V1 = np.array([[0.00, -0.02, 0.01], [-0.02, 0.03, -0.06], [0.01, -0.06, 0.02]])


def pair_kra() -> PairKRABarrierModel:
    return PairKRABarrierModel(ShellPairModel({1: V1}), {"Nb": 0.6, "Mo": 0.7, "Ta": 0.8})


# ------------------------------------------------------------------------------ tracking
@pytest.mark.parametrize("model", [pair_kra(), NNKBarrierModel()], ids=["generic", "fused-nnk"])
def test_tracker_replays_every_hop_exactly(model):
    start = random_solid_solution(EQUIMOLAR, 3, n_vacancies=4, rng=3)
    lattice = start.copy()
    tracker = DisplacementTracker(lattice)
    log = KMCEventLog()
    kmc = VacancyKMC(lattice, model, 2500.0)
    for n in (1500, 3000):  # across evolve calls and random-number blocks
        kmc.evolve(lattice, n_events=n, rng=np.random.default_rng(n), event_log=log, tracker=tracker)
    # independent replay of the log: the atom on b moves by the minimum image of a - b
    d = start.doubled_coords.astype(np.int64)
    box = start.doubled_box.astype(np.int64)
    at_site = np.arange(start.n_sites)
    disp = np.zeros((start.n_sites, 3), dtype=np.int64)
    hops = np.zeros(start.n_sites, dtype=np.int64)
    arrays = log.as_arrays()
    for a, b in zip(arrays["from_site"], arrays["to_site"]):
        step = d[a] - d[b]
        step = (step + box // 2) % box - box // 2
        assert np.all(np.abs(step) == 1)  # a first-neighbour hop
        atom, vac = at_site[b], at_site[a]
        disp[atom] += step
        disp[vac] -= step
        hops[[atom, vac]] += 1
        at_site[a], at_site[b] = atom, vac
    assert np.array_equal(tracker.displacement_doubled, disp)
    assert np.array_equal(tracker.hops, hops)
    assert np.array_equal(tracker.particle_at_site, at_site)
    assert np.array_equal(tracker.species[tracker.particle_at_site], lattice.species)
    # every particle's unwrapped displacement lands it on its current site
    moved = (d + tracker.displacement_doubled) % box
    assert np.array_equal(moved, d[tracker.site_of_particle])
    assert np.array_equal(tracker.displacement_doubled.sum(axis=0), [0, 0, 0])  # atoms + vacancies
    atoms = tracker.species > 0
    assert tracker.hops[atoms].sum() == tracker.hops[~atoms].sum() == len(log) == 4500
    np.testing.assert_allclose(tracker.displacement_A, disp * start.lattice_constant / 2)


def test_tracking_leaves_the_trajectory_unchanged():
    start = random_solid_solution(EQUIMOLAR, 4, n_vacancies=2, rng=1)
    runs = []
    for tracked in (False, True):
        lattice = start.copy()
        kmc = VacancyKMC(lattice, NNKBarrierModel(), 1500.0)
        tracker = DisplacementTracker(lattice) if tracked else None
        _, t = kmc.evolve(lattice, n_events=5000, rng=np.random.default_rng(5), tracker=tracker)
        runs.append((lattice.species.copy(), t))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_tracker_bad_inputs():
    with pytest.raises(ValueError, match="2 cells"):
        DisplacementTracker(BCCLattice((1, 3, 3)))
    with pytest.raises(TypeError, match="BCCLattice"):
        DisplacementTracker("lattice")
    lattice = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=0)
    tracker = DisplacementTracker(lattice)
    kmc = VacancyKMC(lattice, pair_kra(), 1500.0)
    kmc.evolve(lattice, n_events=10, rng=np.random.default_rng(0))  # hops the tracker did not see
    with pytest.raises(ValueError, match="does not follow"):
        kmc.evolve(lattice, n_events=1, rng=np.random.default_rng(0), tracker=tracker)
    with pytest.raises(TypeError, match="tracker"):
        kmc.evolve(lattice, n_events=1, rng=np.random.default_rng(0), tracker=object())
    with pytest.raises(ValueError, match="cells"):
        kmc.evolve(random_solid_solution(EQUIMOLAR, 4, rng=0), n_events=1, rng=np.random.default_rng(0),
                   tracker=tracker)


# ------------------------------------------------------------------------------ constant barrier
def test_constant_barrier_model_interface_and_incremental_rates():
    model = ConstantBarrierModel(0.8)
    assert isinstance(model, BarrierModel)
    lattice = random_solid_solution(EQUIMOLAR, 4, n_vacancies=30, rng=2)  # many vacancy pairs
    b = model.hop_barriers(lattice, lattice.vacancies)
    targets = lattice.neighbors(1)[lattice.vacancies]
    assert b.shape == (30, 8)
    assert np.array_equal(np.isinf(b), lattice.species[targets] == 0)
    assert np.all(b[np.isfinite(b)] == 0.8)
    # interaction_range 0: the kMC's incremental rate updates must equal fresh ones
    kmc = VacancyKMC(lattice, model, 1000.0)
    kmc.evolve(lattice, n_events=3000, rng=np.random.default_rng(1))
    cache = kmc._cache
    fresh = kmc.rates(lattice, cache.vac_sites)
    assert np.array_equal(cache.rates[: len(cache.vac_sites)], fresh)
    with pytest.raises(ValueError, match="barrier_eV"):
        ConstantBarrierModel(-0.1)
    with pytest.raises(ValueError, match="barrier_eV"):
        ConstantBarrierModel(float("nan"))
    with pytest.raises(TypeError, match="barrier_eV"):
        ConstantBarrierModel("1 eV")
    with pytest.raises(ValueError, match="vacancy"):
        model.hop_barriers(lattice, np.flatnonzero(lattice.species > 0)[:1])


def test_bcc_correlation_factor_constant_barrier():
    """f = 0.7272 for the BCC vacancy mechanism (Compaan & Haven 1958).

    Box: 12³ cells (3456 sites), one vacancy. f measured with 1e6 hops at 128, 432, 1024 and 3456
    sites gave 0.7339(65), 0.7225(36), 0.7325(32), 0.7288(13): no size dependence above the
    statistical error, so 3456 sites keeps finite-size effects below the error of this test.
    Blocks of 10⁴ hops (≈ 3 hops per atom) are long against the correlated back-jumps cut at a
    block boundary. Tolerance: 3 standard errors of the mean (from the 10 blocks), the error
    itself < 1 % (≈ 0.55 % expected: the 1e6-hop run's 0.18 % times √10).
    """
    lattice = random_solid_solution({"Mo": 1.0}, 12, n_vacancies=1, rng=0)
    r = tracer_diffusion(lattice, ConstantBarrierModel(1.0), 1500.0, n_events=100_000,
                         rng=np.random.default_rng(7), n_blocks=10)
    f, err = r.correlation_factor["Mo"], r.correlation_factor_err["Mo"]
    assert err < 0.01 * f
    assert abs(f - BCC_CORRELATION_FACTOR) < 3 * err
    assert r.hops["Mo"] == r.n_events == r.vacancy_hops
    assert r.vacancy_fraction == 1 / 3456


def test_vacancy_walk_is_uncorrelated_with_the_analytic_diffusivity():
    """D_v = z ν0 exp(−E/k_B T) λ² / 6, z = 8, for an isolated vacancy with a constant barrier.

    1500 blocks of 40 hops: each block's |R_v|² is a sum of 40 independent hops, so the blocks
    are exactly independent and the block spread is an honest error (≈ √(2/3)/√1500 ≈ 2.1 %);
    tolerance 3.5 standard errors. The total time of n hops is a sum of n exponential waits of
    mean 1 / (8 Γ): relative standard error 1/√n, tolerance 4/√n.
    """
    temperature, barrier, nu0 = 1200.0, 0.9, 1e13
    lattice = random_solid_solution({"Ta": 1.0}, 6, lattice_constant=3.30, n_vacancies=1, rng=1)
    r = tracer_diffusion(lattice, ConstantBarrierModel(barrier), temperature, n_events=60_000,
                         rng=np.random.default_rng(2), n_blocks=1500, nu0=nu0)
    expected = vacancy_diffusivity_constant_barrier(barrier, temperature, 3.30, nu0)
    gamma = nu0 * math.exp(-barrier / (BOLTZMANN_EV_PER_K * temperature))
    hop = SHELL_DISTANCES[1] * 3.30
    assert expected == pytest.approx(8 * gamma * hop**2 / 6 * 1e-20, rel=1e-12)  # Å²/s -> m²/s
    assert r.D_vacancy_err < 0.035 * expected
    assert abs(r.D_vacancy - expected) < 3.5 * r.D_vacancy_err
    assert abs(r.time_s * 8 * gamma / r.n_events - 1) < 4 / math.sqrt(r.n_events)
    # atoms: D_i (m²/s) = f Σn λ² / (6 N t); one vacancy in N sites: D_atom ≈ f D_v / (N - 1)
    assert r.D["Ta"] == pytest.approx(r.correlation_factor["Ta"] * r.D_uncorrelated["Ta"], rel=1e-12)
    assert r.D_uncorrelated["Ta"] == pytest.approx(
        r.n_events * hop**2 / (6 * r.n_atoms["Ta"] * r.time_s) * 1e-20, rel=1e-12)


def test_tracer_diffusion_bad_inputs():
    lattice = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=0)
    model = ConstantBarrierModel(1.0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_blocks"):
        tracer_diffusion(lattice, model, 1000.0, n_events=100, rng=rng, n_blocks=1)
    with pytest.raises(ValueError, match="n_events"):
        tracer_diffusion(lattice, model, 1000.0, n_events=5, rng=rng, n_blocks=10)
    with pytest.raises(ValueError, match="warmup_events"):
        tracer_diffusion(lattice, model, 1000.0, n_events=100, rng=rng, warmup_events=-1)
    with pytest.raises(ValueError, match="temperature_K"):
        tracer_diffusion(lattice, model, -1.0, n_events=100, rng=rng)
    with pytest.raises(TypeError, match="rng"):
        tracer_diffusion(lattice, model, 1000.0, n_events=100, rng=0)
    with pytest.raises(ValueError, match="no vacancy"):
        tracer_diffusion(random_solid_solution(EQUIMOLAR, 3, n_vacancies=0, rng=0), model, 1000.0,
                         n_events=100, rng=rng)
    with pytest.raises(ValueError, match="2 cells"):
        tracer_diffusion(random_solid_solution(EQUIMOLAR, (1, 4, 4), n_vacancies=1, rng=0), model, 1000.0,
                         n_events=100, rng=rng)


def test_vacancy_fraction_rescaling():
    lattice = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=0)
    r = tracer_diffusion(lattice, ConstantBarrierModel(1.0), 2000.0, n_events=2000,
                         rng=np.random.default_rng(0), n_blocks=4)
    s = r.at_vacancy_fraction(r.vacancy_fraction * 1e-3)
    for el in r.elements:
        assert s.D[el] == pytest.approx(r.D[el] * 1e-3) and s.D_err[el] == pytest.approx(r.D_err[el] * 1e-3)
        assert s.correlation_factor[el] == r.correlation_factor[el]
    assert s.time_s == pytest.approx(r.time_s * 1e3)
    with pytest.raises(ValueError, match="vacancy_fraction"):
        r.at_vacancy_fraction(0.0)
    assert type(r).from_dict(json.loads(json.dumps(r.as_dict()))) == r


@pytest.mark.slow
def test_bcc_correlation_factor_tight_and_linear_in_vacancy_fraction():
    """Slow: f to 0.2 % (1e6 hops, 3456 sites), and D ∝ c_v (2 vacancies in the same box give
    twice the D of one, dilute limit; tolerance 3 combined standard errors)."""
    one = tracer_diffusion(random_solid_solution({"Mo": 1.0}, 12, n_vacancies=1, rng=0), ConstantBarrierModel(1.0),
                           1500.0, n_events=1_000_000, rng=np.random.default_rng(11), n_blocks=50)
    f, err = one.correlation_factor["Mo"], one.correlation_factor_err["Mo"]
    assert err < 0.003 * f and abs(f - BCC_CORRELATION_FACTOR) < 3 * err
    two = tracer_diffusion(random_solid_solution({"Mo": 1.0}, 12, n_vacancies=2, rng=0), ConstantBarrierModel(1.0),
                           1500.0, n_events=1_000_000, rng=np.random.default_rng(12), n_blocks=50)
    ratio = two.D["Mo"] / one.D["Mo"]
    ratio_err = ratio * math.hypot(two.D_err["Mo"] / two.D["Mo"], one.D_err["Mo"] / one.D["Mo"])
    assert abs(ratio - 2 * 3455 / 3454) < 3 * ratio_err


# ------------------------------------------------------------------------------ Arrhenius
def test_arrhenius_fit_recovers_exact_parameters_and_error_propagation():
    t = np.array([1000.0, 1500.0, 2000.0, 3000.0])
    d = 2e-7 * np.exp(-1.7 / (BOLTZMANN_EV_PER_K * t))
    fit = arrhenius_fit(t, d, 0.05 * d)
    assert fit.activation_energy_eV == pytest.approx(1.7, rel=1e-10)
    assert fit.prefactor_m2_s == pytest.approx(2e-7, rel=1e-9)
    assert fit.chi2 == pytest.approx(0.0, abs=1e-12) and fit.dof == 2
    np.testing.assert_allclose(fit.predict(t), d, rtol=1e-10)
    # two points: E_a = (ln D1 − ln D2) / (x2 − x1), σ(E_a) = √(σ1² + σ2²) / |x2 − x1|, x = 1 / k_B T
    two = arrhenius_fit(t[:2], d[:2], np.array([0.1, 0.2]) * d[:2])
    dx = 1 / (BOLTZMANN_EV_PER_K * t[0]) - 1 / (BOLTZMANN_EV_PER_K * t[1])
    assert two.activation_energy_err_eV == pytest.approx(math.hypot(0.1, 0.2) / dx, rel=1e-10)
    # the reported error is the spread of fits to noisy data: 4000 replicates, the sample std of
    # E_a estimates its σ to ±√(1/(2·4000)) ≈ 1.1 %; tolerance 5 %
    rng = np.random.default_rng(0)
    rel = np.array([0.05, 0.1, 0.02, 0.2])
    fits = [arrhenius_fit(t, d * np.exp(rel * rng.standard_normal(4)), rel * d).activation_energy_eV
            for _ in range(4000)]
    assert np.std(fits) == pytest.approx(fit_err := arrhenius_fit(t, d, rel * d).activation_energy_err_eV, rel=0.05)
    assert abs(np.mean(fits) - 1.7) < 4 * fit_err / math.sqrt(4000)


def test_arrhenius_fit_bad_inputs():
    with pytest.raises(ValueError, match="distinct temperatures"):
        arrhenius_fit([1000.0, 1000.0], [1e-12, 2e-12], [1e-13, 1e-13])
    with pytest.raises(ValueError, match=r"D\[1\]"):
        arrhenius_fit([1000.0, 2000.0], [1e-12, -2e-12], [1e-13, 1e-13])
    with pytest.raises(ValueError, match=r"D_err\[0\]"):
        arrhenius_fit([1000.0, 2000.0], [1e-12, 2e-12], [0.0, 1e-13])
    with pytest.raises(ValueError, match=r"temperatures_K\[0\]"):
        arrhenius_fit([-5.0, 2000.0], [1e-12, 2e-12], [1e-13, 1e-13])
    with pytest.raises(ValueError, match="equal lengths"):
        arrhenius_fit([1000.0, 2000.0], [1e-12], [1e-13])


# ------------------------------------------------------------------------------ the study
def test_diffusion_study_constant_barrier_recovers_the_barrier(tmp_path):
    """With a constant barrier E, D_i ∝ exp(−E / k_B T) exactly (f is geometric): the study's
    Arrhenius fit must return E_a = E within its error (4 σ)."""
    from matscale.pipeline.diffusion_study import STUDY, DiffusionConfig, run
    from matscale.pipeline.runner import StageRunner
    from matscale.pipeline.studies import Study

    assert isinstance(STUDY, Study) and STUDY.name == "diffusion" and STUDY.config is DiffusionConfig
    cfg = DiffusionConfig(temperatures_K=(1000.0, 1800.0, 3000.0), elements=("Mo",), composition=(1.0,),
                          kra_e0=(1.0,), cells=4, barrier="constant", constant_barrier_eV=0.7, warmup_events=0,
                          n_events=4000, n_blocks=8, seed=3)
    runner = StageRunner(out=tmp_path)
    summary = run(cfg, runner, tmp_path)
    e_a, e_err = summary["activation_energy_eV"]["Mo"], summary["activation_energy_err_eV"]["Mo"]
    assert e_err < 0.05 and abs(e_a - 0.7) < 4 * e_err
    for name in ("report.md", "metrics.json", "arrhenius.png"):
        assert (tmp_path / name).is_file()
    assert "| Mo |" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert len(runner.executed) == 3
    again = StageRunner(out=tmp_path)  # resume: nothing recomputed, same numbers
    assert run(cfg, again, tmp_path) == summary and again.executed == []
    assert "\n" not in STUDY.describe(cfg) and "1000, 1800, 3000 K" in STUDY.describe(cfg)


def test_diffusion_study_kra_eam_runs_and_reports(tmp_path):
    from matscale.pipeline.diffusion_study import DiffusionConfig, run
    from matscale.pipeline.runner import StageRunner

    cfg = DiffusionConfig(temperatures_K=(2000.0, 3000.0), cells=3, barrier="kra", swap_sweeps=2,
                          warmup_events=100, n_events=1000, n_blocks=4)
    summary = run(cfg, StageRunner(out=tmp_path), tmp_path)
    assert set(summary["activation_energy_eV"]) == {"Nb", "Mo", "Ta"}
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert [p["temperature_K"] for p in metrics["per_temperature"]] == [2000.0, 3000.0]
    assert all(p["D"]["Mo"] > 0 for p in metrics["per_temperature"])


@pytest.mark.parametrize("field, value, message", [
    ("temperatures_K", (1000.0, -5.0), r"diffusion.temperatures_K\[1\]=-5.0 out of range \(allowed: > 0\)"),
    ("temperatures_K", (1000.0,), "diffusion.temperatures_K has 1 values"),
    ("composition", (0.5, 0.5, 0.5), "diffusion.composition sums to 1.5"),
    ("barrier", "nnk", "diffusion.barrier='nnk' not allowed"),
    ("n_blocks", 1, "diffusion.n_blocks=1 out of range"),
    ("cells", 1, "diffusion.cells=1 out of range"),
    ("seed", -1, "diffusion.seed=-1 out of range"),
    ("kra_e0", (1.0,), "diffusion.kra_e0 has 1 values"),
])
def test_diffusion_config_errors_name_the_field(field, value, message):
    from dataclasses import replace

    from matscale.pipeline.diffusion_study import DiffusionConfig

    DiffusionConfig().check()
    with pytest.raises(ConfigError, match=message):
        replace(DiffusionConfig(), **{field: value}).check()


def test_shipped_input_is_valid():
    import tomllib

    from matscale.pipeline.diffusion_study import DiffusionConfig

    data = tomllib.loads((Path(__file__).parents[1] / "inputs" / "diffusion.toml").read_text(encoding="utf-8"))
    assert data["workflow"] == "diffusion"
    for section in (data["diffusion"], {**data["diffusion"], **data["quick"]["diffusion"]}):
        DiffusionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}).check()


def test_public_namespace():
    import matscale.alloy as alloy

    for name in ("tracer_diffusion", "arrhenius_fit", "ConstantBarrierModel", "DisplacementTracker",
                 "TracerDiffusionResult", "ArrheniusFit", "BCC_CORRELATION_FACTOR"):
        assert name in alloy.__all__ and hasattr(alloy, name)
