"""The ``diffusion`` study: tracer diffusivities of a BCC alloy over temperature, with Arrhenius fits.

For every temperature of ``[diffusion] temperatures_K`` (one resumable stage ``tracer`` each,
folder ``OUT/tracer/T<T>K``): a random solid solution of the given composition with
``n_vacancies`` vacancies is equilibrated by canonical swap Monte Carlo on the energy model
(``swap_sweeps`` trials per atom; the equilibrium the detailed-balance kMC relaxes to), the
vacancy settles for ``warmup_events`` kMC hops, then :func:`~matscale.systems.alloy.diffusion.tracer_diffusion`
measures D_i and f_i over ``n_events`` hops in ``n_blocks`` independent blocks. The report fits
D_i(T) = D_0 exp(−E_a / k_B T) per element (weighted least squares on ln D) and draws the
Arrhenius plot.

Barrier models (``barrier``): ``"nnk_consistent"`` (NNK network rates made detailed-balance
consistent with the Zhou EAM energies, :class:`ConsistentNNKBarrierModel`), ``"kra"`` (E_b =
max(E0 + ΔE/2, ΔE, 0) on the Zhou EAM, E0 per element from ``kra_e0``) and ``"constant"`` (the
analytic limit, every hop ``constant_barrier_eV``). The vacancy fraction is that of the box,
n_vacancies / N_sites, so E_a is the migration part of the activation energy (see
:mod:`matscale.systems.alloy.diffusion`).

Units: K, eV, Å, s; D in m²/s.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matscale.config import ConfigError
from matscale.io import json_dump, read_json
from matscale.pipeline.runner import StageRunner
from matscale.pipeline.studies import Study

BARRIERS = ("nnk_consistent", "kra", "constant")


@dataclass(frozen=True)
class DiffusionConfig:
    """``[diffusion]``: temperatures (K), the alloy box, the barrier model and the kMC budget."""

    temperatures_K: tuple[float, ...] = (1000.0, 1500.0, 2000.0, 2500.0, 3000.0)
    elements: tuple[str, ...] = ("Nb", "Mo", "Ta")
    composition: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    cells: int = 8
    lattice_constant: float = 3.24
    n_vacancies: int = 1
    barrier: str = "nnk_consistent"
    potential: str = "NbMoTa_Zhou04.eam.alloy"
    kra_e0: tuple[float, ...] = (0.9, 1.2, 1.1)
    constant_barrier_eV: float = 1.0
    swap_sweeps: int = 20
    warmup_events: int = 5000
    n_events: int = 200_000
    n_blocks: int = 20
    nu0: float = 1e13
    seed: int = 0

    def check(self) -> None:
        """One-line :class:`ConfigError` naming ``diffusion.<field>`` and the allowed range."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"diffusion.{message}")

        need(len(self.temperatures_K) >= 2, f"temperatures_K has {len(self.temperatures_K)} values (allowed: >= 2 "
                                            "distinct temperatures for an Arrhenius fit)")
        for i, t in enumerate(self.temperatures_K):
            need(math.isfinite(t) and t > 0, f"temperatures_K[{i}]={t} out of range (allowed: > 0)")
        need(len(set(self.temperatures_K)) == len(self.temperatures_K), "temperatures_K has repeated values (allowed: distinct)")
        need(len(self.elements) >= 1, "elements is empty (allowed: 1 or more chemical symbols)")
        need(len(self.composition) == len(self.elements),
             f"composition has {len(self.composition)} values (allowed: one per element, {len(self.elements)})")
        for i, c in enumerate(self.composition):
            need(math.isfinite(c) and 0 <= c <= 1, f"composition[{i}]={c} out of range (allowed: 0..1)")
        need(abs(sum(self.composition) - 1) <= 1e-6, f"composition sums to {sum(self.composition):.6g} (allowed: 1)")
        need(self.cells >= 2, f"cells={self.cells} out of range (allowed: >= 2)")
        need(math.isfinite(self.lattice_constant) and self.lattice_constant > 0,
             f"lattice_constant={self.lattice_constant} out of range (allowed: > 0 Å)")
        need(1 <= self.n_vacancies < 2 * self.cells**3,
             f"n_vacancies={self.n_vacancies} out of range (allowed: 1..{2 * self.cells**3 - 1})")
        need(self.barrier in BARRIERS, f"barrier={self.barrier!r} not allowed (allowed: {', '.join(BARRIERS)})")
        need(len(self.kra_e0) == len(self.elements),
             f"kra_e0 has {len(self.kra_e0)} values (allowed: one per element, {len(self.elements)})")
        for i, e in enumerate(self.kra_e0):
            need(math.isfinite(e) and e >= 0, f"kra_e0[{i}]={e} out of range (allowed: >= 0 eV)")
        need(math.isfinite(self.constant_barrier_eV) and self.constant_barrier_eV >= 0,
             f"constant_barrier_eV={self.constant_barrier_eV} out of range (allowed: >= 0 eV)")
        need(self.swap_sweeps >= 0, f"swap_sweeps={self.swap_sweeps} out of range (allowed: >= 0)")
        need(self.warmup_events >= 0, f"warmup_events={self.warmup_events} out of range (allowed: >= 0)")
        need(self.n_blocks >= 2, f"n_blocks={self.n_blocks} out of range (allowed: >= 2)")
        need(self.n_events >= self.n_blocks, f"n_events={self.n_events} out of range (allowed: >= n_blocks = {self.n_blocks})")
        need(math.isfinite(self.nu0) and self.nu0 > 0, f"nu0={self.nu0} out of range (allowed: > 0 s^-1)")
        need(self.seed >= 0, f"seed={self.seed} out of range (allowed: >= 0)")


def describe(cfg: DiffusionConfig) -> str:
    """One line for ``matscale validate``."""
    temps = ", ".join(f"{t:g}" for t in cfg.temperatures_K)
    comp = "".join(f"{el}{c:.2g}" for el, c in zip(cfg.elements, cfg.composition))
    return (f"tracer diffusion of {comp} ({2 * cfg.cells**3} sites, {cfg.n_vacancies} vacancies, barrier "
            f"{cfg.barrier}) at T = {temps} K, {cfg.n_events} hops in {cfg.n_blocks} blocks per T")


def _barrier_model(cfg: DiffusionConfig, source: Path) -> tuple[Any, Any]:
    """(barrier model, energy model or None for the constant barrier)."""
    from matscale.systems.alloy.diffusion import ConstantBarrierModel

    if cfg.barrier == "constant":
        return ConstantBarrierModel(cfg.constant_barrier_eV), None
    from matscale.calculators.lattice_eam import LatticeEAM

    path = Path(cfg.potential)
    if not path.is_absolute() and (source / path).is_file():
        path = source / path
    eam = LatticeEAM.from_setfl(path)
    if cfg.barrier == "kra":
        from matscale.systems.alloy.kra import KRABarrierModel

        return KRABarrierModel(eam, dict(zip(cfg.elements, cfg.kra_e0))), eam
    from matscale.systems.alloy.nnk import ConsistentNNKBarrierModel

    return ConsistentNNKBarrierModel(eam), eam


def _seed_for(cfg: DiffusionConfig, temperature_K: float) -> list[int]:
    """Seed of one temperature: independent of the list's order (resumes and reorderings agree)."""
    return [cfg.seed, int(round(temperature_K * 1000))]


def measure_temperature(cfg: DiffusionConfig, temperature_K: float, source: Path) -> dict[str, Any]:
    """Equilibrate (swap MC), warm up and measure one temperature; the result's ``as_dict``."""
    from matscale.systems.alloy.diffusion import tracer_diffusion
    from matscale.systems.alloy.lattice import random_solid_solution
    from matscale.systems.alloy.swap import SwapMCEnsemble

    rng = np.random.default_rng(_seed_for(cfg, temperature_K))
    lattice = random_solid_solution(dict(zip(cfg.elements, cfg.composition)), cfg.cells, cfg.lattice_constant,
                                    cfg.n_vacancies, rng, tuple(cfg.elements))
    barrier, energy = _barrier_model(cfg, source)
    acceptance = None
    if energy is not None and cfg.swap_sweeps > 0:
        n_atoms = int(np.sum(lattice.species > 0))
        mc = SwapMCEnsemble(lattice, energy, temperature_K, rng, neighbor_shell=None)
        mc.run(cfg.swap_sweeps * n_atoms)
        acceptance = mc.acceptance_ratio
    result = tracer_diffusion(lattice, barrier, temperature_K, n_events=cfg.n_events, rng=rng,
                              n_blocks=cfg.n_blocks, warmup_events=cfg.warmup_events, nu0=cfg.nu0)
    record = result.as_dict()
    record["swap_acceptance"] = acceptance
    return record


def _stage_name(temperature_K: float) -> str:
    return f"T{temperature_K:g}K"


def run(cfg: DiffusionConfig, runner: StageRunner, source: Path) -> dict[str, Any]:
    """Run (or resume) every temperature as a stage ``tracer``, then fit and write the report."""
    cfg.check()
    source = Path(source)
    section = json.loads(json.dumps(asdict(cfg)))  # the record as it reads back from stage.json
    shared = {k: v for k, v in section.items() if k != "temperatures_K"}
    results = []
    for t in cfg.temperatures_K:
        folder = runner.out / "tracer" / _stage_name(t)

        def compute(tmp: Path, t: float = t) -> None:
            json_dump(measure_temperature(cfg, t, source), tmp / "result.json")

        runner.run("tracer", folder, {"diffusion": {**shared, "temperature_K": t}}, {}, compute)
        results.append(read_json(folder / "result.json"))
    return write_report(cfg, results, runner.out)


def _fits(cfg: DiffusionConfig, results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from matscale.systems.alloy.diffusion import arrhenius_fit

    fits: dict[str, dict[str, Any]] = {}
    for el in cfg.elements:
        rows = [(r["temperature_K"], r["D"].get(el), r["D_err"].get(el)) for r in results]
        rows = [row for row in rows if row[1] and row[2] and row[1] > 0 and row[2] > 0]
        if len(rows) >= 2:
            t, d, e = (np.array(x, dtype=float) for x in zip(*rows))
            fits[el] = arrhenius_fit(t, d, e).as_dict()
    return fits


def _plot(cfg: DiffusionConfig, results: list[dict[str, Any]], fits: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, el in enumerate(cfg.elements):
        colour = f"C{i}"
        t = np.array([r["temperature_K"] for r in results if el in r["D"]])
        d = np.array([r["D"][el] for r in results if el in r["D"]])
        e = np.array([r["D_err"][el] for r in results if el in r["D"]])
        ax.errorbar(1e4 / t, d, yerr=e, fmt="o", color=colour, capsize=2)
        if el in fits:
            f = fits[el]
            grid = np.linspace(t.min(), t.max(), 50)
            line = f["prefactor_m2_s"] * np.exp(-f["activation_energy_eV"] / (8.617333e-5 * grid))
            ax.plot(1e4 / grid, line, "-", color=colour,
                    label=f"{el}: E_a = {f['activation_energy_eV']:.2f} ± {f['activation_energy_err_eV']:.2f} eV")
    ax.set_yscale("log")
    ax.set_xlabel("10⁴ / T  (K⁻¹)")
    ax.set_ylabel("tracer D  (m²/s)")
    cv = results[0]["vacancy_fraction"]
    ax.set_title(f"{cfg.barrier}, c_v = {cv:.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: DiffusionConfig, results: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """``report.md``, ``arrhenius.png`` and ``metrics.json`` in ``out``; returns the summary."""
    fits = _fits(cfg, results)
    _plot(cfg, results, fits, out / "arrhenius.png")
    cv = results[0]["vacancy_fraction"]
    lines = [
        "# Tracer diffusion from vacancy kMC",
        "",
        describe(cfg) + ".",
        "",
        f"Barrier model `{cfg.barrier}`; vacancy site fraction c_v = {cv:.4g} (fixed by the box). D ∝ c_v: "
        "multiply D and D_0 by c_v^eq(T) / c_v for an equilibrium vacancy fraction; the fitted E_a is then the "
        "migration part only (add the vacancy formation energy E_f for the tracer activation energy Q).",
        "Standard errors: spread of the independent blocks (ratio estimator); Arrhenius fit: weighted least "
        "squares on ln D with σ(ln D) = D_err / D.",
        "",
        "## Arrhenius fits, D = D_0 exp(−E_a / k_B T)",
        "",
        "| element | E_a (eV) | D_0 (m²/s) | χ²/dof | f (mean over T) |",
        "|---|---|---|---|---|",
    ]
    for el in cfg.elements:
        fs = [r["correlation_factor"].get(el) for r in results]
        fs = [f for f in fs if f is not None and math.isfinite(f)]
        f_mean = f"{np.mean(fs):.3f}" if fs else "–"
        if el in fits:
            f = fits[el]
            chi = f"{f['chi2'] / f['dof']:.2f}" if f["dof"] > 0 else "–"
            lines.append(f"| {el} | {f['activation_energy_eV']:.3f} ± {f['activation_energy_err_eV']:.3f} | "
                         f"{f['prefactor_m2_s']:.3g} ± {f['prefactor_err_m2_s']:.2g} | {chi} | {f_mean} |")
        else:
            lines.append(f"| {el} | – (fewer than 2 temperatures with hops) | – | – | {f_mean} |")
    lines += ["", "## Per temperature", "",
              "| T (K) | element | D (m²/s) | f | hops | simulated time (s) |", "|---|---|---|---|---|---|"]
    for r in results:
        for el in r["elements"]:
            lines.append(f"| {r['temperature_K']:g} | {el} | {r['D'][el]:.3e} ± {r['D_err'][el]:.1e} | "
                         f"{r['correlation_factor'][el]:.3f} ± {r['correlation_factor_err'][el]:.3f} | "
                         f"{r['hops'][el]} | {r['time_s']:.3e} |")
    lines += ["", "![Arrhenius plot](arrhenius.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    summary = {
        "workflow": "diffusion",
        "barrier": cfg.barrier,
        "vacancy_fraction": cv,
        "activation_energy_eV": {el: f["activation_energy_eV"] for el, f in fits.items()},
        "activation_energy_err_eV": {el: f["activation_energy_err_eV"] for el, f in fits.items()},
        "prefactor_m2_s": {el: f["prefactor_m2_s"] for el, f in fits.items()},
    }
    json_dump({**summary, "fits": fits,
               "per_temperature": [{k: r[k] for k in ("temperature_K", "D", "D_err", "correlation_factor",
                                                       "correlation_factor_err", "hops", "time_s",
                                                       "D_vacancy", "D_vacancy_err")} for r in results],
               "units": {"D": "m^2/s", "activation_energy": "eV", "temperature": "K", "time": "s"}},
              out / "metrics.json")
    return summary


STUDY = Study(name="diffusion", config=DiffusionConfig, run=run, describe=describe, stages=("tracer",))
