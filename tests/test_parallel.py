"""Data stages on executors: task splitting, ordered results, and identical data for any workers."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from matscale.parallel import InlineExecutor, open_executor, ordered_map, task_ranges
from matscale.pipeline import run_pipeline
from tests.test_pipeline import tiny


def _square(x: int) -> int:
    return x * x


def test_task_ranges_cover_everything_once():
    for n, workers in [(1, 1), (10, 1), (10, 3), (1000, 2), (7, 16)]:
        ranges = task_ranges(n, workers)
        covered = np.concatenate([np.arange(a, b) for a, b in ranges])
        np.testing.assert_array_equal(covered, np.arange(n))
        assert len(ranges) <= 4 * workers
    assert task_ranges(0, 2) == []
    assert len(task_ranges(100, 2, min_size=50)) == 2  # small tasks are merged


def test_ordered_map_keeps_task_order_with_a_process_pool():
    with open_executor("processes:2") as pool:
        assert list(ordered_map(pool, _square, [(i,) for i in range(20)])) == [i * i for i in range(20)]
    assert list(ordered_map(None, _square, [(3,), (4,)])) == [9, 16]
    future = InlineExecutor().submit(_square, "x")  # errors come back through the future
    with pytest.raises(TypeError):
        future.result()


@pytest.mark.parametrize("spec", ["threads:2", "processes:0", "dask:", "processes:x"])
def test_bad_executor_spec_is_one_line(spec):
    with pytest.raises(ValueError, match="executor"):
        with open_executor(spec):
            pass


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}


def test_two_dask_workers_give_the_same_dataset_bit_for_bit(tmp_path):
    """A real Dask LocalCluster of two worker processes against this process: the small-system
    runs, the upsampled states, the partial-evolution pairs and the direct reference runs are
    identical."""
    pytest.importorskip("distributed")
    cfg = tiny()
    run_pipeline(cfg, tmp_path / "inline")
    run_pipeline(cfg, tmp_path / "dask", executor="dask-local:2")
    for rel in ("p8/small_sim/snapshots.h5", "p8/upsample/configs.h5", "p8/partial/pairs.h5",
                "reference/reference.h5"):
        a, b = _arrays(tmp_path / "inline" / rel), _arrays(tmp_path / "dask" / rel)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{rel}:{key}")
