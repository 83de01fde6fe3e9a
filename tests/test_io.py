"""Chunked HDF5 writer, npz with metadata, deterministic per-sample keys."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import matscale
from matscale.io import (ChunkedWriter, Field, child_keys, load, sample_keys, save_npz_with_meta,
                         uniform_index)

FIELDS = {"x": Field((3,), np.float64, "eV"), "k": Field((), np.int64, "index")}


def _chunk(start: int, stop: int) -> dict[str, np.ndarray]:
    idx = np.arange(start, stop)
    return {"x": np.stack([idx, idx * 2.0, idx * 3.0], -1), "k": idx}


def test_keys_depend_only_on_seed_tags_and_index():
    whole = sample_keys(7, np.arange(100), "partial", 2)
    np.testing.assert_array_equal(whole[40:60], sample_keys(7, np.arange(40, 60), "partial", 2))
    assert len(np.unique(whole)) == 100
    assert not np.array_equal(whole, sample_keys(8, np.arange(100), "partial", 2))
    assert not np.array_equal(whole, sample_keys(7, np.arange(100), "partial", 3))
    assert child_keys(whole, 4).shape == (100, 4)
    # uniformity: 20000 draws into 10 cells, chi-square with 9 dof; 1e-4 quantile = 33.7
    counts = np.bincount(uniform_index(sample_keys(1, np.arange(20000)), 10), minlength=10)
    assert ((counts - 2000.0) ** 2 / 2000.0).sum() < 33.7
    with pytest.raises(ValueError, match="seed"):
        sample_keys(-1, [0])


def test_chunked_writer_resumes_and_refuses_other_configs(tmp_path):
    path = tmp_path / "out.h5"
    config = {"seed": 3, "T": 2.5}
    with ChunkedWriter(path, "grp/data", 10, 4, FIELDS, config, attrs={"units": {"x": "eV"}}) as w:
        assert list(w.pending_chunks()) == [(0, 4), (4, 8), (8, 10)]
        w.write_chunk(0, 4, **_chunk(0, 4))
        with pytest.raises(ValueError, match="n_complete=4"):
            w.write_chunk(8, 10, **_chunk(8, 10))
    with h5py.File(path, "r") as f:  # interruption after one chunk: the marker says 4
        assert f["grp/data"].attrs["n_complete"] == 4
        assert f["grp/data/x"].attrs["units"] == "eV"
        assert f["grp/data"].attrs["matscale_version"] == matscale.__version__
    with ChunkedWriter(path, "grp/data", 10, 4, FIELDS, config) as w:
        pending = list(w.pending_chunks())
        assert pending == [(4, 8), (8, 10)]
        for start, stop in pending:
            w.write_chunk(start, stop, **_chunk(start, stop))
        assert w.finished and w.attrs["units"] == {"x": "eV"}
        data = w.read()
    np.testing.assert_array_equal(data["k"], np.arange(10))
    with pytest.raises(ValueError, match=r"differing keys: seed\)") as err:
        ChunkedWriter(path, "grp/data", 10, 4, FIELDS, {"seed": 4, "T": 2.5})
    assert "\n" not in str(err.value)
    with ChunkedWriter(path, "grp/data", 10, 4, FIELDS, {"seed": 4, "T": 2.5}, overwrite=True) as w:
        assert w.n_complete == 0
    arrays, meta = load(path, "grp/data")
    assert arrays["x"].shape == (0, 3) and meta["config"]["seed"] == 4
    with pytest.raises(ValueError, match="shape"):
        with ChunkedWriter(path, "grp/data", 10, 4, FIELDS, {"seed": 4, "T": 2.5}) as w:
            w.write_chunk(0, 4, x=np.zeros((4, 2)), k=np.arange(4))


def test_npz_round_trip_with_metadata(tmp_path):
    arrays = {"z": np.arange(6.0).reshape(3, 2), "i": np.arange(3, dtype=np.int8)}
    path = save_npz_with_meta(tmp_path / "d.npz", arrays, {"units": {"z": "1"}, "seed": np.int64(5)})
    back, meta = load(path)
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])
        assert back[name].dtype == arrays[name].dtype
    assert meta == {"matscale_version": matscale.__version__, "units": {"z": "1"}, "seed": 5}
    with pytest.raises(ValueError, match=".npz"):
        save_npz_with_meta(tmp_path / "d.txt", arrays)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")
