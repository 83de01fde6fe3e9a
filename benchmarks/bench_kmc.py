"""Vacancy kMC throughput with NNK barriers, against a baseline run in the same process.

Baselines, run in the same process on the same start:
- "recompute-all": every step recomputes every vacancy's 8 barriers (same fast NNK kernel, no
  environment cache) and selects from the cumulative sum of all rates (O(N_vac) per step);
- "paper-dense": the scheme of the paper's code: dense 729-input float64 numpy
  network on voxel images of every vacancy, every step (few steps only; it is slow).
matscale: cached rates, incremental recomputation within the NNK cutoff, sum-tree selection,
sparse/folded float32 network, environment cache, whole event loop in numba.

Usage: python benchmarks/bench_kmc.py [--quick]   (``measure()``: the same as rows)
Prints steps/s, the ratio to the baseline, and simulated seconds per wall second, per state point
(random equimolar start, T given). The first call (numba compile or cache load) is timed apart.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, VacancyKMC
from matscale.systems.alloy.lattice import random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel, voxel_images

try:
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from common import row

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}


def recompute_all_steps(lattice, temperature: float, n_steps: int, rng) -> float:
    """kMC recomputing all barriers every step (fast kernel, no cache); returns wall seconds."""
    model = NNKBarrierModel(cache_size=0)
    beta = 1.0 / (BOLTZMANN_EV_PER_K * temperature)
    neighbors = lattice.neighbors(1)
    start = time.perf_counter()
    for _ in range(n_steps):
        vacancies = lattice.vacancies
        barriers = model.hop_barriers(lattice, vacancies)
        targets = neighbors[vacancies]
        rates = (1e13 * np.exp(-beta * barriers)).ravel()
        cumulative = np.cumsum(rates)
        k = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        a, b = vacancies[k // 8], targets.ravel()[k]
        lattice.species[a], lattice.species[b] = lattice.species[b], 0
        _ = -np.log(1.0 - rng.random()) / cumulative[-1]
    return time.perf_counter() - start


def baseline_steps(lattice, model: NNKBarrierModel, temperature: float, n_steps: int, rng) -> float:
    """Paper-style kMC: all barriers recomputed densely each step; returns wall seconds."""
    beta = 1.0 / (BOLTZMANN_EV_PER_K * temperature)
    neighbors = lattice.neighbors(1)
    start = time.perf_counter()
    for _ in range(n_steps):
        vacancies = lattice.vacancies
        images = np.concatenate([voxel_images(lattice, v) for v in vacancies])
        barriers = model.network.dense(images).reshape(len(vacancies), 8)
        targets = neighbors[vacancies]
        rates = np.where(lattice.species[targets] == 0, 0.0, 1e13 * np.exp(-beta * barriers)).ravel()
        cumulative = np.cumsum(rates)
        k = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        a, b = vacancies[k // 8], targets.ravel()[k]
        lattice.species[a], lattice.species[b] = lattice.species[b], 0
        _ = -np.log(1.0 - rng.random()) / cumulative[-1]
    return time.perf_counter() - start


POINTS = (  # (cells, vacancies, T, matscale steps, recompute-all steps, paper-dense steps)
    (8, 1, 900.0, 200_000, 5000, 300),
    (8, 1, 2000.0, 200_000, 5000, 300),
    (32, 64, 900.0, 200_000, 300, 10),
    (32, 64, 2000.0, 200_000, 300, 10),
)


def run_point(cells: int, n_vacancies: int, temperature: float, n_steps: int, n_recompute: int,
              n_baseline: int) -> dict[str, Any]:
    """Steps/s of matscale and of both baselines from the same random start, plus side figures."""
    lattice = random_solid_solution(EQUIMOLAR, cells, n_vacancies=n_vacancies, rng=0)
    base_lattice = lattice.copy()
    model = NNKBarrierModel()
    kmc = VacancyKMC(lattice, model, temperature)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    kmc.evolve(lattice, n_events=1, rng=rng)
    first_call = time.perf_counter() - t0
    kmc.evolve(lattice, n_events=min(2000, n_steps // 10), rng=rng)  # warm up the caches
    t0 = time.perf_counter()
    _, simulated = kmc.evolve(lattice, n_events=n_steps, rng=rng)
    wall = time.perf_counter() - t0
    recompute_all_steps(base_lattice.copy(), temperature, 2, np.random.default_rng(0))  # warm-up
    recompute_rate = n_recompute / recompute_all_steps(base_lattice.copy(), temperature, n_recompute, np.random.default_rng(1))
    base_wall = baseline_steps(base_lattice, model, temperature, n_baseline, np.random.default_rng(1))
    info = model.cache_info
    return {"n_sites": lattice.n_sites, "n_vacancies": n_vacancies, "T": temperature, "rate": n_steps / wall,
            "recompute_rate": recompute_rate, "base_rate": n_baseline / base_wall,
            "simulated_per_wall": simulated / wall,
            "cache_hit": info["hits"] / max(1, info["hits"] + info["evaluations"]), "first_call": first_call,
            "steps": n_steps, "recompute_steps": n_recompute, "base_steps": n_baseline}


def results(scale: float = 1.0):
    for cells, n_vac, temperature, steps, recompute, base in POINTS:
        yield run_point(cells, n_vac, temperature, int(steps * scale), max(20, int(recompute * scale)),
                        max(5, int(base * scale)))


def rows_of(res: dict[str, Any]) -> list[dict]:
    name = f"vacancy kMC N={res['n_sites']} vac={res['n_vacancies']} T={res['T']:.0f} K"
    side = dict(simulated_s_per_wall_s=res["simulated_per_wall"], env_cache_hit=res["cache_hit"],
                first_call_s=res["first_call"])
    return [
        row(name, res["rate"], "steps/s", baseline="recompute-all (fast kernel, no cache)",
            baseline_value=res["recompute_rate"],
            note=f"{res['steps']} steps vs {res['recompute_steps']}; env-cache hit {res['cache_hit']:.0%}", **side),
        row(name, res["rate"], "steps/s", baseline="paper-dense (729-input float64 network)",
            baseline_value=res["base_rate"], note=f"{res['steps']} steps vs {res['base_steps']}"),
    ]


def measure(quick: bool = False) -> list[dict]:
    """Rows for 1024 atoms / 1 vacancy and 65 536 atoms / 64 vacancies at 900 K and 2000 K, each
    against recompute-all and paper-dense; quick: a fifth of the steps (as ``--quick``)."""
    return [r for res in results(0.2 if quick else 1.0) for r in rows_of(res)]


def print_result(res: dict[str, Any]) -> None:
    rate, recompute_rate, base_rate = res["rate"], res["recompute_rate"], res["base_rate"]
    print(
        f"N={res['n_sites']:6d} vac={res['n_vacancies']:3d} T={res['T']:5.0f} K | matscale {rate:7.0f} steps/s "
        f"| recompute-all {recompute_rate:6.0f} steps/s (ratio {rate / recompute_rate:5.1f}x) "
        f"| paper-dense {base_rate:6.1f} steps/s (ratio {rate / base_rate:6.0f}x) | simulated "
        f"{res['simulated_per_wall']:.2e} s per wall s | env-cache hit {res['cache_hit']:.0%} | first call "
        f"{res['first_call']:.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    for res in results(0.2 if args.quick else 1.0):
        print_result(res)


if __name__ == "__main__":
    main()
