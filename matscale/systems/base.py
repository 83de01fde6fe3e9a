"""The protocol every microscopic system implements, and the square-patch geometry.

A *system* owns the microscopic dynamics. Everything to its right in the data flow
(upsampling, partial evolution, closure, SDE fitting, evaluation) talks to it only through
this protocol, so a new system plugs in by implementing it.

Patch geometry for 2-D lattice systems
--------------------------------------
A configuration of side L is split into K = (L / p)**2 non-overlapping p x p patches
(n_s = p**2 sites each). Patch k has its top-left corner at
``(row0, col0) = ((k // (L // p)) * p, (k % (L // p)) * p)``.
A *region* is a tuple ``(row0, col0, height, width)``; rows and columns wrap periodically
(modulo L), so windows that straddle the box edge are allowed.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Region = tuple[int, int, int, int]


@runtime_checkable
class MicroscopicSystem(Protocol):
    """What a microscopic simulator offers to the pipeline.

    ``evolve`` advances ``state`` (in place *and* returned) either for a physical ``duration``
    or for ``n_events`` events, restricted to ``region`` when given. ``boundary`` is
    ``"frozen"`` (the exterior is a fixed boundary condition) or ``"periodic"`` (the region
    is evolved as an isolated periodic box). Returns ``(state, elapsed_time)`` in the
    system's time unit.
    """

    def random_state(self, rng: np.random.Generator, **kwargs: Any) -> np.ndarray: ...

    def evolve(
        self,
        state: np.ndarray,
        *,
        duration: float | None = None,
        n_events: int | None = None,
        region: Region | None = None,
        boundary: str = "frozen",
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, float]: ...


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
