"""λ sweep: refit the SDE of one finished pipeline run with the L_p covariance factor λ scaled by
each of several factors of its nominal value K / R (R = partial.n_draws), and compare the test
metrics against the same direct reference.

The data stages run once (``OUT/base``); every λ gets a copy of that run whose ``fit`` (and so
``evaluate``) stage is recomputed with ``train.lam`` set, so all λ see the same pairs and the
same reference. λ = K/R is the value the method prescribes (the increment of one patch, scaled
by K, has covariance K·δt·σσᵀ; a mean of R draws, (K/R)·δt·σσᵀ); the paper swept λ ∈ {1, 2.5,
5, 10, 20} at K = 5 for its predator–prey example.

    python benchmarks/study_lambda.py inputs/predator_prey.toml --quick --out runs/lambda_pp
    python benchmarks/study_lambda.py CONFIG --factors 0.25,0.5,1,2,4 --out DIR

Prints one row per λ: the test error (all paths) with its noise floor, the stationary MMD² with
its 95 % CI (percentile bootstrap over whole paths), the time-averaged MMD² over time (mean over
conditions) with its CI, and the ratio of the predicted to the direct stationary std of every
observable; then, for each MMD, the λ with the lowest value and whether the nominal λ lies within
that λ's CI. The CI of the mean over conditions combines the per-condition percentile CIs of
``mmd2_over_time`` as normal ones, SE_c = (high - low) / (2 z), SE = sqrt(sum SE_c²) / C: the
conditions' paths are independent runs, so their errors add in quadrature.

A rerun with the same ``--out`` reuses the λ folders whose fit was made with the same λ.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import time
from pathlib import Path
from statistics import NormalDist

from matscale.config import ConfigError, load_config
from matscale.pipeline import run_pipeline


def _mean_with_ci(entries: list[dict], level: float) -> tuple[float, float, float]:
    """Mean over conditions of the per-condition time averages ``mean`` of mmd2_over_time, with
    the CI from their percentile CIs read as normal ones (module docstring); NaN CI without them."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    mean = sum(c["mean"] for c in entries) / len(entries)
    se = [(c["mean_ci_high"] - c["mean_ci_low"]) / (2 * z) for c in entries]
    half = z * math.sqrt(sum(v * v for v in se)) / len(entries)
    return mean, mean - half, mean + half


def spread_check(cfg, run_dir: Path, p: int, n_boot: int = 200) -> dict:
    """What λ controls, apart from the mean: λ scales the learned covariance by 1/λ and leaves the
    drift's estimate unchanged, so a biased mean is the same at every λ, and a wider ensemble
    covers it better; the plain MMD² over time then favours small λ whatever the right noise.
    Here the ``ours`` model of ``run_dir`` is rolled out exactly as the evaluate stage does (same
    initial states, paths, substeps and seed) and compared with the direct runs:

    - ``bias``: RMS over conditions, grid times t > 0 and observables of
      (mean_pred - mean_direct) / std_direct (the standardised mean error, λ-independent);
    - ``std_ratio``: geometric mean over conditions and t > 0 of std_pred / std_direct per
      observable, with a percentile CI from resampling whole paths within each condition;
    - ``centred``: MMD² over time of the two ensembles each centred on its own mean at every
      time and condition (only the spread and shape remain), mean over conditions with the CI
      combined as in ``_mean_with_ci``; paths resampled as in ``compare_paths``. Centring makes
      the two sample means agree exactly, closer than two samples of one law do, so with equal
      laws this statistic is slightly negative, by O(1/n) for n direct paths per condition: the
      same offset at every λ, only the differences between λ carry the information.
    """
    import numpy as np

    from matscale.evaluate import mmd2_over_time
    from matscale.io import read_h5
    from matscale.pipeline.model import load, predict_paths
    from matscale.pipeline.stages import _auto_substeps
    from matscale.systems.registry import build_system

    ev, ref = cfg.evaluate, cfg.reference
    system = build_system(cfg.system)
    data = read_h5(run_dir / "reference" / "reference.h5")
    params = data["params"] if system.parameter_name is not None else None
    d = len(system.observable_names)
    true = data["observables"][..., :d]                                      # [C, R, n_t, d]
    n_steps = true.shape[2] - 1
    p_dir = run_dir / f"p{p}"
    model = load(p_dir, method="ours")
    substeps = ev.substeps or _auto_substeps(p_dir / "fit" / "ours" / "model.json", ref.grid_dt)
    pred = predict_paths(model, data["initial_configs"], n_steps, ref.grid_dt, ev.n_paths, substeps=substeps,
                         seed=ev.seed, params=params)[..., :d]
    finite = np.all(np.isfinite(pred), axis=(0, 2, 3))
    pred = pred[:, finite]
    sources = np.flatnonzero(finite) % ref.n_runs
    C, n_true = true.shape[0], true.shape[1]
    t_std = true[:, :, 1:].std(1, ddof=1)
    bias = (pred[:, :, 1:].mean(1) - true[:, :, 1:].mean(1)) / t_std
    rng = np.random.default_rng([ev.seed, 5])

    def ratio(pr: np.ndarray, tr: np.ndarray, boot: bool = False) -> np.ndarray:
        # a resample of n paths with repeats has E[s*^2] = (n - 1) / n s^2: undone for resamples
        fix = math.sqrt(pr.shape[1] / (pr.shape[1] - 1) * (tr.shape[1] - 1) / tr.shape[1]) if boot else 1.0
        return fix * np.exp(np.mean(np.log(pr[:, :, 1:].std(1, ddof=1) / tr[:, :, 1:].std(1, ddof=1)), axis=(0, 1)))

    def resample(paths: np.ndarray) -> np.ndarray:   # whole paths, drawn within each condition
        idx = rng.integers(0, paths.shape[1], paths.shape[:2])
        return np.take_along_axis(paths, idx[:, :, None, None], axis=1)

    boots = np.array([ratio(resample(pred), resample(true), boot=True) for _ in range(n_boot)])
    times = np.arange(1, true.shape[2])
    if len(times) > 40:   # as compare_paths: up to 40 grid times after t = 0, up to 100 paths per side
        times = np.unique(np.round(np.linspace(1, true.shape[2] - 1, 40)).astype(np.int64))
    nt, npd = min(n_true, 100), min(pred.shape[1], 100)
    pred_c, true_c = pred - pred.mean(1, keepdims=True), true - true.mean(1, keepdims=True)
    centred = [mmd2_over_time(true_c[c, :nt], pred_c[c, :npd], times=times, groups_reference=np.arange(nt),
                              groups_other=sources[:npd], n_boot=ev.mmd_bootstrap, rng=rng) for c in range(C)]
    mean, low, high = _mean_with_ci(centred, 0.95)
    return {"bias": float(np.sqrt(np.mean(bias ** 2))), "std_ratio": ratio(pred, true).tolist(),
            "std_ratio_ci": np.percentile(boots, [2.5, 97.5], axis=0).T.tolist(),
            "centred": mean, "centred_ci": (low, high)}


def _row(metrics: dict, method: str = "ours") -> dict:
    r = metrics[method]
    out = {"test_error_all": r["test_error_all"], "floor": r.get("test_error_all_floor"),
           "mmd_stationary": r["mmd_stationary"]["mmd2"],
           "mmd_ci": (r["mmd_stationary"]["ci_low"], r["mmd_stationary"]["ci_high"])}
    over_time = r.get("mmd_over_time")  # one entry per condition
    if isinstance(over_time, list) and over_time:
        mean, low, high = _mean_with_ci(over_time, float(r.get("ci", {}).get("level", 0.95)))
        out["mmd_over_time"], out["mmd_over_time_ci"] = mean, (low, high)
    stationary = r["stationary"]
    out["std_ratio"] = {name: stationary["predicted"][name]["std"] / stationary["direct"][name]["std"]
                        for name in stationary["direct"]}
    return out


def sweep(config: str | Path, out: str | Path, factors: list[float], *, quick: bool = False,
          executor: str | None = None, spread: bool = True) -> list[dict]:
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
                lam_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lam=lam))
                if folder.exists():
                    try:   # resume: the fit of an earlier sweep with this λ (same data) is reused
                        result = run_pipeline(lam_cfg, folder, progress=False)
                    except ConfigError:   # made with other settings: refit
                        result = run_pipeline(lam_cfg, folder, force_stages=["fit"], progress=False)
                else:
                    shutil.copytree(base, folder, ignore=shutil.ignore_patterns(".matscale.lock"))
                    result = run_pipeline(lam_cfg, folder, force_stages=["fit"], progress=False)
                metrics = result["results"][f"p{p}"]
            row = {"p": p, "K": K, "lam": lam, "factor": factor, **_row(metrics)}
            if spread:
                run_dir = base if factor == 1.0 else folder
                row.update({f"spread_{k}": v for k, v in spread_check(cfg, run_dir, p).items()})
            rows.append(row)
    print(f"data stages + nominal fit: {base_seconds:.0f} s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="the config's [quick] preset")
    parser.add_argument("--factors", default="0.25,0.5,1,2,4",
                        help="λ / (K/R) values, comma-separated (default 0.25,0.5,1,2,4)")
    parser.add_argument("--dask-local", type=int, default=0, help="run the data stages on N Dask workers")
    parser.add_argument("--no-spread", action="store_true", help="skip the rollouts of spread_check")
    args = parser.parse_args()
    factors = sorted({float(f) for f in args.factors.split(",")} | {1.0})
    rows = sweep(args.config, args.out, factors, quick=args.quick,
                 executor=f"dask-local:{args.dask_local}" if args.dask_local else None, spread=not args.no_spread)
    print(f"{'p':>3} {'K':>3} {'λ':>7} {'λ/(K/R)':>8} {'test err':>10} {'floor':>9} {'MMD² stat':>10} "
          f"{'95% CI':>20} {'MMD²(t) mean':>12} {'95% CI':>20}  stationary std pred/direct")
    for r in rows:
        ci = f"[{r['mmd_ci'][0]:.3g}, {r['mmd_ci'][1]:.3g}]"
        over = f"{r['mmd_over_time']:.3g}" if "mmd_over_time" in r else "-"
        over_ci = f"[{r['mmd_over_time_ci'][0]:.3g}, {r['mmd_over_time_ci'][1]:.3g}]" if "mmd_over_time" in r else "-"
        print(f"{r['p']:>3} {r['K']:>3} {r['lam']:>7.3g} {r['factor']:>8.3g} {r['test_error_all']:>10.3g} "
              f"{r['floor'] or float('nan'):>9.2g} {r['mmd_stationary']:>10.3g} {ci:>20} {over:>12} {over_ci:>20}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["std_ratio"].items()))
    if any("spread_bias" in r for r in rows):
        print(f"\nspread at each λ (mean error removed): {'λ':>7} {'λ/(K/R)':>8} {'bias/std':>9} "
              f"{'centred MMD²(t)':>15} {'95% CI':>20}  std pred/direct over t > 0 [95% CI]")
        for r in rows:
            ratios = ", ".join(f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
                               for v, (lo, hi) in zip(r["spread_std_ratio"], r["spread_std_ratio_ci"]))
            ci = f"[{r['spread_centred_ci'][0]:.3g}, {r['spread_centred_ci'][1]:.3g}]"
            print(f"{'':39s}{r['lam']:>7.3g} {r['factor']:>8.3g} {r['spread_bias']:>9.2f} "
                  f"{r['spread_centred']:>15.3g} {ci:>20}  {ratios}")
    for line in verdicts(rows):
        print(line)


def verdicts(rows: list[dict]) -> list[str]:
    """Per patch side and MMD: the λ with the lowest value, and whether the nominal λ (factor 1)
    lies within that λ's CI (its value <= the best's upper bound); for the test error (no CI) the
    lowest one and the nominal's excess over it in units of the noise floor."""
    lines = []
    for p in sorted({r["p"] for r in rows}):
        side = [r for r in rows if r["p"] == p]
        nominal = next(r for r in side if r["factor"] == 1.0)
        for key, ci_key, label in (("mmd_stationary", "mmd_ci", "stationary MMD²"),
                                   ("mmd_over_time", "mmd_over_time_ci", "MMD² over time"),
                                   ("spread_centred", "spread_centred_ci", "centred MMD² over time")):
            if key not in nominal:
                continue
            best = min(side, key=lambda r: r[key])
            inside = nominal[key] <= best[ci_key][1]
            lines.append(f"p={p} {label}: lowest at λ = {best['lam']:.3g} (x{best['factor']:g}), "
                         f"{best[key]:.3g} [{best[ci_key][0]:.3g}, {best[ci_key][1]:.3g}]; nominal λ = "
                         f"{nominal['lam']:.3g}: {nominal[key]:.3g}, "
                         f"{'within' if inside else 'OUTSIDE'} the best's CI")
        best = min(side, key=lambda r: r["test_error_all"])
        floor = nominal["floor"] or float("nan")
        lines.append(f"p={p} test error: lowest at λ = {best['lam']:.3g} (x{best['factor']:g}), "
                     f"{best['test_error_all']:.3g}; nominal {nominal['test_error_all']:.3g} "
                     f"(excess {(nominal['test_error_all'] - best['test_error_all']) / floor:.2g} x the noise floor {floor:.2g})")
    return lines


if __name__ == "__main__":
    main()
