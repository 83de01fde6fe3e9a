"""The ``critical`` study: finite-size scaling of the 2-D Ising model near T_c.

Stage ``direct`` (one resumable stage per box side L and temperature T, folder
``OUT/direct/L{L}_T{T}``): ``n_runs`` independent exact continuous-time Glauber runs of the
L × L periodic Ising model (J = k_B = 1, field h), each started from a fully aligned state of
random sign, equilibrated, then sampled. Times scale with the dynamic critical behaviour: the
integrated autocorrelation time of |M| is modelled as τ(L) = ``tau_16`` · (L / 16)^``z``
(Glauber time; ``tau_16`` = 50 and z = 2.17 measured at T = 2.27, see ``inputs/ising_critical.toml``);
a run discards ``equilibrate_taus`` · τ(L) and then records ``production_taus`` · τ(L), one
sample every τ(L) / ``samples_per_tau``. The τ_int measured from the recorded samples
(:func:`matscale.critical.integrated_autocorrelation_time`) is stored beside them, so the
report shows how many measured autocorrelation times were discarded.

Stage ``learned`` (only with ``learned_sizes``; folder ``OUT/learned/L{L}_T{T}``): the macroscopic
SDE of ``learned_observables`` (m, or m and ρ_dw) learned from 16² simulations alone, rolled out
with the direct schedule. The
spin pipeline (its own resumable run in ``OUT/learned_work/L{L}_T{T}``) simulates 16² boxes and
upsamples them to L × L (``learned_mode``: tiles matched in m by default; LocalRelax of
``learned_relax`` Glauber times per ``learned_window``² window at every level, no random
states). Block-Gibbs passes (``learned_pass_time`` per window, exact Monte Carlo moves of the
L × L model) follow: first enough for ``learned_burnin_taus`` · τ(L) of Glauber time per site
(:meth:`CriticalConfig.burnin_passes`; near T_c the order that tiling leaves at the scale of
the box relaxes like m itself), then ``learned_passes``, and the states after each pass of
their second half are the training states (:func:`training_states`); ``learned_fit_states`` of them, drawn with a
flat |m| histogram, are fitted to their exact generator moments
(:func:`matscale.partial.moment_pairs`, mirror pairs m → −m at h = 0), the drift of m starting
from a least-squares polynomial prior of degree ``learned_prior_degree``
(:func:`fit_generator_sde`), and ``learned_paths`` paths are rolled out. With ``learned_members``
E > 1 there are E such fits, each on its own E-th of the upsampled states, whose rollouts are
pooled; the moments' errors then come from a bootstrap over the fits and include the noise of
the training data. Stage ``fss_learned`` analyses them like ``fss``. Why these choices (the
λ = K bias near T_c) is measured in ``benchmarks/study_critical_lambda.py``. With ``matscale run --workers N`` the points of both
stages run in N processes; the results are the same.

Stage ``fss`` (folder ``OUT/fss``): :func:`matscale.critical.moments` (⟨|M|⟩, χ, U with errors
from a bootstrap over runs), the FSS exponents β/ν, γ/ν (at the grid temperature closest to
Onsager's T_c) and 1/ν (from dU/dT), and the Binder-cumulant crossings of every pair of sizes.
The report (``report.md``, ``metrics.json``, ``collapse.png``) is written after the stages.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from matscale.config import ConfigError
from matscale.io import json_dump, read_json
from matscale.pipeline.runner import StageRunner
from matscale.pipeline.studies import Study

STAGES = ("direct", "fss", "learned", "fss_learned")
SYSTEM_KIND = "ising"  # the registry kind of the 2-D Ising model this study is about
PATCH = 16          # side of the small simulations of the learned stage
# learned_* fields added after the first full runs: left out of the records at their defaults
LEARNED_ADDED_LATER = ("learned_window", "learned_mode", "learned_passes", "learned_fit_states",
                       "learned_prior_degree", "learned_prior_knots", "learned_members",
                       "learned_observables", "learned_burnin_taus")
LEARNED_OBSERVABLES = ("m", "rho_dw")  # the Ising model's observables a learned SDE may use
GENERATOR_DT = 0.2  # step (Glauber time) of the generator pairs; the rollout substeps at 2 GENERATOR_DT


@dataclass(frozen=True)
class CriticalConfig:
    """``[critical]``: sizes, temperatures, field and the run budget of the direct simulations."""

    sizes: tuple[int, ...] = (16, 32, 48, 64)
    temperatures: tuple[float, ...] = (2.25, 2.26, 2.27, 2.28, 2.29)
    h: float = 0.0
    J: float = 1.0
    n_runs: int = 16
    tau_16: float = 50.0            # τ_int of |M| at L = 16 near T_c (Glauber time)
    z: float = 2.17                 # dynamic exponent of Glauber dynamics: τ(L) = tau_16 (L/16)^z
    equilibrate_taus: float = 10.0  # discarded per run, in units of τ(L)
    production_taus: float = 50.0   # recorded per run, in units of τ(L)
    samples_per_tau: float = 4.0
    n_boot: int = 400
    seed: int = 0
    learned_sizes: tuple[int, ...] = ()  # sides of the learned-SDE points (16 f^k, f >= 2); (): none
    learned_small_runs: int = 400        # 16² runs per point (50 snapshots each, 6.2 Glauber times apart)
    learned_states: int = 8000           # upsampled training states per point (fewer fail: 2000 at L = 64
                                         # gave ⟨|M|⟩ 0.672 against 0.610 with 8000 and 0.596 direct)
    learned_relax: float = 100.0         # LocalRelax Glauber time per window, at every level
    learned_window: int = 16             # LocalRelax window side (stride half of it); <= the level's box
    learned_mode: str = "tile_matched"   # upsampling mode of the training states ("tile": independent tiles)
    learned_passes: int = 0              # block-Gibbs passes over the upsampled states (0: none)
    learned_pass_time: float = 25.0      # Glauber time per window in each pass
    learned_burnin_taus: float = 0.0     # extra passes first, for this many τ(L) of Glauber time per site
    learned_fit_states: int = 0          # states fitted, drawn with a flat |m| histogram (0: all)
    learned_prior_degree: int = 0        # least-squares polynomial drift prior of m (0: none)
    learned_prior_knots: int = 0         # > 0: a piecewise-linear prior on that many |m| intervals instead
    learned_members: int = 1             # independent fits per point, each on its share of the states
    learned_observables: tuple[str, ...] = ("m", "rho_dw")  # the SDE's variables; m first
    learned_epochs: int = 200
    learned_paths: int = 64              # rollout paths per point (all members together)
    learned_seed: int = 0

    def check(self) -> None:
        """One-line :class:`ConfigError` naming ``critical.<field>`` and the allowed range."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"critical.{message}")

        need(len(self.sizes) >= 2, f"sizes has {len(self.sizes)} values (allowed: >= 2 distinct sizes)")
        for i, L in enumerate(self.sizes):
            need(L >= 4, f"sizes[{i}]={L} out of range (allowed: >= 4)")
        need(len(set(self.sizes)) == len(self.sizes), "sizes has repeated values (allowed: distinct)")
        need(len(self.temperatures) >= 2, f"temperatures has {len(self.temperatures)} values (allowed: >= 2)")
        for i, t in enumerate(self.temperatures):
            need(math.isfinite(t) and t > 0, f"temperatures[{i}]={t} out of range (allowed: > 0)")
        need(len(set(self.temperatures)) == len(self.temperatures), "temperatures has repeated values (allowed: distinct)")
        need(math.isfinite(self.h), f"h={self.h} out of range (allowed: finite)")
        need(math.isfinite(self.J) and self.J > 0, f"J={self.J} out of range (allowed: > 0, ferromagnet)")
        need(self.n_runs >= 2, f"n_runs={self.n_runs} out of range (allowed: >= 2 independent runs)")
        for name in ("tau_16", "equilibrate_taus", "production_taus", "samples_per_tau"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name}={value} out of range (allowed: > 0)")
        need(math.isfinite(self.z) and 0 <= self.z <= 4, f"z={self.z} out of range (allowed: 0..4)")
        need(self.production_taus * self.samples_per_tau >= 4,
             f"production_taus={self.production_taus} gives fewer than 4 samples per run "
             "(allowed: production_taus * samples_per_tau >= 4)")
        need(self.n_boot >= 20, f"n_boot={self.n_boot} out of range (allowed: >= 20)")
        need(self.seed >= 0, f"seed={self.seed} out of range (allowed: >= 0)")
        for i, L in enumerate(self.learned_sizes):
            need(upsampling_factor(L) > 0, f"learned_sizes[{i}]={L} out of range (allowed: {PATCH}·f^k "
                                           f"with integers f >= 2, k >= 1, e.g. 32, 48, 64, 128)")
        need(len(set(self.learned_sizes)) == len(self.learned_sizes), "learned_sizes has repeated values")
        need(len(self.learned_sizes) != 1, "learned_sizes has 1 value (allowed: none, or >= 2 for the FSS fits)")
        for name, low in (("learned_small_runs", 2), ("learned_states", 8), ("learned_epochs", 1),
                          ("learned_paths", 2)):
            need(getattr(self, name) >= low, f"{name}={getattr(self, name)} out of range (allowed: >= {low})")
        need(math.isfinite(self.learned_relax) and self.learned_relax > 0,
             f"learned_relax={self.learned_relax} out of range (allowed: > 0)")
        need(self.learned_seed >= 0, f"learned_seed={self.learned_seed} out of range (allowed: >= 0)")
        need(self.learned_mode in ("tile_matched", "tile", "tile_time"),
             f"learned_mode={self.learned_mode!r} is not allowed (allowed: tile_matched, tile, tile_time)")
        need(0 <= self.learned_passes <= 64, f"learned_passes={self.learned_passes} out of range (allowed: 0 .. 64)")
        need(self.learned_fit_states == 0 or self.learned_fit_states >= 8,
             f"learned_fit_states={self.learned_fit_states} out of range (allowed: 0 (all) or >= 8)")
        need(0 <= self.learned_prior_knots <= 200,
             f"learned_prior_knots={self.learned_prior_knots} out of range (allowed: 0 .. 200)")
        need(0 <= self.learned_prior_degree <= 15,
             f"learned_prior_degree={self.learned_prior_degree} out of range (allowed: 0 .. 15)")
        allowed = ", ".join(LEARNED_OBSERVABLES)
        need(len(self.learned_observables) >= 1 and self.learned_observables[0] == "m"
             and set(self.learned_observables) <= set(LEARNED_OBSERVABLES)
             and len(set(self.learned_observables)) == len(self.learned_observables),
             f"learned_observables={list(self.learned_observables)} is not allowed "
             f"(allowed: \"m\" first, then distinct names of {allowed})")
        need(1 <= self.learned_members <= 16,
             f"learned_members={self.learned_members} out of range (allowed: 1 .. 16)")
        need(self.learned_paths >= 2 * self.learned_members,
             f"learned_paths={self.learned_paths} out of range (allowed: >= 2 per member, "
             f">= {2 * self.learned_members} with learned_members={self.learned_members})")
        need(self.learned_states >= 8 * self.learned_members,
             f"learned_states={self.learned_states} out of range (allowed: >= 8 per member, "
             f">= {8 * self.learned_members} with learned_members={self.learned_members})")
        need(math.isfinite(self.learned_pass_time) and self.learned_pass_time > 0,
             f"learned_pass_time={self.learned_pass_time} out of range (allowed: > 0)")
        need(math.isfinite(self.learned_burnin_taus) and 0 <= self.learned_burnin_taus <= 20,
             f"learned_burnin_taus={self.learned_burnin_taus} out of range (allowed: 0 .. 20)")
        need(self.learned_burnin_taus == 0 or self.learned_passes > 0,
             f"learned_burnin_taus={self.learned_burnin_taus} needs learned_passes > 0 (the passes it precedes)")
        need(2 <= self.learned_window <= 2 * PATCH,
             f"learned_window={self.learned_window} out of range (allowed: 2 .. {2 * PATCH}, the first upsampled box)")

    def burnin_passes(self, L: int) -> int:
        """Block-Gibbs passes before the ``learned_passes`` at side L: enough for
        ``learned_burnin_taus`` · τ(L) Glauber time per site. Windows of side w at stride w/2
        cover every site 4 times per pass (2-D), so a pass gives each site 4 ``learned_pass_time``."""
        if self.learned_burnin_taus == 0:
            return 0
        return int(math.ceil(self.learned_burnin_taus * self.tau(L) / (4.0 * self.learned_pass_time)))

    def tau(self, L: int) -> float:
        """Modelled τ_int of |M| at side L (Glauber time)."""
        return self.tau_16 * (L / 16.0) ** self.z

    def schedule(self, L: int) -> tuple[float, float, int]:
        """(equilibration time, sampling interval, samples per run) at side L (Glauber time)."""
        tau = self.tau(L)
        interval = tau / self.samples_per_tau
        return self.equilibrate_taus * tau, interval, int(round(self.production_taus * self.samples_per_tau))


def upsampling_factor(L: int) -> int:
    """The smallest integer f >= 2 with L = PATCH · f^k (k >= 1), or 0 when there is none."""
    if L % PATCH or L < 2 * PATCH:
        return 0
    ratio = L // PATCH
    for f in range(2, ratio + 1):
        n = ratio
        while n % f == 0:
            n //= f
        if n == 1:
            return f
    return 0


def describe(cfg: CriticalConfig) -> str:
    """One line for ``matscale validate``."""
    temps = ", ".join(f"{t:g}" for t in cfg.temperatures)
    learned = (f"; learned SDEs from {PATCH}² runs at L = {', '.join(map(str, cfg.learned_sizes))}"
               if cfg.learned_sizes else "")
    return (f"2-D Ising FSS at h = {cfg.h:g}: L = {', '.join(map(str, cfg.sizes))}, T = {temps}; "
            f"{cfg.n_runs} runs per point, {cfg.equilibrate_taus:g} τ(L) discarded + {cfg.production_taus:g} τ(L) "
            f"sampled, τ(L) = {cfg.tau_16:g}·(L/16)^{cfg.z:g}{learned}")


def _tag(L: int, T: float) -> str:
    return f"L{L}_T{T:g}"


def _seeds(cfg: CriticalConfig, L: int, T: float, label: int) -> np.random.Generator:
    """The generator of one (L, T) point: independent of the lists' order (resumes agree)."""
    return np.random.default_rng([cfg.seed, L, int(round(T * 10000)), label])


def simulate_point(cfg: CriticalConfig, L: int, T: float) -> dict[str, np.ndarray]:
    """Direct stationary samples at one (L, T): ``m [n_runs, S]`` and ``rho_dw [n_runs, S]``
    (magnetisation and domain-wall density per site), with the schedule and the measured τ_int."""
    from matscale.critical import integrated_autocorrelation_time
    from matscale.systems.spin import Ising2D

    system = Ising2D(L, T, h=cfg.h, J=cfg.J)
    rng = _seeds(cfg, L, T, 0)
    equilibrate, interval, n_samples = cfg.schedule(L)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=cfg.n_runs)
    states = np.ascontiguousarray(np.broadcast_to(signs[:, None, None], (cfg.n_runs, L, L)).astype(np.int8))

    def seeds() -> np.ndarray:
        return rng.integers(0, 2**63, size=cfg.n_runs, dtype=np.uint64)

    start = time.perf_counter()
    system.evolve_batch(states, duration=equilibrate, seeds=seeds())
    obs = np.empty((n_samples, cfg.n_runs, 2))
    for k in range(n_samples):
        system.evolve_batch(states, duration=interval, seeds=seeds())
        obs[k] = system.observables(states)
    seconds = time.perf_counter() - start
    m = np.ascontiguousarray(obs[:, :, 0].T)
    tau_samples = integrated_autocorrelation_time(np.abs(m))
    return {"m": m, "rho_dw": np.ascontiguousarray(obs[:, :, 1].T), "L": np.int64(L), "T": np.float64(T),
            "h": np.float64(cfg.h), "J": np.float64(cfg.J), "equilibrate": np.float64(equilibrate),
            "interval": np.float64(interval), "tau_int_abs_m": np.float64(tau_samples * interval),
            "seconds": np.float64(seconds), "final_states": states}


def _save_point(folder: Path, data: dict[str, np.ndarray]) -> None:
    arrays = {k: v for k, v in data.items() if k != "final_states"}
    np.savez(folder / "samples.npz", **arrays)
    np.savez_compressed(folder / "final_states.npz", states=data["final_states"])
    json_dump({"units": {"m": "1 (per site)", "rho_dw": "1 (broken bonds / 2N)", "time": "Glauber time",
                         "T": "J/k_B", "h": "J"},
               "L": int(data["L"]), "T": float(data["T"]), "h": float(data["h"]), "J": float(data["J"]),
               "equilibrate": float(data["equilibrate"]), "interval": float(data["interval"]),
               "samples_per_run": int(data["m"].shape[1]), "n_runs": int(data["m"].shape[0]),
               "tau_int_abs_m": float(data["tau_int_abs_m"]), "seconds": float(data["seconds"])},
              folder / "meta.json")


def load_samples(folder: Path) -> dict[str, Any]:
    """The samples of one finished ``direct`` point folder."""
    with np.load(folder / "samples.npz") as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------------------------
# learned SDEs
# --------------------------------------------------------------------------------------------
def pipeline_config(cfg: CriticalConfig, L: int, T: float) -> Any:
    """The spin pipeline that makes the training states of one learned point (up to ``upsample``)."""
    from matscale.config import config_from_dict

    seed = [cfg.learned_seed, L, int(round(T * 10000))]
    base = int(np.random.default_rng(seed).integers(0, 2**31))
    raw = {
        "workflow": "pipeline", "name": f"critical learned L={L} T={T:g}",
        "system": {"kind": SYSTEM_KIND, "L": L, "T": T, "h": cfg.h, "J": cfg.J},
        "small": {"p": [PATCH], "n_runs": cfg.learned_small_runs, "n_sweeps": 50, "sweep_time": 6.2, "seed": base},
        "upsampling": {"n_configs": cfg.learned_states, "mode": cfg.learned_mode, "factor": upsampling_factor(L),
                       "duration": cfg.learned_relax, "n_random": 0, "seed": base + 1,
                       "window": 0 if cfg.learned_window == PATCH else cfg.learned_window},  # 0: p = PATCH
        "partial": {"duration": GENERATOR_DT, "seed": base + 2},
        "closure": {"dim": 0},
        "train": {"method": "ours", "diffusion": "cholesky", "hidden": [64, 64, 64], "epochs": cfg.learned_epochs,
                  "batch_size": 512, "lr": 2e-3, "seed": base + 4, "symmetrize": "m" if cfg.h == 0 else ""},
        "reference": {"magnetizations": [0.0], "n_runs": 2, "duration": 1.0, "grid_dt": 1.0, "seed": base + 5},
    }
    return config_from_dict(raw)


def training_states(system: Any, states: np.ndarray, passes: int, pass_time: float, *, window: int = PATCH,
                    seed: int = 0, burnin: int = 0) -> Iterator[np.ndarray]:
    """The training states of a learned point, in chunks: with ``passes`` = 0 the upsampled
    ``states`` themselves; else :func:`matscale.upsampling.block_gibbs_sweeps` of ``passes``
    passes (``pass_time`` per ``window``² window) on a copy of them, and the states after every
    pass of the second half (the first half is burn-in). Near T_c one upsampled state gives a
    drift of m known to ~30 % (its short-range structure scatters the exact drift at fixed m 3×
    its mean), and the stationary P(m) ∝ exp(∫ 2 b̄/ā) amplifies that; states a pass apart have
    decorrelated short-range structure, so the recorded passes multiply the data at the cost of
    the passes. At L = 64 the passes also remove the excess order that one long relaxation with
    a frozen, ordered exterior leaves (``benchmarks/study_critical_lambda.py sweeps``).
    ``burnin`` more passes run first, none recorded: near T_c the order at the scale of the box
    that tiling leaves relaxes like m itself, over ~2 τ(L) (``study_critical_lambda.py burnin``)."""
    from matscale.upsampling import block_gibbs_sweeps

    if passes == 0:
        yield states
        return
    current = np.ascontiguousarray(states, dtype=system.state_dtype).copy()
    total = passes + int(burnin)
    for k in block_gibbs_sweeps(system, current, total, duration=pass_time, window=window, seed=seed):
        if k > total - recorded_passes(passes):
            yield current.copy()


def recorded_passes(passes: int) -> int:
    """How many states :func:`training_states` gives per upsampled state."""
    return passes - passes // 2 if passes else 1


def flat_histogram_subset(values: np.ndarray, n: int, *, bins: int = 20, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``n`` of ``values`` (n < len) drawn so that their histogram (``bins``
    equal bins over the range of the values) is as flat as the data allow: value i is kept with
    probability min(1, c / count of its bin), c chosen so that about n are kept. A regression of
    E[y | value] then has the data where the sample was thin (near m = 0 for states of a
    two-peaked P(m)), and it stays unbiased: the selection depends on the regressor only."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 < n < len(values):
        raise ValueError(f"flat_histogram_subset: n={n} out of range (allowed: 1 .. {len(values) - 1})")
    edges = np.linspace(values.min(), values.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)[which].astype(np.float64)
    low, high = 0.0, float(count.max())
    for _ in range(64):  # bisection for c: Σ min(1, c / count) = n
        c = 0.5 * (low + high)
        low, high = (c, high) if np.minimum(1.0, c / count).sum() < n else (low, c)
    keep = np.random.default_rng(seed).random(len(values)) < np.minimum(1.0, high / count)
    return np.flatnonzero(keep)


def fit_generator_sde(system: Any, states: np.ndarray | Iterable[np.ndarray], train: Any,
                      dt: float = GENERATOR_DT, *, prior_degree: int = 0, prior_knots: int = 0,
                      fit_states: int = 0, observables: Sequence[str] | None = None) -> Any:
    """The SDE of ``system``'s observables fitted (loss "em", λ = 1) to the exact generator moments
    of ``states`` (an array, or chunks of them such as :func:`training_states` gives;
    :func:`matscale.partial.moment_pairs` with step ``dt``), mirror pairs for the odd
    observables named in ``train.symmetrize``, network and optimiser from ``train`` (a
    :class:`matscale.config.TrainConfig`). With ``prior_degree`` > 0 the drift of m starts from a
    gray-box prior: the polynomial in m of that degree (odd powers when m is mirrored) fitted by
    least squares to the exact drifts, unweighted (weights 1/a would bias it:
    :data:`matscale.sde.priors.WEIGHTS_NOTE`; :class:`matscale.sde.priors.PolynomialDrift`);
    the networks learn the rest. With ``prior_knots`` > 0 the prior is piecewise linear instead, on
    that many equal intervals of |m| (of m when m is not mirrored) over the states' range
    (:class:`matscale.sde.priors.PiecewiseLinearDrift`): local, so the steep drift near |m| = 1
    does not pull it where the drift is small. With ``fit_states`` > 0 (and more states than that) about that
    many are fitted, drawn with a flat histogram of |m| (of m when m is not mirrored;
    :func:`flat_histogram_subset`). Near T_c the states pile up around the peaks of P(m) and few
    lie near m = 0, where the drift is small and its state-to-state scatter large; fitted on
    all states the networks stay short of that drift and the learned P(m) is too flat between
    the peaks (measured in ``benchmarks/study_critical_lambda.py sweeps``). ``observables``: the
    names of ``system``'s observables the SDE is fitted in (default: all; the priors act on the
    first)."""
    from matscale.partial import exact_moments, moment_pairs
    from matscale.pipeline.stages import FIT_THREADS, mirrored_pairs, odd_components
    from matscale.sde import fit_sde
    from matscale.sde.priors import PiecewiseLinearDrift, PolynomialDrift

    names = tuple(system.observable_names if observables is None else observables)
    pick = _observable_indices(system, names)
    z, drift, diffusion = exact_moments(system, states)
    z, drift, diffusion = z[:, pick], drift[:, pick], diffusion[:, pick][:, :, pick]
    odd = [pick.index(i) for i in odd_components(train.symmetrize, system.observable_names) if i in pick]
    if 0 < fit_states < len(z):
        keep = flat_histogram_subset(np.abs(z[:, 0]) if 0 in odd else z[:, 0], fit_states, seed=train.seed)
        z, drift, diffusion = z[keep], drift[keep], diffusion[keep]
    prior = None
    if prior_knots > 0:
        x = np.abs(z[:, 0]) if 0 in odd else z[:, 0]
        knots = np.linspace(0.0 if 0 in odd else x.min(), x.max(), prior_knots + 1)
        prior = PiecewiseLinearDrift.fit(z, drift, None, knots=knots, component=0, odd=0 in odd)
    elif prior_degree > 0:
        powers = tuple(range(1, prior_degree + 1, 2)) if 0 in odd else tuple(range(prior_degree + 1))
        prior = PolynomialDrift.fit(z, drift, None, powers=powers, component=0)
    z0, z1, steps = moment_pairs(z, drift, diffusion, dt)
    z0, z1, steps, _ = mirrored_pairs(z0, z1, steps, None, odd)
    return fit_sde(z0, z1, steps, loss="em", diffusion=train.diffusion, hidden=tuple(train.hidden),
                   epochs=train.epochs, batch_size=train.batch_size, lr=train.lr, seed=train.seed, progress=False,
                   validation_fraction=train.validation_fraction, num_threads=FIT_THREADS, drift_prior=prior)


def _observable_indices(system: Any, names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in ``system.observable_names`` (a one-line error for an unknown name)."""
    known = list(system.observable_names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"observables {unknown} are not observables of {type(system).__name__} "
                         f"(allowed: {', '.join(known)})")
    return [known.index(n) for n in names]


def learn_point(cfg: CriticalConfig, L: int, T: float, work: Path) -> dict[str, Any]:
    """Stationary samples ``m [paths, S]`` of the SDE learned at (L, T) from 16² simulations (the
    module docstring), with the rollout on the direct stage's schedule. With ``learned_members``
    E > 1, E SDEs are fitted independently, member k on the upsampled states k, k + E, k + 2E, …
    (with their recorded passes), each rolled out for its share of the paths; ``member [paths]``
    labels the paths, so the moments' errors can include the spread between the fits (the
    training data's noise and the optimiser's; :func:`matscale.critical.moments` ``clusters``)."""
    from matscale.pipeline import run_pipeline
    from matscale.pipeline.stages import load_configs
    from matscale.systems.registry import build_system

    pcfg = pipeline_config(cfg, L, T)
    start = time.perf_counter()
    run_pipeline(pcfg, work, stop_after="upsample", progress=False)
    configs = load_configs(work / f"p{PATCH}" / "upsample")
    system = build_system(pcfg.system)  # the pipeline's own large system
    states = training_states(system, configs, cfg.learned_passes, cfg.learned_pass_time, window=cfg.learned_window,
                             seed=pcfg.upsampling.seed + 7, burnin=cfg.burnin_passes(L))
    rng = _seeds(cfg, L, T, 1)
    picks = rng.choice(len(configs), size=cfg.learned_paths, replace=len(configs) < cfg.learned_paths)
    starts = system.observables(configs[picks])
    before = time.perf_counter()
    fitted = fit_members(cfg, system, states, pcfg.train, starts, int(rng.integers(0, 2**31)), L, T)
    return {"m": fitted["m"], "member": fitted["member"], "L": np.int64(L), "T": np.float64(T),
            "interval": np.float64(fitted["interval"]), "equilibrate": np.float64(fitted["equilibrate"]),
            "n_dropped": np.int64(fitted["n_dropped"]),
            "n_training_states": np.int64(len(configs) * recorded_passes(cfg.learned_passes)),
            "fit_seconds": np.float64(fitted["fit_seconds"] + before - start),  # + the upsampling
            "seconds": np.float64(time.perf_counter() - start), "sde": fitted["sde"]}


def fit_members(cfg: CriticalConfig, system: Any, states: np.ndarray | Iterable[np.ndarray], train: Any,
                starts: np.ndarray, rollout_seed: int, L: int, T: float) -> dict[str, Any]:
    """The ``learned_members`` E SDEs of ``cfg.learned_observables`` fitted to the exact generator
    moments of ``states`` (an array or chunks of them; member k takes the states k, k + E, … of
    every chunk; :func:`fit_generator_sde` with ``train``, its seed + k), each rolled out from its
    share of ``starts`` (observables of the start states, [paths, d]) on the direct schedule at
    side L: stationary ``m [paths, S]`` and ``member [paths]``. Paths that leave |m| <= 1.5 or
    turn non-finite are dropped and counted; a member left with none is an error. Shared by the
    study and the experiments that feed it other states (equilibrium states as a reference)."""
    members = cfg.learned_members
    entered = time.perf_counter()  # member 0 also pays for drawing lazily made states
    if members > 1:
        states = list(states) if not isinstance(states, np.ndarray) else [states]  # every member takes its share
    equilibrate, interval, n_samples = cfg.schedule(L)
    n_eq = int(math.ceil(equilibrate / interval))
    columns = _observable_indices(system, cfg.learned_observables)
    sdes, kept, labels, fit_seconds, dropped = [], [], [], 0.0, 0
    for k in range(members):
        fit_start = entered if k == 0 else time.perf_counter()
        share = states if members == 1 else [chunk[k::members] for chunk in states]
        member_train = train if k == 0 else dataclasses.replace(train, seed=train.seed + k)
        sde = fit_generator_sde(system, share, member_train, prior_degree=cfg.learned_prior_degree,
                                prior_knots=cfg.learned_prior_knots, fit_states=cfg.learned_fit_states,
                                observables=cfg.learned_observables)
        fit_seconds += time.perf_counter() - fit_start
        m = _rollout(sde, starts[k::members][:, columns], n_eq, n_samples, interval, rollout_seed + k)
        ok = np.all(np.isfinite(m), axis=1) & np.all(np.abs(m) <= 1.5, axis=1)
        if ok.sum() < (2 if members == 1 else 1):
            raise RuntimeError(f"critical.learned: at L={L}, T={T:g} only {int(ok.sum())} of {len(ok)} rollout paths "
                               f"{'' if members == 1 else f'of member {k} '}stayed finite with |m| <= 1.5; "
                               "raise learned_states or learned_epochs")
        sdes.append(sde)
        kept.append(np.clip(m[ok], -1.0, 1.0))
        labels.append(np.full(int(ok.sum()), k, dtype=np.int64))
        dropped += int(np.sum(~ok))
    return {"m": np.concatenate(kept), "member": np.concatenate(labels), "sde": sdes, "interval": interval,
            "equilibrate": n_eq * interval, "n_dropped": dropped, "fit_seconds": fit_seconds}


def _rollout(sde: Any, z0: np.ndarray, n_eq: int, n_samples: int, interval: float, seed: int) -> np.ndarray:
    """m ``[starts, n_samples]``: one path per start in ``z0`` after ``n_eq`` discarded intervals."""
    paths = sde.sample(z0, n_eq + n_samples, interval, n_paths=1, seed=seed, nonfinite="keep")[:, 0]
    return np.ascontiguousarray(paths[:, n_eq + 1:, 0])                    # paths: [starts, steps + 1, d]


def member_name(k: int) -> str:
    """Folder of member k's learned SDE in a learned point. Its drift prior, if any, lies beside
    it: ``drift_prior.json`` for member 0 (as before there were members), else ``{name}_prior.json``."""
    return "sde" if k == 0 else f"sde_member{k}"


def _save_learned(folder: Path, data: dict[str, Any]) -> None:
    arrays = {k: v for k, v in data.items() if k != "sde"}
    np.savez(folder / "samples.npz", **arrays)
    for k, sde in enumerate(data["sde"]):
        sde.save(folder / member_name(k))
        if sde.drift_prior is not None:  # load_sde(folder / "sde", drift_prior=load_prior(...))
            sde.drift_prior.save(folder / ("drift_prior.json" if k == 0 else f"{member_name(k)}_prior.json"))
    json_dump({"units": {"m": "1 (per site)", "time": "Glauber time", "T": "J/k_B"},
               "L": int(data["L"]), "T": float(data["T"]), "paths": int(data["m"].shape[0]),
               "samples_per_path": int(data["m"].shape[1]), "dropped_paths": int(data["n_dropped"]),
               "members": len(data["sde"]),
               "training_states": int(data["n_training_states"]), "fit_seconds": float(data["fit_seconds"]),
               "seconds": float(data["seconds"])}, folder / "meta.json")


def member_labels(data: dict[str, Any]) -> np.ndarray | None:
    """The ``member`` labels of a learned point's paths when it has more than one member, else None."""
    labels = data.get("member")
    return None if labels is None or len(np.unique(labels)) < 2 else np.asarray(labels)


def fss_analysis(samples: dict[int, dict[float, np.ndarray]], *, n_boot: int = 400, seed: int = 0,
                 clusters: dict[int, dict[float, np.ndarray | None]] | None = None) -> dict[str, Any]:
    """Moments, exponents and Binder crossings of ``samples[L][T] = m [R, S]`` (JSON-able);
    ``clusters[L][T]``: labels of the runs for a bootstrap over clusters (None: over runs)."""
    from matscale.critical import ONSAGER_TC, binder_crossing, fss_exponents, moments

    sizes = sorted(samples)
    temps = sorted(samples[sizes[0]])
    groups = clusters or {}
    results = {L: {T: moments(samples[L][T], L, T, n_boot=n_boot, seed=seed, clusters=groups.get(L, {}).get(T))
                   for T in temps} for L in sizes}
    exponents = fss_exponents(results, ONSAGER_TC) if len(sizes) >= 2 else {}
    crossings = {}
    for i, a in enumerate(sizes):
        for b in sizes[i + 1:]:
            c = binder_crossing(temps, [results[a][T]["binder"] for T in temps],
                                [results[b][T]["binder"] for T in temps], seed=seed)
            crossings[f"{a}-{b}"] = {"value": c.value, "error": c.error}
    return {
        "sizes": sizes, "temperatures": temps,
        "moments": {str(L): {f"{T:g}": {k: {"value": e.value, "error": e.error} for k, e in results[L][T].items()}
                             for T in temps} for L in sizes},
        "exponents": {k: {"value": e.value, "error": e.error} for k, e in exponents.items()},
        "binder_crossings": crossings,
        "T_c": _headline_crossing(crossings, sizes),
    }


def _headline_crossing(crossings: dict[str, dict[str, float]], sizes: list[int]) -> dict[str, float]:
    """T_c from the Binder crossings of every pair L < L' with L' ≥ 2L (pairs of nearly equal
    sizes cross at a poorly defined point), weighted by inverse variance; all pairs when none."""
    keys = [f"{a}-{b}" for i, a in enumerate(sizes) for b in sizes[i + 1:] if b >= 2 * a] or list(crossings)
    pts = [(crossings[k]["value"], crossings[k]["error"]) for k in keys
           if math.isfinite(crossings[k]["value"]) and math.isfinite(crossings[k]["error"]) and crossings[k]["error"] > 0]
    if not pts:
        return {"value": float("nan"), "error": float("nan"), "pairs": keys}
    w = np.array([1.0 / e ** 2 for _, e in pts])
    v = np.array([x for x, _ in pts])
    return {"value": float(np.sum(w * v) / np.sum(w)), "error": float(1.0 / math.sqrt(np.sum(w))), "pairs": keys}


def run(cfg: CriticalConfig, runner: StageRunner, source: Path) -> dict[str, Any]:
    """Run (or resume) the direct points, the FSS analysis, and write the report."""
    cfg.check()
    start = time.perf_counter()
    section = json.loads(json.dumps(asdict(cfg)))  # the record as it reads back from stage.json
    shared = {k: v for k, v in section.items()
              if k not in ("sizes", "temperatures", "n_boot") and not k.startswith("learned_")}
    direct = _points_and_analysis(cfg, runner, "direct", cfg.sizes, shared, "fss", "sizes")
    learned = _run_learned(cfg, runner, section) if cfg.learned_sizes else None
    return write_report(cfg, direct, runner.out, time.perf_counter() - start, learned)


def compute_point(stage: str, cfg: CriticalConfig, L: int, T: float, folder: Path, out: Path) -> None:
    """Write one point of ``stage`` ("direct" or "learned") at (L, T) into ``folder``
    (samples.npz, meta.json; a learned point also its SDE and drift prior, and its pipeline run
    under ``out / "learned_work"``). Module level, so that a process pool can run it."""
    if stage == "direct":
        _save_point(folder, simulate_point(cfg, L, T))
    else:
        _save_learned(folder, learn_point(cfg, L, T, out / "learned_work" / _tag(L, T)))


def _prepare_unfinished(runner: StageRunner, stage: str, cfg: CriticalConfig,
                        points: list[tuple[int, float]]) -> dict[tuple[int, float], Any]:
    """With an executor of more than one worker (``matscale run --workers N``), start every
    point of ``stage`` that has no finished record on it, each writing into its own scratch
    folder ``OUT/stage/.{tag}.prepared``; returns their futures. The stages then take over the
    results one by one in the usual order (records, resume and checks unchanged). Inline: {}."""
    from matscale.io import STAGE_RECORD
    from matscale.parallel import executor_workers

    if executor_workers(runner.executor) < 2:
        return {}
    futures = {}
    for L, T in points:
        folder = runner.out / stage / _tag(L, T)
        if (folder / STAGE_RECORD).is_file():
            continue
        scratch = _scratch(runner, stage, L, T)
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        futures[(L, T)] = runner.executor.submit(compute_point, stage, cfg, L, T, scratch, runner.out)
    return futures


def _scratch(runner: StageRunner, stage: str, L: int, T: float) -> Path:
    """Where a worker writes a point of ``stage`` before the stage takes it over."""
    return runner.out / stage / f".{_tag(L, T)}.prepared"


def _take_over(future: Any, scratch: Path, tmp: Path) -> None:
    """Move a prepared point's files from ``scratch`` into the stage folder ``tmp``."""
    future.result()
    for entry in scratch.iterdir():
        shutil.move(str(entry), str(tmp / entry.name))
    scratch.rmdir()


def _points_and_analysis(cfg: CriticalConfig, runner: StageRunner, stage: str, sizes: tuple[int, ...],
                         record: dict[str, Any], analysis: str, sizes_key: str) -> dict[str, Any]:
    """Run (or resume) stage ``stage`` at every (L, T) of ``sizes`` × temperatures
    (:func:`compute_point`; in parallel with ``--workers``) and the FSS stage ``analysis`` over
    them; returns ``{"fss": ..., "points": {tag: meta}}``."""
    ids: dict[str, str] = {}
    folders: dict[tuple[int, float], Path] = {}
    points = [(L, T) for L in sizes for T in cfg.temperatures]
    prepared = _prepare_unfinished(runner, stage, cfg, points)
    for L, T in points:
        folder = runner.out / stage / _tag(L, T)

        def compute(tmp: Path, L: int = L, T: float = T) -> None:
            if (L, T) in prepared:
                _take_over(prepared[(L, T)], _scratch(runner, stage, L, T), tmp)
            else:
                compute_point(stage, cfg, L, T, tmp, runner.out)

        ids[_tag(L, T)] = runner.run(stage, folder, {"critical": {**record, "L": L, "T": T}}, {}, compute)
        folders[(L, T)] = folder
    out_dir = runner.out / analysis

    def analyse(tmp: Path) -> None:
        data = {L: {T: load_samples(folders[(L, T)]) for T in cfg.temperatures} for L in sizes}
        samples = {L: {T: d["m"] for T, d in row.items()} for L, row in data.items()}
        clusters = {L: {T: member_labels(d) for T, d in row.items()} for L, row in data.items()}
        json_dump(fss_analysis(samples, n_boot=cfg.n_boot, seed=cfg.seed, clusters=clusters), tmp / "fss.json")

    runner.run(analysis, out_dir, {"critical": {sizes_key: list(sizes), "temperatures": list(cfg.temperatures),
                                                "n_boot": cfg.n_boot, "seed": cfg.seed}}, ids, analyse)
    return {"fss": read_json(out_dir / "fss.json"),
            "points": {_tag(*key): read_json(f / "meta.json") for key, f in folders.items()}}


def _run_learned(cfg: CriticalConfig, runner: StageRunner, section: dict[str, Any]) -> dict[str, Any]:
    """The ``learned`` points and their FSS analysis (stage ``fss_learned``)."""
    shared = {k: v for k, v in section.items() if k.startswith("learned_") and k != "learned_sizes"}
    defaults = json.loads(json.dumps(asdict(CriticalConfig())))  # as records read back (lists)
    for key in LEARNED_ADDED_LATER:
        if shared.get(key) == defaults[key]:  # records of earlier runs stay valid at the default
            del shared[key]
    if "learned_passes" not in shared:  # no passes: their duration does not matter
        del shared["learned_pass_time"]
    shared.update({k: section[k] for k in ("h", "J", "tau_16", "z", "equilibrate_taus", "production_taus",
                                           "samples_per_tau", "seed")})
    return _points_and_analysis(cfg, runner, "learned", cfg.learned_sizes, shared, "fss_learned", "learned_sizes")


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _fmt(e: dict[str, float], digits: int = 4) -> str:
    return f"{e['value']:.{digits}g} ± {e['error']:.2g}"


def _stage_seconds(out: Path, stage: str) -> float:
    total = 0.0
    for record in (out / stage).rglob("stage.json") if (out / stage).is_dir() else ():
        total += float(read_json(record).get("seconds", 0.0))
    return total


def moments_table(fss: dict[str, Any], title: str) -> list[str]:
    """Markdown table of ⟨|M|⟩, χ, U per (L, T)."""
    lines = [f"### {title}", "", "| L | T | ⟨\\|M\\|⟩ | χ | U |", "|---|---|---|---|---|"]
    for L in fss["sizes"]:
        for T in fss["temperatures"]:
            m = fss["moments"][str(L)][f"{T:g}"]
            lines.append(f"| {L} | {T:g} | {_fmt(m['abs_m'])} | {_fmt(m['chi'])} | {_fmt(m['binder'])} |")
    return lines + [""]


def exponents_table(named: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown table of the exponents and T_c of one or more analyses against the exact values."""
    from matscale.critical import ISING_2D_EXPONENTS, ONSAGER_TC

    names = list(named)
    lines = ["| quantity | exact | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, label in (("beta_over_nu", "β/ν"), ("gamma_over_nu", "γ/ν"), ("one_over_nu", "1/ν")):
        exact = ISING_2D_EXPONENTS[key]
        cells = []
        for n in names:
            e = named[n]["exponents"].get(key)
            cells.append("–" if e is None else f"{_fmt(e)} ({100 * (e['value'] - exact) / exact:+.1f} %)")
        lines.append(f"| {label} | {exact:g} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        tc = named[n]["T_c"]
        cells.append(f"{_fmt(tc, 5)} ({100 * (tc['value'] - ONSAGER_TC) / ONSAGER_TC:+.2f} %)")
    lines.append(f"| T_c (Binder crossing) | {ONSAGER_TC:.5f} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_collapse(named: dict[str, dict[str, Any]], path: Path) -> None:
    """Data collapse with the exact exponents: |M| L^{β/ν}, χ L^{−γ/ν} and U against
    (T − T_c) L^{1/ν}, one marker style per analysis (direct, learned ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matscale.critical import ISING_2D_EXPONENTS as X, ONSAGER_TC

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    markers = ["o", "s", "^", "v"]
    for j, (name, fss) in enumerate(named.items()):
        for i, L in enumerate(fss["sizes"]):
            T = np.array(fss["temperatures"])
            x = (T - ONSAGER_TC) * L ** X["one_over_nu"]
            rows = [fss["moments"][str(L)][f"{t:g}"] for t in T]
            for ax, key, power in ((axes[0], "abs_m", X["beta_over_nu"]), (axes[1], "chi", -X["gamma_over_nu"]),
                                   (axes[2], "binder", 0.0)):
                v = np.array([r[key]["value"] for r in rows]) * L ** power
                e = np.array([r[key]["error"] for r in rows]) * L ** power
                ax.errorbar(x, v, yerr=e, fmt=markers[j % 4], color=f"C{i}", capsize=2, ms=4,
                            mfc="none" if j else None, label=f"{name} L={L}")
    for ax, label in zip(axes, ("⟨|M|⟩ L^{β/ν}", "χ L^{−γ/ν}", "U")):
        ax.set_xlabel("(T − T_c) L^{1/ν}")
        ax.set_ylabel(label)
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_table(learned: dict[str, Any], direct: dict[str, Any]) -> list[str]:
    """Learned against direct moments at the (L, T) both have, with the difference in units of the
    combined error (learned errors: bootstrap over the fitted members when there are several,
    else over the rollout paths only)."""
    lines = ["| L | T | ⟨\\|M\\|⟩ learned | direct | Δ/σ | χ learned | direct | Δ/σ | U learned | direct | Δ/σ |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    worst = []  # per point, the largest |Δ/σ| of the three moments
    for L in learned["sizes"]:
        if L not in direct["sizes"]:
            continue
        for T in learned["temperatures"]:
            a, b = learned["moments"][str(L)][f"{T:g}"], direct["moments"][str(L)][f"{T:g}"]
            cells, zs = [], []
            for key in ("abs_m", "chi", "binder"):
                sigma = math.hypot(a[key]["error"], b[key]["error"])
                z = (a[key]["value"] - b[key]["value"]) / sigma if sigma > 0 else float("nan")
                cells += [_fmt(a[key]), _fmt(b[key]), f"{z:+.1f}"]
                zs.append(abs(z))
            lines.append(f"| {L} | {T:g} | " + " | ".join(cells) + " |")
            worst.append(max(zs))
    if worst:
        lines += ["", f"All three moments within 1σ at {sum(w <= 1 for w in worst)} of {len(worst)} points, "
                      f"within 2σ at {sum(w <= 2 for w in worst)}."]
    return lines + [""]


def write_report(cfg: CriticalConfig, direct: dict[str, Any], out: Path, seconds: float,
                 learned: dict[str, Any] | None = None) -> dict[str, Any]:
    """``report.md``, ``collapse.png`` and ``metrics.json`` in ``out``; returns the summary."""
    fss = direct["fss"]
    named = {"direct": fss} if learned is None else {"direct": fss, "learned": learned["fss"]}
    plot_collapse(named, out / "collapse.png")
    direct_seconds = _stage_seconds(out, "direct")
    lines = ["# 2-D Ising finite-size scaling near T_c", "", describe(cfg) + ".", "",
             "Errors: bootstrap over independent runs (moments); weighted least squares on log–log with the "
             "fit error inflated by √(χ²/dof) when above 1 (exponents); Binder crossing: root of the difference "
             "of straight-line fits of U(T), error by a parametric bootstrap. β/ν and γ/ν at T = "
             f"{fss['exponents'].get('T_grid_point', {}).get('value', float('nan')):g} (grid point closest to "
             "Onsager's T_c); 1/ν from dU/dT over the grid; T_c: inverse-variance mean of the crossings of pairs "
             "L' ≥ 2L.", "",
             "## Exponents and T_c", ""]
    lines += exponents_table(named)
    lines += ["## Binder crossings", "", "| pair | T_× |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, 5)} |" for k, v in fss["binder_crossings"].items()] + [""]
    lines += ["## Moments", ""] + moments_table(fss, "direct simulations")
    if learned is not None:
        lines += moments_table(learned["fss"], f"learned SDEs (from {PATCH}² simulations only)")
        lines += ["### learned against direct", "",
                  "Δ/σ: difference over the combined error. With several fitted members per point "
                  f"(learned_members = {cfg.learned_members}) the learned error is a bootstrap over them and "
                  "covers the training data's noise and the fit's; with one it covers the rollout paths only.", ""]
        lines += comparison_table(learned["fss"], fss)
        lines += ["### learned points", "",
                  "| L | T | training states | fitted members | paths (dropped) | fit s | total s |",
                  "|---|---|---|---|---|---|---|"]
        for meta in learned["points"].values():
            lines.append(f"| {meta['L']} | {meta['T']:g} | {meta['training_states']} | {meta.get('members', 1)} | "
                         f"{meta['paths']} ({meta['dropped_paths']}) | {meta['fit_seconds']:.0f} | "
                         f"{meta['seconds']:.0f} |")
        lines.append("")
    lines += ["## Direct runs: equilibration and autocorrelation", "",
              "Discarded time per run: `equilibrate_taus` · τ(L) with τ(L) = tau_16 (L/16)^z, τ measured at "
              "T = 2.27 (τ_int of |M| = 50 Glauber times at L = 16, fitted z = 2.17). The measured column is the "
              "τ_int of |M| from the recorded samples of that point.", "",
              "| L | T | discarded (Glauber time) | measured τ_int | discarded / τ_int | samples × runs | seconds |",
              "|---|---|---|---|---|---|---|"]
    for key, meta in direct["points"].items():
        ratio = meta["equilibrate"] / max(meta["tau_int_abs_m"], 1e-12)
        lines.append(f"| {meta['L']} | {meta['T']:g} | {meta['equilibrate']:.0f} | {meta['tau_int_abs_m']:.0f} | "
                     f"{ratio:.1f} | {meta['samples_per_run']} × {meta['n_runs']} | {meta['seconds']:.1f} |")
    learned_seconds = _stage_seconds(out, "learned")
    lines += ["", "![data collapse](collapse.png)", "",
              f"Wall time: direct stage {direct_seconds:.0f} s"
              + (f", learned stage {learned_seconds:.0f} s" if learned is not None else "")
              + " (sums of the points' stage times in stages.log: compute time on one core, or wall time "
              f"with `--workers`), this call {seconds:.0f} s.", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    summary = {"workflow": "critical", "exponents": {k: v["value"] for k, v in fss["exponents"].items()},
               "T_c": fss["T_c"]["value"], "direct_seconds": direct_seconds}
    record = {**summary, "direct": fss, "points": direct["points"]}
    if learned is not None:
        summary.update(learned_exponents={k: v["value"] for k, v in learned["fss"]["exponents"].items()},
                       learned_T_c=learned["fss"]["T_c"]["value"], learned_seconds=learned_seconds)
        record.update(learned=learned["fss"], learned_points=learned["points"], **summary)
    json_dump(record, out / "metrics.json")
    return summary


STUDY = Study(name="critical", config=CriticalConfig, run=run, describe=describe, stages=STAGES)
