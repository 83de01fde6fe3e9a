"""matscale: learn the macroscopic stochastic dynamics of large systems from small simulations.

Entry points: :func:`matscale.load` (a finished run folder -> fitted macroscopic model),
:mod:`matscale.sde` (fit_sde / FittedSDE / load_sde), :mod:`matscale.systems` (the microscopic
systems and their registry), :mod:`matscale.alloy` (BCC alloy engine), :mod:`matscale.calculators` (energies).
Submodules are imported lazily so that ``import matscale`` stays light.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def load(run_dir: Any, **kwargs: Any) -> Any:
    """Load the fitted macroscopic model of a run folder; see :func:`matscale.pipeline.load`."""
    from matscale.pipeline import load as _load

    return _load(run_dir, **kwargs)
