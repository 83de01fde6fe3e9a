"""Scheduling overhead of the data stages' executors, and partial evolution on two workers.

Per-task overhead: N tasks that do nothing but return a small array, mapped with
``matscale.parallel.ordered_map`` on each executor; (wall time) / N is the cost of one task's
submission, transfer and collection (inline: the plain function call). Partial evolution: the
same Ising data set (64² snapshots, 16² patches, δt = 0.2) computed in this process and on a
two-worker Dask LocalCluster / process pool, with identical results (checked); the ratio is the
speed-up. On a 2-core machine shared with other work the speed-up is bounded by 2.

    python benchmarks/bench_executors.py [--quick]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import row


def _noop(i: int) -> np.ndarray:
    return np.full(8, i)


def _overhead(spec: str | None, n: int) -> float:
    from matscale.parallel import open_executor, ordered_map

    with open_executor(spec) as ex:
        list(ordered_map(ex, _noop, [(i,) for i in range(min(n, 20))]))  # warm the workers
        start = time.perf_counter()
        list(ordered_map(ex, _noop, [(i,) for i in range(n)]))
        return (time.perf_counter() - start) / n


def _partial(spec: str | None, n: int) -> tuple[float, np.ndarray]:
    from matscale.parallel import open_executor
    from matscale.partial import partial_evolution
    from matscale.systems import Ising2D

    system = Ising2D(64, 2.5, h=0.1)
    rng = np.random.default_rng(0)
    snaps = np.where(rng.random((n, 64, 64)) < 0.6, 1, -1).astype(np.int8)
    with open_executor(spec) as ex:
        partial_evolution(system, snaps[:8], 16, duration=0.2, chunk_size=4, progress=False,
                          store_patches=False, executor=ex)  # compile / warm the workers
        start = time.perf_counter()
        data = partial_evolution(system, snaps, 16, duration=0.2, chunk_size=max(1, n // 8),
                                 progress=False, store_patches=False, executor=ex, seed=3)
        return time.perf_counter() - start, data.delta


def measure(quick: bool = False) -> list[dict]:
    n_tasks, n_samples = (200, 2000) if quick else (1000, 16000)
    rows = []
    inline = _overhead(None, n_tasks)
    for spec in ("processes:2", "dask-local:2"):
        per_task = _overhead(spec, n_tasks)
        rows.append(row(f"per-task overhead, {spec}", per_task * 1e3, "ms/task",
                        note=f"{n_tasks} no-op tasks; inline call {inline * 1e6:.1f} us/task",
                        higher_is_better=False))
    t_inline, ref = _partial(None, n_samples)
    for spec in ("processes:2", "dask-local:2"):
        t, delta = _partial(spec, n_samples)
        if not np.array_equal(delta, ref):
            raise AssertionError(f"{spec}: partial evolution differs from the inline run")
        rows.append(row(f"partial evolution {n_samples} x (16^2 patch of 64^2, dt 0.2), {spec}",
                        n_samples / t, "samples/s", baseline="the same in this process (inline)",
                        baseline_value=n_samples / t_inline, note="8 tasks; identical data"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    for r in measure(quick=args.quick):
        ratio = f"  ratio {r['ratio']:.2f}x vs {r['baseline']}" if r["ratio"] else ""
        print(f"{r['name']}: {r['value']:.3g} {r['unit']}{ratio}  ({r['note']})")


if __name__ == "__main__":
    main()
