"""Time the paper-size Ising experiment (L = 64, T = 2.5, h = 0.1, n_s = 16^2) end to end.

Usage::

    python benchmarks/run_paper_ising.py [--out runs/paper_ising] [--p 16] [--config inputs/ising.toml]

Runs ``inputs/ising.toml`` restricted to one patch side (default p = 16) into ``--out`` and
prints the wall time of every stage (from ``stages.log``), the total, and the headline metrics.
The numba kernels are compiled (and cached) by a warm-up call on a tiny system first; that
compile time is reported separately and is not part of the pipeline time. Stage times are
reported as fractions of the total (ratios are robust to the noisy shared 2-core machine).
A rerun into the same ``--out`` resumes (finished stages are skipped), so use a fresh folder
for a timing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def warm_up_kernels() -> float:
    """Compile (or load from cache) the Glauber kernels on a tiny box; returns seconds."""
    from matscale.io import sample_keys
    from matscale.systems import CurieWeiss, Ising2D

    start = time.perf_counter()
    for cls in (Ising2D, CurieWeiss):
        system = cls(8, 2.5, h=0.1)
        states = np.stack([system.random_state(np.random.default_rng(i)) for i in range(2)])
        system.evolve_batch(states, duration=1.0, seeds=sample_keys(0, np.arange(2), "warm"))
        system.evolve_batch(states, n_events=10, seeds=sample_keys(0, np.arange(2), "warm"))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "inputs" / "ising.toml"))
    parser.add_argument("--out", default=str(REPO / "runs" / "paper_ising"))
    parser.add_argument("--p", type=int, default=16, help="patch side (n_s = p^2)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from matscale.config import load_config
    from matscale.pipeline import run_pipeline

    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, small=dataclasses.replace(cfg.small, p=(args.p,)))
    out = Path(args.out)
    if (out / "metrics.json").exists():
        print(f"note: {out} already holds a finished run; stages will be skipped (use a fresh --out)")
    compile_s = warm_up_kernels()
    start = time.perf_counter()
    summary = run_pipeline(cfg, out, progress=args.progress)
    total = time.perf_counter() - start

    print(f"kernel warm-up (numba compile or cache load): {compile_s:.1f} s (not in the total)")
    print(f"{'stage':<16}{'seconds':>10}{'share':>8}")
    for line in (out / "stages.log").read_text().splitlines():
        _, label, action, secs = line.split()
        if action == "ran" and label != "summary":
            s = float(secs.rstrip("s"))
            print(f"{label:<16}{s:>10.1f}{s / total:>8.1%}")
    print(f"{'total':<16}{total:>10.1f}   (goal <= 900 s on 2 cores)")
    res = summary["results"][f"p{args.p}"]
    for method in ("ours", "naive"):
        if method in res:
            r = res[method]
            st = r["stationary"]
            print(f"{method:>6}: test error {r['test_error_paper']:.3g} ({r['test_error_paper_paths']} paths), "
                  f"{r['test_error_all']:.3g} ({r['n_paths_pred']} paths); stationary std m "
                  f"{st['predicted']['m']['std']:.4f} vs direct {st['direct']['m']['std']:.4f}")
    (out / "benchmark.json").write_text(json.dumps({"total_s": total, "compile_s": compile_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
