"""The ``ordering`` study: the order–disorder transition of a BCC alloy by a swap-MC temperature scan.

``matscale run inputs/ordering.toml --out OUT`` anneals one equimolar crystal through the
temperature grid ``[ordering] temperatures_K`` with canonical swap Monte Carlo on the on-lattice
EAM (:func:`matscale.systems.alloy.ordering.temperature_scan`), then writes

- ``OUT/scan/scan.npz`` (stage ``scan``, resumable and checksummed): every measured array;
- ``OUT/heat_capacity.png``, ``OUT/sro.png``, ``OUT/order.png``: c_v(T), Warren–Cowley α(T) of
  shells 1 and 2, B2 and B32 order parameters (T), all with error bars;
- ``OUT/report.md`` (table per temperature, the transition temperature ± error and how they were
  obtained) and ``OUT/metrics.json``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matscale.config import ConfigError
from matscale.io import json_dump
from matscale.pipeline.studies import Study

_ANY_PAIR = 0


@dataclass(frozen=True)
class OrderingConfig:
    """The ``[ordering]`` section.

    ``cells``: cubic BCC cells per side (2·cells³ sites; even, for the B32 sublattices);
    ``elements`` and ``composition`` (fractions in element order; empty = equimolar);
    ``n_vacancies``: empty sites (they never move in swap MC); ``lattice_constant`` (Å);
    ``potential``: setfl file (a path, or a name shipped in ``potentials/``);
    ``temperatures_K``: the grid (visited from the highest down, each from the previous state);
    ``n_sweeps`` recorded and ``n_equilibration_sweeps`` unrecorded sweeps per temperature
    (one sweep = one swap trial per atom), a sample every ``sample_interval`` sweeps;
    ``neighbor_shell``: swap partners (0 = any two atoms, 1/2/3 = shell neighbours);
    ``fit_points``: c_v points of the parabola around its maximum; ``n_bootstrap``: parametric
    bootstrap draws for the transition temperature's error; ``n_replicas``: independent anneals
    (own random start and stream each), whose scatter enters the errors; ``seed``.
    """

    cells: int = 10
    elements: tuple[str, ...] = ("Nb", "Mo", "Ta")
    composition: tuple[float, ...] = ()
    n_vacancies: int = 0
    lattice_constant: float = 3.24
    potential: str = "NbMoTa_Zhou04.eam.alloy"
    temperatures_K: tuple[float, ...] = (1200.0, 900.0, 700.0, 600.0, 550.0, 500.0, 450.0, 400.0, 300.0)
    n_sweeps: int = 500
    n_equilibration_sweeps: int = 100
    sample_interval: int = 1
    neighbor_shell: int = _ANY_PAIR
    fit_points: int = 5
    n_bootstrap: int = 2000
    n_replicas: int = 2
    seed: int = 0

    def check(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        require(self.cells >= 2 and self.cells % 2 == 0,
                f"ordering.cells={self.cells} out of range (allowed: even and >= 2)")
        require(2 * self.cells ** 3 <= 2 ** 21, f"ordering.cells={self.cells} out of range (allowed: <= 128)")
        require(len(set(self.elements)) == len(self.elements) >= 2,
                f"ordering.elements={list(self.elements)} must list at least 2 distinct elements")
        if self.composition:
            require(len(self.composition) == len(self.elements),
                    f"ordering.composition has {len(self.composition)} fractions (allowed: one per element)")
            require(all(x > 0 for x in self.composition) and abs(sum(self.composition) - 1) < 1e-6,
                    f"ordering.composition={list(self.composition)} out of range (allowed: fractions > 0 summing to 1)")
        require(0 <= self.n_vacancies < self.cells ** 3,
                f"ordering.n_vacancies={self.n_vacancies} out of range (allowed: 0 <= n < half the sites)")
        require(math.isfinite(self.lattice_constant) and self.lattice_constant > 0,
                f"ordering.lattice_constant={self.lattice_constant} out of range (allowed: > 0 Å)")
        require(bool(self.potential), "ordering.potential is empty (allowed: a setfl file name or path)")
        require(len(self.temperatures_K) >= 1, "ordering.temperatures_K must list at least one temperature")
        for i, T in enumerate(self.temperatures_K):
            require(math.isfinite(T) and T > 0, f"ordering.temperatures_K[{i}]={T} out of range (allowed: > 0 K)")
        require(len(set(self.temperatures_K)) == len(self.temperatures_K),
                f"ordering.temperatures_K={list(self.temperatures_K)} has duplicates (allowed: distinct)")
        require(self.sample_interval >= 1, f"ordering.sample_interval={self.sample_interval} out of range (allowed: >= 1)")
        require(self.n_sweeps // max(self.sample_interval, 1) >= 8,
                f"ordering.n_sweeps={self.n_sweeps} out of range (allowed: >= 8 * sample_interval)")
        require(self.n_equilibration_sweeps >= 0,
                f"ordering.n_equilibration_sweeps={self.n_equilibration_sweeps} out of range (allowed: >= 0)")
        require(self.neighbor_shell in (0, 1, 2, 3),
                f"ordering.neighbor_shell={self.neighbor_shell} out of range (allowed: 0 = any pair, 1, 2, 3)")
        require(self.fit_points >= 3, f"ordering.fit_points={self.fit_points} out of range (allowed: >= 3)")
        require(self.n_bootstrap >= 2, f"ordering.n_bootstrap={self.n_bootstrap} out of range (allowed: >= 2)")
        require(1 <= self.n_replicas <= 64, f"ordering.n_replicas={self.n_replicas} out of range (allowed: 1..64)")
        require(self.seed >= 0, f"ordering.seed={self.seed} out of range (allowed: >= 0)")


def describe(cfg: OrderingConfig) -> str:
    temps = sorted(cfg.temperatures_K)
    return (f"ordering: swap MC on {2 * cfg.cells ** 3} sites ({cfg.cells}³ BCC cells), {'-'.join(cfg.elements)}, "
            f"{cfg.potential}, {len(temps)} temperatures {temps[0]:g}-{temps[-1]:g} K, "
            f"{cfg.n_sweeps} + {cfg.n_equilibration_sweeps} sweeps each, {cfg.n_replicas} replica(s)")


def _lattice(cfg: OrderingConfig, replica: int) -> Any:
    from matscale.systems.alloy.lattice import random_solid_solution

    fractions = cfg.composition or tuple(1.0 / len(cfg.elements) for _ in cfg.elements)
    return random_solid_solution(dict(zip(cfg.elements, fractions)), cfg.cells, cfg.lattice_constant,
                                 n_vacancies=cfg.n_vacancies, rng=np.random.default_rng([cfg.seed, 0, replica]),
                                 elements=tuple(cfg.elements))


def _energy_model(cfg: OrderingConfig, source: Path) -> Any:
    from matscale.calculators.lattice_eam import LatticeEAM

    path = Path(cfg.potential)
    if not path.is_absolute() and (Path(source) / path).is_file():
        path = Path(source) / path
    try:
        return LatticeEAM.from_setfl(path if path.is_file() else cfg.potential)
    except FileNotFoundError as exc:
        raise ConfigError(f"ordering.potential: {exc}") from None


def _scan(cfg: OrderingConfig, source: Path, progress: bool, replica: int) -> Any:
    from matscale.systems.alloy.ordering import temperature_scan

    lattice = _lattice(cfg, replica)
    model = _energy_model(cfg, source)
    try:
        model._geometry(lattice)  # unknown elements are a one-line error before any sampling
    except ValueError as exc:
        raise ConfigError(f"ordering.elements: {exc}") from None
    say = (lambda line: print(f"[matscale] ordering replica {replica}: {line}", flush=True)) if progress else None
    return temperature_scan(lattice, model, cfg.temperatures_K, n_sweeps=cfg.n_sweeps,
                            rng=np.random.default_rng([cfg.seed, 1, replica]),
                            n_equilibration_sweeps=cfg.n_equilibration_sweeps,
                            sample_interval=cfg.sample_interval,
                            neighbor_shell=cfg.neighbor_shell or None, progress=say)


def run(cfg: OrderingConfig, runner: Any, source: Path) -> dict[str, Any]:
    """Run (or resume) one scan stage per replica, then estimate T_c and write plots and report."""
    from matscale.systems.alloy.ordering import TemperatureScan

    out = Path(runner.out)
    section = json.loads(json.dumps(asdict(cfg)))  # as stored: tuples become lists
    del section["n_replicas"]  # replica k does not depend on how many others there are
    scans = []
    for k in range(cfg.n_replicas):
        def compute(folder: Path, k: int = k) -> None:
            _scan(cfg, Path(source), bool(getattr(runner, "progress", False)), k).save(folder / "scan.npz")

        runner.run("scan", out / f"scan_{k}", {"ordering": section, "replica": k}, {}, compute)
        scans.append(TemperatureScan.load(out / f"scan_{k}" / "scan.npz"))
    pooled = pool_replicas(scans)
    estimates = _estimates(pooled, scans, cfg)
    figures = _plots(pooled, out)
    metrics = _metrics(pooled, scans, cfg, estimates)
    json_dump(metrics, out / "metrics.json")
    (out / "report.md").write_text(_report(pooled, cfg, estimates, figures), encoding="utf-8")
    return {"workflow": "ordering", "transition_temperature_K": metrics["transition_temperature_K"],
            "transition_temperature_err_K": metrics["transition_temperature_err_K"],
            "n_temperatures": int(pooled.temperatures_K.size), "n_replicas": cfg.n_replicas}


def pool_replicas(scans: list[Any]) -> Any:
    """The replica mean of every measured quantity. Its error is the larger of the propagated
    statistical error sqrt(Σ σ_k²)/n and the scatter between replicas std/sqrt(n) (n >= 2)."""
    from dataclasses import replace

    n = len(scans)
    first = scans[0]
    fields = {}
    for name, err_name in (("energy_eV_per_atom", "energy_err"), ("heat_capacity_kB", "heat_capacity_err"),
                           ("sro", "sro_err"), ("b2", "b2_err"), ("b32", "b32_err")):
        values = np.stack([getattr(s, name) for s in scans])
        errors = np.stack([getattr(s, err_name) for s in scans])
        err = np.sqrt((errors ** 2).sum(axis=0)) / n
        if n > 1:
            err = np.maximum(err, values.std(axis=0, ddof=1) / math.sqrt(n))
        fields[name], fields[err_name] = values.mean(axis=0), err
    for name in ("b2_per_element", "b32_per_element", "tau_energy", "acceptance"):
        fields[name] = np.mean([getattr(s, name) for s in scans], axis=0)
    fields["n_samples"] = np.sum([s.n_samples for s in scans], axis=0)
    fields["n_discarded"] = np.sum([s.n_discarded for s in scans], axis=0)
    fields["seconds"] = np.sum([s.seconds for s in scans], axis=0)
    return replace(first, **fields, metadata={**first.metadata, "n_replicas": n})


def _estimates(pooled: Any, scans: list[Any], cfg: OrderingConfig) -> dict[str, Any]:
    """Per method: the combined estimate over replicas (a TransitionTemperature, or the reason it
    failed) and the per-replica results. Combined: the mean of the replicas' estimates; error the
    larger of sqrt(Σ σ_k²)/n and their scatter std/sqrt(n) (n >= 2 successful replicas), else the
    estimate from the replica-mean curve."""
    from matscale.systems.alloy.ordering import TransitionTemperature, transition_temperature

    def one(scan: Any, method: str) -> Any:
        try:
            return transition_temperature(scan, method=method, n_points=cfg.fit_points,
                                          n_bootstrap=cfg.n_bootstrap, rng=cfg.seed)
        except ValueError as exc:
            return str(exc)

    found: dict[str, Any] = {}
    for method in ("heat_capacity", "b2", "b32"):
        per_replica = [one(scan, method) for scan in scans]
        ok = [e for e in per_replica if not isinstance(e, str)]
        if len(ok) >= 2:
            t = np.array([e.temperature_K for e in ok])
            stat = math.sqrt(sum(e.error_K ** 2 for e in ok)) / len(ok)
            error = max(stat, float(t.std(ddof=1)) / math.sqrt(len(ok)))
            combined: Any = TransitionTemperature(float(t.mean()), error, method, ok[0].fit_temperatures_K,
                                                  float(np.mean([e.peak_value for e in ok])),
                                                  float(np.mean([e.valid_fraction for e in ok])))
        else:
            combined = one(pooled, method)
        found[method] = {"combined": combined, "replicas": per_replica, "n_ok": len(ok)}
    return found


def _metrics(pooled: Any, scans: list[Any], cfg: OrderingConfig, estimates: dict[str, Any]) -> dict[str, Any]:
    main = estimates["heat_capacity"]["combined"]
    as_json = (lambda e: e if isinstance(e, str) else e.to_dict())  # noqa: E731
    return {
        "workflow": "ordering",
        "transition_temperature_K": None if isinstance(main, str) else main.temperature_K,
        "transition_temperature_err_K": None if isinstance(main, str) else main.error_K,
        "estimates": {m: {"combined": as_json(e["combined"]), "replicas": [as_json(r) for r in e["replicas"]]}
                      for m, e in estimates.items()},
        "n_sites": 2 * cfg.cells ** 3,
        "n_replicas": len(scans),
        "table": pooled.table(),
        "metadata": pooled.metadata,
        "seconds": float(np.sum(pooled.seconds)),
    }


# ----------------------------------------------------------------------------------------------
# Pictures and report
# ----------------------------------------------------------------------------------------------
def _plots(scan: Any, out: Path) -> list[str]:
    from matscale.plots import _pyplot, _save

    plt = _pyplot()
    t = scan.temperatures_K
    names = []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(t, scan.heat_capacity_kB, scan.heat_capacity_err, marker="o", ms=3, capsize=2)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("c_v (k_B per atom), from fluctuations")
    names.append(_save(plt, fig, out / "heat_capacity.png").name)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for k, ax in enumerate(axes):
        for p, label in enumerate(scan.pair_labels):
            ax.errorbar(t, scan.sro[:, k, p], scan.sro_err[:, k, p], marker="o", ms=3, capsize=2, label=label)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("T (K)")
        ax.set_title(f"Warren–Cowley α, shell {k + 1}")
    axes[0].legend(fontsize=7, ncol=2)
    names.append(_save(plt, fig, out / "sro.png").name)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(t, scan.b2, scan.b2_err, marker="o", ms=3, capsize=2, label="B2")
    if np.all(np.isfinite(scan.b32)):
        ax.errorbar(t, scan.b32, scan.b32_err, marker="s", ms=3, capsize=2, label="B32")
    ax.set_xlabel("T (K)")
    ax.set_ylabel("order parameter (max over elements)")
    ax.set_ylim(bottom=0.0)
    ax.legend()
    names.append(_save(plt, fig, out / "order.png").name)
    return names


def _fmt(value: float, err: float, digits: int = 3) -> str:
    return f"{value:.{digits}f} ± {err:.{digits}f}" if math.isfinite(value) else "–"


def _estimate_line(method: str, entry: dict[str, Any]) -> str:
    what = {"heat_capacity": "c_v maximum", "b2": "B2 inflection", "b32": "B32 inflection"}[method]
    estimate = entry["combined"]
    if isinstance(estimate, str):
        return f"- {what}: not determined ({estimate})"
    if method == "heat_capacity":
        how = f"parabola through {len(estimate.fit_temperatures_K)} c_v points around the maximum"
    else:
        how = "tanh fit over the grid"
    replicas = "; ".join(f"{r.temperature_K:.0f} ± {r.error_K:.0f} K" if not isinstance(r, str) else "not determined"
                         for r in entry["replicas"])
    return (f"- {what}: **{estimate.temperature_K:.0f} ± {estimate.error_K:.0f} K** ({how}; replicas: "
            f"{replicas})")


def _report(scan: Any, cfg: OrderingConfig, estimates: dict[str, Any], figures: list[str]) -> str:
    md = scan.metadata
    unlike = [p for p, label in enumerate(scan.pair_labels)
              if label[:2] != label[2:]]
    lines = [
        f"# Order–disorder transition: swap Monte Carlo, {'-'.join(scan.elements)}, {cfg.potential}",
        "",
        f"{md['n_atoms']} atoms ({cfg.cells}³ BCC cells, {md['n_vacancies']} vacancies), composition "
        + ", ".join(f"{el} {x:.3f}" for el, x in md["composition"].items())
        + f", a = {cfg.lattice_constant} Å, unrelaxed lattice. Canonical Metropolis swaps "
        f"({'any two atoms' if not cfg.neighbor_shell else f'shell-{cfg.neighbor_shell} neighbours'}), "
        f"annealed from {max(cfg.temperatures_K):g} K down, each temperature starting from the previous state: "
        f"{cfg.n_equilibration_sweeps} unrecorded + {cfg.n_sweeps} recorded sweeps, a sample every "
        f"{cfg.sample_interval} sweep(s); {cfg.n_replicas} independent replica(s) (own random start and "
        f"stream); seed {cfg.seed}; {np.sum(scan.seconds):.0f} s in all. Values below are replica means.",
        "",
        "## Transition temperature",
        "",
        *[_estimate_line(m, e) for m, e in estimates.items()],
        "",
        "The c_v estimate is the headline value. Per replica: vertex of an error-weighted parabola "
        "through the c_v points around the maximum; its error is half the central 68 % interval of the "
        "vertex over a parametric bootstrap (every point redrawn from a normal law with its own error), "
        "widened by sqrt(χ²/dof) of the fit when that exceeds 1. Combined: the mean over replicas, "
        "with the larger of the propagated error and the replica scatter std/sqrt(n). "
        "It is the pseudo-transition temperature of this box size (finite-size shifts are not removed).",
        "",
        "## Methods",
        "",
        "- c_v = (⟨E²⟩ − ⟨E⟩²)/(N k_B² T²) per atom, from the total-energy fluctuations.",
        "- Errors: standard errors of the mean with the integrated autocorrelation time τ_int "
        "(Sokal's self-consistent window, c = 5): σ² = var·2τ_int/n; the c_v error is that of the mean "
        "of (E − Ē)². Replica means carry the larger of the propagated error and the replica scatter "
        "std/sqrt(n).",
        "- Equilibration: unrecorded sweeps, then the MSER rule (White 1997) cuts the leading "
        "samples that minimise the standard error of the remaining energy mean (at most half).",
        "- Order parameters: η_a = |x_a(1) − x_a(2)| / (2 min(c_a, 1 − c_a)), the largest over elements; "
        "B2 splits corners from body centres, B32 (NaTl) pairs first-neighbour FCC sublattices "
        "(both domain orientations, the larger kept). Random solutions give O(N^-1/2).",
        "",
        "## Per temperature",
        "",
        "| T (K) | e (eV/atom) | c_v (k_B) | τ_E (samples) | cut | B2 | B32 | "
        + " | ".join(f"α1 {scan.pair_labels[p]}" for p in unlike) + " | "
        + " | ".join(f"α2 {scan.pair_labels[p]}" for p in unlike) + " |",
        "|" + "---|" * (7 + 2 * len(unlike)),
    ]
    for i, T in enumerate(scan.temperatures_K):
        cells = [f"{T:g}", f"{scan.energy_eV_per_atom[i]:.5f} ± {scan.energy_err[i]:.5f}",
                 _fmt(scan.heat_capacity_kB[i], scan.heat_capacity_err[i]), f"{scan.tau_energy[i]:.1f}",
                 f"{scan.n_discarded[i]}/{scan.n_discarded[i] + scan.n_samples[i]}",
                 _fmt(scan.b2[i], scan.b2_err[i]), _fmt(scan.b32[i], scan.b32_err[i])]
        cells += [_fmt(scan.sro[i, k, p], scan.sro_err[i, k, p]) for k in range(2) for p in unlike]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[f"![{name}]({name})" for name in figures], ""]
    return "\n".join(lines)


STUDY = Study(name="ordering", config=OrderingConfig, run=run, describe=describe, stages=("scan",))
