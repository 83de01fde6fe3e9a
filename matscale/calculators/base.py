"""Protocols shared by everything that supplies energies or barriers for lattice alloys.

The alloy engine (`matscale.systems.alloy`) never asks for a whole-cell energy. It asks for the
*change* of energy when the species on two lattice sites are exchanged (a swap Monte Carlo move,
or a vacancy hop, which is the exchange of a vacancy 'X' with a neighbouring atom). Every energy
source (analytic pair toy model, on-lattice EAM, any ASE calculator, LAMMPS) implements
:class:`LocalEnergyModel`; every barrier source (NNK network, KRA on top of an energy model)
implements :class:`BarrierModel`.

Units: eV, Å. Site indices refer to a :class:`matscale.systems.alloy.lattice.BCCLattice`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matscale.systems.alloy.lattice import BCCLattice


@runtime_checkable
class LocalEnergyModel(Protocol):
    """An energy source that evaluates swap energy changes from a local environment.

    ``cutoff`` (Å): a species change at site a changes the energy contribution of sites up to
    ``interaction_range`` away from a; cached quantities (rates, ΔE) of hops farther than that
    from the last change stay valid.
    """

    interaction_range: float

    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), in eV."""
        ...

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`swap_delta` for independent pairs [M, 2] -> [M] eV
        (each pair evaluated on the unchanged current lattice)."""
        ...


@runtime_checkable
class BarrierModel(Protocol):
    """A source of vacancy-migration barriers on a BCC lattice.

    ``interaction_range`` (Å): a species change farther than this from both sites of a hop
    leaves that hop's barrier unchanged (used by kMC to recompute only what changed).
    """

    interaction_range: float

    def hop_barriers(self, lattice: "BCCLattice", vacancy_sites: np.ndarray) -> np.ndarray:
        """Barriers [M, 8] in eV for the 8 first-shell hops of each vacancy, in the order of
        ``lattice.neighbors(1)[vacancy]``; ``inf`` where the target site holds a vacancy."""
        ...
