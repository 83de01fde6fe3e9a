"""Interatomic potentials and barrier-model weights shipped with matscale.

Installed as ``matscale.potentials``; :func:`potential_path` returns a file inside it.
"""
from __future__ import annotations

from pathlib import Path

POTENTIALS_DIR = Path(__file__).resolve().parent


def potential_path(name: str) -> Path:
    """Return the path of a shipped potential file, e.g. ``"nnk/nnk_barrier_mlp.npz"``.

    Raises FileNotFoundError (one line, naming the file and the folder) when it is missing.
    """
    path = POTENTIALS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"potential file {name!r} not found in {POTENTIALS_DIR}")
    return path
