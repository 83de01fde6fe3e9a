"""Study workflows: self-contained scientific studies run by ``matscale run`` like the pipeline.

A study is named by the configuration's ``workflow`` and reads exactly one section of the same
name (``workflow = "diffusion"`` reads ``[diffusion]``; ``[quick.diffusion]`` holds the values of
``--quick``). It runs its expensive steps as resumable, checksummed stages of a
:class:`matscale.pipeline.runner.StageRunner` and writes ``report.md`` and ``metrics.json`` into
the output folder.

A study module defines one :class:`Study` object; :data:`STUDY_MODULES` names where each lives,
so that ``matscale validate`` and ``matscale run`` import only the study they need.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: workflow name -> "module:attribute" of its :class:`Study`.
STUDY_MODULES: dict[str, str] = {
    "identify": "matscale.pipeline.identify:STUDY",          # SDE identification, integrator templates
    "diffusion": "matscale.pipeline.diffusion_study:STUDY",  # tracer diffusion and Arrhenius fits
    "ordering": "matscale.pipeline.ordering_study:STUDY",    # order-disorder from swap Monte Carlo
    "critical": "matscale.pipeline.critical_study:STUDY",    # 2-D Ising finite-size scaling near T_c
}


@dataclass(frozen=True)
class Study:
    """One study workflow.

    name: the workflow name and its TOML section.
    config: frozen dataclass of the section (fields typed int, float, str or tuples of them),
        with a ``check()`` method that raises a one-line ``ConfigError`` naming ``name.field``.
    run: ``run(config, runner, source) -> summary dict``; ``source`` is the folder of the TOML file.
    describe: ``describe(config) -> str``, the one-line summary of ``matscale validate``.
    stages: the stage names ``--force-stage`` accepts for this study (empty: any name).
    """

    name: str
    config: type
    run: Callable[[Any, Any, Path], dict[str, Any]]
    describe: Callable[[Any], str]
    stages: tuple[str, ...] = ()


def study_names() -> tuple[str, ...]:
    """The workflow names of the registered studies."""
    return tuple(STUDY_MODULES)


def get_study(name: str) -> Study:
    """The registered :class:`Study` called ``name`` (KeyError if none)."""
    module_name, attribute = STUDY_MODULES[name].split(":")
    study = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(study, Study) or study.name != name:
        raise TypeError(f"internal: {STUDY_MODULES[name]} is not the Study {name!r}")
    return study
