"""Vacancy kMC throughput with NNK barriers, against a baseline run in the same process.

Baselines, run in the same process on the same start:
- "recompute-all": every step recomputes every vacancy's 8 barriers (same fast NNK kernel, no
  environment cache) and selects from the cumulative sum of all rates (O(N_vac) per step);
- "paper-dense": the scheme of the paper's code: dense 729-input float64 numpy
  network on voxel images of every vacancy, every step (few steps only; it is slow).
matscale: cached rates, incremental recomputation within the NNK cutoff, sum-tree selection,
sparse/folded float32 network, environment cache, whole event loop in numba.

Usage: python benchmarks/bench_kmc.py [--quick]
Prints steps/s, the ratio to the baseline, and simulated seconds per wall second, per state point
(random equimolar start, T given). The first call (numba compile or cache load) is timed apart.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, VacancyKMC
from matscale.systems.alloy.lattice import random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel, voxel_images

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


def run_point(cells: int, n_vacancies: int, temperature: float, n_steps: int, n_recompute: int, n_baseline: int) -> None:
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
    rate, base_rate = n_steps / wall, n_baseline / base_wall
    info = model.cache_info
    hit = info["hits"] / max(1, info["hits"] + info["evaluations"])
    print(
        f"N={lattice.n_sites:6d} vac={n_vacancies:3d} T={temperature:5.0f} K | matscale {rate:7.0f} steps/s "
        f"| recompute-all {recompute_rate:6.0f} steps/s (ratio {rate / recompute_rate:5.1f}x) "
        f"| paper-dense {base_rate:6.1f} steps/s (ratio {rate / base_rate:6.0f}x) | simulated {simulated / wall:.2e} s "
        f"per wall s | env-cache hit {hit:.0%} | first call {first_call:.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    for cells, n_vac, temperature, steps, recompute, base in (
        (8, 1, 900.0, 200_000, 5000, 300),
        (8, 1, 2000.0, 200_000, 5000, 300),
        (32, 64, 900.0, 200_000, 300, 10),
        (32, 64, 2000.0, 200_000, 300, 10),
    ):
        run_point(cells, n_vac, temperature, int(steps * scale), max(20, int(recompute * scale)),
                  max(5, int(base * scale)))


if __name__ == "__main__":
    main()
