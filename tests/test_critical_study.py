"""The ``critical`` study: end to end on a tiny preset, resume, configuration checks, and the
high-temperature limit against the exact series of the 2-D Ising susceptibility."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from matscale.config import ConfigError, load_config
from matscale.critical import integrated_autocorrelation_time
from matscale.pipeline.critical_study import (CriticalConfig, describe, flat_histogram_subset, recorded_passes, run,
                                              simulate_point, training_states)
from matscale.pipeline.runner import StageRunner
from matscale.pipeline.studies import STUDY_MODULES

ROOT = Path(__file__).resolve().parents[1]
TINY = CriticalConfig(sizes=(8, 16), temperatures=(2.2, 2.27, 2.35), n_runs=4, tau_16=10.0,
                      equilibrate_taus=5.0, production_taus=8.0, n_boot=50)

# High-temperature series of the square-lattice Ising susceptibility per site,
# k_B T χ = Σ_k a_k v^k with v = tanh(J / k_B T) (Sykes, Gaunt, Roberts & Wyles, J. Phys. A 5, 624 (1972)).
SERIES = (1, 4, 12, 36, 100, 276, 740, 1972, 5172, 13492, 34876, 89764, 229628)


def test_tiny_study_end_to_end_and_resume(tmp_path: Path) -> None:
    runner = StageRunner(out=tmp_path)
    summary = run(TINY, runner, tmp_path)
    assert len(runner.executed) == 2 * 3 + 1  # every (L, T) point and the analysis
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "β/ν" in report and "Binder crossing" in report and (tmp_path / "collapse.png").is_file()
    assert math.isfinite(summary["T_c"]) and set(summary["exponents"]) >= {"beta_over_nu", "gamma_over_nu", "one_over_nu"}
    with np.load(tmp_path / "direct" / "L8_T2.27" / "samples.npz") as f:
        m = f["m"]
    assert m.shape == (4, 32) and np.all(np.abs(m) <= 1)

    again = StageRunner(out=tmp_path)
    assert run(TINY, again, tmp_path)["T_c"] == summary["T_c"]
    assert again.executed == []  # nothing recomputed

    with pytest.raises(ConfigError, match="different configuration"):
        run(dataclasses.replace(TINY, n_runs=5), StageRunner(out=tmp_path), tmp_path)


def test_high_temperature_matches_series() -> None:
    """At T = 5 (ξ ≈ 0.5 ≪ L = 16): k_B T χ_true = n⟨M²⟩ equals the series; M is Gaussian to
    O(1/n), so U ≈ 0 and the |M|-based χ of the study is χ_true (1 − 2/π)."""
    T = 5.0
    cfg = CriticalConfig(sizes=(16, 32), temperatures=(T, 6.0), n_runs=16, tau_16=2.0, z=0.0,
                         equilibrate_taus=10.0, production_taus=400.0, samples_per_tau=1.0, n_boot=200)
    m = simulate_point(cfg, 16, T)["m"]
    n = 16 * 16
    v = math.tanh(1.0 / T)
    exact = sum(a * v ** k for k, a in enumerate(SERIES))  # truncation error < 1e-3 at v = 0.197
    per_run = n * (m ** 2).mean(axis=1)                     # independent runs: error of the mean from their spread
    err = per_run.std(ddof=1) / math.sqrt(len(per_run))
    assert abs(per_run.mean() - exact) < 4 * err + 2e-3, (per_run.mean(), err, exact)
    assert err < 0.05 * exact  # the check has power

    from matscale.critical import moments

    mom = moments(m, 16, T, n_boot=200)
    assert abs(mom["binder"].value) < 4 * mom["binder"].error + 0.01
    assert abs(mom["chi"].value * T / (1 - 2 / math.pi) - exact) < 4 * mom["chi"].error * T / (1 - 2 / math.pi) + 0.05


def test_autocorrelation_time_of_ar1() -> None:
    """AR(1) x_t = a x_{t-1} + noise has τ_int = (1 + a) / (2 (1 - a)) = 4.5 for a = 0.8."""
    rng = np.random.default_rng(1)
    a, R, S = 0.8, 40, 4000
    x = np.zeros((R, S))
    noise = rng.standard_normal((R, S))
    for t in range(1, S):
        x[:, t] = a * x[:, t - 1] + noise[:, t]
    # error of τ_int ≈ τ √(2(2W+1)/N) (Sokal), W ≈ 6τ, N = R·S: ≈ 2 % here; allow 10 %
    assert integrated_autocorrelation_time(x) == pytest.approx(4.5, rel=0.1)


@pytest.mark.parametrize("change, field", [({"sizes": (16,)}, "critical.sizes"),
                                           ({"temperatures": (2.2, -1.0)}, "critical.temperatures[1]"),
                                           ({"n_runs": 1}, "critical.n_runs"),
                                           ({"seed": -1}, "critical.seed"),
                                           ({"tau_16": 0.0}, "critical.tau_16"),
                                           ({"learned_sizes": (32, 40)}, r"critical.learned_sizes[1]"),
                                           ({"learned_sizes": (32,)}, "critical.learned_sizes"),
                                           ({"learned_states": 4}, "critical.learned_states"),
                                           ({"learned_relax": 0.0}, "critical.learned_relax"),
                                           ({"learned_window": 64}, "critical.learned_window"),
                                           ({"learned_mode": "replicate"}, "critical.learned_mode"),
                                           ({"learned_passes": -1}, "critical.learned_passes"),
                                           ({"learned_passes": 65}, "critical.learned_passes"),
                                           ({"learned_pass_time": 0.0}, "critical.learned_pass_time"),
                                           ({"learned_burnin_taus": -1.0}, "critical.learned_burnin_taus"),
                                           ({"learned_burnin_taus": 2.0, "learned_passes": 0},
                                            "critical.learned_burnin_taus"),
                                           ({"learned_prior_degree": -1}, "critical.learned_prior_degree"),
                                           ({"learned_fit_states": 5}, "critical.learned_fit_states"),
                                           ({"learned_members": 0}, "critical.learned_members"),
                                           ({"learned_members": 40, "learned_paths": 64}, "critical.learned_members"),
                                           ({"learned_members": 8, "learned_paths": 8}, "critical.learned_paths"),
                                           ({"learned_members": 4, "learned_states": 16}, "critical.learned_states"),
                                           ({"learned_observables": ("rho_dw", "m")}, "critical.learned_observables"),
                                           ({"learned_observables": ("m", "energy")}, "critical.learned_observables"),
                                           ({"learned_observables": ("m", "m")}, "critical.learned_observables")])
def test_config_checks_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        dataclasses.replace(CriticalConfig(), **change).check()


def test_input_file_loads_with_quick_preset(monkeypatch) -> None:
    monkeypatch.setitem(STUDY_MODULES, "critical", "matscale.pipeline.critical_study:STUDY")
    full = load_config(ROOT / "inputs" / "ising_critical.toml")
    quick = load_config(ROOT / "inputs" / "ising_critical.toml", quick=True)
    assert full.study.sizes == (16, 32, 48, 64) and quick.study.sizes == (16, 32)
    assert "L = 16, 32" in describe(quick.study)


def test_learned_stage_runs_resumes_and_leaves_direct_records_valid(tmp_path: Path) -> None:
    """A tiny study with learned points at L = 32 and 48 (16² simulations, upsampled by 2 and 3):
    the learned stage and its analysis run, resume without recomputation, the report compares
    them with the direct points, and adding learned sizes does not invalidate finished direct
    points (their record leaves out the learned_* fields)."""
    base = dataclasses.replace(TINY, sizes=(16, 32), temperatures=(2.2, 2.35))
    run(base, StageRunner(out=tmp_path), tmp_path)
    cfg = dataclasses.replace(base, learned_sizes=(32, 48), learned_small_runs=8, learned_states=400,
                              learned_relax=2.0, learned_epochs=5, learned_paths=8,
                              learned_passes=3, learned_pass_time=1.0, learned_fit_states=300, learned_prior_degree=9,
                              learned_members=2, learned_burnin_taus=0.05)  # 1-2 burn-in passes
    runner = StageRunner(out=tmp_path)
    summary = run(cfg, runner, tmp_path)
    # only the learned points (2 sizes x 2 temperatures) and their analysis: the direct ones stand
    assert len(runner.executed) == 2 * 2 + 1, runner.executed
    assert all("learned" in label for label in runner.executed), runner.executed
    assert set(summary["learned_exponents"]) >= {"beta_over_nu", "gamma_over_nu", "one_over_nu"}
    with np.load(tmp_path / "learned" / "L48_T2.2" / "samples.npz") as f:
        m, n_states, member = f["m"], int(f["n_training_states"]), f["member"]
    assert m.shape[0] == len(member) and set(member.tolist()) == {0, 1}  # 4 paths per member
    assert m.shape[1] == int(round(cfg.production_taus * cfg.samples_per_tau)) and np.all(np.abs(m) <= 1)
    assert n_states == cfg.learned_states * 2  # passes 2 and 3 of 3 recorded
    # the fitted SDE reloads with its drift prior (an odd polynomial in m: h = 0)
    from matscale.sde.fitted import load_sde
    from matscale.sde.priors import load_prior
    prior = load_prior(tmp_path / "learned" / "L48_T2.2" / "drift_prior.json")
    assert prior.powers == (1, 3, 5, 7, 9) and prior.component == 0
    sde = load_sde(tmp_path / "learned" / "L48_T2.2" / "sde", drift_prior=prior)
    # member 0: about 300 of its 2 x 200 states fitted, 8 pairs each (2d generator pairs, mirrored)
    assert sde.dim == 2 and 200 * 8 < sde.config["n_pairs"] < 400 * 8
    second = load_sde(tmp_path / "learned" / "L48_T2.2" / "sde_member1",
                      drift_prior=load_prior(tmp_path / "learned" / "L48_T2.2" / "sde_member1_prior.json"))
    assert second.dim == 2 and second.config["seed"] != sde.config["seed"]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "learned against direct" in report and "| 32 | 2.2 |" in report
    again = StageRunner(out=tmp_path)
    run(cfg, again, tmp_path)
    assert again.executed == []


@pytest.mark.parametrize("L, factor", [(32, 2), (48, 3), (64, 2), (128, 2), (144, 3), (16, 0), (40, 0), (96, 6), (80, 5)])
def test_upsampling_factor_of_learned_sizes(L: int, factor: int) -> None:
    from matscale.pipeline.critical_study import upsampling_factor

    assert upsampling_factor(L) == factor


def test_training_states_record_the_second_half_of_the_passes() -> None:
    """No passes: the upsampled states themselves. Passes: the states after each pass of the
    second half, relaxed on a copy (the upsampled states stay as they were), reproducible."""
    from matscale.systems.spin import Ising2D

    system = Ising2D(32, 2.27)
    upsampled = np.ones((5, 32, 32), np.int8)
    assert [chunk is upsampled for chunk in training_states(system, upsampled, 0, 1.0)] == [True]
    chunks = list(training_states(system, upsampled, 5, 0.5, seed=4))
    assert len(chunks) == recorded_passes(5) == 3 and recorded_passes(8) == 4 and recorded_passes(0) == 1
    assert np.all(upsampled == 1)
    assert not np.array_equal(chunks[0], chunks[1]) and not np.array_equal(chunks[0], upsampled)
    again = list(training_states(system, upsampled, 5, 0.5, seed=4))
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again))


def test_burnin_passes_run_first_and_are_not_recorded() -> None:
    """``burnin`` passes precede the ``passes``, unrecorded: the recorded states are those after
    the last passes of one chain of burnin + passes (the same seed gives the same chain). The
    study's burn-in covers learned_burnin_taus · τ(L) of Glauber time per site at 4 pass times
    per pass (windows at stride half their side cover every site 4 times in 2-D)."""
    from matscale.systems.spin import Ising2D
    from matscale.upsampling import block_gibbs_sweeps

    system = Ising2D(32, 2.27)
    upsampled = np.ones((4, 32, 32), np.int8)
    chunks = list(training_states(system, upsampled, 4, 0.5, seed=3, burnin=3))
    chain = upsampled.copy()
    after = {k: chain.copy() for k in block_gibbs_sweeps(system, chain, 7, duration=0.5, seed=3)}
    assert len(chunks) == recorded_passes(4) == 2
    assert np.array_equal(chunks[0], after[6]) and np.array_equal(chunks[1], after[7])
    cfg = dataclasses.replace(CriticalConfig(), learned_passes=8, learned_pass_time=25.0, learned_burnin_taus=2.0)
    cfg.check()
    assert [cfg.burnin_passes(L) for L in (32, 48, 64)] == [
        int(np.ceil(2.0 * cfg.tau(L) / 100.0)) for L in (32, 48, 64)] == [5, 11, 21]
    assert dataclasses.replace(cfg, learned_burnin_taus=0.0).burnin_passes(64) == 0


def test_points_run_in_parallel_with_workers_and_give_the_same_study(tmp_path: Path) -> None:
    """With a pool of 2 spawned processes (``matscale run --workers 2``) every point runs in a
    worker and the stages take the results over: the samples equal the inline run's bit for bit
    (every point draws from its own seeds), no scratch folder is left, and a rerun skips all."""
    from matscale.parallel import open_executor

    inline = run(TINY, StageRunner(out=tmp_path / "inline"), tmp_path / "inline")
    with open_executor("processes:2") as pool:
        runner = StageRunner(out=tmp_path / "pool", executor=pool)
        pooled = run(TINY, runner, tmp_path / "pool")
        assert len(runner.executed) == 2 * 3 + 1
    assert pooled["T_c"] == inline["T_c"]
    for tag in ("L8_T2.2", "L16_T2.35"):
        with np.load(tmp_path / "inline" / "direct" / tag / "samples.npz") as a, \
                np.load(tmp_path / "pool" / "direct" / tag / "samples.npz") as b:
            np.testing.assert_array_equal(a["m"], b["m"])
    assert not list((tmp_path / "pool" / "direct").glob(".*"))
    again = StageRunner(out=tmp_path / "pool")
    run(TINY, again, tmp_path / "pool")
    assert again.executed == []


def test_flat_histogram_subset_flattens_a_two_peaked_sample() -> None:
    """|m| of a two-peaked sample (most values near 0.7, few near 0): the subset of ~n keeps
    every value of the thin bins and thins the crowded ones to about the same count. The count
    is a sum of independent Bernoulli draws, so it lies within 5 standard deviations (sqrt(n))
    of n."""
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.normal(0.7, 0.08, 90_000), rng.uniform(-0.5, 0.5, 10_000)]))
    keep = flat_histogram_subset(values, 20_000, seed=1)
    assert abs(len(keep) - 20_000) < 5 * np.sqrt(20_000) and np.all(np.diff(keep) > 0)
    before = np.histogram(values, bins=10, range=(0, 1))[0]
    after = np.histogram(values[keep], bins=10, range=(0, 1))[0]
    assert np.array_equal(after[:3], before[:3])            # the thin bins near 0 are all kept
    assert after[7] < 0.2 * before[7]                         # the crowded peak is thinned
    assert np.array_equal(keep, flat_histogram_subset(values, 20_000, seed=1))
    with pytest.raises(ValueError, match="n=0"):
        flat_histogram_subset(values, 0)


def test_generator_fit_in_a_subset_of_the_observables() -> None:
    """``observables=("m",)``: the SDE of m alone (the effective dynamics of the order parameter),
    fitted to the m-components of the exact generator moments, its drift odd in m (mirror
    pairs); an unknown name is refused with the allowed ones."""
    from matscale.pipeline.critical_study import fit_generator_sde, pipeline_config
    from matscale.systems.spin import Ising2D

    system = Ising2D(32, 2.27)
    states = np.where(np.random.default_rng(0).random((64, 32, 32)) < 0.7, 1, -1).astype(np.int8)
    states[32:] *= -1
    train = dataclasses.replace(pipeline_config(CriticalConfig(), 32, 2.27).train, epochs=3, hidden=[8])
    sde = fit_generator_sde(system, states, train, observables=("m",), prior_degree=3)
    assert sde.dim == 1 and sde.drift_prior.powers == (1, 3)
    # the prior is the unweighted least-squares fit of the exact drifts: the conditional mean E[b | m]
    b, _ = system.generator_moments(states)
    m = states.reshape(len(states), -1).mean(axis=1)
    expected = np.linalg.lstsq(np.stack([m, m ** 3], axis=1), b[:, 0], rcond=None)[0]
    np.testing.assert_allclose(sde.drift_prior.coefficients, expected, rtol=1e-8)
    drift = np.asarray(sde.drift(np.array([[0.4], [-0.4]])))[:, 0]
    assert abs(drift[0] + drift[1]) < 0.2 * abs(drift[0])  # odd up to the fit (mirror pairs)
    with pytest.raises(ValueError, match="allowed: m, rho_dw"):
        fit_generator_sde(system, states, train, observables=("m", "energy"))


def test_fit_members_splits_an_array_of_states_between_members() -> None:
    """``fit_members`` with one array of states (as the equilibrium-state experiment passes them):
    member k fits the states k, k + E, … and rolls out its share of the starts, every path is
    labelled with its member, and the samples follow the direct schedule at side L."""
    from matscale.config import TrainConfig
    from matscale.pipeline.critical_study import fit_members
    from matscale.systems.spin import Ising2D

    L, T = 16, 2.27
    cfg = dataclasses.replace(TINY, learned_members=3, learned_observables=("m",), learned_prior_degree=3,
                              learned_paths=7)
    system = Ising2D(L, T)
    states = np.ones((60, L, L), dtype=np.int8)
    states[1::2] = -1
    system.evolve_batch(states, duration=20.0, seeds=np.arange(60, dtype=np.uint64))
    starts = system.observables(states[:7])
    train = TrainConfig(epochs=3, hidden=[8], batch_size=64, symmetrize="m", seed=5)
    fitted = fit_members(cfg, system, states, train, starts, 9, L, T)
    assert fitted["member"].tolist() == [0, 0, 0, 1, 1, 2, 2]   # starts 0, 3, 6 | 1, 4 | 2, 5
    assert fitted["m"].shape == (7, cfg.schedule(L)[2]) and fitted["n_dropped"] == 0
    assert [s.config["seed"] for s in fitted["sde"]] == [5, 6, 7] and all(s.dim == 1 for s in fitted["sde"])
