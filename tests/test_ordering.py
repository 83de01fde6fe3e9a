"""Order–disorder scans: heat capacity vs d<E>/dT, sublattice order parameters, correlated errors,
equilibration cut, transition temperature, and one-line errors for bad inputs."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy.signal import lfilter

from matscale.calculators.pair import ShellPairModel
from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K
from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution
from matscale.systems.alloy.ordering import (
    TemperatureScan,
    b2_order_parameter,
    b32_order_parameter,
    detect_equilibration,
    fcc_sublattices,
    heat_capacity,
    integrated_autocorrelation_time,
    mean_and_error,
    sublattice_order_parameters,
    temperature_scan,
    transition_temperature,
)

# Mo–Ta pair energies (eV) of shells 1 and 2: unlike first neighbours are favoured (B2-like);
# the 8-site cell below then has its heat-capacity maximum near 800 K
V1 = np.array([[0.006, -0.012], [-0.012, 0.004]])
V2 = np.array([[-0.004, 0.006], [0.006, -0.002]])


def _tiny_lattice() -> BCCLattice:
    """8 sites (1 x 2 x 2 cells), 4 Mo + 4 Ta: 70 configurations, enumerable."""
    lattice = BCCLattice((1, 2, 2), elements=("Mo", "Ta"))
    lattice.species[:] = [1, 2] * 4
    return lattice


def _exact_energy_moments(model: ShellPairModel, temperatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact <E> (eV) and var(E) (eV²) of the tiny cell by enumerating its 70 configurations."""
    lattice = _tiny_lattice()
    energies = []
    for config in itertools.product((1, 2), repeat=8):
        if config.count(1) == 4:
            lattice.species[:] = config
            energies.append(model.energy(lattice))
    e = np.array(energies)
    beta = 1.0 / (BOLTZMANN_EV_PER_K * temperatures[:, None])
    w = np.exp(-beta * (e - e.min()))
    w /= w.sum(axis=1, keepdims=True)
    mean = w @ e
    return mean, w @ e ** 2 - mean ** 2


@pytest.fixture(scope="module")
def tiny_scan() -> TemperatureScan:
    model = ShellPairModel({1: V1, 2: V2})
    # three temperatures: T0 = 1000 K and T0 ± 100 K for the central difference
    return temperature_scan(_tiny_lattice(), model, [900.0, 1000.0, 1100.0], n_sweeps=12_000, rng=3,
                            n_equilibration_sweeps=100, sample_interval=10)


def test_heat_capacity_from_fluctuations_equals_numerical_derivative(tiny_scan):
    """c_v(T0) from the energy variance equals (<E>(T0+ΔT) − <E>(T0−ΔT)) / (2ΔT k_B) of the
    same scan, within the combined errors; both agree with the exact enumeration."""
    t = tiny_scan.temperatures_K
    n_atoms = 8
    model = ShellPairModel({1: V1, 2: V2})
    exact_e, exact_var = _exact_energy_moments(model, np.array([t[0], t[1], t[2], t[1] - 1.0, t[1] + 1.0]))
    exact_cv = exact_var / (n_atoms * (BOLTZMANN_EV_PER_K * t) ** 2)[[0, 1, 2, 1, 1]]
    # the exact fluctuation formula is the exact derivative (1 K central difference, curvature ~1e-6)
    exact_derivative = (exact_e[4] - exact_e[3]) / (2.0 * n_atoms * BOLTZMANN_EV_PER_K)
    assert exact_derivative == pytest.approx(exact_cv[1], rel=1e-4)
    # the 100 K central difference of the exact curve differs from c_v(T0) by its curvature only;
    # that bias must stay well below the statistical error for the MC comparison to be meaningful
    dT = t[2] - t[0]
    exact_difference = (exact_e[2] - exact_e[0]) / (dT * n_atoms * BOLTZMANN_EV_PER_K)
    cv, cv_err = tiny_scan.heat_capacity_kB[1], tiny_scan.heat_capacity_err[1]
    assert abs(exact_difference - exact_cv[1]) < 0.5 * cv_err
    # Monte Carlo: fluctuation c_v vs the numerical derivative of the MC energies
    e, e_err = tiny_scan.energy_eV_per_atom, tiny_scan.energy_err
    derivative = (e[2] - e[0]) / (dT * BOLTZMANN_EV_PER_K)
    derivative_err = math.hypot(e_err[2], e_err[0]) / (dT * BOLTZMANN_EV_PER_K)
    # errors are correlation-aware standard errors (Gaussian to a good approximation with
    # ~1200 samples per temperature): 4 combined sigma
    assert abs(cv - derivative) < 4.0 * math.hypot(cv_err, derivative_err)
    assert derivative_err < 0.3 * cv  # a derivative that is resolved, not noise
    for i in range(3):
        assert abs(tiny_scan.heat_capacity_kB[i] - exact_cv[i]) < 4.0 * tiny_scan.heat_capacity_err[i]
        assert abs(e[i] - exact_e[i] / n_atoms) < 4.0 * e_err[i]


def test_scan_records_sro_order_parameters_and_metadata(tiny_scan, tmp_path):
    scan = tiny_scan
    assert list(scan.temperatures_K) == [900.0, 1000.0, 1100.0]
    assert scan.metadata["anneal_order_K"] == [1100.0, 1000.0, 900.0]  # annealed downward
    assert scan.sro.shape == (3, 2, 3) and scan.pair_labels == ("MoMo", "MoTa", "TaTa")
    assert np.all(scan.sro_err > 0) and np.all(scan.n_discarded <= scan.energy_series.shape[1] // 2)
    assert np.all(np.isnan(scan.b32))  # one cell along x: no FCC sublattices
    alpha, err = scan.sro_of(1, "MoTa")
    assert np.all(alpha < 0)  # unlike first neighbours favoured
    again = TemperatureScan.load(scan.save(tmp_path / "scan.npz"))
    assert again.pair_labels == scan.pair_labels and again.metadata == scan.metadata
    np.testing.assert_array_equal(again.heat_capacity_kB, scan.heat_capacity_kB)


def test_b2_is_one_on_perfect_b2_and_symmetric_under_sublattice_exchange():
    binary = BCCLattice(3, elements=("Mo", "Ta"))
    binary.species[:] = 1 + (np.arange(binary.n_sites) & 1)  # Mo on corners, Ta on body centres
    assert b2_order_parameter(binary) == pytest.approx(1.0)
    binary.species[:] = 3 - binary.species  # the sublattices exchanged
    assert b2_order_parameter(binary) == pytest.approx(1.0)
    # ternary B2: Mo fills the corner sublattice, Nb and Ta share the body centres
    ternary = BCCLattice(4, elements=("Nb", "Mo", "Ta"))
    body = np.arange(ternary.n_sites) & 1
    ternary.species[:] = np.where(body == 0, 2, 0)
    centres = np.flatnonzero(body == 1)
    ternary.species[centres] = np.where(np.arange(centres.size) % 2 == 0, 1, 3)
    eta = sublattice_order_parameters(ternary, "B2")
    assert eta[1] == pytest.approx(1.0) and b2_order_parameter(ternary) == pytest.approx(1.0)
    # B32 (NaTl): first-neighbour FCC sublattices 0+1 Mo, 2+3 Ta: B32 order 1, no B2 order
    b32 = BCCLattice(4, elements=("Mo", "Ta"))
    sub = fcc_sublattices(b32)
    assert np.bincount(sub).tolist() == [32, 32, 32, 32]
    b32.species[:] = np.where(sub <= 1, 1, 2)
    assert b32_order_parameter(b32) == pytest.approx(1.0) and b2_order_parameter(b32) == pytest.approx(0.0)


def test_b2_of_random_solutions_is_zero_within_sampling_error():
    """For a random arrangement at fixed composition, the number of a-atoms on one sublattice is
    hypergeometric: x_a(1) − x_a(2) has mean 0 and std 2 sqrt(c(1−c)/(N−1)), so
    E|η_a| = sqrt(2/π) · 2 sqrt(c(1−c)/(N−1)) / (2 min(c, 1−c)) (Gaussian limit)."""
    n_draws = 300
    values = np.array([sublattice_order_parameters(
        random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 6, n_vacancies=0, rng=seed), "B2") for seed in range(n_draws)])
    n, c = 432, 1 / 3
    sigma = 2 * math.sqrt(c * (1 - c) / (n - 1)) / (2 * min(c, 1 - c))
    expected = math.sqrt(2 / math.pi) * sigma
    # the mean of |η| over 300 draws has standard error sigma·sqrt(1 − 2/π)/sqrt(300): 4 of them,
    # plus 2 % for the normal approximation of the hypergeometric law
    tolerance = 4 * sigma * math.sqrt(1 - 2 / math.pi) / math.sqrt(n_draws) + 0.02 * expected
    assert np.all(np.abs(values.mean(axis=0) - expected) < tolerance)
    # a single large random solution: ~0 within 4 sampling standard deviations
    big = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 16, n_vacancies=0, rng=7)
    sigma_big = 2 * math.sqrt(c * (1 - c) / (big.n_sites - 1)) / (2 * c)
    assert b2_order_parameter(big) < 4 * sigma_big < 0.07


def _ar1(phi: float, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """m stationary AR(1) series x_t = φ x_{t−1} + sqrt(1 − φ²) ε_t of unit variance."""
    noise = rng.standard_normal((m, n)) * math.sqrt(1 - phi ** 2)
    noise[:, 0] = rng.standard_normal(m)  # stationary start
    return lfilter([1.0], [1.0, -phi], noise, axis=1)


def test_error_of_correlated_mean_matches_ar1_analytic_variance():
    phi, n, m = 0.9, 4000, 200
    series = _ar1(phi, n, m, np.random.default_rng(11))
    # exact variance of the mean of n samples of a unit-variance AR(1)
    t = np.arange(1, n)
    exact = (1 + 2 * np.sum((1 - t / n) * phi ** t)) / n
    tau_exact = 0.5 + phi / (1 - phi)  # = (1 + φ) / (2 (1 − φ)) = 9.5 samples
    estimates = np.array([mean_and_error(x) for x in series])
    # each error² scatters by ~sqrt(2(2W+1)/n) ≈ 0.22 (W ≈ 5τ ≈ 50); the mean of 200 by 0.016:
    # allow 0.06 (4 sigma plus the few-% bias of the windowed estimator)
    assert np.mean(estimates[:, 1] ** 2) == pytest.approx(exact, rel=0.06)
    assert np.mean(estimates[:, 2]) == pytest.approx(tau_exact, rel=0.06)
    # and the estimated error describes the actual scatter of the means: the variance of 200
    # means has relative standard error sqrt(2/199) = 0.10; allow 3.5 of them
    assert np.var(estimates[:, 0], ddof=1) == pytest.approx(exact, rel=0.35)
    # uncorrelated data: τ_int ≈ ½ and the naive error
    white = np.random.default_rng(2).standard_normal(20_000)
    assert integrated_autocorrelation_time(white) == pytest.approx(0.5, abs=0.05)


def test_equilibration_cut_removes_the_transient():
    rng = np.random.default_rng(5)
    n = 2000
    t = np.arange(n)
    series = 20.0 * np.exp(-t / 40.0) + _ar1(0.5, n, 1, rng)[0]  # stationary mean 0
    cut = detect_equilibration(series)
    assert 40 <= cut <= n // 2
    mean, err, _ = mean_and_error(series[cut:])
    assert abs(mean) < 4 * err
    # uncut, the transient would bias the mean by ~0.4, about ten of those standard errors
    assert series.mean() > 6 * err
    assert detect_equilibration(_ar1(0.5, n, 1, rng)[0]) < n // 4  # stationary: little cut


def test_transition_temperature_recovers_a_known_peak(tiny_scan):
    """A synthetic c_v(T) peaked at 812 K with 5 % noise: the vertex lies within 4 bootstrap
    errors of the truth."""
    temps = np.arange(600.0, 1050.0, 50.0)
    truth = 812.0
    clean = 1.0 / (1.0 + ((temps - truth) / 120.0) ** 2)
    err = 0.05 * clean
    noisy = clean + err * np.random.default_rng(0).standard_normal(temps.size)
    fields = {f.name: getattr(tiny_scan, f.name) for f in dataclasses.fields(tiny_scan)}
    fields.update(temperatures_K=temps, heat_capacity_kB=noisy, heat_capacity_err=err)
    synthetic = TemperatureScan(**fields)
    result = transition_temperature(synthetic, n_points=5, n_bootstrap=500, rng=1)
    assert result.error_K > 0 and abs(result.temperature_K - truth) < 4 * result.error_K
    assert result.error_K < 50 and result.valid_fraction > 0.95
    edge = TemperatureScan(**{**fields, "heat_capacity_kB": temps.copy()})
    with pytest.raises(ValueError, match="edge of the temperature grid") as info:
        transition_temperature(edge)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperatures_K=[800.0, -5.0]), r"temperatures_K\[1\]=-5.0 out of range"),
    (dict(temperatures_K=[800.0, 800.0]), "duplicates"),
    (dict(temperatures_K=[]), "at least one temperature"),
    (dict(n_sweeps=0), "n_sweeps must be an integer >= 1"),
    (dict(n_sweeps=20, sample_interval=5), "need >= 8"),
    (dict(n_equilibration_sweeps=-1), "n_equilibration_sweeps"),
    (dict(rng="seed"), "rng must be"),
])
def test_bad_scan_inputs_are_one_line_errors(kwargs, match):
    lattice = random_solid_solution({"Mo": 0.5, "Ta": 0.5}, 2, n_vacancies=0, rng=0, elements=("Mo", "Ta"))
    model = ShellPairModel({1: V1})
    args = dict(temperatures_K=[800.0], n_sweeps=10, rng=0) | kwargs
    with pytest.raises((ValueError, TypeError), match=match) as info:
        temperature_scan(lattice, model, args.pop("temperatures_K"), **args)
    assert "\n" not in str(info.value)


def test_other_bad_inputs_are_one_line_errors(tiny_scan):
    lattice = random_solid_solution({"Mo": 0.5, "Ta": 0.5}, 3, n_vacancies=0, rng=0, elements=("Mo", "Ta"))
    no_nb = random_solid_solution({"Mo": 0.5, "Ta": 0.5}, 2, n_vacancies=0, rng=0)  # Nb listed, absent
    cases = [
        (lambda: temperature_scan(no_nb, ShellPairModel({1: V1}), [800.0], n_sweeps=10, rng=0), "at least one atom"),
        (lambda: temperature_scan("lattice", ShellPairModel({1: V1}), [800.0], n_sweeps=10, rng=0), "BCCLattice"),
        (lambda: temperature_scan(lattice, object(), [800.0], n_sweeps=10, rng=0), "swap_delta"),
        (lambda: b32_order_parameter(lattice), "even number of cells"),
        (lambda: sublattice_order_parameters(lattice, "L21"), "'B2' or 'B32'"),
        (lambda: transition_temperature(tiny_scan, n_points=2), "n_points must be an integer >= 3"),
        (lambda: transition_temperature(tiny_scan, method="entropy"), "method must be"),
        (lambda: transition_temperature(tiny_scan, method="b32"), "no B32 values"),
        (lambda: heat_capacity([1.0, 2.0], -1.0, 8), "temperature_K"),
        (lambda: mean_and_error([1.0, float("nan")]), "NaN"),
        (lambda: detect_equilibration([1.0, 2.0]), "at least 4"),
    ]
    for call, match in cases:
        with pytest.raises((ValueError, TypeError), match=match) as info:
            call()
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# the `ordering` study workflow
# ----------------------------------------------------------------------------------------------
def test_ordering_study_runs_resumes_and_reports(tmp_path):
    from matscale.pipeline.ordering_study import STUDY, OrderingConfig, pool_replicas
    from matscale.pipeline.runner import StageRunner

    cfg = OrderingConfig(cells=2, temperatures_K=(3000.0, 1500.0, 800.0, 400.0), n_sweeps=16,
                         n_equilibration_sweeps=2, n_bootstrap=20, seed=1)
    cfg.check()
    assert STUDY.name == "ordering" and STUDY.config is OrderingConfig and "16 sites" in STUDY.describe(cfg)
    runner = StageRunner(out=tmp_path)
    summary = STUDY.run(cfg, runner, tmp_path)
    assert runner.executed == ["scan_0", "scan_1"] and summary["n_temperatures"] == 4
    for name in ("report.md", "metrics.json", "heat_capacity.png", "sro.png", "order.png", "scan_0/scan.npz",
                 "scan_1/scan.npz"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| 800 |" in report and "Transition temperature" in report
    # two independent replicas: their pooled energy is the mean, its error covers their scatter
    first, second = (TemperatureScan.load(tmp_path / f"scan_{k}" / "scan.npz") for k in (0, 1))
    assert not np.array_equal(first.energy_series, second.energy_series)
    pooled = pool_replicas([first, second])
    np.testing.assert_allclose(pooled.energy_eV_per_atom, (first.energy_eV_per_atom + second.energy_eV_per_atom) / 2)
    spread = np.abs(first.energy_eV_per_atom - second.energy_eV_per_atom) / 2  # = std(ddof=1)/sqrt(2)
    assert np.all(pooled.energy_err >= spread - 1e-15)
    again = StageRunner(out=tmp_path)
    assert STUDY.run(cfg, again, tmp_path) == summary and again.executed == []  # resumed, not rerun
    # one more replica reuses the two finished scans
    more = StageRunner(out=tmp_path)
    STUDY.run(dataclasses.replace(cfg, n_replicas=3), more, tmp_path)
    assert more.executed == ["scan_2"]


@pytest.mark.parametrize("changes, message", [
    (dict(cells=3), "ordering.cells=3 out of range"),
    (dict(temperatures_K=(800.0, 0.0)), r"ordering.temperatures_K\[1\]=0.0 out of range"),
    (dict(n_sweeps=7), "ordering.n_sweeps=7 out of range"),
    (dict(neighbor_shell=4), "ordering.neighbor_shell=4 out of range"),
    (dict(composition=(0.5, 0.5)), "ordering.composition has 2 fractions"),
    (dict(seed=-1), "ordering.seed=-1 out of range"),
    (dict(n_replicas=0), "ordering.n_replicas=0 out of range"),
])
def test_ordering_config_errors_name_the_field(changes, message):
    from matscale.config import ConfigError
    from matscale.pipeline.ordering_study import OrderingConfig

    with pytest.raises(ConfigError, match=message) as info:
        dataclasses.replace(OrderingConfig(), **changes).check()
    assert "\n" not in str(info.value)


def test_order_parameter_inflection_of_a_known_sigmoid(tiny_scan):
    """η(T) = 0.05 + 0.45 (1 − tanh((T − 560)/30)) with 3 % noise: t0 within 4 fit errors."""
    temps = np.arange(400.0, 760.0, 20.0)
    clean = 0.05 + 0.45 * (1.0 - np.tanh((temps - 560.0) / 30.0))
    err = np.full(temps.size, 0.03)
    noisy = clean + err * np.random.default_rng(4).standard_normal(temps.size)
    fields = {f.name: getattr(tiny_scan, f.name) for f in dataclasses.fields(tiny_scan)}
    fields.update(temperatures_K=temps, b32=noisy, b32_err=err)
    result = transition_temperature(TemperatureScan(**fields), method="b32")
    assert 0 < result.error_K < 15 and abs(result.temperature_K - 560.0) < 4 * result.error_K
    flat = TemperatureScan(**{**fields, "b32": np.full(temps.size, 0.1)})
    with pytest.raises(ValueError, match="does not order in this scan"):
        transition_temperature(flat, method="b32")
