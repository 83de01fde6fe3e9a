"""Cost of tracking per-atom displacements through vacancy kMC, against plain ``evolve``.

Both runs in the same process, same start, same seed (so the same hops):
- plain: ``VacancyKMC.evolve(lattice, n_events=n, rng=...)``;
- tracked: the same call with ``tracker=DisplacementTracker(lattice)`` (unwrapped displacement
  and hop count of every atom, updated by a compiled replay of each block of hops).
Paths measured: the fused NNK event loop (all in numba, the fastest loop, so the overhead is
largest there) and the generic loop with :class:`ConstantBarrierModel`.

Usage: python benchmarks/bench_tracer.py [--quick]   (``measure()``: the same as rows)
Prints hops/s tracked and plain and their ratio (1.0 = free). First calls (numba compile or cache
load) are made before timing and reported apart.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from matscale.systems.alloy.diffusion import ConstantBarrierModel
from matscale.systems.alloy.kmc import DisplacementTracker, VacancyKMC
from matscale.systems.alloy.lattice import random_solid_solution
from matscale.systems.alloy.nnk import NNKBarrierModel

try:
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from common import row

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}


def _timed(model: Any, start, n_events: int, tracked: bool) -> float:
    """Wall seconds of n_events hops from ``start`` (seed 1), the model's caches emptied first."""
    if hasattr(model, "clear_cache"):
        model.clear_cache()  # the NNK environment cache would otherwise favour the later run
    lattice = start.copy()
    kmc = VacancyKMC(lattice, model, 1500.0)
    tracker = DisplacementTracker(lattice) if tracked else None
    t0 = time.perf_counter()
    kmc.evolve(lattice, n_events=n_events, rng=np.random.default_rng(1), tracker=tracker)
    return time.perf_counter() - t0


def measure(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    cases = (("fused NNK", NNKBarrierModel(), 8, 1, 20_000 if quick else 200_000),
             ("fused NNK", NNKBarrierModel(), 16, 8, 20_000 if quick else 200_000),
             ("generic, constant barrier", ConstantBarrierModel(1.0), 8, 1, 5_000 if quick else 50_000))
    for label, model, cells, n_vac, n_events in cases:
        start = random_solid_solution(EQUIMOLAR, cells, n_vacancies=n_vac, rng=0)
        t0 = time.perf_counter()
        _timed(model, start, 100, True)  # compile / cache load of both kernels
        first = time.perf_counter() - t0
        repeats = 1 if quick else 3
        plain, tracked = np.inf, np.inf
        for _ in range(repeats):  # interleaved, best of each: robust to a shared machine's load
            plain = min(plain, _timed(model, start, n_events, False))
            tracked = min(tracked, _timed(model, start, n_events, True))
        rows.append(row(f"tracked kMC, {label}, {start.n_sites} sites / {n_vac} vac", n_events / tracked, "hops/s",
                        baseline="plain evolve (no tracker), same hops", baseline_value=n_events / plain,
                        note=f"{n_events} hops, best of {repeats}; overhead {tracked / plain - 1:+.1%}",
                        first_call_s=first))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    args = parser.parse_args()
    for r in measure(args.quick):
        print(f"{r['name']:<55} {r['value']:>11.0f} {r['unit']}  plain {r['baseline_value']:>11.0f}  "
              f"ratio {r['ratio']:.3f}  ({r['note']})")


if __name__ == "__main__":
    main()
