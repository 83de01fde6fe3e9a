"""NbMoTa-type BCC alloy engine: lattice state, barrier models, vacancy kMC (with per-atom
displacement tracking and tracer diffusion), swap MC, SRO, and
:class:`AlloySystem`, the alloy as a system of the matscale pipeline.

Units: eV, Å, K, seconds (k_B = 8.617333e-5 eV/K).
"""
from __future__ import annotations

from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, DisplacementTracker, KMCEventLog, VacancyKMC
from matscale.systems.alloy.lattice import (
    NEIGHBOR_OFFSETS,
    BCCLattice,
    lattice_from_atoms,
    random_solid_solution,
)
from matscale.systems.alloy.balance import kolmogorov_cycle_sums, mirror_deviations
from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel, NNKBarrierModel
from matscale.systems.alloy.diffusion import (
    BCC_CORRELATION_FACTOR,
    ArrheniusFit,
    ConstantBarrierModel,
    TracerDiffusionResult,
    arrhenius_fit,
    tracer_diffusion,
    vacancy_diffusivity_constant_barrier,
)
from matscale.systems.alloy.ordering import (
    TemperatureScan,
    TransitionTemperature,
    b2_order_parameter,
    b32_order_parameter,
    sublattice_order_parameters,
    temperature_scan,
    transition_temperature,
)
from matscale.systems.alloy.sro import (
    DeltaObserver,
    WarrenCowleyObserver,
    pair_counts,
    pair_labels,
    sro_delta,
    sro_delta_patch_shares,
    warren_cowley,
    warren_cowley_patch_shares,
)
from matscale.systems.alloy.swap import SwapMCDataContainer, SwapMCEnsemble
from matscale.systems.alloy.system import AlloySystem

__all__ = [
    "AlloySystem",
    "ArrheniusFit",
    "BCC_CORRELATION_FACTOR",
    "ConstantBarrierModel",
    "DisplacementTracker",
    "TracerDiffusionResult",
    "arrhenius_fit",
    "tracer_diffusion",
    "vacancy_diffusivity_constant_barrier",
    "BOLTZMANN_EV_PER_K",
    "BCCLattice",
    "ConsistentNNKBarrierModel",
    "DeltaObserver",
    "KMCEventLog",
    "NEIGHBOR_OFFSETS",
    "NNKBarrierModel",
    "SwapMCDataContainer",
    "SwapMCEnsemble",
    "VacancyKMC",
    "WarrenCowleyObserver",
    "kolmogorov_cycle_sums",
    "mirror_deviations",
    "lattice_from_atoms",
    "pair_counts",
    "pair_labels",
    "random_solid_solution",
    "sro_delta",
    "sro_delta_patch_shares",
    "warren_cowley",
    "warren_cowley_patch_shares",
    "TemperatureScan",
    "TransitionTemperature",
    "b2_order_parameter",
    "b32_order_parameter",
    "sublattice_order_parameters",
    "temperature_scan",
    "transition_temperature",
]
