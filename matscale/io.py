"""Chunked, resumable storage with metadata, and deterministic per-sample random streams.

Data-generation stages (hierarchical upsampling, partial evolution) write their output in
chunks of samples. :class:`ChunkedWriter` keeps every output in one HDF5 group:

* one chunked dataset per field, shape ``[n_samples, *sample_shape]``;
* group attribute ``n_complete``: how many leading samples are finished. It is written *after*
  the chunk's data have been flushed, so a crash between the two leaves the chunk marked
  unfinished and it is simply recomputed on resume;
* group attribute ``config`` (canonical JSON): everything that determines the numbers
  (system parameters, seeds, stage options, input fingerprint). Reopening the group with a
  different config is refused with a one-line error, unless ``overwrite=True``;
* ``matscale_version``, free-form metadata attributes and a ``units`` attribute on every
  dataset.

Small arrays go to ``.npz`` with :func:`save_npz_with_meta`; :func:`load` reads either kind.

Deterministic streams: :func:`sample_keys` hashes ``(seed, tags..., sample index)`` into a
64-bit key with SplitMix64. A sample's random choices then depend only on the seed and its
index, so results are identical after a resume and independent of the chunk size.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from matscale import __version__

__all__ = [
    "Field",
    "ChunkedWriter",
    "save_npz_with_meta",
    "load",
    "progress",
    "sample_keys",
    "uniform_index",
    "child_keys",
    "fingerprint",
    "canonical_json",
    "write_h5",
    "read_h5",
    "h5_meta",
    "json_dump",
    "read_json",
    "DamagedDataError",
    "reading",
    "folder_manifest",
    "manifest_problem",
]

# --------------------------------------------------------------------------------------------
# Deterministic per-sample streams (SplitMix64 counter hashing)
# --------------------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied elementwise to a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _tag_to_int(tag: int | str) -> int:
    """Map a stream tag (a name such as ``"partial"`` or a level number) to a 64-bit integer."""
    if isinstance(tag, (bool, np.bool_)):
        raise TypeError(f"stream tag must be int or str, got bool {tag!r}")
    if isinstance(tag, (int, np.integer)):
        return int(tag) & _MASK64
    if isinstance(tag, str):
        return zlib.crc32(tag.encode()) | (1 << 40)  # keep names apart from small integers
    raise TypeError(f"stream tag must be int or str, got {type(tag).__name__}")


def sample_keys(seed: int, indices: np.ndarray | Sequence[int] | int, *tags: int | str) -> np.ndarray:
    """64-bit random keys for samples ``indices`` of the stream ``(seed, *tags)``.

    The key of sample i depends only on ``seed``, ``tags`` and ``i``, never on which other
    samples are generated alongside it. Returns ``uint64`` with the shape of ``indices``.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    head = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))
    for tag in tags:
        head = _splitmix64(head ^ np.uint64(_tag_to_int(tag)))
    idx = np.asarray(indices)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0):
        raise ValueError("indices must be non-negative integers")
    return _splitmix64(head[0] ^ _splitmix64(idx.astype(np.uint64)))


def child_keys(keys: np.ndarray, n: int, tag: int | str = 0) -> np.ndarray:
    """``n`` further keys derived from every key: uint64 array of shape ``keys.shape + (n,)``.

    Used to give one sample several independent random numbers (window order, pool draws).
    """
    keys = np.asarray(keys, dtype=np.uint64)
    salt = _splitmix64(np.array([_tag_to_int(tag)], dtype=np.uint64))[0]
    counters = _splitmix64(np.arange(n, dtype=np.uint64) ^ salt)
    return _splitmix64(keys[..., None] ^ counters)


def uniform_index(keys: np.ndarray, n: int) -> np.ndarray:
    """Map uint64 keys to integers uniform on ``0 .. n-1`` (bias <= n / 2**53)."""
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    u = (np.asarray(keys, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.minimum((u * n).astype(np.int64), n - 1)


# --------------------------------------------------------------------------------------------
# Metadata helpers
# --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-able")


def canonical_json(obj: Mapping[str, Any]) -> str:
    """Canonical JSON text (sorted keys, plain types) of a metadata/config mapping."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def fingerprint(array: np.ndarray) -> str:
    """Short content hash (BLAKE2b, 16 hex digits) of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True,
             unit: str = "it") -> Iterable:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (quiet otherwise)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Chunked HDF5 writer
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One per-sample field of a chunked output: trailing ``shape``, ``dtype`` and ``units``."""

    shape: tuple[int, ...]
    dtype: Any
    units: str = "dimensionless"


class ChunkedWriter:
    """Append-in-chunks HDF5 output that resumes after an interruption.

    Parameters
    ----------
    path, group:
        HDF5 file (created if missing) and group name inside it.
    n_samples:
        Total number of samples the finished output holds.
    chunk_size:
        Samples per chunk; also the HDF5 chunk length along the sample axis.
    fields:
        ``{name: Field(shape, dtype, units)}``.
    config:
        Everything that determines the numbers. Stored as canonical JSON; a reopened group
        must carry the same config.
    attrs:
        Extra metadata (units, descriptions) stored as group attributes (JSON for mappings).
    overwrite:
        Replace an existing group whose config differs instead of refusing.

    Usage::

        with ChunkedWriter(path, "partial", n, 2000, fields, config) as w:
            for start, stop in w.pending_chunks():
                w.write_chunk(start, stop, z0=..., delta=...)
    """

    def __init__(self, path: str | os.PathLike, group: str, n_samples: int, chunk_size: int,
                 fields: Mapping[str, Field], config: Mapping[str, Any], *,
                 attrs: Mapping[str, Any] | None = None, overwrite: bool = False,
                 compression: str | None = None) -> None:
        if int(n_samples) < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not fields:
            raise ValueError("fields must name at least one dataset")
        self.path = Path(path)
        self.group_name = group.strip("/")
        self.n_samples = int(n_samples)
        self.chunk_size = int(chunk_size)
        self.fields = dict(fields)
        self._config_json = canonical_json({**config, "n_samples": self.n_samples,
                                            "fields": {k: [list(f.shape), np.dtype(f.dtype).str]
                                                       for k, f in self.fields.items()}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # resuming: a damaged partial file is named, with the remedy
            with reading(self.path):
                self._file = h5py.File(self.path, "a")
        else:
            self._file = h5py.File(self.path, "a")
        try:
            self._group = self._open_group(attrs or {}, overwrite, compression)
        except BaseException:
            self._file.close()
            raise

    # -- setup -------------------------------------------------------------------------------
    def _open_group(self, attrs: Mapping[str, Any], overwrite: bool,
                    compression: str | None) -> h5py.Group:
        name = self.group_name
        if name in self._file:
            group = self._file[name]
            stored = group.attrs.get("config")
            if stored == self._config_json:
                return group
            if not overwrite:
                raise ValueError(_config_mismatch_message(self.path, name, stored, self._config_json))
            del self._file[name]
        group = self._file.create_group(name)
        for field_name, f in self.fields.items():
            chunk_len = max(1, min(self.chunk_size, self.n_samples))
            ds = group.create_dataset(field_name, shape=(self.n_samples, *f.shape), dtype=f.dtype,
                                      chunks=(chunk_len, *f.shape) if self.n_samples else None,
                                      compression=compression)
            ds.attrs["units"] = f.units
        for key, value in attrs.items():
            group.attrs[key] = _attr_value(value)
        group.attrs["matscale_version"] = __version__
        group.attrs["chunk_size"] = self.chunk_size
        group.attrs["config"] = self._config_json
        group.attrs["n_complete"] = 0  # written last: marks a consistent, empty output
        self._file.flush()
        return group

    # -- state -------------------------------------------------------------------------------
    @property
    def n_complete(self) -> int:
        """Number of leading samples whose chunk has been written and flushed."""
        return int(self._group.attrs["n_complete"])

    @property
    def finished(self) -> bool:
        """True when every sample has been written."""
        return self.n_complete >= self.n_samples

    def pending_chunks(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of the chunks still to compute, in order (finished ones skipped)."""
        for start in range(self.n_complete, self.n_samples, self.chunk_size):
            yield start, min(start + self.chunk_size, self.n_samples)

    def write_chunk(self, start: int, stop: int, **arrays: np.ndarray) -> None:
        """Write samples ``start:stop`` of every field, flush, then advance ``n_complete``."""
        if start != self.n_complete:
            raise ValueError(f"chunk start={start} must equal n_complete={self.n_complete} (chunks are written in order)")
        if not start < stop <= self.n_samples:
            raise ValueError(f"chunk stop={stop} must lie in ({start}, {self.n_samples}]")
        missing = set(self.fields) - set(arrays)
        extra = set(arrays) - set(self.fields)
        if missing or extra:
            raise ValueError(f"write_chunk fields: missing {sorted(missing)}, unknown {sorted(extra)}")
        for name, values in arrays.items():
            expected = (stop - start, *self.fields[name].shape)
            values = np.asarray(values)
            if values.shape != expected:
                raise ValueError(f"field {name!r} has shape {values.shape}, expected {expected}")
            self._group[name][start:stop] = values
        self._file.flush()
        self._group.attrs["n_complete"] = stop
        self._file.flush()

    def read(self, names: Iterable[str] | None = None, *, stop: int | None = None) -> dict[str, np.ndarray]:
        """The first ``stop`` (default: all complete) samples of the named fields."""
        stop = self.n_complete if stop is None else min(stop, self.n_complete)
        return {n: self._group[n][:stop] for n in (self.fields if names is None else names)}

    @property
    def attrs(self) -> dict[str, Any]:
        """The group attributes, JSON-decoded where they were stored as JSON."""
        return _decode_attrs(self._group.attrs)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> "ChunkedWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_mismatch_message(path: Path, group: str, stored: str | None, wanted: str) -> str:
    """One-line explanation of which config keys differ between disk and request."""
    try:
        old = json.loads(stored) if stored is not None else {}
    except (TypeError, json.JSONDecodeError):
        old = {}
    new = json.loads(wanted)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return (f"{path}:/{group} already holds data made with a different config "
            f"(differing keys: {', '.join(keys) or 'unreadable config'}); "
            f"use another path/group or overwrite=True")


def _attr_value(value: Any) -> Any:
    """HDF5-storable form of a metadata value (mappings/lists become JSON text)."""
    if isinstance(value, (Mapping, list, tuple)):
        return "json:" + json.dumps(_jsonable(value), sort_keys=True)
    if value is None:
        return "json:null"
    return _jsonable(value)


def _decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_attr_value` for a whole attribute set."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value.startswith("json:"):
            value = json.loads(value[5:])
        elif key == "config" and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# npz with metadata, and a reader for both formats
# --------------------------------------------------------------------------------------------
_META_KEY = "__meta__"


def save_npz_with_meta(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                       meta: Mapping[str, Any] | None = None, *, compress: bool = True) -> Path:
    """Write ``arrays`` and a JSON ``meta`` record (plus matscale version) to one ``.npz``."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz, got {path.name!r}")
    if _META_KEY in arrays:
        raise ValueError(f"array name {_META_KEY!r} is reserved for metadata")
    record = {"matscale_version": __version__, **(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    saver = np.savez_compressed if compress else np.savez
    saver(path, **{k: np.asarray(v) for k, v in arrays.items()},
          **{_META_KEY: np.array(canonical_json(record))})
    return path


def load(path: str | os.PathLike, group: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read ``(arrays, meta)`` from a ``.npz`` of :func:`save_npz_with_meta` or an HDF5 group.

    For HDF5, ``group`` names the group (default: the file root); only the complete samples
    (``n_complete``) are returned when the group was written by :class:`ChunkedWriter`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with reading(path, remedy="restore the file or regenerate it"):
        return _load(path, group)


def _load(path: Path, group: str | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != _META_KEY}
            meta = json.loads(str(data[_META_KEY])) if _META_KEY in data.files else {}
        return arrays, meta
    with h5py.File(path, "r") as f:
        g = f[group] if group else f
        meta = _decode_attrs(g.attrs)
        stop = meta.get("n_complete")
        arrays = {}
        for name, item in g.items():
            if isinstance(item, h5py.Dataset):
                arrays[name] = item[:stop] if stop is not None and item.ndim else item[()]
        meta["dataset_units"] = {n: str(g[n].attrs["units"]) for n in arrays if "units" in g[n].attrs}
    return arrays, meta


# --------------------------------------------------------------------------------------------
# Whole-array files of the pipeline stages (HDF5 with JSON metadata) and JSON records
# --------------------------------------------------------------------------------------------
def write_h5(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
             units: Mapping[str, str] | None = None) -> None:
    """Write arrays (chunked, lzf-compressed when large) plus a JSON ``meta`` attribute."""
    with h5py.File(path, "w") as f:
        f.attrs["meta"] = json.dumps({"matscale_version": __version__, **meta}, default=_json_default)
        for name, value in arrays.items():
            value = np.asarray(value)
            big = value.ndim >= 1 and value.nbytes > (1 << 20)
            ds = f.create_dataset(name, data=value, compression="lzf" if big else None,
                                  chunks=True if big else None)
            ds.attrs["units"] = (units or {}).get(name, "")


def read_h5(path: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The named datasets (default all) of an HDF5 file written by :func:`write_h5`."""
    with reading(path):
        with h5py.File(path, "r") as f:
            keys = list(f.keys()) if names is None else list(names)
            return {k: f[k][()] for k in keys}


def h5_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON ``meta`` attribute of an HDF5 file written by :func:`write_h5`."""
    with reading(path):
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["meta"])


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document of a file."""
    with reading(path):
        return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Damaged data: detected by checksums, reported in one line that names the file and a remedy
# --------------------------------------------------------------------------------------------
class DamagedDataError(ValueError):
    """A file of a run cannot be read or no longer matches the checksum recorded when its stage
    finished. The message is one line: the file, what is wrong, and the remedy."""


STAGE_RECORD = "stage.json"


def stage_remedy(path: str | os.PathLike) -> str:
    """The remedy for a damaged file of a run folder: force the stage that wrote it (found as the
    nearest parent folder holding a stage record, or named like a stage's temporary folder)."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        record = folder / STAGE_RECORD
        name = folder.name
        if name.startswith(".") and name.endswith(".partial"):
            return (f"delete the unfinished {folder} and rerun the same command (or rerun with "
                    f"--force-stage {name[1:-len('.partial')]})")
        if record.is_file():
            stage = _stage_name(record) or folder.name
            return f"rerun with --force-stage {stage} (it and the stages after it are recomputed)"
    return "restore the file or regenerate it"


def _stage_name(record: Path) -> str | None:
    try:
        stage = json.loads(record.read_text(encoding="utf-8")).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
    return stage if isinstance(stage, str) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class reading:
    """Context manager for reading one run file: library errors (h5py, torch, numpy, json) become
    a :class:`DamagedDataError` naming the file and the remedy; a missing file stays a
    :class:`FileNotFoundError`."""

    def __init__(self, path: str | os.PathLike, remedy: str | None = None) -> None:
        self.path = Path(path)
        self.remedy = remedy

    def __enter__(self) -> "reading":
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: file not found; {self.remedy or stage_remedy(self.path)}")
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (DamagedDataError, FileNotFoundError, KeyboardInterrupt,
                                           MemoryError)):
            return False
        if isinstance(exc, Exception):
            remedy = self.remedy or stage_remedy(self.path)
            raise DamagedDataError(f"{self.path}: damaged or unreadable ({type(exc).__name__}: "
                                   f"{_first_line(exc)}); {remedy}") from exc
        return False


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def folder_manifest(folder: str | os.PathLike, exclude: Iterable[str] = (STAGE_RECORD,)) -> dict[str, dict[str, Any]]:
    """Size in bytes and SHA-256 of every file under ``folder`` (relative POSIX paths), except
    the names in ``exclude`` at its top level."""
    folder = Path(folder)
    skip = set(exclude)
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip:
            continue
        manifest[rel] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    return manifest


def manifest_problem(folder: str | os.PathLike, manifest: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first difference between ``folder`` and its recorded ``manifest`` ("FILE: what"), or
    None when every recorded file is present with its recorded size and hash."""
    folder = Path(folder)
    for rel, entry in manifest.items():
        path = folder / rel
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{path}: {size} bytes, {entry.get('bytes')} when its stage finished"
        if file_digest(path) != entry.get("sha256"):
            return f"{path}: contents changed since its stage finished (SHA-256 differs)"
    return None


def json_dump(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON (numpy arrays and scalars become lists and numbers)."""
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
