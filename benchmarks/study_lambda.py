"""λ sweep: refit the SDE of one finished pipeline run with the L_p covariance factor λ scaled by
each of several factors of its nominal value K / R (R = partial.n_draws), and compare the test
metrics against the same direct reference.

The data stages run once (``OUT/base``); every λ gets a copy of that run whose ``fit`` (and so
``evaluate``) stage is recomputed with ``train.lam`` set, so all λ see the same pairs and the
same reference. λ = K/R is the value the method prescribes (the increment of one patch, scaled
by K, has covariance K·δt·σσᵀ; a mean of R draws, (K/R)·δt·σσᵀ); the paper swept λ ∈ {1, 2.5,
5, 10, 20} at K = 5 for its predator–prey example.

    python benchmarks/study_lambda.py inputs/predator_prey.toml --quick --out runs/lambda_pp
    python benchmarks/study_lambda.py CONFIG --factors 0.2,0.5,1,2,4 --out DIR

Prints one row per λ: the test error (all paths) with its noise floor, the stationary MMD² with
its 95 % CI, the time-averaged MMD² over time (mean over conditions) and the ratio of the
predicted to the direct stationary std of every observable.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from matscale.config import load_config
from matscale.pipeline import run_pipeline


def _row(metrics: dict, method: str = "ours") -> dict:
    r = metrics[method]
    out = {"test_error_all": r["test_error_all"], "floor": r.get("test_error_all_floor"),
           "mmd_stationary": r["mmd_stationary"]["mmd2"],
           "mmd_ci": (r["mmd_stationary"]["ci_low"], r["mmd_stationary"]["ci_high"])}
    over_time = r.get("mmd_over_time")  # one entry per condition
    if isinstance(over_time, list) and over_time:
        out["mmd_over_time"] = sum(c["mean"] for c in over_time) / len(over_time)
    stationary = r["stationary"]
    out["std_ratio"] = {name: stationary["predicted"][name]["std"] / stationary["direct"][name]["std"]
                        for name in stationary["direct"]}
    return out


def sweep(config: str | Path, out: str | Path, factors: list[float], *, quick: bool = False,
          executor: str | None = None) -> list[dict]:
    """Run the sweep (module docstring); returns one dict per factor (and the nominal λ)."""
    cfg = load_config(config, quick=quick)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method="ours"))
    out = Path(out)
    base = out / "base"
    start = time.perf_counter()
    summary = run_pipeline(cfg, base, executor=executor, progress=False)
    base_seconds = time.perf_counter() - start
    rows = []
    for p in cfg.patch_sides:
        K = cfg.n_patches(p)
        nominal = K / cfg.partial.n_draws
        for factor in factors:
            lam = factor * nominal
            folder = out / f"p{p}_lam{lam:g}"
            if factor == 1.0:
                metrics = summary["results"][f"p{p}"]
            else:
                if not folder.exists():
                    shutil.copytree(base, folder, ignore=shutil.ignore_patterns(".matscale.lock"))
                lam_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lam=lam))
                metrics = run_pipeline(lam_cfg, folder, force_stages=["fit"], progress=False)["results"][f"p{p}"]
            rows.append({"p": p, "K": K, "lam": lam, "factor": factor, **_row(metrics)})
    print(f"data stages + nominal fit: {base_seconds:.0f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="the config's [quick] preset")
    parser.add_argument("--factors", default="0.2,0.5,1,2,4",
                        help="λ / (K/R) values, comma-separated (default 0.2,0.5,1,2,4)")
    parser.add_argument("--dask-local", type=int, default=0, help="run the data stages on N Dask workers")
    args = parser.parse_args()
    factors = sorted({float(f) for f in args.factors.split(",")} | {1.0})
    rows = sweep(args.config, args.out, factors, quick=args.quick,
                 executor=f"dask-local:{args.dask_local}" if args.dask_local else None)
    print(f"{'p':>3} {'K':>3} {'λ':>7} {'λ/(K/R)':>8} {'test err':>10} {'floor':>9} {'MMD² stat':>10} "
          f"{'95% CI':>20} {'MMD²(t) mean':>12}  stationary std pred/direct")
    for r in rows:
        ci = f"[{r['mmd_ci'][0]:.3g}, {r['mmd_ci'][1]:.3g}]"
        over = f"{r['mmd_over_time']:.3g}" if "mmd_over_time" in r else "-"
        print(f"{r['p']:>3} {r['K']:>3} {r['lam']:>7.3g} {r['factor']:>8.3g} {r['test_error_all']:>10.3g} "
              f"{r['floor'] or float('nan'):>9.2g} {r['mmd_stationary']:>10.3g} {ci:>20} {over:>12}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["std_ratio"].items()))


if __name__ == "__main__":
    main()
