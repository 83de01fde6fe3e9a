"""Learned SDE vs direct equilibrium: the stationary first-shell SRO of a temperature-conditioned
SDE (a pipeline run with detailed-balance barriers, e.g. ``inputs/nbmota_eam.toml``: KRA on the
Zhou EAM) against canonical swap Monte Carlo on the same energy model, box and vacancy count.

With barriers that obey detailed balance with respect to an energy E, the kMC the SDE learned
from has the Boltzmann distribution of E as its stationary state, so the SDE's long-time SRO must
agree with the swap-MC equilibrium SRO at every temperature (up to the errors of both).

    matscale run inputs/nbmota_eam.toml --quick --stop-after fit --out runs/nbmota_eam_q
    python benchmarks/study_ordering_sde.py runs/nbmota_eam_q --out runs/nbmota_eam_q/ordering_sde

Several run folders (the same data refitted with other ``train.seed``, or independent runs) make
an ensemble of SDEs whose spread is part of the SDE's error; ``--mc-cache`` reuses the swap-MC
numbers of an earlier ``comparison.json`` of the same box (temperatures it lacks are simulated).

Per temperature (default: the run's training temperatures):

- SDE: ``n_paths`` rollouts of the large system from encoded random solid solutions up to
  ``duration`` (scaled-clock units of the run), kept from ``burn_in`` on; each path's time mean
  is one independent sample: mean ± std/sqrt(n_paths). With M run folders, the stationary mean
  is the mean over the M models and its error std_M/sqrt(M) (rollout noise and the
  variability of training together).
- Swap MC: one lattice of the large system's size and vacancy count, annealed through the
  temperatures from the highest down (:func:`matscale.systems.alloy.ordering.temperature_scan`),
  ``mc_sweeps`` recorded sweeps each; errors from the integrated autocorrelation time.

Prints one row per temperature and pair: both values, their errors and the difference in units
of the combined error (z); writes ``comparison.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np


def sde_stationary(model: Any, temperatures: list[float], *, n_paths: int, duration: float, burn_in: float,
                   n_grid: int, seed: int) -> dict[float, dict[str, np.ndarray]]:
    """Per temperature: the path time-means after ``burn_in`` [n_paths, d], their mean and error."""
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, duration, n_grid + 1)
    late = ts >= burn_in
    out = {}
    for T in temperatures:
        z0 = model.encode(model.system.random_states(n_paths, rng))
        paths = np.asarray(model.sample(z0, ts=ts, n_paths=1, seed=int(rng.integers(2 ** 31)),
                                        temperature_K=float(T), nonfinite="keep"))
        paths = paths.reshape(n_paths, ts.size, -1)
        finite = np.all(np.isfinite(paths), axis=(1, 2))
        means = paths[finite][:, late].mean(axis=1)
        out[T] = {"path_means": means, "mean": means.mean(axis=0),
                  "err": means.std(axis=0, ddof=1) / math.sqrt(max(len(means), 1)),
                  "n_finite": int(finite.sum()),
                  "relaxation_check": paths[finite][:, late][:, : late.sum() // 2].mean(axis=(0, 1))
                  - paths[finite][:, late][:, late.sum() // 2:].mean(axis=(0, 1))}
    return out


def swap_mc_equilibrium(model: Any, temperatures: list[float], *, sweeps: int, equilibration: int,
                        seed: int) -> dict[float, dict[str, np.ndarray]]:
    """Swap-MC equilibrium of the run's large system (same energy model, size, vacancies)."""
    from matscale.systems.alloy.ordering import temperature_scan

    system = model.system
    energy = getattr(system.barrier_model, "energy_model", None)
    if energy is None:
        raise SystemExit(f"{model.folder}: barrier model {type(system.barrier_model).__name__} has no energy model; "
                         "the comparison needs barrier='kra' or 'nnk_consistent'")
    rng = np.random.default_rng(seed)
    state = system.random_states(1, rng)[0]
    lattice = system._lattice.copy()
    lattice.species[:] = state.reshape(-1)
    scan = temperature_scan(lattice, energy, temperatures, n_sweeps=sweeps, rng=rng,
                            n_equilibration_sweeps=equilibration,
                            progress=lambda line: print(f"  swap MC {line}", flush=True))
    names = system.observable_names
    labels = [n.split("_", 1)[1] for n in names]
    index = [scan.pair_labels.index(label) for label in labels]
    out = {}
    for i, T in enumerate(scan.temperatures_K):
        out[float(T)] = {"mean": scan.sro[i, 0, index], "err": scan.sro_err[i, 0, index],
                         "tau_energy": float(scan.tau_energy[i]), "b2": float(scan.b2[i]),
                         "b32": float(scan.b32[i])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="pipeline run folder(s) with a fitted, temperature-conditioned SDE")
    parser.add_argument("--mc-cache", default="", help="comparison.json whose swap-MC numbers to reuse")
    parser.add_argument("--out", default=None, help="folder for comparison.json (default RUN/ordering_sde)")
    parser.add_argument("--temperatures", default="", help="comma-separated K (default: training temperatures)")
    parser.add_argument("--n-paths", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0, help="rollout length (run's time unit)")
    parser.add_argument("--burn-in", type=float, default=10.0)
    parser.add_argument("--n-grid", type=int, default=300)
    parser.add_argument("--mc-sweeps", type=int, default=300)
    parser.add_argument("--mc-equilibration", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.burn_in < args.duration:
        parser.error(f"--burn-in={args.burn_in} must lie in [0, duration={args.duration})")

    import torch

    torch.set_num_threads(1)
    from matscale.pipeline.model import load

    models = [load(run) for run in args.runs]
    model = models[0]
    for other, run in zip(models[1:], args.runs[1:]):
        if other.n_sites != model.n_sites or other.observable_names != model.observable_names:
            parser.error(f"{run}: another system than {args.runs[0]} ({other!r})")
    if model.parameter_name != "temperature_K":
        parser.error(f"{args.runs[0]}: the SDE is not conditioned on temperature_K")
    temps = ([float(x) for x in args.temperatures.split(",")] if args.temperatures
             else [float(t) for t in model.config.system.temperatures])
    out = Path(args.out) if args.out else Path(args.runs[0]) / "ordering_sde"
    out.mkdir(parents=True, exist_ok=True)
    names = model.observable_names
    print(f"{model!r} x {len(models)}; {model.n_sites} sites; T = {temps} K")

    start = time.perf_counter()
    per_model = [sde_stationary(m, temps, n_paths=args.n_paths, duration=args.duration, burn_in=args.burn_in,
                                n_grid=args.n_grid, seed=args.seed + 1000 * i) for i, m in enumerate(models)]
    sde = {}
    for T in temps:
        means = np.stack([r[T]["mean"] for r in per_model])
        err = (means.std(axis=0, ddof=1) / math.sqrt(len(models)) if len(models) > 1 else per_model[0][T]["err"])
        sde[T] = {"mean": means.mean(axis=0), "err": err, "per_model": means,
                  "rollout_err": np.stack([r[T]["err"] for r in per_model]),
                  "n_finite": min(r[T]["n_finite"] for r in per_model),
                  "relaxation_check": np.mean([r[T]["relaxation_check"] for r in per_model], axis=0)}
    sde_seconds = time.perf_counter() - start
    start = time.perf_counter()
    mc: dict[float, dict[str, Any]] = {}
    if args.mc_cache:  # reuse what an earlier comparison of the same box measured
        cached = json.loads(Path(args.mc_cache).read_text(encoding="utf-8"))
        if cached.get("n_sites") != model.n_sites:
            parser.error(f"--mc-cache {args.mc_cache}: {cached.get('n_sites')} sites, the SDE has {model.n_sites}")
        for T in temps:
            rows_T = {r["observable"]: r for r in cached["rows"] if r["T_K"] == T}
            if set(rows_T) != set(names):
                continue
            mc[T] = {"mean": np.array([rows_T[n]["swap_mc"] for n in names]),
                     "err": np.array([rows_T[n]["swap_mc_err"] for n in names]),
                     **{k: cached["swap_mc"][str(T)][k2] for k, k2 in
                        (("tau_energy", "tau_energy_samples"), ("b2", "b2"), ("b32", "b32"))}}
    missing = [T for T in temps if T not in mc]
    if missing:
        mc.update(swap_mc_equilibrium(model, missing, sweeps=args.mc_sweeps, equilibration=args.mc_equilibration,
                                      seed=args.seed + 1))
    mc_seconds = time.perf_counter() - start

    rows = []
    print(f"\n{'T (K)':>7} {'pair':>14} {'SDE':>17} {'swap MC':>17} {'z':>6}")
    for T in temps:
        for k, name in enumerate(names):
            s, e = float(sde[T]["mean"][k]), float(sde[T]["err"][k])
            m, me = float(mc[T]["mean"][k]), float(mc[T]["err"][k])
            z = (s - m) / math.hypot(e, me)
            rows.append({"T_K": T, "observable": name, "sde": s, "sde_err": e, "swap_mc": m, "swap_mc_err": me,
                         "z": z, "sde_drift_late": float(sde[T]["relaxation_check"][k]),
                         "sde_per_model": sde[T]["per_model"][:, k].tolist(),
                         "sde_rollout_err": sde[T]["rollout_err"][:, k].tolist(),
                         "sde_finite_paths": sde[T]["n_finite"]})
            print(f"{T:7.0f} {name:>14} {s:8.4f} ± {e:.4f} {m:8.4f} ± {me:.4f} {z:6.2f}")
    agree = {T: all(abs(r["z"]) < 3.0 for r in rows if r["T_K"] == T) for T in temps}
    print(f"\ntemperatures where every pair agrees within 3 combined sigma: "
          f"{[T for T, ok in agree.items() if ok]} of {temps}")
    print(f"SDE rollouts {sde_seconds:.1f} s, swap MC {mc_seconds:.1f} s")
    record = {"runs": [str(r) for r in args.runs], "model": repr(model), "n_sites": model.n_sites,
              "settings": vars(args), "rows": rows, "agree_within_3_sigma": {str(k): v for k, v in agree.items()},
              "swap_mc": {str(T): {"tau_energy_samples": mc[T]["tau_energy"], "b2": mc[T]["b2"], "b32": mc[T]["b32"]}
                          for T in temps},
              "seconds": {"sde": sde_seconds, "swap_mc": mc_seconds}}
    (out / "comparison.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {out / 'comparison.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
