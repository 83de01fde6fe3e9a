"""The protocol every microscopic system implements, and its check at entry.

A *system* owns the microscopic dynamics. Everything to its right in the data flow (small-system
runs, upsampling, partial evolution, SDE fitting, reference runs, evaluation, report) talks to
it only through this protocol, so a new system plugs in by implementing it and registering its
configuration kind in :mod:`matscale.systems.registry`.

States
------
A state is an array ``[*grid, *cell]`` of dtype ``state_dtype``: ``grid_dim`` grid axes of side
``size`` (cells per axis) and the per-cell shape ``cell_shape``; batches add a leading axis.
Patches, tiles and windows are blocks of cells on that grid (:mod:`matscale.geometry`).

Time
----
``evolve_batch`` and ``evolve_windows`` take durations and return elapsed times in the system's
own clock (``time_unit``): Glauber time for spin models, a temperature-scaled vacancy clock for
the alloy. Random streams come from explicit ``uint64`` seeds, one per state.

Parameters
----------
A system may be conditioned on one scalar parameter (``parameter_name``, e.g. the temperature
of the alloy): ``at(value)`` returns the same system at another value. Systems without one have
``parameter_name = None``.

Optional capability: site classes
---------------------------------
A system whose site values are categorical may also offer ``site_classes`` (an int >= 2, the
number of distinct site values) and ``site_class_index(states)``, which maps site values to
class indices ``0 .. site_classes - 1`` (``int64``, same shape) and raises ``ValueError`` for a
value that is no site value. The patch-additive closure (:mod:`matscale.closure`) needs them;
they are not part of :data:`REQUIRED_METHODS`, since nothing else does.

Optional capability: refine
---------------------------
A system whose sites sample a continuous field may offer ``refine(states, factor)``: states
``[B, *grid, *cell]`` of any box side s (a batch) -> the same fields on ``factor * s`` cells per
axis, ``[B, *(factor * s,) * grid_dim, *cell]`` of ``state_dtype`` (e.g. linear interpolation in
x; :class:`matscale.systems.spde.PredatorPrey`). The ``"interpolate"`` upsampling mode
(:mod:`matscale.upsampling`) needs it, and the configuration accepts that mode only for a kind
whose ``[system]`` section names a ``system_class`` that offers it; it is not part of
:data:`REQUIRED_METHODS`.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Region = tuple[int, int, int, int]

#: attributes and methods the stages call; checked once by :func:`check_system`.
REQUIRED_ATTRIBUTES = ("grid_dim", "cell_shape", "size", "state_dtype", "time_unit", "site_unit",
                       "observable_names", "parameter_name")
REQUIRED_METHODS = ("resized", "at", "metadata", "random_states", "evolve_batch", "evolve_windows",
                    "observables", "order_parameter", "conserve")
#: the optional site-class capability (module docstring) that the closure needs.
SITE_CLASS_ATTRIBUTES = ("site_classes", "site_class_index")


@runtime_checkable
class MicroscopicSystem(Protocol):
    """What a microscopic simulator offers to the pipeline (shapes: B states, W windows)."""

    grid_dim: int                      # grid axes of a state (2: square lattice, 3: cubic cells)
    cell_shape: tuple[int, ...]        # per-cell trailing shape: () spins, (2,) BCC
    size: int                          # cells per grid axis
    state_dtype: Any                   # numpy dtype of states
    time_unit: str                     # unit of durations and elapsed times
    site_unit: str                     # meaning of the values stored per site
    observable_names: tuple[str, ...]  # names of the macroscopic observables, in order
    parameter_name: str | None         # conditioning parameter (e.g. "temperature_K") or None

    def resized(self, size: int) -> "MicroscopicSystem":
        """The same physics on a box of ``size`` cells per axis."""

    def at(self, parameter: float) -> "MicroscopicSystem":
        """The same system at another value of its parameter (ValueError if it has none)."""

    def metadata(self) -> dict[str, Any]:
        """JSON scalars describing the system (class, size, physical parameters)."""

    def random_states(self, n: int, rng: np.random.Generator, condition: float | None = None
                      ) -> np.ndarray:
        """``n`` random initial states ``[n, *grid, *cell]``; ``condition`` is the system's
        initial-condition value of a reference run (e.g. a magnetization), None to draw it."""

    def evolve_batch(self, states: np.ndarray, *, duration: float | None = None,
                     n_events: int | None = None, seeds: np.ndarray) -> np.ndarray:
        """Evolve every state of the batch in place as a whole box; elapsed ``float64 [B]``."""

    def evolve_windows(self, states: np.ndarray, origins: np.ndarray, size: Any, *,
                       n_events: int | None = None, duration: float | None = None,
                       boundary: str = "frozen", seeds: np.ndarray) -> np.ndarray:
        """Evolve windows ``origins [B, W, grid_dim]`` of side ``size`` in order, the exterior
        frozen, in place; elapsed ``float64 [B, W]``."""

    def observables(self, states: np.ndarray) -> np.ndarray:
        """Macroscopic observables ``float64 [B, d]`` of states of any box size; means of exact
        patch shares (so that K times a patch's change is the change of the global value)."""

    def order_parameter(self, states: np.ndarray) -> np.ndarray:
        """One scalar per state ``float64 [B]`` on which tiles are matched when upsampling."""

    def conserve(self, states: np.ndarray, rng: np.random.Generator) -> None:
        """Repair conserved quantities (e.g. composition) of freshly tiled states in place."""


def check_system(system: Any) -> Any:
    """Return ``system`` after checking that it implements the protocol (one-line TypeError)."""
    name = type(system).__name__
    for attr in REQUIRED_ATTRIBUTES:
        if not hasattr(system, attr):
            raise TypeError(f"system {name} lacks attribute '{attr}' of the MicroscopicSystem protocol")
    for method in REQUIRED_METHODS:
        if not callable(getattr(system, method, None)):
            raise TypeError(f"system {name} lacks method '{method}' of the MicroscopicSystem protocol")
    if not isinstance(system.grid_dim, int) or system.grid_dim < 1:
        raise TypeError(f"system {name}: grid_dim must be a positive int, got {system.grid_dim!r}")
    if not isinstance(system.size, (int, np.integer)) or system.size < 1:
        raise TypeError(f"system {name}: size must be a positive int, got {system.size!r}")
    if len(system.observable_names) < 1:
        raise TypeError(f"system {name}: observable_names must name at least one observable")
    return system


def state_shape(system: Any, size: int | None = None) -> tuple[int, ...]:
    """Shape of one state of ``system`` (or of the same system with ``size`` cells per axis)."""
    side = system.size if size is None else int(size)
    return (side,) * system.grid_dim + tuple(system.cell_shape)


def patch_origin(k: int, L: int, p: int) -> tuple[int, int]:
    """Top-left corner (row0, col0) of patch ``k`` of side ``p`` in an ``L x L`` box."""
    per_side = L // p
    return (k // per_side) * p, (k % per_side) * p


def patch_region(k: int, L: int, p: int) -> Region:
    """The region tuple of patch ``k`` (side ``p``) in an ``L x L`` box."""
    r0, c0 = patch_origin(k, L, p)
    return (r0, c0, p, p)


def n_patches(L: int, p: int) -> int:
    """K = (L / p)**2; raises ValueError when ``p`` does not divide ``L``."""
    if p <= 0 or L % p:
        raise ValueError(f"patch side p={p} must be a positive divisor of L={L}")
    return (L // p) ** 2
