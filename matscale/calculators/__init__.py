"""Where energies come from: EAM tables, on-lattice EAM, any ASE calculator (MLIPs included, on
clusters sized by their receptive field), LAMMPS, and cluster-expansion surrogates fitted to any
of them.

All energy sources implement :class:`~matscale.calculators.base.LocalEnergyModel`
(``swap_delta``, ``swap_deltas``, ``interaction_range``); units eV and Å. Imports are lazy so
that ``import matscale.calculators`` never loads numba or LAMMPS by itself.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from matscale.calculators.base import BarrierModel, LocalEnergyModel

_LAZY = {
    "ZhouParameters": "matscale.calculators.eam",
    "ZHOU_PARAMETERS": "matscale.calculators.eam",
    "zhou_parameters": "matscale.calculators.eam",
    "SetflPotential": "matscale.calculators.eam",
    "make_zhou_setfl": "matscale.calculators.eam",
    "write_setfl": "matscale.calculators.eam",
    "read_setfl": "matscale.calculators.eam",
    "LatticeEAM": "matscale.calculators.lattice_eam",
    "ASELocalEnergy": "matscale.calculators.ase_local",
    "detect_receptive_field": "matscale.calculators.ase_local",
    "ClusterExpansionEnergy": "matscale.calculators.surrogate",
    "fit_surrogate": "matscale.calculators.surrogate",
    "LammpsEngine": "matscale.calculators.lammps",
    "load_lammps": "matscale.calculators.lammps",
}

__all__ = ["LocalEnergyModel", "BarrierModel", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matscale.calculators' has no attribute {name!r}")
