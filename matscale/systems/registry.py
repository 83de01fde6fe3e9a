"""The registry: configuration kinds -> system classes, their config sections and builders.

A configuration's ``[system]`` and ``[reference]`` sections are a tagged union on
``system.kind``: each kind registers the dataclasses that validate them, a ``check`` of the
values against the rest of the run configuration, and a ``build`` that turns the validated
``[system]`` section into one :class:`~matscale.systems.base.MicroscopicSystem` of the large
size. This module is the only place outside the system modules that names a kind.

Kinds shipped: ``"curie_weiss"`` and ``"ising"`` (Glauber spin models, reduced units, Glauber
time) and ``"nbmota"`` (BCC alloy vacancy kMC: eV, Å, K; scaled time, see
:class:`matscale.systems.alloy.system.AlloySystem`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from matscale.systems.base import check_system

__all__ = ["SystemKind", "register_kind", "get_kind", "kinds", "build_system",
           "SpinSystemConfig", "SpinReferenceConfig", "AlloySystemConfig", "AlloyReferenceConfig"]


def _config_tools():
    from matscale import config

    return config


# ----------------------------------------------------------------------------------------------
# Spin models
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpinSystemConfig:
    """A lattice spin model: box side ``L`` (n = L**2 sites), temperature ``T`` (k_B = 1),
    field ``h`` and coupling ``J`` (reduced units)."""

    kind: str
    L: int
    T: float
    h: float = 0.0
    J: float = 1.0

    grid_dim = 2
    cell_bytes = 1  # one int8 spin per grid cell

    @property
    def supports_closure(self) -> bool:
        """The CNN closure applies to the Ising lattice, not to the mean-field model."""
        return self.kind == "ising"

    @property
    def default_closure(self) -> bool:
        """The closure is on by default (closure.dim > 0) wherever it is allowed."""
        return self.supports_closure

    @property
    def size(self) -> int:
        """Sites per axis of the large box."""
        return self.L

    @property
    def parameter_points(self) -> tuple[float, ...]:
        """No conditioning parameter: one SDE at (T, h, J)."""
        return ()

    def describe(self) -> str:
        return f"{self.kind}, L = {self.L}, T = {self.T}, h = {self.h}, J = {self.J}"


@dataclass(frozen=True)
class SpinReferenceConfig:
    """Direct large-system reference runs, used ONLY for evaluation: ``n_runs`` replicas from each
    initial magnetization, recorded every ``grid_dt`` Glauber time units up to ``duration``."""

    magnetizations: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)
    n_runs: int = 200
    duration: float = 200.0
    grid_dt: float = 2.0
    seed: int = 5

    condition_label = "m0"

    @property
    def conditions(self) -> tuple[tuple[float | None, float | None], ...]:
        """(parameter, initial condition) of every reference condition."""
        return tuple((None, m0) for m0 in self.magnetizations)

    @property
    def condition_values(self) -> tuple[float, ...]:
        return self.magnetizations


def _check_spin(cfg: Any) -> None:
    c = _config_tools()
    s, ref = cfg.system, cfg.reference
    c._require(s.L >= 4, f"system.L={s.L} out of range (allowed: >= 4)")
    c._positive("system.T", s.T)
    c._require(s.J != 0, "system.J=0 out of range (allowed: nonzero)")
    if s.kind == "curie_weiss":
        # m is the only macroscopic variable of the mean-field model; domain walls are meaningless.
        c._require(cfg.closure.dim == 0,
                   f"closure.dim={cfg.closure.dim} out of range for system.kind='curie_weiss' (allowed: 0)")
    c._require(len(ref.magnetizations) >= 1, "reference.magnetizations must list at least one value")
    for i, m0 in enumerate(ref.magnetizations):
        c._require(-1.0 <= m0 <= 1.0, f"reference.magnetizations[{i}]={m0} out of range (allowed: -1..1)")


def _build_spin(section: SpinSystemConfig) -> Any:
    from matscale.systems.spin import CurieWeiss, Ising2D

    cls = CurieWeiss if section.kind == "curie_weiss" else Ising2D
    return cls(section.L, section.T, h=section.h, J=section.J)


# ----------------------------------------------------------------------------------------------
# NbMoTa-type BCC alloy
# ----------------------------------------------------------------------------------------------
BARRIERS = ("nnk", "nnk_symmetric", "nnk_consistent", "kra")
#: barrier laws that take ΔE from the ``energy`` model
ENERGY_BARRIERS = ("kra", "nnk_consistent")
ENERGIES = ("eam", "lammps", "ase")


@dataclass(frozen=True)
class AlloySystemConfig:
    """A BCC alloy with vacancy kinetic Monte Carlo.

    ``cells``: cubic cells per side of the large box (n = 2 cells**3 sites);
    ``temperatures`` (K): the training temperatures of the temperature-conditioned SDE;
    ``elements`` and ``composition`` (fractions in element order; empty = equimolar);
    ``vacancy_fraction``: vacancies per site (kept at every size; 1/1024 = one per 8**3 cells);
    ``lattice_constant`` (Å); ``nu0`` (attempt frequency, 1/s); ``clock_barrier_eV``: the
    activation energy of the scaled clock τ = t·c_v·ν0·exp(−E/k_B T); the default 2.2 eV is the
    effective activation energy of NNK SRO relaxation (τ95 ≈ 0.05 from 900 to 2000 K), which the
    reference defaults assume (0 = the AlloySystem default, the mean NNK barrier).
    ``barrier``: "nnk" (the published NNK neural barrier network as is, the default; it has no
    Boltzmann stationary state: barrier sums around closed hop loops are not zero),
    "nnk_symmetric" (NNK averaged over the 6 point-group images of each jump; mirror images of a
    jump agree, detailed balance still fails), "nnk_consistent" (E_b = ½(S_fwd + S_bwd) + ΔE/2
    with S the symmetrised NNK of the jump and of its reverse after the hop, ΔE from ``energy``:
    detailed balance holds and the equilibrium is the energy model's Boltzmann distribution) or
    "kra" (E_b = E0 + ΔE/2 from an energy model); for "kra" and "nnk_consistent" ``energy`` =
    "eam" (on-lattice EAM of the setfl ``potential``), "lammps" (the same potential through
    LAMMPS) or "ase" (``ase_calculator`` = "module:Class", constructed without arguments,
    restricted to a local cluster around the changed sites: ``ase_cutoff`` Å is the
    potential's cutoff, ``ase_receptive_field`` Å (0: detected from the calculator, or equal
    to the cutoff for a known local potential) the range within which an atom's energy
    depends on the others, message-passing layers × cutoff for a graph network);
    ``kra_e0``: the KRA E0 per element (eV).
    """

    kind: str
    cells: int
    temperatures: tuple[float, ...] = (900.0, 1400.0, 2000.0)
    elements: tuple[str, ...] = ("Nb", "Mo", "Ta")
    composition: tuple[float, ...] = ()
    vacancy_fraction: float = 1.0 / 1024.0
    lattice_constant: float = 3.24
    nu0: float = 1e13
    clock_barrier_eV: float = 2.2
    barrier: str = "nnk"
    energy: str = "eam"
    potential: str = "NbMoTa_Zhou04.eam.alloy"
    ase_calculator: str = ""
    ase_cutoff: float = 0.0
    ase_receptive_field: float = 0.0
    kra_e0: tuple[float, ...] = (0.9, 1.2, 1.1)

    grid_dim = 3
    cell_bytes = 2  # two int8 species codes per cubic BCC cell
    training_fields = ("temperatures",)  # choose training data only (not the reference runs)
    supports_closure = True   # closure.dim > 0 is allowed (a 3-D CNN over the species codes)
    default_closure = False   # ... but off unless [closure] sets dim

    @property
    def size(self) -> int:
        """Cubic cells per axis of the large box."""
        return self.cells

    @property
    def parameter_points(self) -> tuple[float, ...]:
        """The training temperatures (K): one SDE conditioned on T."""
        return self.temperatures

    def describe(self) -> str:
        return (f"{self.kind}, {2 * self.cells ** 3} sites ({self.cells}³ BCC cells), "
                f"{'-'.join(self.elements)}, vacancy fraction {self.vacancy_fraction:.3g}, "
                f"barriers {self.barrier}{'/' + self.energy if self.barrier in ENERGY_BARRIERS else ''}, "
                f"training T = {list(self.temperatures)} K")


@dataclass(frozen=True)
class AlloyReferenceConfig:
    """Direct large-box kMC reference runs, used ONLY for evaluation: ``n_runs`` runs per
    temperature in ``temperatures`` (K), each from its own random solid solution, recorded every
    ``grid_dt`` scaled-time units up to ``duration``."""

    temperatures: tuple[float, ...] = (1200.0, 1600.0, 2000.0)
    n_runs: int = 12
    duration: float = 0.1    # ~2x the 95 % SRO relaxation time with the default clock
    grid_dt: float = 0.004
    seed: int = 5

    condition_label = "T (K)"

    @property
    def conditions(self) -> tuple[tuple[float | None, float | None], ...]:
        return tuple((T, None) for T in self.temperatures)

    @property
    def condition_values(self) -> tuple[float, ...]:
        return self.temperatures


def _check_alloy(cfg: Any) -> None:
    c = _config_tools()
    s, ref = cfg.system, cfg.reference
    c._require(s.cells >= 2, f"system.cells={s.cells} out of range (allowed: >= 2)")
    c._require(2 * s.cells ** 3 <= 2 ** 24,
               f"system.cells={s.cells} out of range (allowed: <= 203, i.e. at most 2^24 sites)")
    c._require(len(s.temperatures) >= 1, "system.temperatures must list at least one temperature")
    for i, T in enumerate(s.temperatures):
        c._require(T > 0, f"system.temperatures[{i}]={T} out of range (allowed: > 0 K)")
    c._require(len(set(s.temperatures)) == len(s.temperatures),
               f"system.temperatures={list(s.temperatures)} has duplicates (allowed: distinct)")
    _check_elements(c, s)
    c._require(0 < s.vacancy_fraction < 0.5,
               f"system.vacancy_fraction={s.vacancy_fraction} out of range (allowed: 0 < x < 0.5)")
    smallest = min(cfg.patch_sides) if cfg.small is not None else s.cells
    n_small = 2 * smallest ** 3
    c._require(round(s.vacancy_fraction * n_small) >= 1,
               f"system.vacancy_fraction={s.vacancy_fraction} gives no vacancy in the small box of "
               f"{n_small} sites (allowed: >= 1/{n_small})")
    c._positive("system.lattice_constant", s.lattice_constant)
    c._positive("system.nu0", s.nu0)
    c._positive("system.clock_barrier_eV", s.clock_barrier_eV, allow_zero=True)
    c._choice("system.barrier", s.barrier, BARRIERS)
    c._choice("system.energy", s.energy, ENERGIES)
    if s.barrier == "kra":
        c._require(len(s.kra_e0) == len(s.elements),
                   f"system.kra_e0 has {len(s.kra_e0)} values (allowed: one per element, {len(s.elements)})")
        for i, e in enumerate(s.kra_e0):
            c._require(e >= 0, f"system.kra_e0[{i}]={e} out of range (allowed: >= 0 eV)")
    else:
        c._require(tuple(s.elements) == ("Nb", "Mo", "Ta"),
                   f"system.elements={list(s.elements)} not allowed with barrier={s.barrier!r} "
                   "(the NNK network is trained on Nb, Mo, Ta; use barrier='kra')")
    if s.barrier in ENERGY_BARRIERS and s.energy == "ase":
        c._require(":" in s.ase_calculator,
                   f"system.ase_calculator={s.ase_calculator!r} must be 'module:Class' for energy='ase'")
        c._positive("system.ase_cutoff", s.ase_cutoff)
        c._positive("system.ase_receptive_field", s.ase_receptive_field, allow_zero=True)
    c._require(len(ref.temperatures) >= 1, "reference.temperatures must list at least one temperature")
    for i, T in enumerate(ref.temperatures):
        c._require(T > 0, f"reference.temperatures[{i}]={T} out of range (allowed: > 0 K)")


def _check_elements(c: Any, s: AlloySystemConfig) -> None:
    from ase.data import chemical_symbols

    for i, el in enumerate(s.elements):
        c._require(el in chemical_symbols[1:],
                   f"system.elements[{i}]={el!r} is not a chemical symbol (e.g. 'Nb')")
    c._require(len(set(s.elements)) == len(s.elements) >= 2,
               f"system.elements={list(s.elements)} must list at least 2 distinct elements")
    if s.composition:
        c._require(len(s.composition) == len(s.elements),
                   f"system.composition has {len(s.composition)} fractions (allowed: one per element)")
        c._require(all(x >= 0 for x in s.composition) and abs(sum(s.composition) - 1) < 1e-6,
                   f"system.composition={list(s.composition)} out of range (allowed: fractions >= 0 summing to 1)")


def _energy_model(s: AlloySystemConfig) -> Any:
    """The ``energy`` model of a "kra" or "nnk_consistent" section."""
    if s.energy == "eam":
        from matscale.calculators.lattice_eam import LatticeEAM

        return LatticeEAM.from_setfl(s.potential)
    if s.energy == "lammps":
        from matscale.calculators.lammps import LammpsEngine

        return LammpsEngine.eam_alloy(s.potential, elements=s.elements)
    import importlib

    from matscale.calculators.ase_local import ASELocalEnergy

    module, _, name = s.ase_calculator.partition(":")
    try:
        calculator = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"system.ase_calculator={s.ase_calculator!r} cannot be loaded: {exc}") from None
    return ASELocalEnergy(calculator, cutoff=s.ase_cutoff, receptive_field=s.ase_receptive_field or None)


def _barrier_model(s: AlloySystemConfig) -> Any:
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel, NNKBarrierModel

    if s.barrier not in BARRIERS:
        raise ValueError(f"system.barrier={s.barrier!r} is not allowed (allowed: {', '.join(BARRIERS)})")
    if s.barrier == "nnk":
        return NNKBarrierModel()
    if s.barrier == "nnk_symmetric":
        return NNKBarrierModel(symmetrise=True)
    if s.barrier == "nnk_consistent":
        return ConsistentNNKBarrierModel(_energy_model(s), NNKBarrierModel(symmetrise=True))
    from matscale.systems.alloy.kra import KRABarrierModel

    return KRABarrierModel(_energy_model(s), dict(zip(s.elements, s.kra_e0)))


def _build_alloy(section: AlloySystemConfig) -> Any:
    from matscale.systems.alloy.system import AlloySystem

    kwargs: dict[str, Any] = dict(
        barrier_model=_barrier_model(section), elements=tuple(section.elements),
        vacancy_fraction=section.vacancy_fraction, lattice_constant=section.lattice_constant,
        nu0=section.nu0)
    if section.composition:
        kwargs["composition"] = dict(zip(section.elements, section.composition))
    if section.clock_barrier_eV > 0:
        kwargs["clock_barrier_eV"] = section.clock_barrier_eV
    return AlloySystem(section.cells, section.temperatures[0], **kwargs)


# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SystemKind:
    """One configuration kind: its section classes, value checks and builder."""

    kind: str
    system_config: type
    reference_config: type
    check: Callable[[Any], None]
    build: Callable[[Any], Any]


_KINDS: dict[str, SystemKind] = {}


def register_kind(entry: SystemKind, *, replace: bool = False) -> None:
    """Make ``entry.kind`` a valid ``system.kind`` (``replace`` to override a shipped one)."""
    if entry.kind in _KINDS and not replace:
        raise ValueError(f"system kind {entry.kind!r} is already registered (pass replace=True)")
    _KINDS[entry.kind] = entry


def kinds() -> tuple[str, ...]:
    """All registered kinds."""
    return tuple(_KINDS)


def get_kind(kind: str) -> SystemKind:
    """The registry entry of ``kind`` (one-line ConfigError for an unknown kind)."""
    if kind not in _KINDS:
        raise _config_tools().ConfigError(
            f"system.kind={kind!r} is not allowed (allowed: {', '.join(_KINDS)})")
    return _KINDS[kind]


def build_system(section: Any) -> Any:
    """The large-size system of a validated ``[system]`` section, checked against the protocol."""
    return check_system(get_kind(section.kind).build(section))


for _kind in ("curie_weiss", "ising"):
    register_kind(SystemKind(_kind, SpinSystemConfig, SpinReferenceConfig, _check_spin, _build_spin))
register_kind(SystemKind("nbmota", AlloySystemConfig, AlloyReferenceConfig, _check_alloy, _build_alloy))

from matscale.systems.spde import (PredatorPreyConfig, PredatorPreyReferenceConfig,  # noqa: E402
                                   build_predator_prey, check_predator_prey)
register_kind(SystemKind("predator_prey", PredatorPreyConfig, PredatorPreyReferenceConfig, check_predator_prey, build_predator_prey))
