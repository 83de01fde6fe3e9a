"""The run summary: ``OUT/metrics.json``, the summary plots and ``OUT/report.md``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from matscale import __version__
from matscale.config import RunConfig
from matscale.io import json_dump, read_json
from matscale.pipeline.stages import methods


def write_summary(cfg: RunConfig, system: Any, out: Path) -> dict[str, Any]:
    """OUT/metrics.json (all p and methods), the test-error-vs-n_s plot and OUT/report.md."""
    from matscale.plots import plot_test_error_vs_ns

    summary: dict[str, Any] = {"system": cfg.section("system"), "matscale_version": __version__,
                               "results": {}, "cost_s": {}}
    for p in cfg.patch_sides:
        summary["results"][f"p{p}"] = read_json(out / f"p{p}" / "evaluate" / "metrics.json")
        summary["cost_s"][f"p{p}"] = stage_seconds(out, p)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    if len(cfg.patch_sides) > 1:
        plot_test_error_vs_ns(summary["results"], methods(cfg), plots_dir / "test_error_vs_ns.png")
    for p in cfg.patch_sides:
        for src in sorted((out / f"p{p}" / "plots").glob("*.png")):
            shutil.copyfile(src, plots_dir / f"{src.stem}_p{p}.png")
    tmp = out / ".metrics.json.partial"
    json_dump(summary, tmp)
    os.replace(tmp, out / "metrics.json")
    (out / "report.md").write_text(render_report(cfg, system, summary, out), encoding="utf-8")
    return summary


def render_report(cfg: RunConfig, system: Any, summary: dict[str, Any], out: Path) -> str:
    """Markdown report: the metrics table per (p, method) and links to the plots."""
    names = tuple(system.observable_names)
    ref = cfg.reference
    values = ", ".join(f"{v:g}" for v in ref.condition_values)
    lines = [f"# matscale run: {cfg.name or cfg.system.kind}", "",
             f"System: {cfg.system.describe()}. Time unit: {system.time_unit}.", "",
             f"Reference: {ref.n_runs} direct runs of the large system per condition "
             f"{ref.condition_label} in [{values}], grid dt = {ref.grid_dt:g}, "
             f"duration = {ref.duration:g}.", ""]
    clock = getattr(system, "clock_note", None)
    if callable(clock):
        lines += [clock(), ""]
    lines += ["Test error = the metric of arXiv 2511.12842 on the observables "
              f"({', '.join(names)}): Σ_t,k (mean_pred − mean_direct)² / Σ_t,k mean_direct², "
              "averaged over conditions. *floor* = its expected value for a model that reproduces "
              "the direct law exactly, from the finite numbers of paths alone "
              "(Σ σ²(1/n_pred + 1/n_direct) / Σ mean²): a test error near the floor is as good as "
              "this reference can resolve; several times the floor is a real model error. "
              "Rel. errors are L2 over the time grid and all conditions. *stat. std* and *MMD² stationary* "
              "pool the late half of the grid over all conditions (per condition: the distribution tables "
              "below); every CI resamples whole paths, never single time points.", ""]
    published = getattr(system, "published_results", None)
    if callable(published) and published():
        lines += [published(), ""]
    header = ["n_s", "K", "method", "test err (paper paths)", "test err (all paths)"]
    for n in names:
        header += [f"rel err mean {n}", f"rel err std {n}", f"stat. std {n} pred/direct"]
    header += ["MMD² stationary [95% CI]"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for res in summary["results"].values():
        for method in methods(cfg):
            r = res[method]
            row = [f"{res['n_s']}", str(res["K"]), method,
                   f"{r['test_error_paper']:.3g} ({r['test_error_paper_paths']}; floor "
                   f"{r.get('test_error_paper_floor', float('nan')):.2g})",
                   f"{r['test_error_all']:.3g} ({r['n_paths_pred']}; floor "
                   f"{r.get('test_error_all_floor', float('nan')):.2g})"]
            for n in names:
                st = r["stationary"]
                row += [f"{r['moments'][n]['rel_mean_error']:.3g}", f"{r['moments'][n]['rel_std_error']:.3g}",
                        f"{st['predicted'][n]['std']:.3g} / {st['direct'][n]['std']:.3g}"]
            mm = r["mmd_stationary"]
            row.append(f"{mm['mmd2']:.2g} [{mm['ci_low']:.2g}, {mm['ci_high']:.2g}]")
            lines.append("| " + " | ".join(row) + " |")
    for key, res in summary["results"].items():
        lines += per_condition_section(res, names, ref.condition_label)
        lines += distribution_section(res, names, ref.condition_label, methods(cfg))
        lines += equilibrium_section(res, names)
        lines += size_section(res, names, ref.condition_label)
        lines += diagnostics_section(out / key / "plots" / "upsampling_diagnostics.json", names, res)
        lines += cost_section(summary["cost_s"].get(key, {}), res, ref)
    lines += ["", "## Plots", ""]
    for png in sorted((out / "plots").glob("*.png")):
        lines.append(f"![{png.stem}](plots/{png.name})")
    lines += ["", "Full numbers: `metrics.json`; per-p stages under `p{p}/`; the configuration in "
              "`config.toml`.", ""]
    return "\n".join(lines)


_DATA_STAGES = ("small_sim", "upsample", "partial", "closure", "encode")


def stage_seconds(out: Path, p: int) -> dict[str, float]:
    """Wall seconds of every finished stage of patch side ``p`` and of the reference."""
    seconds = {}
    for stage, folder in [(s, out / f"p{p}" / s) for s in (*_DATA_STAGES, "fit")] + [("reference", out / "reference")]:
        record = folder / "stage.json"
        if record.is_file():
            seconds[stage] = float(read_json(record).get("seconds", 0.0))
    return seconds


def per_condition_section(res: dict[str, Any], names: tuple[str, ...], label: str) -> list[str]:
    """Per reference condition: the largest error of the mean curve against the direct standard
    error, and the ratio of predicted to direct std, for every observable ("ours")."""
    rows = res.get("ours", {}).get("per_condition")
    if not rows:
        return []
    lines = ["", f"### p{res['p']}: mean and std per condition (ours)", "",
             "max |Δmean| over time (direct SEM) and std ratio predicted/direct, per observable.", "",
             "| " + label + " | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for value, row in zip(res["conditions"], rows):
        cells = [f"{row[n]['max_abs_mean_error']:.3g} ({row[n]['direct_sem']:.2g}); ×{row[n]['std_ratio']:.2f}"
                 for n in names]
        lines.append(f"| {value:g} | " + " | ".join(cells) + " |")
    return lines


def _with_ci(value: float, low: float, high: float) -> str:
    return f"{value:.2g} [{low:.2g}, {high:.2g}]"


def distribution_section(res: dict[str, Any], names: tuple[str, ...], label: str,
                         method_names: tuple[str, ...]) -> list[str]:
    """Per condition and method: MMD² at the last grid time, over the late half and over time
    (MMD²(t) averaged over t), and the late-time std within the condition (predicted / direct),
    each with its CI from a bootstrap over whole paths (see :func:`matscale.evaluate.compare_paths`)."""
    rows = [(m, res[m]) for m in method_names if isinstance(res.get(m), dict) and "mmd_over_time" in res[m]]
    if not rows:
        return []
    pct = f"{100 * rows[0][1].get('ci', {}).get('level', 0.95):g} %"
    header = [label, "method", f"MMD² final time [{pct} CI]", f"MMD² stationary [{pct} CI]",
              f"MMD² over time (mean over t) [{pct} CI]"]
    header += [f"stat. std {n} pred / direct [{pct} CI]" for n in names]
    lines = ["", f"### p{res['p']}: distributions per condition", "",
             "Unbiased MMD² (Gaussian kernels, observables scaled by the direct std) between the predicted "
             "and direct ensembles: at the last grid time, over the late half of the grid, and MMD²(t) "
             "averaged over the grid times after t = 0 (plot `mmd_vs_time`). Stationary std: late half, "
             "within the condition. CIs: percentile bootstrap over whole paths (all time points of a path "
             "resampled together, so the correlation along a path does not narrow them); an MMD² interval "
             "that contains 0 means no difference this reference can resolve.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    nan = float("nan")
    for c, value in enumerate(res.get("conditions") or range(len(rows[0][1]["mmd_over_time"]))):
        for method, r in rows:
            f, s = r["mmd_final_time"][c], r["mmd_stationary_per_condition"][c]
            o, st = r["mmd_over_time"][c], r["stationary_per_condition"][c]
            cells = [f"{value:g}", method, _with_ci(f["mmd2"], f["ci_low"], f["ci_high"]),
                     _with_ci(s["mmd2"], s["ci_low"], s["ci_high"]),
                     _with_ci(o["mean"], o["mean_ci_low"], o["mean_ci_high"])]
            for n in names:
                p, d = st["predicted"][n], st["direct"][n]
                cells.append(f"{p['std']:.3g} [{', '.join(f'{v:.3g}' for v in p.get('std_ci', [nan, nan]))}] / "
                             f"{d['std']:.3g} [{', '.join(f'{v:.3g}' for v in d.get('std_ci', [nan, nan]))}]")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def equilibrium_section(res: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """Late-time means vs the conditioning parameter: learned SDE against small-box direct runs."""
    eq = res.get("equilibrium")
    if not eq:
        return []
    lines = ["", f"### p{res['p']}: late-time mean vs {eq['parameter']}", "",
             f"learned SDE (large box) / direct small box of {eq['small_n_sites']} sites ± SEM.", "",
             f"| {eq['parameter']} | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for g, value in enumerate(eq["values"]):
        cells = [f"{eq['predicted'][g][k]:.3f} / {eq['small_direct'][g][k]:.3f} ± {eq['small_direct_sem'][g][k]:.3f}"
                 for k in range(len(names))]
        lines.append(f"| {value:g} | " + " | ".join(cells) + " |")
    return lines


def size_section(res: dict[str, Any], names: tuple[str, ...], label: str) -> list[str]:
    """Late-time std vs system size and the fitted exponent (n^-1/2 expected)."""
    sc = res.get("size_scaling")
    if not sc:
        return []
    lines = ["", f"### p{res['p']}: late-time std vs number of sites", "",
             f"| {label} | n | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for c, value in enumerate(res["conditions"]):
        for i, n in enumerate(sc["n_sites"]):
            cells = [f"{sc['predicted_std'][c][i][k]:.3g}" for k in range(len(names))]
            lines.append(f"| {value:g} | {n} | " + " | ".join(cells) + " |")
        lines.append(f"| {value:g} | {sc['direct_n_sites']} direct | "
                     + " | ".join(f"{x:.3g}" for x in sc["direct_std"][c]) + " |")
        lines.append(f"| {value:g} | exponent | " + " | ".join(f"{x:.3f}" for x in sc["slope"][c]) + " |")
    return lines


def cost_section(seconds: dict[str, float], res: dict[str, Any], ref: Any) -> list[str]:
    """Wall seconds of the learning route against the direct large-system runs of the reference."""
    if not seconds:
        return []
    data = sum(seconds.get(s, 0.0) for s in _DATA_STAGES)
    learn = data + seconds.get("fit", 0.0)
    n_ref = len(ref.condition_values) * ref.n_runs
    direct = seconds.get("reference", float("nan"))
    return ["", f"### p{res['p']}: cost (wall seconds, one process)", "",
            "| small-system data + upsampling + partial evolution | training | learning route total | "
            f"direct large-system runs ({n_ref} runs of duration {ref.duration:g}) |",
            "|---|---|---|---|",
            f"| {data:.1f} | {seconds.get('fit', 0.0):.1f} | {learn:.1f} | {direct:.1f} |"]


def diagnostics_section(path: Path, names: tuple[str, ...], res: dict[str, Any]) -> list[str]:
    """Late upsampled states against the direct final states: means ± SEM and stds."""
    if not path.is_file():
        return []
    diag = read_json(path)
    if not diag:
        return []
    lines = ["", f"### p{res['p']}: upsampled against direct large-system states", "",
             "States tiled from small snapshots recorded at >= 80 % of the reference duration, against "
             "the direct runs' final states (mean ± SEM, std in brackets).", "",
             "| parameter | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for value, obs in diag.items():
        cells = [f"{obs[n]['mean_upsampled']:.4f} ± {obs[n]['sem_upsampled']:.4f} [{obs[n]['std_upsampled']:.3g}] vs "
                 f"{obs[n]['mean_direct']:.4f} ± {obs[n]['sem_direct']:.4f} [{obs[n]['std_direct']:.3g}]" for n in names]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return lines
