"""Throughput of the exact Glauber kernels against the straightforward O(N)-per-event kernel.

Run:  python benchmarks/bench_spin_kernels.py [--cold] [--samples 2000] [--repeats 3]
(``measure()`` returns the same numbers as rows for ``python -m benchmarks``.)

Prints, all measured in this process:
  * first-call time of every compiled kernel (compilation, or loading numba's cache; with
    ``--cold`` a fresh cache directory forces a real compilation), kept out of all timings;
  * events/s of the n-fold kernels (single thread) for Ising and Curie-Weiss at L = 64 next to
    the O(N)-per-event reference, and their ratio;
  * batched partial evolution: B x (32^2 patch of a 64^2 state, 1024 events), frozen exterior;
  * the LocalRelax pattern: B configurations 64^2, 16 windows 32^2 at stride 16 (wrapping),
    1024 events each, windows sequential per configuration;
  with the reference kernel's time for the same work extrapolated from a subset.
Timings are the best of ``--repeats``; the machine is shared, so read ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true",
                        help="compile into a fresh numba cache dir (true compile time)")
    parser.add_argument("--samples", type=int, default=2000, help="batch size B")
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats")
    return parser.parse_args()


if __name__ == "__main__":  # before numba is imported: --cold needs its own cache directory
    ARGS = _parse()
    if ARGS.cold:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba_cold_")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from matscale.systems import CurieWeiss, Ising2D  # noqa: E402
from matscale.systems.spin import reference_evolve  # noqa: E402

try:
    from benchmarks.common import row  # noqa: E402
except ModuleNotFoundError:  # run as a script
    from common import row  # noqa: E402

L = 64
PATCH = 32
EVENTS = 1024
# events per timed call of the n-fold / reference kernels in one box: (full, quick)
SINGLE_BOX = {"Ising2D": ((4_000_000, 20_000), (1_000_000, 5_000)),
              "CurieWeiss": ((10_000_000, 20_000), (2_500_000, 5_000))}


def best_of(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (seconds)."""
    return min(timed(fn)[0] for _ in range(repeats))


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process summed over threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def best_wall_and_cpu(fn, repeats: int) -> tuple[float, float]:
    runs = [timed(fn) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def first_call_times(systems) -> dict[str, dict[str, float]]:
    """Seconds of the first call of each compiled kernel, per system name."""
    rng = np.random.default_rng(0)
    out = {}
    for system in systems:
        state = system.random_state(rng)
        t0 = time.perf_counter()
        system.evolve(state, n_events=10, rng=rng)  # serial kernel
        t1 = time.perf_counter()
        states = np.stack([system.random_state(rng) for _ in range(32)])
        system.evolve_windows(states, np.zeros((32, 1, 2), dtype=np.int64), (L, L),
                              n_events=10, seeds=np.arange(32, dtype=np.uint64))  # threaded
        t2 = time.perf_counter()
        reference_evolve(system, system.random_state(rng), n_events=10, seed=0)
        t3 = time.perf_counter()
        out[type(system).__name__] = {"serial": t1 - t0, "threaded": t2 - t1, "reference": t3 - t2}
    return out


def single_box_rates(system, n_fast: int, n_ref: int, repeats: int) -> dict[str, Any]:
    """Events/s (per wall and per CPU second) of the n-fold kernel and the O(N) reference."""
    rng = np.random.default_rng(1)
    state = system.random_state(rng, magnetization=0.0)
    system.evolve(state, duration=20.0, rng=rng)  # leave the random start

    def fast():
        system.evolve(state, n_events=n_fast, rng=rng)

    def ref():
        reference_evolve(system, state, n_events=n_ref, seed=3)

    fast_wall, fast_cpu = best_wall_and_cpu(fast, repeats)
    ref_wall, ref_cpu = best_wall_and_cpu(ref, repeats)
    return {"kind": "single", "system": type(system).__name__, "T": system.T, "h": system.h,
            "rate": n_fast / fast_wall, "cpu_rate": n_fast / fast_cpu,
            "ref_rate": n_ref / ref_wall, "ref_cpu_rate": n_ref / ref_cpu}


def reference_time_per_window(system, states, origins, n_sub: int) -> float:
    """O(N)-per-event reference on the first ``n_sub`` configurations, seconds per config."""
    work = states[:n_sub].copy()
    t0 = time.perf_counter()
    for b in range(n_sub):
        for r0, c0 in origins[b]:
            reference_evolve(system, work[b], n_events=EVENTS, region=(r0, c0, PATCH, PATCH),
                             seed=b)
    return (time.perf_counter() - t0) / n_sub


def batched(system, n_conf: int, repeats: int) -> dict[str, Any]:
    """Seconds of batched partial evolution and LocalRelax, and of the reference (extrapolated)."""
    rng = np.random.default_rng(2)
    states = np.stack([system.random_state(rng) for _ in range(n_conf)])
    seeds = np.arange(n_conf, dtype=np.uint64)
    per_side = L // PATCH
    patch = rng.integers(0, per_side ** 2, size=n_conf)
    partial_origins = np.stack([(patch // per_side) * PATCH, (patch % per_side) * PATCH],
                               axis=-1)[:, None, :]
    grid = np.arange(0, L, 16)
    relax_origins = np.broadcast_to(
        np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(1, -1, 2),
        (n_conf, grid.size ** 2, 2)).copy()

    def partial():
        system.evolve_windows(states.copy(), partial_origins, (PATCH, PATCH), n_events=EVENTS,
                              seeds=seeds)

    def relax():
        system.evolve_windows(states.copy(), relax_origins, (PATCH, PATCH), n_events=EVENTS,
                              seeds=seeds)

    copy_time = best_of(lambda: states.copy(), repeats)
    t_partial, cpu_partial = best_wall_and_cpu(partial, repeats)
    t_relax, cpu_relax = best_wall_and_cpu(relax, repeats)
    t_partial -= copy_time
    t_relax -= copy_time
    n_sub_partial, n_sub_relax = min(20, n_conf), min(3, n_conf)
    ref_partial = reference_time_per_window(system, states, partial_origins, n_sub_partial) * n_conf
    ref_relax = reference_time_per_window(system, states, relax_origins, n_sub_relax) * n_conf
    return {"kind": "batched", "system": type(system).__name__, "n_conf": n_conf,
            "threads": numba.get_num_threads(), "t_partial": t_partial, "cpu_partial": cpu_partial,
            "ref_partial": ref_partial, "t_relax": t_relax, "cpu_relax": cpu_relax,
            "ref_relax": ref_relax, "n_sub_partial": n_sub_partial, "n_sub_relax": n_sub_relax}


def results(samples: int, repeats: int, quick: bool = False) -> Iterator[dict[str, Any]]:
    """The measurements in order: first-call times, single boxes, batched windows."""
    ising = Ising2D(L, 2.5, h=0.1)
    cw = CurieWeiss(L, 1.1, h=0.1)
    yield {"kind": "first_call", "times": first_call_times([ising, cw])}
    for system in (ising, cw):
        n_fast, n_ref = SINGLE_BOX[type(system).__name__][1 if quick else 0]
        yield single_box_rates(system, n_fast, n_ref, repeats)
    for system in (ising, cw):
        yield batched(system, samples, repeats)


def measure(quick: bool = False, samples: int | None = None, repeats: int | None = None) -> list[dict]:
    """Rows: events/s of the n-fold kernels in one box, batched partial evolution and LocalRelax,
    each against the O(N)-per-event reference kernel. quick: B = 200, one repeat, fewer events."""
    samples = samples or (200 if quick else 2000)
    repeats = repeats or (1 if quick else 3)
    rows, first = [], {}
    for res in results(samples, repeats, quick):
        if res["kind"] == "first_call":
            first = res["times"]
        elif res["kind"] == "single":
            rows.append(row(f"{res['system']} L={L} single box, 1 thread", res["rate"], "events/s",
                            baseline="O(N)-per-event reference kernel", baseline_value=res["ref_rate"],
                            note=f"T={res['T']} h={res['h']}; best of {repeats}",
                            events_per_cpu_s=res["cpu_rate"], reference_events_per_cpu_s=res["ref_cpu_rate"],
                            first_call_s=first.get(res["system"], {})))
        else:
            n, s, threads = res["n_conf"], res["system"], res["threads"]
            rows.append(row(f"{s} partial evolution {n} x ({PATCH}^2 patch of {L}^2, {EVENTS} ev)",
                            n / res["t_partial"], "samples/s", baseline="O(N) reference kernel",
                            baseline_value=n / res["ref_partial"],
                            note=f"{threads} numba thread(s); reference 1 thread, extrapolated from "
                                 f"{res['n_sub_partial']} samples",
                            cpu_seconds=res["cpu_partial"]))
            rows.append(row(f"{s} LocalRelax {n} x {L}^2, 16 windows {PATCH}^2 stride 16, {EVENTS} ev",
                            n / res["t_relax"], "configs/s", baseline="O(N) reference kernel",
                            baseline_value=n / res["ref_relax"],
                            note=f"{threads} numba thread(s); reference extrapolated from "
                                 f"{res['n_sub_relax']} configs",
                            cpu_seconds=res["cpu_relax"]))
    return rows


def print_result(res: dict[str, Any]) -> None:
    if res["kind"] == "first_call":
        print("== first call (compile or cache load), excluded from all timings ==")
        for name, t in res["times"].items():
            print(f"  {name:10s} serial n-fold {t['serial']:6.2f} s | threaded n-fold {t['threaded']:6.2f} s"
                  f" | O(N) reference {t['reference']:6.2f} s")
    elif res["kind"] == "single":
        print(f"  {res['system']:10s} L={L} T={res['T']} h={res['h']}: n-fold {res['rate'] / 1e6:7.2f} M ev/s"
              f" ({res['cpu_rate'] / 1e6:6.2f} per CPU-s) | O(N) reference {res['ref_rate'] / 1e6:7.3f} "
              f"M ev/s ({res['ref_cpu_rate'] / 1e6:6.3f}) | ratio {res['rate'] / res['ref_rate']:6.1f}x")
    else:
        name, n_conf, threads = res["system"], res["n_conf"], res["threads"]
        print(f"  {name:10s} partial evolution {n_conf} x ({PATCH}^2, {EVENTS} ev): "
              f"{res['t_partial']:6.3f} s wall on {threads} threads ({res['cpu_partial']:6.3f} CPU-s) | O(N) "
              f"reference (1 thread, extrapolated) {res['ref_partial']:7.1f} s | ratio "
              f"{res['ref_partial'] / res['t_partial']:5.0f}x")
        print(f"  {name:10s} LocalRelax {n_conf} x 64^2, 16 windows {PATCH}^2 stride 16, "
              f"{EVENTS} ev: {res['t_relax']:6.3f} s wall on {threads} threads ({res['cpu_relax']:6.3f} CPU-s) | "
              f"O(N) reference {res['ref_relax']:7.1f} s | ratio {res['ref_relax'] / res['t_relax']:5.0f}x")


def main() -> None:
    layer = os.environ.get("NUMBA_THREADING_LAYER", "default")
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, layer {layer}, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    headers = {"single": "== single box, one thread ==", "batched": "== batched windows (frozen exterior) =="}
    for res in results(ARGS.samples, ARGS.repeats):
        if res["kind"] in headers:
            print(headers.pop(res["kind"]))
        print_result(res)


if __name__ == "__main__":
    main()
