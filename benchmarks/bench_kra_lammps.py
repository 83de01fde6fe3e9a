"""KRA barrier cost: LAMMPS local cluster vs LAMMPS whole cell vs on-lattice EAM (numba).

One "KRA step" = the 8 barriers of one vacancy (8 hop energy changes). Measured in one process:

* baseline  : LAMMPS on the whole periodic cell, 1 + 8 full `run 0` evaluations
* local     : LammpsEngine.swap_deltas on one shared local cluster (1 + 8 runs on ~1000 atoms)
* LatticeEAM: numba on-lattice EAM (same numbers on the unrelaxed lattice), µs per ΔE

Prints seconds per step and speed-up ratios against the whole-cell baseline of the same size.
numba compile time (first call) is reported separately and kept out of the timings.

    python benchmarks/bench_kra_lammps.py                # 1024 and 8192 atoms
    python benchmarks/bench_kra_lammps.py --cells 8 --repeats 5
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from matscale.calculators.lammps import LammpsEngine
from matscale.calculators.lattice_eam import LatticeEAM
from matscale.systems.alloy.kra import KRABarrierModel, kra_barrier
from matscale.systems.alloy.lattice import random_solid_solution

E0 = {"Nb": 0.9, "Mo": 1.3, "Ta": 1.1}


def whole_cell_kra(engine: LammpsEngine, lattice, vacancy: int) -> np.ndarray:
    """Baseline: 8 barriers from whole-cell energies (1 + 8 LAMMPS runs)."""
    e_initial = engine.cell_energy(lattice)
    e0 = KRABarrierModel(engine, E0).e0_by_code(tuple(lattice.elements))
    out = np.full(8, np.inf)
    for col, t in enumerate(lattice.neighbors(1)[vacancy]):
        if lattice.species[t] == 0:
            continue
        after = lattice.species.copy()
        after[[vacancy, t]] = after[[t, vacancy]]
        out[col] = kra_barrier(e0[lattice.species[t]], engine.cell_energy(lattice, after) - e_initial)
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    best = np.inf
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[8, 16], help="cells per side (N = 2 c^3)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    engine = LammpsEngine.eam_alloy()
    eam = LatticeEAM.from_setfl()
    kra_local = KRABarrierModel(engine, E0)
    kra_eam = KRABarrierModel(eam, E0)

    warm = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 3, n_vacancies=1, rng=1)
    t0 = time.perf_counter()
    kra_eam.hop_barriers(warm, warm.vacancies)
    eam.swap_delta(warm, 0, 1)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.cell_energy(warm)
    lammps_start_s = time.perf_counter() - t0
    print(f"first-call costs (excluded below): numba compile/load {compile_s:.3f} s, "
          f"LAMMPS start-up {lammps_start_s:.3f} s")

    for c in args.cells:
        lat = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, c, n_vacancies=1,
                                    rng=np.random.default_rng(args.seed))
        v = int(lat.vacancies[0])
        eam.total_energy(lat)  # build the neighbour tables of this geometry (not timed)
        t_whole, b_whole = timed(lambda: whole_cell_kra(engine, lat, v), args.repeats)
        runs0 = engine.n_runs
        t_local, b_local = timed(lambda: kra_local.hop_barriers(lat, np.array([v]))[0], args.repeats)
        runs_local = (engine.n_runs - runs0) // args.repeats
        n_eam = 2000
        t_eam, b_eam = timed(lambda: [kra_eam.hop_barriers(lat, np.array([v])) for _ in range(n_eam)][-1][0],
                             args.repeats)
        t_eam /= n_eam
        pairs = np.array([(v, int(t)) for t in lat.neighbors(1)[v]] * 500)
        t_de, _ = timed(lambda: eam.swap_deltas(lat, pairs), args.repeats)
        t_de /= len(pairs)
        t_one, _ = timed(lambda: [eam.swap_delta(lat, v, int(t)) for t in pairs[:4000, 1]], args.repeats)
        t_one /= 4000
        err_local = np.max(np.abs(b_local - b_whole))
        err_eam = np.max(np.abs(b_eam - b_whole))
        print(f"\nN = {lat.n_sites} sites ({c}^3 cells), 1 vacancy, KRA step = 8 barriers")
        print(f"  LAMMPS whole cell (baseline) : {t_whole * 1e3:9.2f} ms/step   ratio 1")
        print(f"  LAMMPS local cluster         : {t_local * 1e3:9.2f} ms/step   speed-up {t_whole / t_local:8.1f}x"
              f"   ({runs_local} runs/step, max |Δbarrier| vs baseline {err_local:.1e} eV)")
        print(f"  LatticeEAM (numba) KRA step  : {t_eam * 1e6:9.2f} µs/step   speed-up {t_whole / t_eam:8.0f}x"
              f"   (max |Δbarrier| vs baseline {err_eam:.1e} eV)")
        print(f"  LatticeEAM ΔE                : {t_de * 1e6:9.2f} µs per ΔE in swap_deltas, "
              f"{t_one * 1e6:.2f} µs per swap_delta call")
    engine.close()


if __name__ == "__main__":
    main()
