"""The "fit" workflow: fit one SDE to a file of pairs (z0, z1, dt[, params])."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from matscale.config import ConfigError, RunConfig
from matscale.io import fingerprint, json_dump, read_json, reading
from matscale.pipeline.runner import StageRunner
from matscale.pipeline.stages import FIT_THREADS


def load_pairs(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``z0``, ``z1``, ``dt`` (and optional ``params``) from ``.npz`` or ``.h5``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fit.pairs: file not found: {path}")
    with reading(path, remedy="check the file named by fit.pairs (z0, z1, dt[, params] arrays)"):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        else:
            with h5py.File(path, "r") as f:
                data = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    missing = [k for k in ("z0", "z1", "dt") if k not in data]
    if missing:
        raise ConfigError(f"fit.pairs: {path.name} lacks array '{missing[0]}' (needs z0, z1, dt[, params])")
    return {k: data[k] for k in ("z0", "z1", "dt", "params") if k in data}


def run_fit_workflow(cfg: RunConfig, out: Path, *, force: frozenset[str] = frozenset(),
                     progress: bool = False) -> dict[str, Any]:
    """Fit an SDE to ``fit.pairs`` and write it to ``OUT/fit_pairs/sde`` (resumable stage)."""
    f = cfg.fit
    pairs_path = (Path(cfg.source) / f.pairs) if not Path(f.pairs).is_absolute() else Path(f.pairs)
    data = load_pairs(pairs_path)
    record = {"fit": cfg.section("fit"),
              "pairs_fingerprint": {k: fingerprint(np.ascontiguousarray(v)) for k, v in data.items()}}

    def compute(folder: Path) -> None:
        from matscale.sde import fit_sde

        sde = fit_sde(data["z0"], data["z1"], data["dt"], params=data.get("params"), loss=f.loss,
                      lam=f.lam, diffusion=f.diffusion, hidden=tuple(f.hidden), epochs=f.epochs,
                      batch_size=f.batch_size, lr=f.lr, seed=f.seed, device=f.device or None,
                      validation_fraction=f.validation_fraction, progress=progress,
                      num_threads=FIT_THREADS)
        sde.save(folder / "sde")
        json_dump({"n_pairs": len(data["z0"]), "history": getattr(sde, "history", None)},
                  folder / "fit.json")

    runner = StageRunner(out, force, None, progress, cfg)
    runner.run("fit_pairs", out / "fit_pairs", record, {}, compute)
    summary = read_json(out / "fit_pairs" / "fit.json")
    json_dump({"workflow": "fit", "n_pairs": summary["n_pairs"], "model": "fit_pairs/sde"},
              out / "metrics.json")
    return summary
