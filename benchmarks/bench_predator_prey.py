"""Throughput of the predator–prey Euler–Maruyama kernel against a plain per-op torch loop.

A *cell update* is one site of one species advanced by one EM step (a state of n points has 2n
per step). Both sides run the same model (arXiv 2511.12842, stochastic predator–prey example:
a = 3, b = 0.4, D = 0, σ = 0.02, dt = 0.01, Neumann edges) on B states of n points, in the same
process, on one thread each: the numba kernel of :class:`matscale.systems.spde.PredatorPrey`
(per-state counter streams, ziggurat normals) and a torch loop over tensors [B, 2, n] with
``torch.randn`` noise, one step per Python iteration.

Run:  OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_predator_prey.py [--batch 64] [--n 200]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def kernel_rate(batch: int, n: int, steps: int, repeats: int) -> float:
    """Best cell updates per second of ``PredatorPrey.evolve_batch`` over ``repeats`` runs."""
    from matscale.systems.spde import PredatorPrey

    system = PredatorPrey(n)
    seeds = np.arange(batch, dtype=np.uint64)
    states = system.random_states(batch, np.random.default_rng(0))
    system.evolve_batch(states.copy(), n_events=1, seeds=seeds)  # compile / load the cache
    best = np.inf
    for _ in range(repeats):
        x = states.copy()
        start = time.perf_counter()
        system.evolve_batch(x, n_events=steps, seeds=seeds)
        best = min(best, time.perf_counter() - start)
    return batch * n * 2 * steps / best


def torch_rate(batch: int, n: int, steps: int, repeats: int) -> float:
    """Best cell updates per second of the plain torch loop (float64, one thread)."""
    import torch

    torch.set_num_threads(1)
    a, b, D, sigma, dt = 3.0, 0.4, 0.0, 0.02, 0.01
    noise = sigma * dt ** 0.5
    x_grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    pattern = 0.1 * torch.cos(10 * torch.pi * x_grid)
    x0 = torch.stack([0.5 + pattern, 0.5 - pattern]).repeat(batch, 1, 1)   # [B, 2, n]
    gen = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)          # Neumann: replicate
        lap = padded[:, :, :-2] - 2.0 * x + padded[:, :, 2:]
        u, v = x[:, 0], x[:, 1]
        du = u * (1.0 - u - v) + D * lap[:, 0]
        dv = a * v * (u - b) + lap[:, 1]
        drift = torch.stack([du, dv], dim=1)
        return x + dt * drift + noise * torch.randn(x.shape, dtype=x.dtype, generator=gen)

    step(x0)  # warm up
    best = np.inf
    for _ in range(repeats):
        x = x0.clone()
        start = time.perf_counter()
        for _ in range(steps):
            x = step(x)
        best = min(best, time.perf_counter() - start)
    return batch * n * 2 * steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="states B")
    parser.add_argument("--n", type=int, default=200, help="grid points per state")
    parser.add_argument("--steps", type=int, default=2000, help="EM steps of the kernel per run")
    parser.add_argument("--torch-steps", type=int, default=200, help="EM steps of the torch loop per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (the best counts)")
    args = parser.parse_args()
    kernel = kernel_rate(args.batch, args.n, args.steps, args.repeats)
    loop = torch_rate(args.batch, args.n, args.torch_steps, args.repeats)
    print(f"B = {args.batch}, n = {args.n}, one thread each")
    print(f"numba EM kernel:      {kernel:.3g} cell updates/s")
    print(f"torch per-op loop:    {loop:.3g} cell updates/s")
    print(f"ratio kernel / torch: {kernel / loop:.1f}x")


if __name__ == "__main__":
    main()
