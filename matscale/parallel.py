"""Independent tasks of the data-generation stages on any :class:`concurrent.futures.Executor`.

The stages that simulate (small-system runs, partial evolution, direct reference runs) split
their work into tasks — chunks of independent samples or runs — and map them over an executor:

* ``None`` / ``"inline"``: in this process, one task after another (the default);
* ``"processes:N"``: a :class:`concurrent.futures.ProcessPoolExecutor` of N spawned processes
  (the calling script needs the ``if __name__ == "__main__":`` guard, as for any spawn);
* ``"dask-local:N"``: a Dask ``LocalCluster`` of N single-threaded worker processes, started
  for the run and closed after it;
* ``"dask:ADDRESS"``: the workers of an existing Dask cluster (``tcp://host:8786``), e.g. one
  started on a SLURM allocation with dask-jobqueue (see the README).

Every sample draws its random numbers from its own stream, keyed by the seed and the sample's
index (:func:`matscale.io.sample_keys`), so the results are identical — bit for bit — for any
executor, worker count and task size. Results are consumed in task order
(:func:`ordered_map`), with a bounded number of tasks in flight so that memory stays bounded.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

__all__ = ["InlineExecutor", "open_executor", "ordered_map", "executor_workers", "task_ranges"]


class InlineExecutor(Executor):
    """Runs each task at submission, in this process (no pickling, no threads)."""

    n_workers = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered by future.result(), as a pool would
            future.set_exception(exc)
        return future


def executor_workers(executor: Executor | None) -> int:
    """Number of tasks the executor runs at once (1 for None or the inline executor)."""
    if executor is None:
        return 1
    return int(getattr(executor, "n_workers", None) or getattr(executor, "_max_workers", None) or 1)


def task_ranges(n: int, n_workers: int, *, per_worker: int = 4, min_size: int = 1) -> list[tuple[int, int]]:
    """Split ``range(n)`` into consecutive (start, stop) tasks: about ``per_worker`` tasks per
    worker (so that the slowest task does not idle the others), each of at least ``min_size``
    items (so that scheduling overhead stays small against the work)."""
    if n <= 0:
        return []
    n_tasks = max(1, min(n // max(1, min_size), per_worker * max(1, n_workers)))
    size = -(-n // n_tasks)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def ordered_map(executor: Executor | None, fn: Callable[..., Any], tasks: Iterable[tuple],
                *, max_in_flight: int | None = None) -> Iterator[Any]:
    """``fn(*task)`` for every task, yielded in task order; at most ``max_in_flight`` tasks
    (default 2 per worker) are submitted ahead of the one being consumed."""
    executor = executor or InlineExecutor()
    limit = max_in_flight or 2 * executor_workers(executor)
    pending: deque[Future] = deque()
    for task in tasks:
        pending.append(executor.submit(fn, *task))
        if len(pending) >= limit:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _dask_executor(client: Any, n_workers: int) -> Executor:
    executor = client.get_executor()
    executor.n_workers = n_workers
    return executor


@contextlib.contextmanager
def open_executor(spec: str | None) -> Iterator[Executor | None]:
    """The executor named by ``spec`` (module docstring) for the life of the ``with`` block."""
    if spec is None or spec == "inline":
        yield None
        return
    kind, _, arg = spec.partition(":")
    if kind == "processes":
        n = _count(spec, arg)
        # spawn, not fork: a forked child of a process whose OpenMP runtime (numba, torch) has
        # started is unsafe and is terminated by GNU OpenMP
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.n_workers = n  # type: ignore[attr-defined]
            yield pool
        return
    if kind in ("dask-local", "dask"):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError(f"executor {spec!r} needs Dask: pip install 'matscale[dask]'") from None
        if kind == "dask-local":
            n = _count(spec, arg)
            # single-threaded worker processes: the kernels are single-threaded per task
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
                yield _dask_executor(client, n)
            return
        if not arg:
            raise ValueError("executor 'dask:ADDRESS' needs the scheduler address, e.g. dask:tcp://host:8786")
        with Client(arg) as client:
            n = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()))
            yield _dask_executor(client, n)
        return
    raise ValueError(f"executor {spec!r} is not known (allowed: inline, processes:N, dask-local:N, dask:ADDRESS)")


def _count(spec: str, arg: str) -> int:
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"executor {spec!r}: the worker count must be an integer >= 1")
    return n
