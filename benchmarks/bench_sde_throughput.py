"""Training throughput of matscale.sde.fit_sde against a plain-PyTorch loop of the same networks.

Setting: d = 4, batch 2000, drift and diffusion MLPs with 2 x 128 hidden units,
full (Cholesky) diffusion, Gaussian EM likelihood, CPU. Both runs happen in this process, so
the printed ratio is meaningful on a shared, noisy machine; absolute samples/s are not.

Baseline ("plain loop"): two nn.Sequential networks, a shuffled DataLoader over a
TensorDataset, Sigma = sigma sigma^T + eps I with torch.linalg.inv + slogdet (the paper's code).
matscale: one tensor on the device indexed by a permutation, the twin (batched) MLP with its
gradient written out, a triangular sigma whose scaled copy is already the Cholesky factor, the
Gaussian NLL and its gradient as compiled passes over the batch, fused AdamW. Both loops run
with the malloc thresholds that fit_sde sets on the CPU (matscale.sde.memory).
The first epoch of each is a warm-up and not timed.

    python benchmarks/bench_sde_throughput.py [--pairs 100000] [--epochs 4] [--activation silu] [--threads 1]

``measure()`` returns the same comparison as a row.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from matscale.sde import fit_sde
from matscale.sde.memory import retain_freed_memory

try:
    from benchmarks.common import row
except ModuleNotFoundError:  # run as a script
    from common import row

DIM, BATCH, HIDDEN = 4, 2000, (128, 128)


def make_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of a stable linear 4-D SDE with a full noise matrix (the content is irrelevant here)."""
    rng = np.random.default_rng(seed)
    a = -np.eye(DIM) + 0.3 * rng.standard_normal((DIM, DIM))
    b = np.tril(0.3 * rng.standard_normal((DIM, DIM))) + 0.5 * np.eye(DIM)
    z0 = rng.uniform(-1, 1, (n, DIM))
    dt = rng.uniform(0.01, 0.03, n)
    z1 = z0 + z0 @ a.T * dt[:, None] + np.sqrt(dt)[:, None] * rng.standard_normal((n, DIM)) @ b.T
    return z0, z1, dt


def mlp(n_in: int, n_out: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = [n_in, *HIDDEN]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], n_out))


def plain_loop(z0, z1, dt, epochs: int, act: type[nn.Module]) -> float:
    """Samples/s of the straightforward loop (warm-up epoch excluded)."""
    torch.manual_seed(0)
    drift, diff = mlp(DIM, DIM, act), mlp(DIM, DIM * DIM, act)
    opt = torch.optim.AdamW(list(drift.parameters()) + list(diff.parameters()), lr=1e-3)
    ds = torch.utils.data.TensorDataset(*(torch.as_tensor(x, dtype=torch.float32) for x in (z0, z1, dt)))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    eye = 1e-4 * torch.eye(DIM)
    seconds, samples = 0.0, 0
    for epoch in range(epochs + 1):
        t0 = time.perf_counter()
        for a, b, h in loader:
            mu = drift(a)
            sig = diff(a).view(-1, DIM, DIM)
            cov = h[:, None, None] * (sig @ sig.transpose(1, 2)) + eye
            r = (b - a - mu * h[:, None]).unsqueeze(-1)
            quad = (r.transpose(1, 2) @ torch.linalg.inv(cov) @ r).squeeze()
            loss = 0.5 * (quad + torch.linalg.slogdet(cov)[1]).mean() + 0.5 * DIM * math.log(2 * math.pi)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch > 0:
            seconds += time.perf_counter() - t0
            samples += len(ds)
    return samples / seconds


def matscale_fit(z0, z1, dt, epochs: int, activation: str) -> float:
    """Samples/s of fit_sde's training epochs (warm-up epoch and validation excluded)."""
    sde = fit_sde(z0, z1, dt, diffusion="cholesky", hidden=HIDDEN, activation=activation, epochs=epochs + 1,
                  batch_size=BATCH, validation_fraction=0.02, patience=10**6, progress=False)
    n_train = sde.config["n_train"]
    return n_train * epochs / sum(sde.history["train_seconds"][1:])


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


def compare(pairs: int, epochs: int, activation: str = "silu", repeats: int = 2) -> dict[str, Any]:
    """Samples/s of both loops, alternated ``repeats`` times on the same pairs (lists of runs)."""
    act = ACTIVATIONS[activation]
    retain_freed_memory()  # what fit_sde does on the CPU: both loops run under the same malloc settings
    z0, z1, dt = make_pairs(pairs)
    plain, ours = [], []
    for _ in range(repeats):
        plain.append(plain_loop(z0, z1, dt, epochs, act))
        ours.append(matscale_fit(z0, z1, dt, epochs, activation))
    return {"plain": plain, "ours": ours, "pairs": pairs, "epochs": epochs, "activation": activation}


def measure(quick: bool = False, pairs: int | None = None, epochs: int | None = None,
            activation: str = "silu", repeats: int | None = None) -> list[dict]:
    """One row: fit_sde training samples/s against the plain loop (best runs); quick: 20 000
    pairs, one timed epoch, one run each. Uses the current torch thread setting."""
    res = compare(pairs or (20_000 if quick else 100_000), epochs or (1 if quick else 4), activation,
                  repeats or (1 if quick else 2))
    p, o = max(res["plain"]), max(res["ours"])
    return [row(f"fit_sde training, d={DIM} batch {BATCH} hidden {HIDDEN} cholesky {activation}", o,
                "samples/s", baseline="plain PyTorch loop (DataLoader, inv + slogdet)", baseline_value=p,
                note=f"{res['pairs']} pairs, {res['epochs']} timed epoch(s), best of {len(res['ours'])}; "
                     f"target >= 3e5 samples/s: {'PASS' if o >= 3e5 else 'FAIL'}",
                runs=res["ours"], baseline_runs=res["plain"], torch_threads=torch.get_num_threads())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--activation", default="silu", choices=list(ACTIVATIONS))
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two runs this many times")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, d={DIM}, batch={BATCH}, "
          f"hidden={HIDDEN}, activation={args.activation}, {args.pairs} pairs, {args.epochs} timed epochs")
    res = compare(args.pairs, args.epochs, args.activation, args.repeats)
    plain, ours = res["plain"], res["ours"]
    p, o = max(plain), max(ours)
    print(f"plain PyTorch loop : {p:10.3e} samples/s  (runs: {', '.join(f'{x:.3e}' for x in plain)})")
    print(f"matscale fit_sde   : {o:10.3e} samples/s  (runs: {', '.join(f'{x:.3e}' for x in ours)})")
    print(f"ratio matscale / plain = {o / p:.2f}x ; target >= 3e5 samples/s: {'PASS' if o >= 3e5 else 'FAIL'}")


if __name__ == "__main__":
    main()
