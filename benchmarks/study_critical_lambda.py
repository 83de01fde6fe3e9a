"""Why the patch likelihood's covariance factor λ = K is biased near T_c (2-D Ising, h = 0).

Experiments on stationary microstates x of the L × L Ising model near T_c (exact Glauber):

``diagnose`` — for each x the exact generator moments (``Ising2D.generator_moments``): drift
b(x) and diffusion a(x) of m per Glauber time. Against them, as a function of the increment time
δt, with ``n_rep`` independent evolutions of every x:

* global: Var(Δm | x) / (a(x) δt) and E(Δm | x) / (b(x) δt) when the whole box evolves for δt
  (what an SDE with the instantaneous a(x) would predict over δt: ratio 1);
* patch: the same for K Δm_I, the global increment of one n_s = 16² patch I evolved alone for δt
  with its exterior frozen, scaled by K — what the L_p likelihood with covariance λ δt σσᵀ targets:
  σσᵀ = Var(K Δm_I) / (λ δt); with λ = K it estimates Var(K Δm_I) / (K δt), to be compared with a(x).

The ratio of the *conditional* variance per time to a(x) falls below 1 as δt grows because single
flips are undone (a spin flipped against its neighbours flips back at rate ≈ 1): the instantaneous
diffusion a(x) counts that reversible flip noise, the slow dynamics of m does not feel it.

``learned`` — train the spin pipeline (n_s = 16², λ = K, z = (m, ρ_dw)) at one (L, T), roll the
fitted SDE out to stationarity and compare ⟨|M|⟩, χ, U and the drift's oddness in m with the
direct samples of a finished ``critical`` study. Options select the method variant (see
:class:`Variant`): ``--symmetrize m`` (mirror pairs, ``train.symmetrize``), ``--mode`` and
``--n-random`` (which training states), ``--relax``, ``--closure-dim``, ``--min-anchor-time``.

``oracle`` — the same λ = K fit on pairs from *equilibrium* states (increments, or with
``--generator`` the exact generator moments): separates the noise of the increments from the
choice of training states. ``marginal`` — the stationary P(m) implied by the exact conditional
generator moments of equilibrium states and of the training states of given variants (no fit).
``learned --generator`` fits on the exact generator moments of the training states.
``sweeps`` — block-Gibbs passes on the training states of a finished study point, then the
study's fit. ``fitnoise`` — per pass of recorded states, the implied moments against the fit of
(m, ρ_dw) by networks alone and the fit of m alone with a least-squares drift prior: which part
of the error is the training data's and which the fit's. ``burnin`` — how many block-Gibbs
passes the upsampled states need before their implied P(m) agrees with that of as many
equilibrium states. ``equilibrium`` — the learned stage's whole estimator (members, fits,
rollouts) fed with equilibrium states instead of upsampled ones: its own error at one point.

    python benchmarks/study_critical_lambda.py marginal --out runs/critical_marg 0::-1 100:tile_matched:0
    python benchmarks/study_critical_lambda.py oracle --generator --epochs 200 --direct runs/critical
    python benchmarks/study_critical_lambda.py learned --generator --epochs 200 --mode tile_matched \
        --n-random 0 --relax 100 --symmetrize m --skip-moments --direct runs/critical --out runs/critical_marg
    python benchmarks/study_critical_lambda.py diagnose --L 32 --T 2.27
    python benchmarks/study_critical_lambda.py burnin --L 64 --T 2.29 \
        --work runs/critical/learned_work/L64_T2.29 --direct runs/critical
    python benchmarks/study_critical_lambda.py learned --L 32 --T 2.27 --direct runs/critical --out runs/critical_learned
    python benchmarks/study_critical_lambda.py learned --mode tile --symmetrize m --skip-moments \
        --direct runs/critical --out runs/critical2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def stationary_states(L: int, T: float, n_states: int, *, tau: float, seed: int = 0) -> np.ndarray:
    """``n_states`` stationary L × L states: n_states/8 runs, aligned start, 10 τ discarded, then
    8 snapshots τ apart (Glauber time τ ≈ τ_int of |M|)."""
    from matscale.systems.spin import Ising2D

    system = Ising2D(L, T)
    rng = np.random.default_rng([seed, L, int(T * 1e4)])
    runs = max(1, n_states // 8)
    states = np.ones((runs, L, L), dtype=np.int8)
    states[: runs // 2] = -1
    system.evolve_batch(states, duration=10 * tau, seeds=rng.integers(0, 2**63, runs, dtype=np.uint64))
    out = []
    for _ in range(8):
        system.evolve_batch(states, duration=tau, seeds=rng.integers(0, 2**63, runs, dtype=np.uint64))
        out.append(states.copy())
    return np.concatenate(out)[:n_states]


def increment_moments(L: int, T: float, states: np.ndarray, dts: list[float], *, patch: int = 16,
                      n_rep: int = 32, seed: int = 1) -> list[dict]:
    """Per δt: mean over states of Var(Δm|x)/δt and E(Δm|x)/δt for global and patch evolution,
    with the exact a(x), b(x) averaged over the same states (module docstring)."""
    from matscale.systems.spin import Ising2D

    system = Ising2D(L, T)
    drift, diffusion = system.generator_moments(states)
    b, a = drift[:, 0], diffusion[:, 0, 0]
    K = (L // patch) ** 2
    m0 = states.reshape(len(states), -1).mean(axis=1)
    rng = np.random.default_rng(seed)
    rows = []
    for dt in dts:
        reps = np.repeat(states, n_rep, axis=0)
        system.evolve_batch(reps, duration=dt, seeds=rng.integers(0, 2**63, len(reps), dtype=np.uint64))
        dm = (reps.reshape(len(states), n_rep, -1).mean(axis=2) - m0[:, None])
        reps = np.repeat(states, n_rep, axis=0)
        origins = np.repeat(rng.integers(0, L, size=(len(states), 1, 2)), n_rep, axis=0)
        system.evolve_windows(reps, origins, patch, duration=dt, boundary="frozen",
                              seeds=rng.integers(0, 2**63, len(reps), dtype=np.uint64))
        dm_patch = K * (reps.reshape(len(states), n_rep, -1).mean(axis=2) - m0[:, None])
        var_g = dm.var(axis=1, ddof=1).mean() / dt
        var_p = dm_patch.var(axis=1, ddof=1).mean() / (K * dt)
        rows.append({"dt": dt, "K": K, "a_exact": float(a.mean()),
                     "var_global_over_a": float(var_g / a.mean()), "var_patch_over_Ka": float(var_p / a.mean()),
                     # drift: regress the mean increment on the exact b(x) (b is odd in m, mean ~ 0)
                     "drift_global_slope": float(np.sum(dm.mean(axis=1) * b) / (dt * np.sum(b * b))),
                     "drift_patch_slope": float(np.sum(dm_patch.mean(axis=1) * b) / (dt * np.sum(b * b)))})
    return rows


def diagnose(args: argparse.Namespace) -> None:
    tau = 50.0 * (args.L / 16) ** 2.17
    start = time.perf_counter()
    states = stationary_states(args.L, args.T, args.n_states, tau=tau)
    print(f"# L = {args.L}, T = {args.T}, {len(states)} stationary states ({time.perf_counter() - start:.0f} s); "
          f"⟨|m|⟩ = {np.abs(states.reshape(len(states), -1).mean(1)).mean():.3f}")
    dts = [float(x) for x in args.dts.split(",")]
    rows = increment_moments(args.L, args.T, states, dts, n_rep=args.n_rep)
    print(f"# exact diffusion of m, mean over states: a = {rows[0]['a_exact']:.4g} per Glauber time (K = {rows[0]['K']})")
    print("| δt | Var(Δm)/(a δt) global | Var(K Δm_I)/(K a δt) patch | E(Δm)/(b δt) global | E(K Δm_I)/(b δt) patch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dt']:g} | {r['var_global_over_a']:.3f} | {r['var_patch_over_Ka']:.3f} | "
              f"{r['drift_global_slope']:.3f} | {r['drift_patch_slope']:.3f} |")
    print(f"# {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


@dataclasses.dataclass(frozen=True)
class Variant:
    """Method options of one ``learned`` experiment (defaults: the quick preset of
    ``inputs/ising.toml``). ``relax``: LocalRelax duration per window (0: the preset's);
    ``mode``: upsampling mode ("": the preset's "tile_matched"); ``n_random``: random/quenched
    states (-1: the preset's); ``symmetrize``: ``train.symmetrize``; ``closure_dim``:
    ``closure.dim``; ``min_anchor_time``: > 0 refits the SDE here on the pairs whose training
    state was built around a small-run snapshot recorded at t >= min_anchor_time (Glauber time;
    random states dropped) — an experiment, no pipeline option."""

    relax: float = 0.0
    mode: str = ""
    n_random: int = -1
    symmetrize: str = ""
    closure_dim: int = 0
    min_anchor_time: float = 0.0

    def tag(self) -> str:
        parts = [f"relax{self.relax:g}" if self.relax else "", self.mode,
                 f"rand{self.n_random}" if self.n_random >= 0 else "",
                 f"sym{self.symmetrize}" if self.symmetrize else "",
                 f"cl{self.closure_dim}" if self.closure_dim else "",
                 f"tmin{self.min_anchor_time:g}" if self.min_anchor_time else ""]
        return "".join("_" + x for x in parts if x)


def pipeline_config(L: int, T: float, *, epochs: int = 40, seed: int = 0, variant: Variant = Variant()):
    """The spin pipeline at (L, T, h = 0) with n_s = 16² and λ = K: the quick preset of
    ``inputs/ising.toml`` (its data volumes), method "ours" only, no reference/evaluation,
    changed by ``variant``."""
    from matscale.config import load_config

    cfg = load_config(ROOT / "inputs" / "ising.toml", quick=True)
    system = dataclasses.replace(cfg.system, L=L, T=T, h=0.0)
    up = cfg.upsampling
    up = dataclasses.replace(up, duration=variant.relax or up.duration, mode=variant.mode or up.mode,
                             n_random=up.n_random if variant.n_random < 0 else variant.n_random)
    return dataclasses.replace(cfg, name=f"critical L={L} T={T:g}", system=system, upsampling=up,
                               small=dataclasses.replace(cfg.small, p=(16,), seed=seed),
                               closure=dataclasses.replace(cfg.closure, dim=variant.closure_dim),
                               train=dataclasses.replace(cfg.train, method="ours", epochs=epochs, lam=0.0,
                                                         symmetrize=variant.symmetrize))


def train_point(L: int, T: float, out: Path, *, epochs: int = 40, variant: Variant = Variant(),
                generator: bool = False):
    """Run (or resume) the pipeline up to ``fit``; returns the loaded model and its config. With
    ``variant.min_anchor_time`` > 0 the pipeline stops after ``encode`` and the SDE is fitted
    here, with the pipeline's settings, on the selected pairs only. With ``generator`` the pipeline
    stops after ``upsample`` and the SDE is fitted here on :func:`matscale.partial.generator_pairs`
    of the training states (exact generator moments instead of partial-evolution increments)."""
    import matscale
    from matscale.pipeline import run_pipeline

    cfg = pipeline_config(L, T, epochs=epochs, variant=variant)
    if generator:
        run_pipeline(cfg, out, stop_after="upsample", progress=False)
        return fit_generator(cfg, out / "p16"), cfg
    if variant.min_anchor_time <= 0:
        run_pipeline(cfg, out, stop_after="fit", progress=False)
        return matscale.load(out, p=16), cfg
    data_cfg = pipeline_config(L, T, epochs=epochs, variant=dataclasses.replace(variant, symmetrize=""))
    run_pipeline(data_cfg, out, stop_after="encode", progress=False)
    return refit_selected(cfg, out / "p16", variant.min_anchor_time), cfg


def fit_generator(cfg, pdir: Path):
    """The "ours" fit on the exact generator moments of the upsampled training states (loss "em",
    λ = 1: the moments are the whole system's), with the pipeline's network and optimiser
    settings, saved under pdir/fit_generator."""
    from matscale.pipeline.critical_study import fit_generator_sde
    from matscale.pipeline.model import MacroModel
    from matscale.pipeline.stages import load_configs
    from matscale.sde import load_sde
    from matscale.systems.spin import Ising2D

    tr, pa = cfg.train, cfg.partial
    sym = f"_sym{tr.symmetrize}" if tr.symmetrize else ""
    target = pdir / f"fit_generator_e{tr.epochs}{sym}" / "sde"
    if not target.exists():
        system = Ising2D(cfg.system.L, cfg.system.T)
        fit_generator_sde(system, load_configs(pdir / "upsample"), tr, pa.duration).save(target)
    sde = load_sde(target)
    record = getattr(sde, "config", None)
    if isinstance(record, dict):
        record.setdefault("min_dt", float(pa.duration))
        record.setdefault("median_dt", float(pa.duration))
    return MacroModel(sde, cfg, None, 16, "ours", None)


def refit_selected(cfg, pdir: Path, min_anchor_time: float):
    """The "ours" fit of :func:`matscale.pipeline.stages.fit` on the pairs of training states
    anchored at t >= ``min_anchor_time`` (random states dropped), saved under pdir/fit_selected."""
    from matscale.io import read_h5
    from matscale.pipeline.model import MacroModel
    from matscale.pipeline.stages import FIT_THREADS, mirrored_pairs, odd_components
    from matscale.sde import fit_sde, load_sde

    sym = f"_sym{cfg.train.symmetrize}" if cfg.train.symmetrize else ""
    target = pdir / f"fit_selected_t{min_anchor_time:g}{sym}" / "sde"
    data = read_h5(pdir / "encode" / "pairs.h5")
    if not target.exists():
        anchor = read_h5(pdir / "upsample" / "configs.h5")["anchor_time"]
        keep = np.repeat(np.nan_to_num(anchor, nan=-1.0) >= min_anchor_time, cfg.partial.pairs_per_config)
        print(f"# refit on {keep.sum()} of {len(keep)} pairs (anchor time >= {min_anchor_time:g})")
        tr = cfg.train
        z0, z1, dt = data["z0"][keep], (data["z0"] + data["delta"])[keep], data["dt"][keep]
        odd = odd_components(tr.symmetrize, ("m", "rho_dw"))
        z0, z1, dt, _ = mirrored_pairs(z0, z1, dt, None, odd)
        sde = fit_sde(z0, z1, dt, loss="partial", lam=cfg.n_patches(16) / cfg.partial.n_draws,
                      diffusion=tr.diffusion, hidden=tuple(tr.hidden), epochs=tr.epochs,
                      batch_size=tr.batch_size, lr=tr.lr, seed=tr.seed, progress=False,
                      validation_fraction=tr.validation_fraction, num_threads=FIT_THREADS)
        sde.save(target)
    sde = load_sde(target)
    record = getattr(sde, "config", None)  # the rollout step limit, as the pipeline's model.json
    if isinstance(record, dict):
        record.setdefault("min_dt", float(np.min(data["dt"])))
        record.setdefault("median_dt", float(np.median(data["dt"])))
    return MacroModel(sde, cfg, None, 16, "ours", None)


def rollout_samples(model, z0: np.ndarray, tau: float, *, equilibrate_taus: float = 10.0,
                    production_taus: float = 50.0, samples_per_tau: float = 4.0, max_step: float | str = "auto",
                    seed: int = 0) -> np.ndarray:
    """m [paths, S] of the learned SDE from ``z0 [paths, d]``: equilibrate, then S samples τ/4 apart
    (the direct stage's schedule); diverged paths are dropped (their count is printed)."""
    interval = tau / samples_per_tau
    n_eq = int(round(equilibrate_taus * samples_per_tau))
    n_prod = int(round(production_taus * samples_per_tau))
    paths = model.sample(z0, n_eq + n_prod, interval, n_paths=1, seed=seed, max_step=max_step, nonfinite="keep")
    paths = np.asarray(paths)
    if paths.ndim == 4:  # [N, 1, steps, d]
        paths = paths[:, 0]
    m = paths[:, n_eq + 1:, 0]
    ok = np.all(np.isfinite(m), axis=1) & np.all(np.abs(m) <= 1.5, axis=1)
    if not np.all(ok):
        print(f"# {np.sum(~ok)} of {len(ok)} rollouts diverged or left |m| <= 1.5; dropped")
    return np.clip(m[ok], -1.0, 1.0)


def conditional_moments(L: int, T: float, states: np.ndarray, bins: np.ndarray) -> dict[str, np.ndarray]:
    """Exact b(x), a(x) of m averaged in bins of |m| (b signed by m: the restoring part)."""
    from matscale.systems.spin import Ising2D

    drift, diffusion = Ising2D(L, T).generator_moments(states)
    m = states.reshape(len(states), -1).mean(axis=1)
    idx = np.digitize(np.abs(m), bins) - 1
    out = {"b": np.full(len(bins) - 1, np.nan), "a": np.full(len(bins) - 1, np.nan),
           "count": np.zeros(len(bins) - 1, dtype=int), "rho": np.full(len(bins) - 1, np.nan)}
    rho = Ising2D(L, T).observables(states)[:, 1]
    for k in range(len(bins) - 1):
        sel = idx == k
        if sel.sum() >= 5:
            out["b"][k] = np.mean(np.sign(m[sel]) * drift[sel, 0])
            out["a"][k] = np.mean(diffusion[sel, 0, 0])
            out["rho"][k] = np.mean(rho[sel])
            out["count"][k] = int(sel.sum())
    return out


def learned(args: argparse.Namespace) -> None:
    from matscale.critical import moments
    from matscale.pipeline.critical_study import load_samples
    from matscale.pipeline.stages import load_configs

    L, T = args.L, args.T
    tau = 50.0 * (L / 16) ** 2.17
    variant = Variant(relax=args.relax, mode=args.mode, n_random=args.n_random, symmetrize=args.symmetrize,
                      closure_dim=args.closure_dim, min_anchor_time=args.min_anchor_time)
    # the refit variant shares the pipeline folder of the same data (it only stops earlier)
    folder = dataclasses.replace(variant, min_anchor_time=0.0, symmetrize="" if variant.min_anchor_time
                                 else variant.symmetrize).tag()
    out = Path(args.out) / (f"L{L}_T{T:g}" + folder)
    print(f"# variant {variant}")
    start = time.perf_counter()
    if args.generator:
        out = out.with_name(out.name + "_gen")
    model, cfg = train_point(L, T, out, epochs=args.epochs, variant=variant, generator=args.generator)
    t_train = time.perf_counter() - start
    configs = load_configs(out / "p16" / "upsample")
    rng = np.random.default_rng(0)
    picks = rng.choice(len(configs), size=args.n_paths, replace=False)
    z0 = model.encode(configs[picks])
    start = time.perf_counter()
    m_learned = rollout_samples(model, z0, tau, max_step=args.max_step)
    t_roll = time.perf_counter() - start
    print(f"# L = {L}, T = {T:g}: pipeline to fit {t_train:.0f} s, rollout {t_roll:.0f} s "
          f"({m_learned.shape[0]} paths x {m_learned.shape[1]} samples)")
    res = {"learned": moments(m_learned, L, T)}
    direct_dir = Path(args.direct) / "direct" / f"L{L}_T{T:g}" if args.direct else None
    if direct_dir is not None and (direct_dir / "samples.npz").is_file():
        res["direct"] = moments(load_samples(direct_dir)["m"], L, T)
    for name, r in res.items():
        print(f"| {name} | {r['abs_m']} | {r['chi']} | {r['binder']} |")
    # oddness of the learned drift in m at the training states' other components
    z = model.encode(configs[picks[:200]])
    z_plus, z_minus = z.copy(), z.copy()
    z_plus[:, 0], z_minus[:, 0] = np.abs(z[:, 0]), -np.abs(z[:, 0])
    mu_plus, mu_minus = model.sde.drift(z_plus)[:, 0], model.sde.drift(z_minus)[:, 0]
    oddness = float(np.mean(np.abs(mu_plus + mu_minus)) / np.mean(np.abs(mu_plus)))
    print(f"# drift oddness: mean |mu(m)+mu(-m)| / mean |mu(m)| = {oddness:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"variant": dataclasses.asdict(variant), "oddness": oddness,
                                               **{k: {q: [e.value, e.error] for q, e in r.items()}
                                                  for k, r in res.items()}}))
    if args.skip_moments or z.shape[1] != 2:
        return
    # exact conditional moments on the training states vs equilibrium states, and the learned ones
    bins = np.linspace(0.0, 1.0, 11)
    train_states = configs[rng.choice(len(configs), size=min(len(configs), 4000), replace=False)]
    eq_states = stationary_states(L, T, args.n_eq, tau=tau, seed=3)
    exact_train = conditional_moments(L, T, train_states, bins)
    exact_eq = conditional_moments(L, T, eq_states, bins)
    centres = 0.5 * (bins[1:] + bins[:-1])
    print("| |m| bin | n eq / train | ρ_dw eq / train | E[b·sgn m] eq | train | learned μ | E[a] eq | train | learned σσᵀ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, c in enumerate(centres):
        if exact_eq["count"][k] == 0 and exact_train["count"][k] == 0:
            continue
        rho = exact_eq["rho"][k] if np.isfinite(exact_eq["rho"][k]) else exact_train["rho"][k]
        zq = np.array([[c, rho]])
        mu = float(model.sde.drift(zq)[0, 0]) if np.isfinite(rho) else float("nan")
        cov = float(model.sde.covariance(zq)[0, 0, 0]) if np.isfinite(rho) else float("nan")
        print(f"| {c:.2f} | {exact_eq['count'][k]} / {exact_train['count'][k]} | {exact_eq['rho'][k]:.3f} / "
              f"{exact_train['rho'][k]:.3f} | {exact_eq['b'][k]:.2e} | {exact_train['b'][k]:.2e} | {mu:.2e} | "
              f"{exact_eq['a'][k]:.2e} | {exact_train['a'][k]:.2e} | {cov:.2e} |")


def oracle(args: argparse.Namespace) -> None:
    """The same λ = K fit, but on partial-evolution pairs from *equilibrium* L × L states (direct
    simulation: an oracle, not the method). If the learned stationary moments then match the
    direct ones, the likelihood, λ = K, δt and the closure (m, ρ_dw) are adequate and the bias
    is entirely in the distribution of the training states."""
    from matscale.critical import moments
    from matscale.partial import partial_evolution
    from matscale.pipeline.critical_study import load_samples
    from matscale.pipeline.stages import FIT_THREADS, mirrored_pairs, odd_components
    from matscale.sde import fit_sde
    from matscale.systems.spin import Ising2D

    L, T = args.L, args.T
    tau = 50.0 * (L / 16) ** 2.17
    cfg = pipeline_config(L, T, epochs=args.epochs)
    pa, tr = cfg.partial, cfg.train
    start = time.perf_counter()
    states = stationary_states(L, T, args.n_states, tau=tau, seed=11)
    t_states = time.perf_counter() - start
    system = Ising2D(L, T)
    K = (L // 16) ** 2
    if args.generator:
        from matscale.partial import generator_pairs
        z0, z1, dt = generator_pairs(system, states, pa.duration)
        lam = 1.0
    else:
        data = partial_evolution(system, states, 16, duration=pa.duration, boundary=pa.boundary, seed=pa.seed,
                                 n_draws=args.n_draws, store_patches=False, progress=False,
                                 pairs_per_snapshot=args.pairs_per_state)
        z0 = np.asarray(data.z0, dtype=np.float64)
        z1 = np.asarray(data.z1, dtype=np.float64)
        dt = np.asarray(data.dt, dtype=np.float64)
        lam = K / args.n_draws
    odd = odd_components(args.symmetrize, ("m", "rho_dw"))
    z0, z1, dt, _ = mirrored_pairs(z0, z1, dt, None, odd)
    sde = fit_sde(z0, z1, dt, loss="partial", lam=lam, diffusion=tr.diffusion, hidden=tuple(tr.hidden),
                  epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr, seed=tr.seed, progress=False,
                  validation_fraction=tr.validation_fraction, num_threads=FIT_THREADS)
    t_fit = time.perf_counter() - start - t_states
    picks = np.random.default_rng(0).choice(len(states), size=args.n_paths, replace=False)
    m_learned = rollout_samples(sde, system.observables(states[picks]), tau, max_step=args.max_step)
    print(f"# L = {L}, T = {T:g}: {len(states)} equilibrium states {t_states:.0f} s, {len(z0)} pairs "
          f"({'exact generator moments' if args.generator else f'λ = K/R = {K}/{args.n_draws}'}), pairs + fit "
          f"{t_fit:.0f} s, rollout {m_learned.shape}")
    res = {"learned (equilibrium states)": moments(m_learned, L, T),
           "training states themselves": moments(states.reshape(len(states), -1).mean(axis=1)[:, None], L, T)}
    direct_dir = Path(args.direct) / "direct" / f"L{L}_T{T:g}" if args.direct else None
    if direct_dir is not None and (direct_dir / "samples.npz").is_file():
        res["direct"] = moments(load_samples(direct_dir)["m"], L, T)
    print("| | ⟨|M|⟩ | χ | U |\n|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['abs_m']} | {r['chi']} | {r['binder']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({k: {q: [e.value, e.error] for q, e in r.items()} for k, r in res.items()}))


def implied_moments(L: int, T: float, states: np.ndarray, *, degree: int = 7) -> dict[str, float]:
    """⟨|m|⟩, χ, U of the stationary density of the 1-D effective dynamics of m built from the
    exact conditional generator moments on ``states``: b̄(m) (odd) and ā(m) (even) are
    least-squares polynomials of ``degree`` in m over the states, and P(m) ∝ exp(∫ 2 b̄/ā dm) / ā.
    For equilibrium states this is the equilibrium P(m) (effective dynamics by conditional
    expectation preserves the marginal of a reversible process, F. Legoll & T. Lelièvre,
    Nonlinearity 23, 2131 (2010); here up to the diffusion approximation of the ±2/N jumps):
    what any SDE fitted to such states converges to with enough data. Also the binned b̄ and ā."""
    from matscale.systems.spin import Ising2D

    drift, diffusion = Ising2D(L, T).generator_moments(states)
    m = states.reshape(len(states), -1).mean(axis=1)
    return implied_from_moments(L, T, m, drift[:, 0], diffusion[:, 0, 0], degree=degree)


def implied_from_moments(L: int, T: float, m: np.ndarray, b: np.ndarray, a: np.ndarray, *,
                         degree: int = 7) -> dict[str, float]:
    """:func:`implied_moments` from the states' magnetisations ``m``, exact drifts ``b`` and
    diffusions ``a`` of m (per Glauber time)."""
    odd = np.stack([m ** k for k in range(1, degree + 1, 2)], axis=1)
    even = np.stack([m ** k for k in range(0, degree + 1, 2)], axis=1)
    cb = np.linalg.lstsq(odd, b, rcond=None)[0]
    ca = np.linalg.lstsq(even, a, rcond=None)[0]
    grid = np.linspace(-1.0, 1.0, 4001)
    b = np.stack([grid ** k for k in range(1, degree + 1, 2)], axis=1) @ cb
    a = np.stack([grid ** k for k in range(0, degree + 1, 2)], axis=1) @ ca
    f = 2.0 * b / a
    log_p = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))]) - np.log(a)
    p = np.exp(log_p - log_p.max())
    p /= np.trapezoid(p, grid)
    m1, m2, m4 = (np.trapezoid(p * np.abs(grid) ** k, grid) for k in (1, 2, 4))
    at = {f"b({x:g})": float(b[np.argmin(np.abs(grid - x))]) for x in (0.25, 0.5, 0.75)}
    return {"abs_m": float(m1), "chi": float(L * L / T * (m2 - m1 ** 2)), "binder": float(1 - m4 / (3 * m2 ** 2)),
            **at, "a(0.5)": float(a[np.argmin(np.abs(grid - 0.5))])}


def marginal(args: argparse.Namespace) -> None:
    """Implied stationary moments (:func:`implied_moments`) of equilibrium states and of the
    training states of the pipeline variants given by ``--relax``, ``--mode``, ``--n-random``."""
    from matscale.critical import moments
    from matscale.pipeline import run_pipeline
    from matscale.pipeline.stages import load_configs

    L, T = args.L, args.T
    tau = 50.0 * (L / 16) ** 2.17
    rows = {}
    eq = stationary_states(L, T, args.n_states, tau=tau, seed=21)
    rows["equilibrium states"] = implied_moments(L, T, eq)
    own = moments(eq.reshape(len(eq), -1).mean(axis=1)[:, None], L, T)
    rows["(their own moments)"] = {k: own[q].value for k, q in (("abs_m", "abs_m"), ("chi", "chi"), ("binder", "binder"))}
    for spec in args.variants:
        relax, mode, n_random = spec.split(":")
        variant = Variant(relax=float(relax), mode=mode, n_random=int(n_random))
        out = Path(args.out) / (f"L{L}_T{T:g}" + variant.tag())
        start = time.perf_counter()
        run_pipeline(pipeline_config(L, T, variant=variant), out, stop_after="upsample", progress=False)
        configs = load_configs(out / "p16" / "upsample")
        picks = np.random.default_rng(0).choice(len(configs), size=min(args.n_states, len(configs)), replace=False)
        rows[f"training states {spec} ({time.perf_counter() - start:.0f} s)"] = implied_moments(L, T, configs[picks])
    keys = ["abs_m", "chi", "binder", "b(0.25)", "b(0.5)", "b(0.75)", "a(0.5)"]
    print("| states | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4g}" if k in r else "" for k in keys) + " |")


def sweeps(args: argparse.Namespace) -> None:
    """Block-Gibbs sweeps on top of the training states of a finished learned point of the
    ``critical`` study (:func:`matscale.pipeline.critical_study.training_states`): ``--passes``
    passes over all 16² windows (stride 8, random order per state and pass), each window relaxed
    for ``--duration`` with its exterior frozen — exact Monte Carlo moves of the L × L system, so
    the states approach its equilibrium — the states after each pass of the second half kept
    (``--last-only``: only the last pass), then the study's generator-moment fit (``--fit-states``:
    how many, drawn with a flat |m| histogram, 0: all; ``--prior-degree``: its polynomial drift
    prior, 0: the networks alone) and rollout,
    against the direct samples; also the stationary moments implied by the exact conditional
    moments of the kept states (:func:`implied_moments`, no fit)."""
    from matscale.critical import moments
    from matscale.pipeline.critical_study import (CriticalConfig, PATCH, fit_generator_sde, load_samples,
                                                  pipeline_config, training_states)
    from matscale.pipeline.stages import load_configs
    from matscale.systems.spin import Ising2D

    L, T = args.L, args.T
    cfg = CriticalConfig()
    start = time.perf_counter()
    upsampled = load_configs(Path(args.work) / f"p{PATCH}" / "upsample")
    system = Ising2D(L, T)
    chunks = list(training_states(system, upsampled, args.passes, args.duration, seed=args.pass_seed))
    if args.last_only:
        chunks = chunks[-1:]
    t_sweeps = time.perf_counter() - start
    train = dataclasses.replace(pipeline_config(cfg, L, T).train, seed=args.seed)
    sde = fit_generator_sde(system, chunks, train, prior_degree=args.prior_degree, fit_states=args.fit_states)
    equilibrate, interval, n_samples = cfg.schedule(L)
    n_eq = int(np.ceil(equilibrate / interval))
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(upsampled), size=args.n_paths, replace=False)
    paths = sde.sample(system.observables(chunks[-1][picks]), n_eq + n_samples, interval, n_paths=1,
                       seed=args.seed + 3, nonfinite="keep")[:, 0]
    m = paths[:, n_eq + 1:, 0]
    ok = np.all(np.isfinite(m), axis=1) & np.all(np.abs(m) <= 1.5, axis=1)
    res = {"learned": moments(np.clip(m[ok], -1.0, 1.0), L, T)}
    implied = implied_moments(L, T, np.concatenate(chunks))
    if args.direct:
        res["direct"] = moments(load_samples(Path(args.direct) / "direct" / f"L{L}_T{T:g}")["m"], L, T)
    print(f"# L = {L}, T = {T:g}: {args.passes} passes of {args.duration:g} on {len(upsampled)} states, "
          f"{sum(map(len, chunks))} kept, {t_sweeps:.0f} s, total {time.perf_counter() - start:.0f} s")
    for name, r in res.items():
        print(f"| {name} | {r['abs_m']} | {r['chi']} | {r['binder']} |")
    print(f"| implied by the exact moments (no fit) | {implied['abs_m']:.4g} | {implied['chi']:.4g} | "
          f"{implied['binder']:.4g} |")


def fit_noise(args: argparse.Namespace) -> None:
    """Which estimate of the stationary P(m) is limited by what: ``--passes`` block-Gibbs passes
    on the upsampled states of a finished learned point (``--work``), then for the states after
    each pass of the second half (``--duration`` per window; 8000 states each) three estimates
    of ⟨|M|⟩, χ, U in units of the direct errors (Δ/σ): the stationary moments implied by their
    exact moments (odd/even polynomials, quadrature; no network), the study's earlier fit (SDE of
    (m, ρ_dw), networks alone) and the 1-D fit (SDE of m, least-squares odd polynomial drift prior
    of degree 7 plus networks), each rolled out for 64 paths on the direct schedule. The spread
    of the implied value between passes is the noise of the training data; a fit that scatters
    more adds its own. Last, the implied value of all kept states with its bootstrap spread over
    states (8 resamples; states one pass apart are correlated, so it is a lower bound)."""
    from matscale.critical import moments
    from matscale.pipeline.critical_study import (CriticalConfig, PATCH, fit_generator_sde, load_samples,
                                                  pipeline_config, recorded_passes, training_states)
    from matscale.pipeline.stages import load_configs
    from matscale.systems.spin import Ising2D

    L, T = args.L, args.T
    cfg = CriticalConfig()
    direct = moments(load_samples(Path(args.direct) / "direct" / f"L{L}_T{T:g}")["m"], L, T)
    keys = ("abs_m", "chi", "binder")

    def deviations(values: dict[str, float]) -> str:
        return " | ".join(f"{(values[k] - direct[k].value) / direct[k].error:+.1f}" for k in keys)

    system = Ising2D(L, T)
    upsampled = load_configs(Path(args.work) / f"p{PATCH}" / "upsample")
    equilibrate, interval, n_samples = cfg.schedule(L)
    n_eq = int(np.ceil(equilibrate / interval))
    base = pipeline_config(cfg, L, T).train
    print(f"# L = {L}, T = {T:g}: Δ/σ of ⟨|M|⟩, χ, U against the direct values")
    print("| states | implied | (m, ρ_dw), networks | m, prior + networks | fit s |\n|---|---|---|---|---|")
    kept = []
    first = args.passes - recorded_passes(args.passes)  # passes before the first kept one
    for i, states in enumerate(training_states(system, upsampled, args.passes, args.duration, seed=args.pass_seed)):
        kept.append(states)
        seed = first + i + 1  # the pass number
        cells, start = [deviations(implied_moments(L, T, states))], time.perf_counter()
        for observables, degree in ((("m", "rho_dw"), 0), (("m",), 7)):
            train = dataclasses.replace(base, seed=seed)
            sde = fit_generator_sde(system, states, train, prior_degree=degree, observables=observables)
            picks = np.random.default_rng(seed).choice(len(states), size=64, replace=False)
            z0 = system.observables(states[picks])[:, :len(observables)]
            paths = sde.sample(z0, n_eq + n_samples, interval, n_paths=1, seed=seed + 3, nonfinite="keep")[:, 0]
            m = paths[:, n_eq + 1:, 0]
            ok = np.all(np.isfinite(m), axis=1) & np.all(np.abs(m) <= 1.5, axis=1)
            cells.append(deviations({k: e.value for k, e in moments(np.clip(m[ok], -1, 1), L, T).items()}))
        print(f"| after pass {seed} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |", flush=True)
    pooled = np.concatenate(kept)
    rng = np.random.default_rng(1)
    boot = [implied_moments(L, T, pooled[rng.integers(0, len(pooled), len(pooled))]) for _ in range(8)]
    spread = [np.std([(b[k] - direct[k].value) / direct[k].error for b in boot], ddof=1) for k in keys]
    print(f"| all {len(pooled)} kept (implied) | {deviations(implied_moments(L, T, pooled))} "
          f"(bootstrap ± {' / '.join(f'{x:.1f}' for x in spread)}) | | | |")


def equilibrium_states(system: Any, runs: np.ndarray, n_samples: int, gap: float,
                       rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Direct Glauber runs ``runs [R, L, L]`` (evolved in place): 5 τ(L) discarded, then the
    runs after each of ``n_samples`` further stretches of ``gap`` Glauber time (the same array)."""
    from matscale.pipeline.critical_study import CriticalConfig

    n = len(runs)
    system.evolve_batch(runs, duration=5 * CriticalConfig().tau(system.L),
                        seeds=rng.integers(0, 2**63, n, dtype=np.uint64))
    for _ in range(n_samples):
        system.evolve_batch(runs, duration=gap, seeds=rng.integers(0, 2**63, n, dtype=np.uint64))
        yield runs


def burnin(args: argparse.Namespace) -> None:
    """How long block-Gibbs passes must run before the upsampled states of a finished learned
    point (``--work``) carry the equilibrium conditional drift at the scale of the box. Reference
    first: ``--eq-runs`` direct Glauber runs (aligned start, 5 τ(L) discarded), ``--eq-samples``
    states each ``--eq-gap`` apart, and the ⟨|M|⟩ implied by their exact moments
    (:func:`implied_from_moments`; Δ/σ in units of the direct error, its spread from a bootstrap
    over runs, 20 resamples): how close the estimator itself comes with this many equilibrium
    states. Then ``--passes`` passes (``--duration`` per window, 4 ``--duration`` per site and
    pass) on the upsampled states: the implied Δ/σ after every pass, and of the states of the
    last ``--pool`` passes together."""
    from matscale.critical import moments
    from matscale.pipeline.critical_study import PATCH, load_samples
    from matscale.pipeline.stages import load_configs
    from matscale.systems.spin import Ising2D
    from matscale.upsampling import block_gibbs_sweeps

    L, T = args.L, args.T
    system = Ising2D(L, T)
    direct = moments(load_samples(Path(args.direct) / "direct" / f"L{L}_T{T:g}")["m"], L, T)["abs_m"]

    def z(value: float) -> str:
        return f"{(value - direct.value) / direct.error:+.1f}"

    def exact(states: np.ndarray) -> tuple[np.ndarray, ...]:
        drift, diffusion = system.generator_moments(states)
        return states.reshape(len(states), -1).mean(axis=1), drift[:, 0], diffusion[:, 0, 0]

    start = time.perf_counter()
    rng = np.random.default_rng([args.seed, L, int(T * 1e4)])
    runs = np.ones((args.eq_runs, L, L), dtype=np.int8)
    runs[: args.eq_runs // 2] = -1
    per_run = [exact(states) for states in equilibrium_states(system, runs, args.eq_samples, args.eq_gap, rng)]
    m, b, a = (np.stack([s[i] for s in per_run], axis=1) for i in range(3))  # [runs, samples]
    value = implied_from_moments(L, T, m.ravel(), b.ravel(), a.ravel())["abs_m"]
    boot = [implied_from_moments(L, T, m[i].ravel(), b[i].ravel(), a[i].ravel())["abs_m"]
            for i in (rng.integers(0, args.eq_runs, args.eq_runs) for _ in range(20))]
    print(f"# L = {L}, T = {T:g}: direct ⟨|M|⟩ {direct.value:.4f} ± {direct.error:.4f}; Δ/σ of the implied ⟨|M|⟩")
    print(f"| {m.size} equilibrium states ({args.eq_runs} runs) | {z(value)} "
          f"(bootstrap ± {np.std(boot, ddof=1) / direct.error:.1f}) | {time.perf_counter() - start:.0f} s |")
    states = load_configs(Path(args.work) / f"p{PATCH}" / "upsample").copy()
    pooled = []
    for k in block_gibbs_sweeps(system, states, args.passes, duration=args.duration, window=PATCH,
                                seed=args.pass_seed):
        pooled = (pooled + [exact(states)])[-args.pool:]
        row = f"| after pass {k} ({4 * k * args.duration:g} per site) | {z(implied_from_moments(L, T, *pooled[-1])['abs_m'])}"
        if k % args.pool == 0:
            together = [np.concatenate([p[i] for p in pooled]) for i in range(3)]
            row += f"; passes {k - args.pool + 1}-{k} together {z(implied_from_moments(L, T, *together)['abs_m'])}"
        print(row + f" | {time.perf_counter() - start:.0f} s |", flush=True)


def equilibrium(args: argparse.Namespace) -> None:
    """The study's estimator on equilibrium states: ``--eq-runs`` direct Glauber runs (aligned
    start of alternating sign, 5 τ(L) discarded), ``--eq-samples`` states each ``--eq-gap``
    apart, then exactly what the learned stage does with its training states
    (:func:`matscale.pipeline.critical_study.fit_members` with the settings of
    ``inputs/ising_critical.toml``, E = ``--members`` if given: member k fits the runs k, k + E,
    …, rolls out its share of 64 paths on the direct schedule). Δ/σ against the direct moments
    (σ combined, the learned error from the bootstrap over members), the members' ⟨|M|⟩, the
    moments of the equilibrium states themselves (a second direct estimate; bootstrap over runs,
    whose samples are correlated) and those implied by the states' exact moments (no fit). A
    learned value off the direct one here is the estimator's error (fit and one-variable
    projection); a learned point of the study that is off by more than this carries it in its
    training states."""
    from matscale.config import load_config
    from matscale.critical import moments
    from matscale.pipeline.critical_study import fit_members, load_samples, pipeline_config
    from matscale.systems.spin import Ising2D

    L, T = args.L, args.T
    cfg = load_config(ROOT / "inputs" / "ising_critical.toml").study
    if args.members is not None:
        cfg = dataclasses.replace(cfg, learned_members=args.members)
        try:
            cfg.check()
        except ValueError as error:
            raise SystemExit(f"--members: {error}") from None
    if args.eq_runs % cfg.learned_members:
        raise SystemExit(f"--eq-runs={args.eq_runs} is not a multiple of the {cfg.learned_members} members")
    system = Ising2D(L, T)
    direct = moments(load_samples(Path(args.direct) / "direct" / f"L{L}_T{T:g}")["m"], L, T)
    start = time.perf_counter()
    rng = np.random.default_rng([args.seed, L, int(T * 1e4)])
    runs = np.ones((args.eq_runs, L, L), dtype=np.int8)
    runs[1::2] = -1
    # one chunk per sample time, runs in order: member k fits the runs k, k + E, ...
    chunks = [states.copy() for states in equilibrium_states(system, runs, args.eq_samples, args.eq_gap, rng)]
    simulated = time.perf_counter() - start
    starts = system.observables(chunks[-1][rng.choice(args.eq_runs, size=cfg.learned_paths, replace=False)])
    train = dataclasses.replace(pipeline_config(cfg, L, T).train, seed=args.seed)
    fitted = fit_members(cfg, system, chunks, train, starts, args.seed + 3, L, T)
    learned = moments(fitted["m"], L, T, clusters=fitted["member"])
    per_member = [moments(fitted["m"][fitted["member"] == k], L, T)["abs_m"].value
                  for k in range(cfg.learned_members)]
    implied = implied_moments(L, T, np.concatenate(chunks))
    m_column = system.observable_names.index("m")
    own = moments(np.stack([system.observables(c)[:, m_column] for c in chunks], axis=1), L, T)  # [runs, samples]
    print(f"# L = {L}, T = {T:g}: {args.eq_runs} runs x {args.eq_samples} states ({simulated:.0f} s), "
          f"{cfg.learned_members} members ({fitted['fit_seconds']:.0f} s fitting), "
          f"{len(fitted['m'])} paths ({fitted['n_dropped']} dropped)")
    print("| | ⟨|M|⟩ | χ | U |\n|---|---|---|---|")
    for name, r in (("direct", direct), ("the equilibrium states themselves", own),
                    ("learned from equilibrium states", learned)):
        print(f"| {name} | " + " | ".join(str(r[k]) for k in ("abs_m", "chi", "binder")) + " |")
    print("| Δ/σ (combined) | " + " | ".join(
        f"{(learned[k].value - direct[k].value) / np.hypot(learned[k].error, direct[k].error):+.1f}"
        for k in ("abs_m", "chi", "binder")) + " |")
    print(f"| implied by the exact moments (no fit) | {implied['abs_m']:.4g} | {implied['chi']:.4g} | "
          f"{implied['binder']:.4g} |")
    print("members' ⟨|M|⟩: " + ", ".join(f"{v:.3f}" for v in per_member))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose")
    d.add_argument("--L", type=int, default=32)
    d.add_argument("--T", type=float, default=2.27)
    d.add_argument("--n-states", type=int, default=128)
    d.add_argument("--n-rep", type=int, default=32)
    d.add_argument("--dts", default="0.05,0.2,0.5,1,2,5,20")
    d.add_argument("--json", default="")
    # the options every fitting experiment takes
    fitting = argparse.ArgumentParser(add_help=False)
    fitting.add_argument("--L", type=int, default=32)
    fitting.add_argument("--T", type=float, default=2.27)
    fitting.add_argument("--direct", default="", help="a finished critical study folder (direct references)")
    fitting.add_argument("--epochs", type=int, default=40)
    fitting.add_argument("--n-paths", type=int, default=64)
    fitting.add_argument("--max-step", default="auto")
    fitting.add_argument("--json", default="")
    g = sub.add_parser("learned", parents=[fitting])
    g.add_argument("--out", required=True)
    g.add_argument("--n-eq", type=int, default=512)
    g.add_argument("--relax", type=float, default=0.0,
                   help="LocalRelax duration per window of the upsampling (0: the preset's 3.0)")
    g.add_argument("--mode", default="", help="upsampling mode (default: the preset's tile_matched)")
    g.add_argument("--n-random", type=int, default=-1, help="random/quenched states (-1: the preset's)")
    g.add_argument("--symmetrize", default="", help='train.symmetrize, e.g. "m" (mirror pairs m -> -m)')
    g.add_argument("--closure-dim", type=int, default=0)
    g.add_argument("--min-anchor-time", type=float, default=0.0,
                   help="> 0: refit on pairs of states anchored at small-run times >= this (Glauber time)")
    g.add_argument("--skip-moments", action="store_true", help="skip the exact conditional-moment table")
    g.add_argument("--generator", action="store_true",
                   help="fit on the exact generator moments of the training states (no partial evolution)")
    o = sub.add_parser("oracle", parents=[fitting])
    o.add_argument("--n-states", type=int, default=2000)
    o.add_argument("--pairs-per-state", type=int, default=5)
    o.add_argument("--n-draws", type=int, default=8)
    o.add_argument("--symmetrize", default="m")
    o.add_argument("--generator", action="store_true", help="pairs from the exact generator moments")
    mg = sub.add_parser("marginal")
    mg.add_argument("--L", type=int, default=32)
    mg.add_argument("--T", type=float, default=2.27)
    mg.add_argument("--out", required=True)
    mg.add_argument("--n-states", type=int, default=4000)
    mg.add_argument("variants", nargs="*", help="RELAX:MODE:N_RANDOM, e.g. 3:tile_matched:2000 (0 / '' / -1: preset)")
    sw = sub.add_parser("sweeps")
    sw.add_argument("--L", type=int, default=64)
    sw.add_argument("--T", type=float, default=2.29)
    sw.add_argument("--work", required=True, help="OUT/learned_work/L{L}_T{T} of a finished critical study")
    sw.add_argument("--direct", default="", help="a finished critical study folder (direct references)")
    sw.add_argument("--passes", type=int, default=8)
    sw.add_argument("--duration", type=float, default=25.0)
    sw.add_argument("--last-only", action="store_true", help="fit on the states after the last pass only")
    sw.add_argument("--seed", type=int, default=0, help="fit and rollout seed")
    sw.add_argument("--pass-seed", type=int, default=7, help="seed of the passes")
    sw.add_argument("--fit-states", type=int, default=32000,
                    help="states fitted, drawn with a flat |m| histogram (0: all kept states)")
    sw.add_argument("--prior-degree", type=int, default=9,
                    help="degree of the least-squares polynomial drift prior of m (0: none, the networks alone)")
    sw.add_argument("--n-paths", type=int, default=64)
    on_work = argparse.ArgumentParser(add_help=False)  # passes on the upsampled states of a finished point
    on_work.add_argument("--L", type=int, default=64)
    on_work.add_argument("--work", required=True, help="OUT/learned_work/L{L}_T{T} of a finished critical study")
    on_work.add_argument("--direct", required=True, help="a finished critical study folder (direct references)")
    on_work.add_argument("--duration", type=float, default=25.0)
    on_work.add_argument("--pass-seed", type=int, default=7, help="seed of the passes")
    fn = sub.add_parser("fitnoise", parents=[on_work])
    fn.add_argument("--T", type=float, default=2.28)
    fn.add_argument("--passes", type=int, default=8)
    bi = sub.add_parser("burnin", parents=[on_work])
    bi.add_argument("--T", type=float, default=2.29)
    bi.add_argument("--passes", type=int, default=24)
    bi.add_argument("--pool", type=int, default=4, help="passes whose states are pooled")
    bi.add_argument("--eq-runs", type=int, default=128, help="direct runs of the equilibrium reference")
    bi.add_argument("--eq-samples", type=int, default=250, help="states per run")
    bi.add_argument("--eq-gap", type=float, default=20.0, help="Glauber time between a run's states")
    bi.add_argument("--seed", type=int, default=11, help="seed of the direct runs")
    eq = sub.add_parser("equilibrium")
    eq.add_argument("--L", type=int, default=64)
    eq.add_argument("--T", type=float, default=2.29)
    eq.add_argument("--direct", required=True, help="a finished critical study folder (direct references)")
    eq.add_argument("--eq-runs", type=int, default=512, help="direct runs (a multiple of the members)")
    eq.add_argument("--eq-samples", type=int, default=64, help="states per run")
    eq.add_argument("--eq-gap", type=float, default=20.0, help="Glauber time between a run's states")
    eq.add_argument("--seed", type=int, default=11, help="seed of the runs, the fits and the rollouts")
    eq.add_argument("--members", type=int, default=None,
                    help="fits per point (default: learned_members of inputs/ising_critical.toml)")
    args = parser.parse_args()
    if getattr(args, "max_step", "auto") != "auto":
        args.max_step = float(args.max_step)
    {"diagnose": diagnose, "learned": learned, "oracle": oracle, "marginal": marginal,
     "sweeps": sweeps, "fitnoise": fit_noise,
     "burnin": burnin, "equilibrium": equilibrium}[args.command](args)


if __name__ == "__main__":
    main()
