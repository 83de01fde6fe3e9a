"""matscale: learn the macroscopic stochastic dynamics of large systems from small simulations."""
from __future__ import annotations

__version__ = "0.1.0"
