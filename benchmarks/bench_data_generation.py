"""Throughput of the data-generation stages, with in-process baselines.

Run:  python benchmarks/bench_data_generation.py [--n 2000] [--baseline-n 40]

1. Upsampling + LocalRelax, 2000 Ising configurations 32^2 -> 64^2 (target <= 4 s): window 32,
   stride 16 (16 windows), with the paper's budget (1024 events per window) and with the
   default fixed duration (1 Glauber time unit per window).
2. Partial evolution, 2000 samples, 32^2 patch of 64^2 snapshots, 1024 events (target
   <= 0.4 s kernel time); Python overhead (patch draw, observables, copies) reported apart.
3. Partial evolution as shipped for Ising (16 averaged draws, δt = 0.2) against separate
   samples, and the compiled (m, rho_dw) kernel against the numpy definitions.

Baselines, timed in the same process on a subset and scaled per sample: a per-sample Python
loop around ``system.evolve`` (same n-fold kernel, one call per window/sample), and the
straightforward O(N)-per-event kernel ``matscale.systems.spin.reference_evolve``. Ratios are
baseline time / our time. The first (compiling) call is timed separately; numba caches it.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from matscale.partial import partial_evolution, patch_origins
from matscale.systems import Ising2D
from matscale.systems.spin import reference_evolve
from matscale.upsampling import hierarchical_upsample, relax_window_origins

T, H = 2.5, 0.1


def _snapshots(L: int, n: int, seed: int, duration: float) -> np.ndarray:
    system = Ising2D(L, T, H)
    rng = np.random.default_rng(seed)
    states = np.stack([system.random_state(rng, magnetization=0.7) for _ in range(n)])
    system.evolve_batch(states, duration=duration, seeds=rng.integers(0, 2**63, n).astype(np.uint64))
    return states


REPEAT = 3


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    """Best of ``REPEAT`` wall times (the machine is shared; the minimum is the least noisy)."""
    best, result = float("inf"), None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def _timed_once(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def bench_upsampling(n: int, n_base: int) -> None:
    big = Ising2D(64, T, H)
    pool = _snapshots(32, 500, seed=1, duration=10.0)
    t_compile, _ = _timed_once(hierarchical_upsample, big, pool[:4], 64, 2, progress=False)
    print(f"[upsampling] first call (compile or cache load): {t_compile:.2f} s")
    paper_time = 0.0
    for label, budget in (("paper budget, 1024 events/window", {"n_events": 1024}),
                          ("default, duration 1.0/window", {})):
        t_ours, out = _timed(hierarchical_upsample, big, pool, 64, n, seed=3, progress=False, **budget)
        paper_time = paper_time or t_ours
        print(f"[upsampling] {label}: {n} configs 32->64 in {t_ours:.2f} s "
              f"({t_ours / n * 1e3:.3f} ms/config)")
    # baseline: per-config, per-window Python loop around system.evolve (row-major windows)
    rng = np.random.default_rng(0)
    configs = np.repeat(np.repeat(pool[:n_base], 2, axis=1), 2, axis=2)
    origins = relax_window_origins(64, np.zeros(1, np.uint64), window=32, stride=16, order="row-major")[0]
    start = time.perf_counter()
    for b in range(n_base):
        for r, c in origins:
            big.evolve(configs[b], n_events=1024, region=(int(r), int(c), 32, 32), rng=rng)
    t_loop = (time.perf_counter() - start) / n_base * n
    n_ref = max(2, n_base // 10)
    start = time.perf_counter()
    for b in range(n_ref):
        for r, c in origins:
            reference_evolve(big, configs[b], n_events=1024, region=(int(r), int(c), 32, 32), seed=b)
    t_ref = (time.perf_counter() - start) / n_ref * n
    t_paper = paper_time
    print(f"[upsampling] baseline per-sample evolve loop (scaled from {n_base}): {t_loop:.2f} s "
          f"-> ratio {t_loop / t_paper:.1f}x")
    print(f"[upsampling] baseline O(N)-per-event kernel (scaled from {n_ref}): {t_ref:.1f} s "
          f"-> ratio {t_ref / t_paper:.0f}x   (target: ours <= 4 s; ours {t_paper:.2f} s)")


def bench_partial(n: int, n_base: int) -> None:
    system = Ising2D(64, T, H)
    snaps = _snapshots(64, n, seed=2, duration=5.0)
    t_compile, _ = _timed_once(partial_evolution, system, snaps[:4], 32, n_events=1024, progress=False)
    print(f"[partial] first call (compile or cache load): {t_compile:.2f} s")
    t_total, data = _timed(partial_evolution, system, snaps, 32, n_events=1024, seed=1,
                           chunk_size=n, progress=False)
    # kernel alone: the same batched call on a copy, same windows
    origins = patch_origins(data.patch_index, 64, 32)[:, None, :]
    seeds = np.arange(n, dtype=np.uint64)
    t_kernel = float("inf")
    for _ in range(REPEAT):
        states = snaps.copy()
        t, _ = _timed_once(system.evolve_windows, states, origins, (32, 32), n_events=1024, seeds=seeds)
        t_kernel = min(t_kernel, t)
    print(f"[partial] {n} samples, 32^2 patch, 1024 events: total {t_total:.3f} s = kernel "
          f"{t_kernel:.3f} s + Python overhead {t_total - t_kernel:.3f} s (target kernel <= 0.4 s)")
    t_dur, _ = _timed(partial_evolution, system, snaps, 32, duration=1.0, seed=1, chunk_size=n,
                      progress=False)
    print(f"[partial] default budget (duration 1.0): total {t_dur:.3f} s")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for b in range(n_base):
        r, c = origins[b, 0]
        state = snaps[b].copy()
        system.evolve(state, n_events=1024, region=(int(r), int(c), 32, 32), rng=rng)
    t_loop = (time.perf_counter() - start) / n_base * n
    n_ref = max(2, n_base // 4)
    start = time.perf_counter()
    for b in range(n_ref):
        r, c = origins[b, 0]
        reference_evolve(system, snaps[b].copy(), n_events=1024, region=(int(r), int(c), 32, 32), seed=b)
    t_ref = (time.perf_counter() - start) / n_ref * n
    print(f"[partial] baseline per-sample evolve loop (scaled from {n_base}): {t_loop:.3f} s "
          f"-> ratio {t_loop / t_kernel:.1f}x vs kernel, {t_loop / t_total:.1f}x vs total")
    print(f"[partial] baseline O(N)-per-event kernel (scaled from {n_ref}): {t_ref:.1f} s "
          f"-> ratio {t_ref / t_kernel:.0f}x vs kernel")


def bench_averaged_draws(n: int) -> None:
    """The shipped Ising setting: 16^2 patches, δt = 0.2, 16 draws averaged per sample, against
    the same patch evolutions stored as separate samples; and the observables it measures
    (compiled int8 counting kernel vs the numpy definitions)."""
    from matscale.observables import domain_wall_density, magnetization, spin_observables

    system, R = Ising2D(64, T, H), 16
    snaps = _snapshots(64, n, seed=3, duration=5.0)
    _timed_once(partial_evolution, system, snaps[:4], 16, duration=0.2, n_draws=R, progress=False)
    t_avg, _ = _timed(partial_evolution, system, snaps, 16, duration=0.2, n_draws=R, seed=1,
                      chunk_size=500, store_patches=False, progress=False)
    repeated = np.repeat(snaps, R, axis=0)
    t_sep, _ = _timed(partial_evolution, system, repeated, 16, duration=0.2, seed=1,
                      chunk_size=500 * R, store_patches=False, progress=False)
    print(f"[partial] {n} samples x {R} averaged draws (16^2 patch, δt 0.2): {t_avg:.3f} s "
          f"({n * R / t_avg:.3g} patch evolutions/s); {n * R} separate samples: {t_sep:.3f} s "
          f"-> ratio {t_sep / t_avg:.2f}x (and {R}x fewer pairs to fit)")
    spin_observables(repeated[:2])
    t_fast, _ = _timed(spin_observables, repeated)
    t_numpy, _ = _timed(lambda x: np.stack([magnetization(x), domain_wall_density(x)], -1), repeated)
    print(f"[observables] (m, rho_dw) of {len(repeated)} 64^2 states: compiled {t_fast:.3f} s, "
          f"numpy {t_numpy:.3f} s -> ratio {t_numpy / t_fast:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="configurations / samples")
    parser.add_argument("--baseline-n", type=int, default=40, help="subset size for baselines")
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    bench_upsampling(args.n, args.baseline_n)
    bench_partial(args.n, args.baseline_n * 5)
    bench_averaged_draws(args.n)


if __name__ == "__main__":
    main()
