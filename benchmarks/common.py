"""Result rows shared by the benchmark scripts and ``python -m benchmarks``.

A row is a plain dict (JSON-able):

    name            what is measured, e.g. "Ising L=64 single box, 1 thread"
    value           our throughput (None when skipped or failed)
    unit            its unit, e.g. "events/s"
    baseline        what the baseline is, e.g. "O(N)-per-event reference kernel" (None: no baseline)
    baseline_value  the baseline measured in the same process, in ``baseline_unit``
    baseline_unit   always equal to ``unit`` when there is a baseline
    ratio           value / baseline_value (None without a baseline)
    higher_is_better  True for throughputs, False for errors
    status          "ok", "skipped" (with the reason in ``note``) or "error"
    note            free text: sizes, side figures
    extra           dict of further numbers (per-CPU-second rates, first-call times, ...)

``python -m benchmarks`` adds ``benchmark`` (the group name) and ``seconds`` (the group's wall time).
"""
from __future__ import annotations

import math
from typing import Any


def row(name: str, value: float, unit: str, *, baseline: str | None = None,
        baseline_value: float | None = None, note: str = "", higher_is_better: bool = True,
        **extra: Any) -> dict[str, Any]:
    """One measured row; the ratio is ``value / baseline_value`` (both in ``unit``)."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: value must be a finite number > 0, got {value!r}")
    has_base = baseline_value is not None
    if has_base:
        baseline_value = float(baseline_value)
        if not (math.isfinite(baseline_value) and baseline_value > 0):
            raise ValueError(f"{name}: baseline_value must be a finite number > 0, got {baseline_value!r}")
    return {"name": name, "value": value, "unit": unit,
            "baseline": baseline if has_base else None,
            "baseline_value": baseline_value if has_base else None,
            "baseline_unit": unit if has_base else None,
            "ratio": value / baseline_value if has_base else None,
            "higher_is_better": higher_is_better, "status": "ok", "note": note, "extra": extra}


def skipped(name: str, reason: str, status: str = "skipped") -> dict[str, Any]:
    """A row that was not measured (``status`` "skipped" or "error"), the reason in ``note``."""
    return {"name": name, "value": None, "unit": None, "baseline": None, "baseline_value": None,
            "baseline_unit": None, "ratio": None, "higher_is_better": True, "status": status,
            "note": reason, "extra": {}}


def lammps_unavailable() -> str | None:
    """None when LAMMPS loads, else a one-line reason."""
    try:
        from matscale.calculators.lammps import load_lammps

        load_lammps()
    except Exception as exc:  # ImportError with an install hint, or OSError of the shared library
        return f"LAMMPS not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None
