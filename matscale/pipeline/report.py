"""The run summary: ``OUT/metrics.json``, the summary plots and ``OUT/report.md``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from matscale import __version__
from matscale.config import RunConfig
from matscale.io import json_dump
from matscale.pipeline.stages import methods


def write_summary(cfg: RunConfig, system: Any, out: Path) -> dict[str, Any]:
    """OUT/metrics.json (all p and methods), the test-error-vs-n_s plot and OUT/report.md."""
    from matscale.plots import plot_test_error_vs_ns

    summary: dict[str, Any] = {"system": cfg.section("system"), "matscale_version": __version__,
                               "results": {}}
    for p in cfg.patch_sides:
        summary["results"][f"p{p}"] = json.loads((out / f"p{p}" / "evaluate" / "metrics.json").read_text())
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    if len(cfg.patch_sides) > 1:
        plot_test_error_vs_ns(summary["results"], methods(cfg), plots_dir / "test_error_vs_ns.png")
    for p in cfg.patch_sides:
        for name in ("mean_std_vs_time", "upsampling_diagnostics"):
            src = out / f"p{p}" / "plots" / f"{name}.png"
            if src.is_file():
                shutil.copyfile(src, plots_dir / f"{name}_p{p}.png")
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
    lines += ["Test error = the metric of arXiv 2511.12842 (mean over time and conditions of the "
              f"squared errors of the mean and std curves) on the observables ({', '.join(names)}); "
              "rel. errors are L2 over the time grid and all conditions.", ""]
    header = ["n_s", "K", "method", "test err (paper paths)", "test err (all paths)"]
    for n in names:
        header += [f"rel err mean {n}", f"rel err std {n}", f"stat. std {n} pred/direct"]
    header += ["MMD² stationary [95% CI]"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for res in summary["results"].values():
        for method in methods(cfg):
            r = res[method]
            row = [f"{res['n_s']}", str(res["K"]), method,
                   f"{r['test_error_paper']:.3g} ({r['test_error_paper_paths']})",
                   f"{r['test_error_all']:.3g} ({r['n_paths_pred']})"]
            for n in names:
                st = r["stationary"]
                row += [f"{r['moments'][n]['rel_mean_error']:.3g}", f"{r['moments'][n]['rel_std_error']:.3g}",
                        f"{st['predicted'][n]['std']:.3g} / {st['direct'][n]['std']:.3g}"]
            mm = r["mmd_stationary"]
            row.append(f"{mm['mmd2']:.2g} [{mm['ci_low']:.2g}, {mm['ci_high']:.2g}]")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Plots", ""]
    for png in sorted((out / "plots").glob("*.png")):
        lines.append(f"![{png.stem}](plots/{png.name})")
    lines += ["", "Full numbers: `metrics.json`; per-p stages under `p{p}/`; the configuration in "
              "`config.toml`.", ""]
    return "\n".join(lines)
