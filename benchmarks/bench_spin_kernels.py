"""Throughput of the exact Glauber kernels against the straightforward O(N)-per-event kernel.

Run:  python benchmarks/bench_spin_kernels.py [--cold] [--samples 2000] [--repeats 3]

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


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true",
                        help="compile into a fresh numba cache dir (true compile time)")
    parser.add_argument("--samples", type=int, default=2000, help="batch size B")
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats")
    return parser.parse_args()


ARGS = _parse()
if ARGS.cold:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba_cold_")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from matscale.systems import CurieWeiss, Ising2D  # noqa: E402
from matscale.systems.spin import reference_evolve  # noqa: E402

L = 64
PATCH = 32
EVENTS = 1024


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


def first_call_times(systems) -> None:
    print("== first call (compile or cache load), excluded from all timings ==")
    rng = np.random.default_rng(0)
    for system in systems:
        name = type(system).__name__
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
        print(f"  {name:10s} serial n-fold {t1 - t0:6.2f} s | threaded n-fold {t2 - t1:6.2f} s"
              f" | O(N) reference {t3 - t2:6.2f} s")


def single_box_rates(system, n_fast: int, n_ref: int, repeats: int) -> None:
    name = type(system).__name__
    rng = np.random.default_rng(1)
    state = system.random_state(rng, magnetization=0.0)
    system.evolve(state, duration=20.0, rng=rng)  # leave the random start

    def fast():
        system.evolve(state, n_events=n_fast, rng=rng)

    def ref():
        reference_evolve(system, state, n_events=n_ref, seed=3)

    fast_wall, fast_cpu = best_wall_and_cpu(fast, repeats)
    ref_wall, ref_cpu = best_wall_and_cpu(ref, repeats)
    fast_rate, ref_rate = n_fast / fast_wall, n_ref / ref_wall
    print(f"  {name:10s} L={L} T={system.T} h={system.h}: n-fold {fast_rate / 1e6:7.2f} M ev/s"
          f" ({n_fast / fast_cpu / 1e6:6.2f} per CPU-s) | O(N) reference {ref_rate / 1e6:7.3f} "
          f"M ev/s ({n_ref / ref_cpu / 1e6:6.3f}) | ratio {fast_rate / ref_rate:6.1f}x")


def reference_time_per_window(system, states, origins, n_sub: int) -> float:
    """O(N)-per-event reference on the first ``n_sub`` configurations, seconds per config."""
    work = states[:n_sub].copy()
    t0 = time.perf_counter()
    for b in range(n_sub):
        for r0, c0 in origins[b]:
            reference_evolve(system, work[b], n_events=EVENTS, region=(r0, c0, PATCH, PATCH),
                             seed=b)
    return (time.perf_counter() - t0) / n_sub


def batched(system, n_conf: int, repeats: int) -> None:
    name = type(system).__name__
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
    ref_partial = reference_time_per_window(system, states, partial_origins, 20) * n_conf
    ref_relax = reference_time_per_window(system, states, relax_origins, 3) * n_conf
    threads = numba.get_num_threads()
    print(f"  {name:10s} partial evolution {n_conf} x ({PATCH}^2, {EVENTS} ev): "
          f"{t_partial:6.3f} s wall on {threads} threads ({cpu_partial:6.3f} CPU-s) | O(N) "
          f"reference (1 thread, extrapolated) {ref_partial:7.1f} s | ratio "
          f"{ref_partial / t_partial:5.0f}x")
    print(f"  {name:10s} LocalRelax {n_conf} x 64^2, 16 windows {PATCH}^2 stride 16, "
          f"{EVENTS} ev: {t_relax:6.3f} s wall on {threads} threads ({cpu_relax:6.3f} CPU-s) | "
          f"O(N) reference {ref_relax:7.1f} s | ratio {ref_relax / t_relax:5.0f}x")


def main() -> None:
    layer = os.environ.get("NUMBA_THREADING_LAYER", "default")
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, layer {layer}, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    ising = Ising2D(L, 2.5, h=0.1)
    cw = CurieWeiss(L, 1.1, h=0.1)
    first_call_times([ising, cw])
    print("== single box, one thread ==")
    single_box_rates(ising, 4_000_000, 20_000, ARGS.repeats)
    single_box_rates(cw, 10_000_000, 20_000, ARGS.repeats)
    print("== batched windows (frozen exterior) ==")
    batched(ising, ARGS.samples, ARGS.repeats)
    batched(cw, ARGS.samples, ARGS.repeats)


if __name__ == "__main__":
    main()
