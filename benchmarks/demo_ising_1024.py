"""Scale demonstration: the 1024² Ising SDE learned from 16² simulations, its cost against direct
1024² simulation of the same training pairs, and its test error against the 64² case.

    matscale run inputs/ising_1024.toml --out runs/ising_1024
    matscale run inputs/ising_1024.toml --quick --out runs/ising_1024_64
    python benchmarks/demo_ising_1024.py runs/ising_1024 runs/ising_1024_64

Cost of our pairs: the wall time of the data stages of the run (small-system runs, upsampling,
partial evolution), from its stage records (:func:`matscale.pipeline.report.stage_seconds`).

The same costs are also timed here, interleaved in one process (a few upsampled states, random
quenches, partial-evolution pairs and direct steps, scaled by the run's counts), so that both
sides of that ratio see the same machine load.

Cost of the same pairs by direct simulation, measured here in the same process: every pair is
(z(t), z(t + δt)) of a 1024² box, so each costs a whole-box evolution over δt, timed on the
run's own upsampled states (median of repeats). This is a lower bound of the direct cost: it
counts the states themselves as free, while direct simulation would also have to relax 1024²
boxes from random starts to reach them; the second ratio adds that, at one relaxation run per
distinct small-run recording time (the anchor times the upsampled states carry), timed with the
same kernel.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from matscale.config import load_config
from matscale.io import read_h5
from matscale.pipeline.report import stage_seconds
from matscale.systems.registry import build_system

DATA_STAGES = ("small_sim", "upsample", "partial")


def direct_pair_seconds(system, states: np.ndarray, dt: float, repeats: int = 5) -> float:
    """Median wall time of one whole-box evolution over ``dt`` of states like ``states``."""
    times = []
    for i in range(repeats):
        state = np.ascontiguousarray(states[i % len(states)][None]).copy()
        start = time.perf_counter()
        system.evolve_batch(state, duration=dt, seeds=np.array([1000 + i], dtype=np.uint64))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def same_process_costs(cfg, system, run: Path, configs: np.ndarray, dt: float, *, repeats: int = 2,
                       n_up: int = 16, n_random: int = 8, n_pairs: int = 4000) -> dict[str, float]:
    """Seconds per unit of our data generation and per direct pair, timed here, interleaved
    (best of ``repeats``): the ratio then compares both under the same machine load, which the
    stage times of a run (made earlier, under whatever load there was) cannot."""
    from matscale.partial import partial_evolution
    from matscale.pipeline.stages import _quench
    from matscale.upsampling import hierarchical_upsample

    up, pa, p = cfg.upsampling, cfg.partial, cfg.patch_sides[0]
    small = read_h5(run / f"p{p}" / "small_sim" / "snapshots.h5")
    pool = small["snapshots"][0].reshape(-1, *small["snapshots"].shape[3:])
    pool_times = np.tile(small["times"], small["snapshots"].shape[1])
    best = {"upsample_per_config": np.inf, "quench_per_random": np.inf, "partial_per_pair": np.inf,
            "direct_per_pair": np.inf}
    for r in range(repeats):
        start = time.perf_counter()
        hierarchical_upsample(system, pool, system.size, n_up, factor=up.factor, mode=up.mode,
                              window=up.window or None, stride=up.stride or None,
                              duration=up.duration, seed=100 + r, pool_times=pool_times,
                              progress=False, relax_region=up.relax_region)
        best["upsample_per_config"] = min(best["upsample_per_config"], (time.perf_counter() - start) / n_up)
        if up.n_random:
            states = system.random_states(n_random, np.random.default_rng(r))
            start = time.perf_counter()
            _quench(system, states, up, p, ())
            best["quench_per_random"] = min(best["quench_per_random"], (time.perf_counter() - start) / n_random)
        per_config = max(1, n_pairs // len(configs))
        start = time.perf_counter()
        partial_evolution(system, configs, p, duration=pa.duration, seed=200 + r, n_draws=pa.n_draws,
                          pairs_per_snapshot=per_config, chunk_size=n_pairs, store_patches=False,
                          progress=False)
        best["partial_per_pair"] = min(best["partial_per_pair"], (time.perf_counter() - start) / (per_config * len(configs)))
        best["direct_per_pair"] = min(best["direct_per_pair"], direct_pair_seconds(system, configs, dt, repeats=3))
    if not up.n_random:
        best["quench_per_random"] = 0.0
    return best


def summary(run: Path) -> dict:
    cfg = load_config(run / "config.toml")
    system = build_system(cfg.system)
    p = cfg.patch_sides[0]
    seconds = stage_seconds(run, p)
    pairs = read_h5(run / f"p{p}" / "partial" / "pairs.h5")
    configs = read_h5(run / f"p{p}" / "upsample" / "configs.h5")
    n_pairs, dt = len(pairs["dt"]), float(np.mean(pairs["dt"]))
    ours = sum(seconds.get(s, 0.0) for s in DATA_STAGES)
    sample = configs["configs"][: min(5, len(configs["configs"]))]
    system.evolve_batch(sample[:1].copy(), duration=dt / 10, seeds=np.array([1], dtype=np.uint64))  # compile
    per_pair = direct_pair_seconds(system, sample, dt)
    anchors = configs["anchor_time"][np.isfinite(configs["anchor_time"])]
    t_max = float(anchors.max()) if anchors.size else 0.0
    n_relax_runs = int(np.unique(np.round(anchors, 6)).size) if anchors.size else 0
    relax_cost = n_relax_runs * per_pair * (t_max / 2) / dt  # runs to mean recording time
    unit = same_process_costs(cfg, system, run, sample, dt)
    up = cfg.upsampling
    ours_here = (seconds.get("small_sim", 0.0) + up.n_configs * unit["upsample_per_config"]
                 + up.n_random * unit["quench_per_random"] + n_pairs * unit["partial_per_pair"])
    metrics = json.loads((run / "metrics.json").read_text())["results"][f"p{p}"]["ours"]
    return {"L": system.size, "K": cfg.n_patches(p), "p": p, "n_pairs": n_pairs, "dt": dt,
            "ours_seconds": ours, "stage_seconds": seconds, "direct_pair_seconds": per_pair,
            "direct_seconds": n_pairs * per_pair, "direct_with_states_seconds": n_pairs * per_pair + relax_cost,
            "ratio": n_pairs * per_pair / ours, "ratio_with_states": (n_pairs * per_pair + relax_cost) / ours,
            "same_process": {**unit, "ours_seconds": ours_here,
                             "direct_seconds": n_pairs * unit["direct_per_pair"],
                             "ratio": n_pairs * unit["direct_per_pair"] / ours_here},
            "test_error": metrics["test_error_all"], "test_error_floor": metrics.get("test_error_all_floor"),
            "n_paths_pred": metrics["n_paths_pred"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("large", type=Path, help="run folder of inputs/ising_1024.toml")
    ap.add_argument("small", type=Path, nargs="?", help="run folder of its --quick (64²) preset")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    big = summary(args.large)
    print(f"{big['L']}² box, K = {big['K']} patches of {big['p']}², {big['n_pairs']} pairs, δt = {big['dt']:.3g}")
    print("stage wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in big["stage_seconds"].items()))
    print(f"our data stages: {big['ours_seconds']:.1f} s  ({', '.join(DATA_STAGES)})")
    print(f"direct 1024² evolution over δt: {big['direct_pair_seconds']:.3f} s per pair -> "
          f"{big['direct_seconds']:.0f} s for the same pairs (states free), "
          f"{big['direct_with_states_seconds']:.0f} s with the relaxation runs to the states")
    print(f"ratio direct / ours: {big['ratio']:.0f}x (states free), {big['ratio_with_states']:.0f}x (with states)")
    sp = big["same_process"]
    print(f"timed here, interleaved (same load): upsampling {sp['upsample_per_config']:.3f} s per state, "
          f"random quench {sp['quench_per_random']:.3f} s per state, partial {1e3 * sp['partial_per_pair']:.3f} ms "
          f"per pair, direct {1e3 * sp['direct_per_pair']:.1f} ms per pair -> ours {sp['ours_seconds']:.0f} s, "
          f"direct {sp['direct_seconds']:.0f} s: ratio {sp['ratio']:.0f}x (states free)")
    print(f"test error {big['L']}²: {big['test_error']:.3g} (noise floor {big['test_error_floor']:.2g}, "
          f"{big['n_paths_pred']} paths)")
    out = {"large": big}
    if args.small is not None:
        small_metrics = json.loads((args.small / "metrics.json").read_text())["results"]
        res = small_metrics[next(iter(small_metrics))]["ours"]
        out["small"] = {"test_error": res["test_error_all"], "test_error_floor": res.get("test_error_all_floor")}
        print(f"test error 64²: {res['test_error_all']:.3g} (noise floor {res.get('test_error_all_floor', float('nan')):.2g}); "
              f"ratio 1024² / 64² = {big['test_error'] / res['test_error_all']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
