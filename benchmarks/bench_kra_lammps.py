"""KRA barrier cost: LAMMPS local cluster vs LAMMPS whole cell vs on-lattice EAM (numba).

One "KRA step" = the 8 barriers of one vacancy (8 hop energy changes). Measured in one process:

* baseline  : LAMMPS on the whole periodic cell, 1 + 8 full `run 0` evaluations
* local     : LammpsEngine.swap_deltas on one shared local cluster (1 + 8 runs on ~1000 atoms)
* LatticeEAM: numba on-lattice EAM (same numbers on the unrelaxed lattice), µs per ΔE

Prints seconds per step and speed-up ratios against the whole-cell baseline of the same size.
numba compile time (first call) is reported separately and kept out of the timings.

    python benchmarks/bench_kra_lammps.py                # 1024 and 8192 atoms
    python benchmarks/bench_kra_lammps.py --cells 8 --repeats 5

``measure()`` returns the same numbers as rows; without LAMMPS its LAMMPS rows are skipped.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from matscale.calculators.lammps import LammpsEngine
from matscale.calculators.lattice_eam import LatticeEAM
from matscale.systems.alloy.kra import KRABarrierModel, kra_barrier
from matscale.systems.alloy.lattice import random_solid_solution

try:
    from benchmarks.common import lammps_unavailable, row, skipped
except ModuleNotFoundError:  # run as a script
    from common import lammps_unavailable, row, skipped

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


def first_call_costs(engine: LammpsEngine | None, eam: LatticeEAM, kra_eam: KRABarrierModel) -> dict[str, float]:
    """Seconds of the numba compile (or cache load) and of the LAMMPS start-up (None: no LAMMPS)."""
    warm = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 3, n_vacancies=1, rng=1)
    t0 = time.perf_counter()
    kra_eam.hop_barriers(warm, warm.vacancies)
    eam.swap_delta(warm, 0, 1)
    out = {"compile": time.perf_counter() - t0}
    if engine is not None:
        t0 = time.perf_counter()
        engine.cell_energy(warm)
        out["lammps_start"] = time.perf_counter() - t0
    return out


def measure_size(engine: LammpsEngine | None, eam: LatticeEAM, kra_local: KRABarrierModel | None,
                 kra_eam: KRABarrierModel, cells: int, repeats: int, seed: int = 0,
                 n_eam: int = 2000) -> dict[str, Any]:
    """Seconds per KRA step (whole cell, local cluster, LatticeEAM) and per ΔE of one cell size.
    Without ``engine`` (no LAMMPS) only the LatticeEAM figures are measured."""
    lat = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, cells, n_vacancies=1,
                                rng=np.random.default_rng(seed))
    v = int(lat.vacancies[0])
    eam.total_energy(lat)  # build the neighbour tables of this geometry (not timed)
    res: dict[str, Any] = {"cells": cells, "n_sites": lat.n_sites}
    if engine is not None:
        res["whole"], b_whole = timed(lambda: whole_cell_kra(engine, lat, v), repeats)
        runs0 = engine.n_runs
        res["local"], b_local = timed(lambda: kra_local.hop_barriers(lat, np.array([v]))[0], repeats)
        res["runs_local"] = (engine.n_runs - runs0) // repeats
    t_eam, b_eam = timed(lambda: [kra_eam.hop_barriers(lat, np.array([v])) for _ in range(n_eam)][-1][0],
                         repeats)
    res["eam"] = t_eam / n_eam
    pairs = np.array([(v, int(t)) for t in lat.neighbors(1)[v]] * 500)
    t_de, _ = timed(lambda: eam.swap_deltas(lat, pairs), repeats)
    res["de"] = t_de / len(pairs)
    t_one, _ = timed(lambda: [eam.swap_delta(lat, v, int(t)) for t in pairs[:4000, 1]], repeats)
    res["one"] = t_one / 4000
    if engine is not None:
        res["err_local"] = float(np.max(np.abs(b_local - b_whole)))
        res["err_eam"] = float(np.max(np.abs(b_eam - b_whole)))
    return res


def results(cells: list[int], repeats: int, seed: int, use_lammps: bool = True):
    """First-call costs, then one result per cell size; the engine is closed at the end."""
    engine = LammpsEngine.eam_alloy() if use_lammps else None
    try:
        eam = LatticeEAM.from_setfl()
        kra_local = KRABarrierModel(engine, E0) if engine is not None else None
        kra_eam = KRABarrierModel(eam, E0)
        yield {"kind": "first_call", **first_call_costs(engine, eam, kra_eam)}
        for c in cells:
            yield {"kind": "size", **measure_size(engine, eam, kra_local, kra_eam, c, repeats, seed)}
    finally:
        if engine is not None:
            engine.close()


def rows_of(res: dict[str, Any], first: dict[str, float], no_lammps: str | None) -> list[dict]:
    n = res["n_sites"]
    step = f"KRA step (8 barriers), N={n} ({res['cells']}^3 cells)"
    base = "LAMMPS whole cell (1 + 8 runs)"
    out = []
    if no_lammps:
        out.append(skipped(f"{step}, LAMMPS local cluster", no_lammps))
        out.append(row(f"{step}, LatticeEAM (numba)", 1 / res["eam"], "steps/s",
                       note=f"baseline needs LAMMPS: {no_lammps}", first_call_s=first["compile"]))
    else:
        out.append(row(f"{step}, LAMMPS local cluster", 1 / res["local"], "steps/s", baseline=base,
                       baseline_value=1 / res["whole"],
                       note=f"{res['runs_local']} runs/step, max |dbarrier| {res['err_local']:.1e} eV",
                       lammps_start_s=first.get("lammps_start")))
        out.append(row(f"{step}, LatticeEAM (numba)", 1 / res["eam"], "steps/s", baseline=base,
                       baseline_value=1 / res["whole"], note=f"max |dbarrier| {res['err_eam']:.1e} eV",
                       first_call_s=first["compile"]))
    out.append(row(f"LatticeEAM dE in swap_deltas, N={n}", 1 / res["de"], "dE/s",
                   note=f"{res['one'] * 1e6:.2f} us per swap_delta call"))
    return out


def measure(quick: bool = False, cells: list[int] | None = None, repeats: int | None = None,
            seed: int = 0) -> list[dict]:
    """Rows for 1024 and 8192 atoms (``cells`` 8 and 16); quick: one repeat. Without LAMMPS the
    LAMMPS rows are skipped with the reason and the LatticeEAM rows carry no baseline."""
    cells = list(cells or [8, 16])
    repeats = repeats or (1 if quick else 3)
    no_lammps = lammps_unavailable()
    rows, first = [], {}
    for res in results(cells, repeats, seed, use_lammps=no_lammps is None):
        if res["kind"] == "first_call":
            first = res
        else:
            rows += rows_of(res, first, no_lammps)
    return rows


def print_result(res: dict[str, Any]) -> None:
    if res["kind"] == "first_call":
        print(f"first-call costs (excluded below): numba compile/load {res['compile']:.3f} s, "
              f"LAMMPS start-up {res['lammps_start']:.3f} s")
        return
    t_whole, t_local, t_eam = res["whole"], res["local"], res["eam"]
    print(f"\nN = {res['n_sites']} sites ({res['cells']}^3 cells), 1 vacancy, KRA step = 8 barriers")
    print(f"  LAMMPS whole cell (baseline) : {t_whole * 1e3:9.2f} ms/step   ratio 1")
    print(f"  LAMMPS local cluster         : {t_local * 1e3:9.2f} ms/step   speed-up {t_whole / t_local:8.1f}x"
          f"   ({res['runs_local']} runs/step, max |Δbarrier| vs baseline {res['err_local']:.1e} eV)")
    print(f"  LatticeEAM (numba) KRA step  : {t_eam * 1e6:9.2f} µs/step   speed-up {t_whole / t_eam:8.0f}x"
          f"   (max |Δbarrier| vs baseline {res['err_eam']:.1e} eV)")
    print(f"  LatticeEAM ΔE                : {res['de'] * 1e6:9.2f} µs per ΔE in swap_deltas, "
          f"{res['one'] * 1e6:.2f} µs per swap_delta call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[8, 16], help="cells per side (N = 2 c^3)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for res in results(args.cells, args.repeats, args.seed):
        print_result(res)


if __name__ == "__main__":
    main()
