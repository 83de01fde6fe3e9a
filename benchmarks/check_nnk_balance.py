"""Detailed balance of the NNK barrier laws, and how much each moves the equilibrium SRO.

    python benchmarks/check_nnk_balance.py [--scale 1.0] [--seed 0]

1. Kolmogorov cycle sums Σ (E_forward − E_backward) (eV) around closed loops of vacancy hops that
   restore the configuration (matscale.systems.alloy.balance), on random equimolar 8³-cell NbMoTa
   cells: zero for a thermodynamically consistent law.
2. Mirror deviations: |E_b(g·c, g·s) − E_b(c, s)| over the 48 point-group operations g about the
   vacancy and the 8 jumps s (zero for a law depending only on the physical jump).
3. First-shell Warren–Cowley α (Nb–Mo, Nb–Ta, Mo–Ta) of the kMC stationary state at 900 K and
   2000 K, 1024 sites, 1 vacancy, for the raw, symmetrised and consistent NNK laws (the last
   with the shipped Zhou-form EAM for ΔE), and canonical swap MC of the same EAM (the Boltzmann
   distribution the consistent law must reproduce). kMC samples are taken at equally spaced
   *times*; standard errors from 20 batch means; "drift" = mean of the second half of the
   batches minus the first half (a sign of unfinished relaxation when several SE); "SE5/SE20" =
   the largest ratio of the SE from 5 batch means to that from 20 (well above 1: the batches are
   correlated and the quoted SE is too small).
   The raw runs start from random; the symmetrised runs start from the raw run's final state
   (then relax again); the consistent runs start from the swap-MC final state. At 900 K the kMC
   correlation time (~10⁶ hops) exceeds these runs, so the consistent-vs-swap comparison there
   is weak; section 3a is the sharp check:
3a. Stationarity of the EAM Boltzmann state at 900 K: mean α(t) − α(0) over independent swap-MC
   starts each evolved for the same kMC time (0 within errors for KRA and the consistent law;
   the raw network drifts away).
   CPU seconds and kMC hops per CPU second are printed per run.

``--scale`` multiplies every hop and trial budget (1.0: about 10 min of one core).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from matscale.calculators.lattice_eam import LatticeEAM
from matscale.systems.alloy.balance import kolmogorov_cycle_sums, mirror_deviations
from matscale.systems.alloy.kmc import VacancyKMC
from matscale.systems.alloy.kra import KRABarrierModel
from matscale.systems.alloy.lattice import random_solid_solution
from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel, NNKBarrierModel
from matscale.systems.alloy.sro import warren_cowley
from matscale.systems.alloy.swap import SwapMCEnsemble

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
PAIRS = ("NbMo", "NbTa", "MoTa")
N_BATCHES = 20


def alpha1(lattice) -> np.ndarray:
    a = warren_cowley(lattice, shells=(1,))[0]
    return np.array([a[0, 1], a[0, 2], a[1, 2]])


def batch_stats(series: np.ndarray, n_batches: int = N_BATCHES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, standard error from n_batches batch means, second-half minus first-half mean)."""
    means = np.array([b.mean(axis=0) for b in np.array_split(series, n_batches)])
    half = n_batches // 2
    return (means.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(n_batches),
            means[half:].mean(axis=0) - means[:half].mean(axis=0))


def kmc_sro(lattice, model, temperature, n_equilibrate, n_samples, hops_per_sample, seed):
    """Stationary α series of vacancy kMC sampled every τ (τ = the mean time of hops_per_sample
    hops, measured after equilibration). Returns (series [n_samples, 3], hops, cpu seconds)."""
    kmc = VacancyKMC(lattice, model, temperature)
    rng = np.random.default_rng(seed)
    start = time.process_time()
    kmc.evolve(lattice, n_events=int(n_equilibrate), rng=rng)
    probe = 2000
    _, elapsed = kmc.evolve(lattice, n_events=probe, rng=rng)
    tau = hops_per_sample * elapsed / probe
    hops = int(n_equilibrate) + probe
    series = []
    for _ in range(max(int(n_samples), 2 * N_BATCHES)):
        before = kmc._cache.stamp_value if kmc._cache is not None else 0
        kmc.evolve(lattice, duration=tau, rng=rng)
        hops += kmc._cache.stamp_value - before
        series.append(alpha1(lattice))
    return np.array(series), hops, time.process_time() - start


def swap_sro(lattice, energy, temperature, n_equilibrate, n_samples, trials_per_sample, seed):
    start = time.process_time()
    mc = SwapMCEnsemble(lattice, energy, temperature, rng=seed, neighbor_shell=None)
    mc.run(int(n_equilibrate))
    series = []
    for _ in range(max(int(n_samples), 2 * N_BATCHES)):
        mc.run(int(trials_per_sample))
        series.append(alpha1(lattice))
    return np.array(series), time.process_time() - start


def cycle_section(eam, seed: int, n_cells: int, n_loops: int) -> None:
    print(f"== Kolmogorov cycle sums (eV) over {n_cells} random 1024-site cells x {n_loops} loops of 4 sites "
          "(each walked until the configuration is restored: 4, 8 or 12 hops)")
    models = {
        "kra (EAM, E0 0.9/1.2/1.1)": KRABarrierModel(eam, {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}),
        "nnk (raw, published)": NNKBarrierModel(),
        "nnk_symmetric": NNKBarrierModel(symmetrise=True),
        "nnk_consistent (EAM)": ConsistentNNKBarrierModel(eam),
    }
    print(f"{'model':28s} {'mean':>9s} {'mean|.|':>9s} {'rms':>9s} {'max|.|':>9s} "
          f"{'mirror max':>11s} {'mirror rms':>11s} {'cpu s':>6s}")
    for name, model in models.items():
        start = time.process_time()
        sums, mirrors = [], []
        for cell in range(n_cells):
            lattice = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=seed + 100 + cell)
            sums.append(kolmogorov_cycle_sums(lattice, model, n_loops=n_loops, rng=seed + cell))
            mirrors.append(mirror_deviations(lattice, model, int(lattice.vacancies[0])))
        s, m = np.concatenate(sums), np.concatenate(mirrors).ravel()
        print(f"{name:28s} {s.mean():9.2e} {np.abs(s).mean():9.2e} {np.sqrt(np.mean(s**2)):9.2e} "
              f"{np.abs(s).max():9.2e} {m.max():11.2e} {np.sqrt(np.mean(m**2)):11.2e} "
              f"{time.process_time() - start:6.1f}")


def report(label: str, series: np.ndarray, cpu: float, hops: int | None) -> tuple:
    mean, err, drift = batch_stats(series)
    ratio = np.max(batch_stats(series, 5)[1] / err)
    cells = "  ".join(f"{m:+.4f}±{e:.4f}" for m, e in zip(mean, err))
    speed = f"{hops / cpu:8.0f} hops/s" if hops else " " * 15
    print(f"  {label:26s} {cells}   drift {' '.join(f'{d:+.3f}' for d in drift)}  SE5/SE20 {ratio:3.1f}  "
          f"{cpu:6.1f} cpu s {speed}")
    return mean, err


def sro_section(eam, seed: int, scale: float) -> None:
    print("\n== Stationary first-shell Warren-Cowley alpha (" + ", ".join(PAIRS) + "), mean ± SE (20 batch means)")
    budget = {  # (equilibration hops, samples, hops per sample) per law and temperature
        900.0: {"nnk": (4_000_000, 400, 10_000), "nnk_symmetric": (3_000_000, 300, 10_000),
                "nnk_consistent": (20_000, 150, 1_000)},
        2000.0: {"nnk": (200_000, 400, 2_500), "nnk_symmetric": (150_000, 240, 2_500),
                 "nnk_consistent": (20_000, 200, 1_500)},
    }
    swap_budget = (50 * 1024, 1000, 2048)  # (equilibration trials, samples, trials per sample)
    for temperature in (900.0, 2000.0):
        print(f"T = {temperature:.0f} K")
        start = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=seed)
        results = {}
        b = budget[temperature]

        lattice = start.copy()
        eq, n, per = b["nnk"]
        series, hops, cpu = kmc_sro(lattice, NNKBarrierModel(), temperature, eq * scale, n * scale, per, seed + 1)
        results["nnk"] = report("nnk (raw)", series, cpu, hops)
        raw_final = lattice

        lattice = raw_final.copy()
        eq, n, per = b["nnk_symmetric"]
        series, hops, cpu = kmc_sro(lattice, NNKBarrierModel(symmetrise=True), temperature, eq * scale,
                                    n * scale, per, seed + 2)
        results["nnk_symmetric"] = report("nnk_symmetric", series, cpu, hops)

        lattice = start.copy()
        eq, n, per = swap_budget
        series, cpu = swap_sro(lattice, eam, temperature, eq * scale, n * scale, per, seed + 3)
        results["swap"] = report("swap MC, EAM (Boltzmann)", series, cpu, None)

        eq, n, per = b["nnk_consistent"]
        series, hops, cpu = kmc_sro(lattice, ConsistentNNKBarrierModel(eam), temperature, eq * scale,
                                    n * scale, per, seed + 4)
        results["nnk_consistent"] = report("nnk_consistent (EAM)", series, cpu, hops)

        def shift(a: str, b_: str) -> str:
            (ma, ea), (mb, eb) = results[a], results[b_]
            d, e = ma - mb, np.sqrt(ea**2 + eb**2)
            return "  ".join(f"{x:+.4f}±{y:.4f} ({abs(x) / y:4.1f} SE)" for x, y in zip(d, e))

        print(f"  shift nnk_symmetric - nnk:         {shift('nnk_symmetric', 'nnk')}")
        print(f"  shift nnk_consistent - nnk:        {shift('nnk_consistent', 'nnk')}")
        print(f"  check nnk_consistent - swap MC:    {shift('nnk_consistent', 'swap')}")


def stationarity_section(eam, seed: int, scale: float, temperature: float = 900.0) -> None:
    """Paired test that the EAM Boltzmann state is stationary under a kMC law: K starts drawn from
    swap MC (EAM), each evolved for the same kMC *time* (about ``hops`` hops); the mean of
    α(t) − α(0) is 0 for a law whose stationary state is that Boltzmann distribution. Pairing
    removes the sampling noise of the starts, so this is far sharper than comparing long-run
    means when the kMC correlation time (~10⁶ hops at 900 K) exceeds the affordable run."""
    n_starts, hops = max(int(16 * scale), 8), 20_000
    print(f"\n== Stationarity of the EAM Boltzmann state at {temperature:.0f} K: mean of alpha(t) - alpha(0) "
          f"over {n_starts} swap-MC starts, kMC time t ~ {hops} hops (0 for a law with that stationary state)")
    lattice = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=seed + 7)
    mc = SwapMCEnsemble(lattice, eam, temperature, rng=seed + 8, neighbor_shell=None)
    mc.run(50 * lattice.n_sites)
    starts = []
    for _ in range(n_starts):
        mc.run(20 * lattice.n_sites)
        starts.append(lattice.copy())
    laws = {"kra (EAM), control": KRABarrierModel(eam, {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}),
            "nnk_consistent (EAM)": ConsistentNNKBarrierModel(eam),
            "nnk (raw)": NNKBarrierModel()}
    for name, model in laws.items():
        cpu = time.process_time()
        rng = np.random.default_rng(seed + 9)
        probe = starts[0].copy()
        _, elapsed = VacancyKMC(probe, model, temperature).evolve(probe, n_events=hops, rng=rng)
        diffs = []
        for start in starts:
            state = start.copy()
            VacancyKMC(state, model, temperature).evolve(state, duration=elapsed, rng=rng)
            diffs.append(alpha1(state) - alpha1(start))
        diffs = np.array(diffs)
        mean, err = diffs.mean(axis=0), diffs.std(axis=0, ddof=1) / np.sqrt(len(diffs))
        cells = "  ".join(f"{m:+.4f}±{e:.4f} ({abs(m) / e:4.1f} SE)" for m, e in zip(mean, err))
        print(f"  {name:22s} {cells}   {time.process_time() - cpu:6.1f} cpu s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every hop/trial budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sro", action="store_true", help="cycle sums and mirror deviations only")
    args = parser.parse_args()
    t0 = time.perf_counter()
    eam = LatticeEAM.from_setfl("NbMoTa_Zhou04.eam.alloy")
    cycle_section(eam, args.seed, n_cells=4, n_loops=16)
    if not args.skip_sro:
        stationarity_section(eam, args.seed, args.scale)
        sro_section(eam, args.seed, args.scale)
    print(f"\nwall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
