"""``matscale.alloy``: the NbMoTa-type BCC alloy engine in one namespace.

Lattice state and I/O, barrier models (NNK network, KRA on any energy model), vacancy kinetic
Monte Carlo, swap Monte Carlo and short-range-order observables. Energy sources (on-lattice EAM,
any ASE calculator, LAMMPS) live in :mod:`matscale.calculators` and are re-exported here.

Units: eV, Å, K, seconds; k_B = 8.617333e-5 eV/K.

Example::

    import numpy as np
    from matscale.alloy import random_solid_solution, NNKBarrierModel, VacancyKMC, sro_delta
    lat = random_solid_solution({"Nb": 1/3, "Mo": 1/3, "Ta": 1/3}, cells=8, n_vacancies=1, rng=0)
    kmc = VacancyKMC(lat, NNKBarrierModel(), temperature_K=900.0)
    lat, seconds = kmc.evolve(lat, n_events=10_000, rng=np.random.default_rng(1))
    print(seconds, sro_delta(lat))
"""
from __future__ import annotations

from typing import Any

from matscale.systems.alloy import *  # noqa: F401,F403
from matscale.systems.alloy import __all__ as _engine_all
from matscale.systems.alloy.io import (
    from_structure,
    read_extxyz,
    read_lammps_dump,
    to_structure,
    write_extxyz,
    write_lammps_dump,
)
from matscale.systems.alloy.kra import KRABarrierModel

_CALCULATORS = ("LatticeEAM", "ASELocalEnergy", "LammpsEngine", "load_lammps", "make_zhou_setfl",
                "write_setfl", "read_setfl", "ClusterExpansionEnergy", "fit_surrogate",
                "detect_receptive_field")

__all__ = [*_engine_all, "KRABarrierModel", "to_structure", "from_structure", "write_extxyz",
           "read_extxyz", "write_lammps_dump", "read_lammps_dump", *_CALCULATORS]


def __getattr__(name: str) -> Any:
    """Energy sources are imported lazily (LAMMPS and numba load only when first used)."""
    if name in _CALCULATORS:
        import matscale.calculators as calculators

        return getattr(calculators, name)
    raise AttributeError(f"module 'matscale.alloy' has no attribute {name!r}")
