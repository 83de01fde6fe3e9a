"""Recovery of the seed-000 benchmark SDEs (arXiv 2106.09004) by matscale.sde.fit_sde.

Prints one row per (system, loss, diffusion): relative L2 errors of the drift and of Sigma over
the data support (the pairs' z0), the target (5 % for "em", 10 % for "milstein" on the
state-dependent-diffusion systems), the fit time and PASS/FAIL.

    python benchmarks/bench_sde_recovery.py [--pairs 50000] [--epochs 100] [--batch-size 1000] [--only NAME] [--threads 1]

``measure()`` returns the errors as rows (``python -m benchmarks --only sde_recovery``).
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from matscale.datasets import recovery_errors, simulate_pairs
from matscale.sde import fit_sde

try:
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from common import row

# (system, loss, diffusion form, target relative error)
CASES = [
    ("ornstein_uhlenbeck", "em", "cholesky", 0.05),
    ("double_well", "em", "diagonal", 0.05),
    ("double_well", "milstein", "diagonal", 0.10),
    ("nonsmooth_2d", "em", "diagonal", 0.05),
    ("nonsmooth_2d", "milstein", "diagonal", 0.10),
    ("linear_3d", "em", "cholesky", 0.05),
    # noise on v only: a constant diagonal form lets Sigma_xx -> 0 and does not try to explain the
    # O(h^3/2) position noise (correlated with the velocity noise at sqrt(3)/2) by a cross term
    ("langevin_oscillator", "em", "constant_diagonal", 0.05),
]


def recover(system: str, loss: str, diffusion: str, target: float, pairs: int = 50_000, epochs: int = 100,
            batch_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Fit one case; relative errors of the drift and of Sigma, fit seconds, epochs run, pass/fail."""
    data = simulate_pairs(system, pairs, seed=seed)
    t0 = time.perf_counter()
    sde = fit_sde(data.z0, data.z1, data.dt, loss=loss, diffusion=diffusion, epochs=epochs,
                  batch_size=batch_size, schedule="cosine", patience=epochs, seed=seed,
                  progress=False)
    seconds = time.perf_counter() - t0
    err = recovery_errors(sde, data)
    return {"system": system, "loss": loss, "diffusion": diffusion, "target": target,
            "drift": err["drift"], "covariance": err["covariance"], "seconds": seconds,
            "epochs_run": sde.config["epochs_run"],
            "passed": bool(err["drift"] <= target and err["covariance"] <= target)}


def results(pairs: int = 50_000, epochs: int = 100, batch_size: int = 1000, seed: int = 0,
            only: str | None = None):
    for system, loss, diffusion, target in CASES:
        if only and only not in system:
            continue
        yield recover(system, loss, diffusion, target, pairs, epochs, batch_size, seed)


def measure(quick: bool = False, pairs: int | None = None, epochs: int | None = None,
            only: str | None = None) -> list[dict]:
    """Rows (lower is better, no baseline; the target and PASS/FAIL in the note): drift and Sigma
    errors per case. quick: 10 000 pairs and 20 epochs (errors then above the targets)."""
    pairs = pairs or (10_000 if quick else 50_000)
    epochs = epochs or (20 if quick else 100)
    rows = []
    for res in results(pairs, epochs, only=only):
        case = f"{res['system']} {res['loss']} {res['diffusion']}"
        note = (f"target {100 * res['target']:.0f} %: {'PASS' if res['passed'] else 'FAIL'}; {pairs} pairs, "
                f"{res['epochs_run']} epochs, fit {res['seconds']:.1f} s")
        rows.append(row(f"sde recovery {case}, drift", res["drift"], "rel. L2 error", higher_is_better=False,
                        note=note, target=res["target"], passed=res["passed"], fit_seconds=res["seconds"]))
        rows.append(row(f"sde recovery {case}, Sigma", res["covariance"], "rel. L2 error",
                        higher_is_better=False, note=note, target=res["target"], passed=res["passed"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="run only systems whose name contains this")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header = f"{'system':<20} {'loss':<9} {'diffusion':<17} {'drift err':>9} {'Sigma err':>9} {'target':>6} {'epochs':>6} {'fit s':>6}  result"
    print(header)
    print("-" * len(header))
    all_ok = True
    for res in results(args.pairs, args.epochs, args.batch_size, args.seed, args.only):
        all_ok &= res["passed"]
        print(f"{res['system']:<20} {res['loss']:<9} {res['diffusion']:<17} {100 * res['drift']:8.2f}% "
              f"{100 * res['covariance']:8.2f}% {100 * res['target']:5.0f}% {res['epochs_run']:>6} "
              f"{res['seconds']:6.1f}  {'PASS' if res['passed'] else 'FAIL'}", flush=True)
    print(f"\n{args.pairs} pairs per system, h ~ U(system h_range), errors = relative L2 over the pairs' z0;"
          f" overall: {'PASS' if all_ok else 'FAIL'}")


if __name__ == "__main__":
    main()
