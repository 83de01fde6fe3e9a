"""Kinetically-resolved-activation (KRA) vacancy-hop barriers on top of any local energy model.

For a hop of the atom on site t into the vacancy on site v,

    ΔE   = E(final) − E(initial) = energy_model.swap_delta(lattice, v, t)       (eV)
    E_b  = max(E0[s_t] + ΔE / 2,  ΔE,  0)                                       (eV)

with E0[s] the KRA (end-point-averaged) barrier of the moving species s_t.

Negative barriers and detailed balance: the raw KRA barrier E0 + ΔE/2 turns negative when
ΔE < −2 E0, and it drops below the final-state energy ΔE when ΔE > 2 E0. The clamp g(ΔE) = max(E0 + ΔE/2, ΔE, 0)
keeps detailed balance exactly: the reverse hop moves the same atom back, so it has the same E0
and the opposite ΔE, and for every ΔE

    g(ΔE) − g(−ΔE) = ΔE          (|ΔE| ≤ 2E0: (E0 + ΔE/2) − (E0 − ΔE/2);
                                  ΔE > 2E0: ΔE − 0;   ΔE < −2E0: 0 − (−ΔE)),

so the forward/backward rate ratio is exp(−ΔE / k_B T) whatever the clamp does. g is continuous,
never negative, and never below the final-state energy (the saddle is at least as high as both
end points).

Accepted energy models (anything implementing ``LocalEnergyModel``): :class:`LatticeEAM`
(µs per ΔE, unrelaxed lattice), :class:`ASELocalEnergy` (any ASE calculator on the local
cluster), :class:`LammpsEngine` (LAMMPS on the local cluster).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from matscale.calculators.base import LocalEnergyModel

__all__ = ["KRABarrierModel", "kra_barrier"]


def kra_barrier(e0: np.ndarray | float, delta_e: np.ndarray | float) -> np.ndarray:
    """Clamped KRA barrier max(E0 + ΔE/2, ΔE, 0) in eV (detailed-balance preserving)."""
    e0 = np.asarray(e0, dtype=float)
    delta_e = np.asarray(delta_e, dtype=float)
    return np.maximum(np.maximum(e0 + 0.5 * delta_e, delta_e), 0.0)


class KRABarrierModel:
    """Vacancy-hop barriers E_b = max(E0(moving species) + ΔE/2, ΔE, 0); implements
    ``BarrierModel``.

    Parameters
    ----------
    energy_model:
        a ``LocalEnergyModel`` (swap_delta / swap_deltas / interaction_range).
    e0:
        KRA barrier in eV: one float for every species, or a dict element -> E0 (each ≥ 0,
        finite) that must cover every element of the lattices it is used on.
    """

    def __init__(self, energy_model: LocalEnergyModel, e0: Mapping[str, float] | float) -> None:
        if not isinstance(energy_model, LocalEnergyModel):
            raise TypeError("energy_model must implement LocalEnergyModel "
                            "(swap_delta, swap_deltas, interaction_range)")
        if isinstance(e0, Mapping):
            if len(e0) == 0:
                raise ValueError("e0 must name at least one element")
            values = {str(k): float(v) for k, v in e0.items()}
        elif isinstance(e0, (int, float)) and not isinstance(e0, bool):
            values = float(e0)
        else:
            raise TypeError(f"e0 must be a float (eV) or a dict element -> eV, got {type(e0).__name__}")
        for name, v in (values.items() if isinstance(values, dict) else [("e0", values)]):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"KRA barrier e0[{name}] must be finite and >= 0 eV, got {v}")
        self.energy_model = energy_model
        self.e0 = values
        self.interaction_range = float(energy_model.interaction_range)
        self._e0_cache: dict[tuple[str, ...], np.ndarray] = {}

    def e0_by_code(self, elements: tuple[str, ...]) -> np.ndarray:
        """E0 per lattice species code [len(elements) + 1] (index 0, the vacancy, unused: nan)."""
        cached = self._e0_cache.get(elements)
        if cached is not None:
            return cached
        out = np.full(len(elements) + 1, np.nan)
        for c, el in enumerate(elements, start=1):
            if isinstance(self.e0, float):
                out[c] = self.e0
            elif el in self.e0:
                out[c] = self.e0[el]
            else:
                raise ValueError(f"e0 has no KRA barrier for element {el!r}; it has {sorted(self.e0)}")
        self._e0_cache[elements] = out
        return out

    def hop_barriers(self, lattice: Any, vacancy_sites: np.ndarray) -> np.ndarray:
        """Barriers [M, 8] (eV) of the 8 first-shell hops of each vacancy, in the order of
        ``lattice.neighbors(1)[vacancy]``; inf where the target site holds a vacancy."""
        vac = np.atleast_1d(np.asarray(vacancy_sites))
        if vac.ndim != 1 or (vac.size and vac.dtype.kind not in "iu"):
            raise ValueError("vacancy_sites must be a 1-D integer array of site indices")
        if vac.dtype != np.int64:
            vac = vac.astype(np.int64)
        species = lattice.species
        try:
            occupied_vac = species[vac].any()
        except IndexError:
            raise ValueError(f"vacancy_sites must lie in [0, {lattice.n_sites - 1}]") from None
        if vac.size and vac.min() < 0:
            raise ValueError(f"vacancy_sites must lie in [0, {lattice.n_sites - 1}]")
        if occupied_vac:
            raise ValueError("every entry of vacancy_sites must hold a vacancy (species 0)")
        e0 = self.e0_by_code(tuple(lattice.elements))
        targets = lattice.neighbors(1)[vac]  # [M, 8]
        barriers = np.full(targets.shape, np.inf)
        target_species = species[targets]
        rows, cols = np.nonzero(target_species)
        if len(rows):
            pairs = np.empty((len(rows), 2), dtype=np.int64)
            pairs[:, 0] = vac[rows]
            pairs[:, 1] = targets[rows, cols]
            delta = np.asarray(self.energy_model.swap_deltas(lattice, pairs), dtype=float)
            barriers[rows, cols] = kra_barrier(e0[target_species[rows, cols]], delta)
        return barriers

    def jump_barriers(self, atoms: Any, vacancy_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Barriers of the 8 jumps of the vacancy at atom ``vacancy_index`` of a periodic BCC
        ``ase.Atoms`` (that atom is treated as the vacancy whatever its symbol). Returns
        ``(neighbor_indices int64 [8], barriers_eV float64 [8])`` — atom indices of the jump
        targets (order of ``NEIGHBOR_OFFSETS[1]``) and their barriers (inf for a vacancy)."""
        from matscale.systems.alloy.lattice import jump_barriers_of_atoms

        return jump_barriers_of_atoms(self, atoms, vacancy_index)
