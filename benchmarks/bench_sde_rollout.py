"""Rollout throughput of FittedSDE.sample against a plain-PyTorch Euler-Maruyama loop.

Setting (as bench_sde_throughput.py): d = 4, drift and diffusion MLPs with 2 x 128 hidden units,
SiLU, full (Cholesky) diffusion, float32, CPU. The SDE is fitted for one epoch on a few thousand
pairs (the weights do not matter for the speed). Both rollouts run in this process, one after the
other, alternated ``--repeats`` times; the best run of each counts. Throughput = paths x steps / s.

* matscale: ``sde.sample(z0, n_steps, dt, n_paths=P, seed=...)`` with its defaults (the twin
  MLP, one network pass per step for drift and sigma, NaN check per step); dt = the shortest
  training step, so every grid interval is one EM step.
* baseline ("plain loop"): two nn.Sequential networks of the same sizes (diffusion output d x d),
  under torch.no_grad(), per step mu = drift(z), sigma = diff(z).view(d, d),
  z += mu dt + sigma dW, each state stored in a [P, n + 1, d] tensor.
The first (warm-up) call of each is not timed.

    python benchmarks/bench_sde_rollout.py [--paths 2000] [--steps 500] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from matscale.sde import fit_sde

try:
    from benchmarks.bench_sde_throughput import DIM, HIDDEN, make_pairs, mlp
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from bench_sde_throughput import DIM, HIDDEN, make_pairs, mlp
    from common import row


def fitted_sde(n_pairs: int = 4000):
    """A FittedSDE with the benchmark's sizes (one epoch; the weights only need to be finite)."""
    z0, z1, dt = make_pairs(n_pairs)
    return fit_sde(z0, z1, dt, diffusion="cholesky", hidden=HIDDEN, activation="silu", epochs=1,
                   batch_size=2000, progress=False)


def matscale_rollout(sde, z0: np.ndarray, n_paths: int, n_steps: int, dt: float) -> float:
    """Seconds of one ``sample`` call."""
    t0 = time.perf_counter()
    sde.sample(z0, n_steps=n_steps, dt=dt, n_paths=n_paths, seed=1)
    return time.perf_counter() - t0


def plain_rollout(drift: nn.Module, diff: nn.Module, z0: np.ndarray, n_paths: int, n_steps: int,
                  dt: float) -> float:
    """Seconds of the straightforward EM loop over the same grid."""
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    with torch.no_grad():
        z = torch.as_tensor(z0, dtype=torch.float32).expand(n_paths, DIM).clone()
        paths = torch.empty(n_paths, n_steps + 1, DIM)
        paths[:, 0] = z
        for k in range(n_steps):
            mu = drift(z)
            sig = diff(z).view(-1, DIM, DIM)
            dw = torch.randn(z.shape, generator=gen) * dt ** 0.5
            z = z + mu * dt + (sig @ dw.unsqueeze(-1)).squeeze(-1)
            paths[:, k + 1] = z
        paths.numpy().astype(np.float64)  # the same output conversion as sample() for numpy input
    return time.perf_counter() - t0


def compare(n_paths: int, n_steps: int, repeats: int) -> dict[str, Any]:
    """Path-steps/s of both rollouts, best of ``repeats`` alternated runs."""
    sde = fitted_sde()
    dt = sde.training_dt[0]
    torch.manual_seed(0)
    drift, diff = mlp(DIM, DIM, nn.SiLU).eval(), mlp(DIM, DIM * DIM, nn.SiLU).eval()
    with torch.no_grad():  # a sigma of the data's size, so both loops integrate comparable states
        diff[-1].weight.mul_(0.01)
        diff[-1].bias.copy_((0.3 * torch.eye(DIM)).ravel())
    z0 = np.zeros(DIM)
    matscale_rollout(sde, z0, 8, 4, dt)  # warm-up
    plain_rollout(drift, diff, z0, 8, 4, dt)
    ours, plain = [], []
    for _ in range(repeats):
        ours.append(n_paths * n_steps / matscale_rollout(sde, z0, n_paths, n_steps, dt))
        plain.append(n_paths * n_steps / plain_rollout(drift, diff, z0, n_paths, n_steps, dt))
    return {"ours": ours, "plain": plain, "paths": n_paths, "steps": n_steps, "dt": dt}


def measure(quick: bool = False, paths: int | None = None, steps: int | None = None,
            repeats: int | None = None) -> list[dict]:
    """One row: sample() path-steps/s against the plain loop; quick: 1000 paths x 200 steps, two
    runs each. Uses the current torch thread setting."""
    res = compare(paths or (1000 if quick else 2000), steps or (200 if quick else 500),
                  repeats or (2 if quick else 3))
    o, p = max(res["ours"]), max(res["plain"])
    return [row(f"FittedSDE.sample EM rollout, d={DIM} hidden {HIDDEN} cholesky, {res['paths']} paths x "
                f"{res['steps']} steps", o, "path-steps/s",
                baseline="plain PyTorch EM loop (two nn.Sequential)", baseline_value=p,
                note=f"float32, best of {len(res['ours'])}",
                runs=res["ours"], baseline_runs=res["plain"], torch_threads=torch.get_num_threads())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3, help="alternate the two rollouts this many times")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = compare(args.paths, args.steps, args.repeats)
    o, p = max(res["ours"]), max(res["plain"])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, d={DIM}, hidden={HIDDEN}, "
          f"{args.paths} paths x {args.steps} steps of dt {res['dt']:.3g}")
    print(f"plain PyTorch EM loop : {p:10.3e} path-steps/s  (runs: {', '.join(f'{x:.3e}' for x in res['plain'])})")
    print(f"FittedSDE.sample      : {o:10.3e} path-steps/s  (runs: {', '.join(f'{x:.3e}' for x in res['ours'])})")
    print(f"ratio matscale / plain = {o / p:.2f}x")


if __name__ == "__main__":
    main()
