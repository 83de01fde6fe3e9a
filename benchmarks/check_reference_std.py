"""Pin down the direct std of a finished run with extra independent direct runs.

Usage::

    python benchmarks/check_reference_std.py RUN_DIR --condition 1600 --runs 24 [--seed 777] [--p 8]

The evaluation compares the predicted std with the std of ``reference.n_runs`` direct runs; with
12 runs a std is known to only ~±20 % (1/sqrt(2(n-1)) per time point), which is the size of the
effect one wants to test. This script runs ``--runs`` further direct large-system runs of one
reference condition (the system's parameter value, e.g. a temperature, or an initial condition
of a system without a parameter) on the reference's time grid, with seeds independent of the
reference stage, pools them with the stage's runs and prints, per observable:

* the ratio of the predicted std to the direct std (both averaged over the grid after t = 0),
  with a 95 % bootstrap interval over direct runs (2000 resamples of whole runs, so the time
  correlation within a run is kept);
* the largest deviation over time of the predicted mean from the pooled direct mean, with the
  direct standard error.

Nothing in the run folder is modified.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from matscale.config import load_config
from matscale.io import read_h5, sample_keys
from matscale.systems.registry import build_system


def extra_runs(run_dir: Path, condition: float, n_runs: int, seed: int) -> tuple[np.ndarray, int]:
    """Observables [n_runs, n_t + 1, d] of new direct runs of ``condition``; its index."""
    cfg = load_config(run_dir / "config.toml")
    ref = cfg.reference
    values = [float(v) for v in ref.condition_values]
    if condition not in values:
        raise SystemExit(f"--condition {condition:g} is not a reference condition (allowed: {values})")
    c = values.index(condition)
    param, init = ref.conditions[c]
    system = build_system(cfg.system)
    system = system if param is None else system.at(param)
    n_t = int(round(ref.duration / ref.grid_dt))
    states = system.random_states(n_runs, np.random.default_rng([seed, c]), condition=init)
    obs = np.empty((n_runs, n_t + 1, len(system.observable_names)))
    obs[:, 0] = system.observables(states)
    for k in range(n_t):
        system.evolve_batch(states, duration=ref.grid_dt,
                            seeds=sample_keys(seed, np.arange(n_runs), "extra-reference", c, k))
        obs[:, k + 1] = system.observables(states)
    return obs, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--condition", type=float, required=True)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--p", type=int, default=None, help="patch side of the evaluated model")
    args = parser.parse_args()
    start = time.perf_counter()
    new, c = extra_runs(args.run_dir, args.condition, args.runs, args.seed)
    seconds = time.perf_counter() - start
    reference = read_h5(args.run_dir / "reference" / "reference.h5", ["observables"])["observables"]
    direct = np.concatenate([reference[c][..., :new.shape[-1]], new])
    p_dirs = sorted(args.run_dir.glob("p*/evaluate/curves.npz"))
    curves = np.load(args.run_dir / f"p{args.p}" / "evaluate" / "curves.npz") if args.p else np.load(p_dirs[0])
    names = [str(n) for n in curves["names"]]
    pred_mean, pred_std = curves["ours_mean"][c], curves["ours_std"][c, 1:].mean(0)

    def ratio(runs: np.ndarray) -> np.ndarray:
        return pred_std / runs[:, 1:].std(0, ddof=1).mean(0)

    rng = np.random.default_rng(0)
    boots = np.array([ratio(direct[rng.integers(0, len(direct), len(direct))]) for _ in range(2000)])
    low, high = np.percentile(boots, [2.5, 97.5], axis=0)
    deviation = np.abs(pred_mean - direct.mean(0)).max(0)
    sem = (direct.std(0, ddof=1) / np.sqrt(len(direct))).max(0)
    print(f"{args.runs} extra direct runs in {seconds:.0f} s; pooled with the stage's "
          f"{len(direct) - args.runs}: {len(direct)} runs of condition {args.condition:g}")
    print(f"{'observable':>16} {'std ratio':>10} {'95% CI':>17} {'max |dmean|':>12} {'direct SEM':>11}")
    for k, name in enumerate(names):
        print(f"{name:>16} {ratio(direct)[k]:10.3f} [{low[k]:6.3f}, {high[k]:6.3f}] "
              f"{deviation[k]:12.4f} {sem[k]:11.4f}")


if __name__ == "__main__":
    main()
