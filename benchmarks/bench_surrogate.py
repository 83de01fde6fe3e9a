"""Cluster-expansion surrogate speed against the on-lattice Zhou EAM (``LatticeEAM``), same process.

Three rows, each a throughput of the surrogate with the EAM as the baseline:
- swap ΔE per second of ``swap_deltas`` (random first-shell pairs, one batched call);
- swap Monte Carlo trials per second (``SwapMCEnsemble``, one ``swap_delta`` call per trial);
- KRA vacancy-kMC events per second (``VacancyKMC`` + ``KRABarrierModel``, 4 vacancies).
The surrogate is fitted to the EAM first (numpy backend; pairs to 7 Å and the 2.81-2.81-3.24 Å
triplet, 165 interactions), its held-out errors are printed with the rows. First calls (numba
compile or cache load) are made before timing.

Usage: python benchmarks/bench_surrogate.py [--quick]   (``measure()``: the same as rows)
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from matscale.calculators.lattice_eam import LatticeEAM
from matscale.calculators.surrogate import fit_surrogate
from matscale.systems.alloy.kmc import VacancyKMC
from matscale.systems.alloy.kra import KRABarrierModel
from matscale.systems.alloy.lattice import random_solid_solution
from matscale.systems.alloy.swap import SwapMCEnsemble

try:
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from common import row

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
E0 = {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}  # eV, KRA barriers (illustrative)


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(quick: bool = False) -> list[dict[str, Any]]:
    eam = LatticeEAM.from_setfl()
    fit = fit_surrogate(eam, EQUIMOLAR, backend="numpy", mc_with="reference", rng=1)
    ce = fit.model
    m = fit.metrics
    errors = (f"held-out errors vs EAM: {m['energy_rmse_meV_per_site']:.2f} meV/site, swap ΔE "
              f"{m['swap_rmse_meV']:.1f} meV, hop ΔE {m['hop_rmse_meV']:.1f} meV RMSE")
    rows = []
    cells = 10 if quick else 16
    rng = np.random.default_rng(0)
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=4, rng=rng)
    n_pairs = 20_000 if quick else 100_000
    a = rng.integers(0, lat.n_sites, n_pairs)
    pairs = np.stack([a, lat.neighbors(1)[a, rng.integers(0, 8, n_pairs)]], axis=1).astype(np.int64)
    first = {}
    for name, model in (("ce", ce), ("eam", eam)):
        start = time.perf_counter()
        model.swap_deltas(lat, pairs[:10])
        first[name] = time.perf_counter() - start
    t_ce = _best_of(lambda: ce.swap_deltas(lat, pairs))
    t_eam = _best_of(lambda: eam.swap_deltas(lat, pairs))
    rows.append(row(f"surrogate swap ΔE, {lat.n_sites} sites, batched first-shell pairs",
                    n_pairs / t_ce, "ΔE/s", baseline="LatticeEAM swap_deltas", baseline_value=n_pairs / t_eam,
                    note=errors, first_call_s_ce=first["ce"], first_call_s_eam=first["eam"],
                    us_per_delta_ce=1e6 * t_ce / n_pairs, us_per_delta_eam=1e6 * t_eam / n_pairs))
    n_trials = 50_000 if quick else 200_000

    def swap_mc(model):
        sl = random_solid_solution(EQUIMOLAR, 8, n_vacancies=0, rng=1)
        SwapMCEnsemble(sl, model, 1000.0, 2, neighbor_shell=1).run(n_trials)

    t_ce, t_eam = _best_of(lambda: swap_mc(ce), 2), _best_of(lambda: swap_mc(eam), 2)
    rows.append(row("surrogate swap MC, 1024 sites, 1000 K", n_trials / t_ce, "trials/s",
                    baseline="LatticeEAM in SwapMCEnsemble", baseline_value=n_trials / t_eam,
                    note="one Python-level swap_delta call per trial"))
    n_events = 2_000 if quick else 10_000

    def kmc(model):
        kl = random_solid_solution(EQUIMOLAR, 10, n_vacancies=4, rng=3)
        VacancyKMC(kl, KRABarrierModel(model, E0), 1200.0).evolve(kl, n_events=n_events,
                                                                  rng=np.random.default_rng(4))

    kmc(ce), kmc(eam)  # compile / cache load
    t_ce, t_eam = _best_of(lambda: kmc(ce), 2), _best_of(lambda: kmc(eam), 2)
    rows.append(row("surrogate KRA vacancy kMC, 2000 sites, 4 vacancies, 1200 K", n_events / t_ce, "events/s",
                    baseline="KRA on LatticeEAM", baseline_value=n_events / t_eam,
                    note="generic (Python) kMC loop, 8 hop ΔE per recomputed vacancy"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    for r in measure(args.quick):
        print(f"{r['name']}: {r['value']:.4g} {r['unit']}  vs {r['baseline']}: {r['baseline_value']:.4g} "
              f"-> ratio {r['ratio']:.2f}  ({r['note']})")
        extra = {k: round(v, 4) for k, v in r["extra"].items()}
        if extra:
            print(f"    {extra}")


if __name__ == "__main__":
    main()
