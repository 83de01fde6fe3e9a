"""Integrator templates vs plain fit_sde: accuracy of the learned force and noise.

For the Langevin oscillator (symplectic-Euler template) and the stochastic wave equation (Walsh
template), generate scattered pairs, fit once with the template and once without (plain
``fit_sde`` of the whole state), and print the relative L2 error of the learned force (F or f)
and noise amplitude (sigma or s) against the true ones over the data support, with the fit
times and their ratio (plain / template) measured in this process. The settings are those of
``inputs/langevin.toml`` and ``inputs/stochastic_wave.toml`` (``--quick``: their quick presets).

    OMP_NUM_THREADS=1 python benchmarks/study_templates.py            # ~6 min on one core
    OMP_NUM_THREADS=1 python benchmarks/study_templates.py --quick    # ~1 min
    python benchmarks/study_templates.py --systems langevin

Without the template the wave equation's f is not recovered: the plain model learns the whole
2N-dimensional drift, which is dominated by the known d'Alembert part. For the wave the notes
compare both methods on the same object, the coefficients of the discretised state (relative
L2 of the drift of u(t + dt) and of its covariance Sigma_uu against one Walsh step with the
true f and s), and print the share of f in the true drift: the drift's error divided by that
share is roughly the relative error of the f implied by the plain fit.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from matscale.config import apply_quick
from matscale.pipeline.identify import (IdentifyConfig, build_system, build_template, fit, generate,
                                        learned_vs_true, relative_l2, wave_state_errors)

INPUTS = Path(__file__).resolve().parent.parent / "inputs"
CONFIGS = {"langevin": "langevin.toml", "stochastic_wave": "stochastic_wave.toml"}


def _config(system: str, quick: bool) -> IdentifyConfig:
    import tomllib

    raw = tomllib.loads((INPUTS / CONFIGS[system]).read_text(encoding="utf-8"))
    if quick:
        raw = apply_quick(raw)
    section = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["identify"].items()}
    return IdentifyConfig(**section)


def measure(cfg: IdentifyConfig) -> list[dict]:
    """One row per method: relative L2 of force and noise, fit seconds (and the wave diagnostics)."""
    system = build_system(cfg)
    template = build_template(cfg, system)
    start = time.perf_counter()
    data = generate(cfg, system)
    data_seconds = time.perf_counter() - start
    rows = []
    for method in cfg.methods:
        start = time.perf_counter()
        sde = fit(cfg, data, method, template)
        seconds = time.perf_counter() - start
        values = learned_vs_true(cfg, system, template, sde, method, data["test_z"])
        row = {"system": cfg.system, "method": method, "force": relative_l2(values["force"], values["force_true"]),
               "noise": relative_l2(values["noise"], values["noise_true"]), "seconds": seconds,
               "epochs": sde.config["epochs_run"], "best_epoch": sde.config["best_epoch"],
               "data_seconds": data_seconds}
        if cfg.system == "stochastic_wave":
            row.update(wave_state_errors(cfg, system, template, sde, method, data["test_z"]))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the configs' [quick.identify] presets")
    parser.add_argument("--systems", default="langevin,stochastic_wave", help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'system':16s} {'method':9s} {'relL2 force':>11s} {'relL2 noise':>11s} {'fit [s]':>8s} "
          f"{'epochs':>6s} {'time ratio':>10s}  notes")
    for name in args.systems.split(","):
        cfg = _config(name.strip(), args.quick)
        rows = measure(cfg)
        base = next((r["seconds"] for r in rows if r["method"] == "template"), None)
        for r in rows:
            ratio = f"{r['seconds'] / base:10.2f}" if base else f"{'-':>10s}"
            note = f"pairs {cfg.n_pairs} at dt={cfg.dt:g} ({r['data_seconds']:.0f} s to simulate)"
            if "f_share_of_drift" in r:
                note += (f"; state: drift of u(t+dt) relL2 {r['drift_rel_l2']:.4f}, Sigma_uu relL2 "
                         f"{r['sigma_rel_l2']:.4f}, f share of drift {r['f_share_of_drift']:.4f}")
            if r["best_epoch"] < 0:
                note += "; returned its linear start"
            print(f"{r['system']:16s} {r['method']:9s} {r['force']:11.4f} {r['noise']:11.4f} {r['seconds']:8.1f} "
                  f"{r['epochs']:6d} {ratio}  {note}", flush=True)


if __name__ == "__main__":
    main()
