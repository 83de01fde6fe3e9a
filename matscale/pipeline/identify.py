"""The "identify" study: learn the force and noise of a known system from scattered pairs, with an
integrator template and without one (plain ``fit_sde``), and compare both with the truth.

Following Dietrich et al., Chaos 33, 023121 (2023), arXiv 2106.09004 (learning through a
numerical-integrator template). Systems (``identify.system``):

``langevin``         the double-well Langevin oscillator (:mod:`matscale.systems.langevin`), state
                     z = (q, p); template ``SymplecticEuler`` (networks: F(q, p), sigma(q, p));
                     plain: a 2-D SDE whose p-components of drift and diffusion are F and sigma.
``stochastic_wave``  the stochastic wave equation on a ring (:mod:`matscale.systems.wave`), state
                     z = (u(t), u(t - dt)) on N grid points; template ``WalshWave`` (networks: the
                     pointwise f(u), s(u)); plain: a 2N-dimensional SDE, from whose drift and
                     covariance f and s follow by removing the known d'Alembert part:
                     f = (dt mu_u - (u_{j+1} + u_{j-1} - u_prev - u)) / dt^2, s^2 = 2 c Sigma_jj / dt.

Accuracy: relative L2 error ||g_fit - g_true|| / ||g_true|| of the force (F or f) and of the
noise amplitude (sigma or s) over the data support, in L2 of the data distribution: held-out
states drawn like the training states (Langevin: uniform on q_range x p_range; wave: the side
means ubar_j of every grid point of held-out pairs). For the wave both methods are also compared
on the object the plain fit learns, the coefficients of the discretised state: the drift of
u(t + dt) and its covariance per unit time Sigma_uu, against one Walsh step with the true f and s
(``wave_state_errors``), with the share of f in that drift, which is what limits the implied f.

Stages (resumable, in ``OUT``): ``pairs`` (training and test data, ``data.npz``), then
``fit_template`` and ``fit_plain`` (``sde/``, the fitted SDE, and ``fit.json``). ``report.md``,
``metrics.json`` and ``identify.png`` (learned vs true force and noise) are written at the end.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matscale.config import ConfigError
from matscale.io import json_dump, read_json
from matscale.pipeline.studies import Study

SYSTEMS = ("langevin", "stochastic_wave")
METHODS = ("template", "plain")
FIT_THREADS = 1  # small networks on a shared machine: one torch thread (see fit_sde num_threads)
# seed offset of the held-out test data (independent of the training pairs)
TEST_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class IdentifyConfig:
    """The ``[identify]`` section.

    system: "langevin" or "stochastic_wave".
    n_pairs: training pairs. n_test: held-out test points (states, or grid points for the wave).
    dt: data step [t]; for the wave an even multiple of the fine step length / (speed n_fine).
    methods: any of "template", "plain".
    hidden, epochs, batch_size, lr, seed: fit_sde settings (the same for both methods).
    inner_steps: Langevin fine simulation steps per dt. n_fine: wave fine grid points.
    """

    system: str = "langevin"
    n_pairs: int = 50000
    n_test: int = 20000
    dt: float = 0.02
    methods: tuple[str, ...] = METHODS
    hidden: tuple[int, ...] = (64, 64, 64)
    epochs: int = 200
    batch_size: int = 2000
    lr: float = 2e-3
    seed: int = 0
    inner_steps: int = 50
    n_fine: int = 128

    def check(self) -> None:
        """One-line ConfigError naming ``identify.<field>`` and the allowed range."""
        if self.system not in SYSTEMS:
            raise ConfigError(f"identify.system={self.system!r} out of range (allowed: {', '.join(SYSTEMS)})")
        for name, low in (("n_pairs", 10), ("n_test", 1), ("epochs", 1), ("batch_size", 1), ("inner_steps", 1)):
            value = getattr(self, name)
            if value < low:
                raise ConfigError(f"identify.{name}={value} out of range (allowed: >= {low})")
        if self.seed < 0:
            raise ConfigError(f"identify.seed={self.seed} out of range (allowed: >= 0)")
        for name in ("dt", "lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"identify.{name}={value} out of range (allowed: > 0)")
        if not self.methods:
            raise ConfigError("identify.methods=() out of range (allowed: one or more of template, plain)")
        for i, method in enumerate(self.methods):
            if method not in METHODS:
                raise ConfigError(f"identify.methods[{i}]={method!r} out of range (allowed: {', '.join(METHODS)})")
        if not self.hidden:
            raise ConfigError("identify.hidden=() out of range (allowed: one or more widths >= 1)")
        for i, width in enumerate(self.hidden):
            if width < 1:
                raise ConfigError(f"identify.hidden[{i}]={width} out of range (allowed: >= 1)")
        try:
            build_system(self)
            if self.system == "stochastic_wave":
                build_system(self).stride(self.dt)
        except ValueError as exc:
            field = "dt" if str(exc).startswith("dt") else "n_fine" if self.system == "stochastic_wave" else "inner_steps"
            raise ConfigError(f"identify.{field}: {exc}") from None


# ====================================================================== the building blocks
def build_system(cfg: IdentifyConfig) -> Any:
    """The true system of ``cfg.system`` (defaults of its module, plus inner_steps / n_fine)."""
    if cfg.system == "langevin":
        from matscale.systems.langevin import LangevinOscillator

        return LangevinOscillator(inner_steps=int(cfg.inner_steps))
    from matscale.systems.wave import StochasticWave

    return StochasticWave(n_fine=int(cfg.n_fine))


def build_template(cfg: IdentifyConfig, system: Any) -> Any:
    """The integrator template matching ``system`` at the data step."""
    from matscale.sde import SymplecticEuler, WalshWave

    if cfg.system == "langevin":
        return SymplecticEuler(n_dof=1, mass=system.mass)
    return WalshWave(system.coarse_points(cfg.dt), system.length, system.speed)


def generate(cfg: IdentifyConfig, system: Any) -> dict[str, np.ndarray]:
    """Training pairs (z0, z1, dt) and held-out test states ``test_z`` (seeded)."""
    z0, z1, dt = system.pairs(int(cfg.n_pairs), float(cfg.dt), np.random.default_rng(cfg.seed))
    test_rng = np.random.default_rng(cfg.seed + TEST_SEED_OFFSET)
    if cfg.system == "langevin":
        test_z = system.support_sample(int(cfg.n_test), test_rng)
    else:
        n_sites = system.coarse_points(cfg.dt)
        test_z = system.pairs(max(1, math.ceil(cfg.n_test / n_sites)), float(cfg.dt), test_rng)[0]
    return {"z0": z0, "z1": z1, "dt": dt, "test_z": test_z}


def fit(cfg: IdentifyConfig, data: dict[str, np.ndarray], method: str, template: Any, *, progress: bool = False):
    """fit_sde with (``method="template"``) or without the template; same settings otherwise."""
    from matscale.sde import fit_sde

    return fit_sde(data["z0"], data["z1"], data["dt"], template=template if method == "template" else None,
                   hidden=tuple(cfg.hidden), epochs=int(cfg.epochs), batch_size=int(cfg.batch_size),
                   lr=float(cfg.lr), seed=int(cfg.seed), progress=progress, num_threads=FIT_THREADS)


def relative_l2(estimate: np.ndarray, truth: np.ndarray) -> float:
    """||estimate - truth|| / ||truth|| over the points given (L2 of their distribution)."""
    estimate, truth = np.ravel(estimate), np.ravel(truth)
    return float(np.sqrt(np.mean((estimate - truth) ** 2) / np.mean(truth ** 2)))


def learned_vs_true(cfg: IdentifyConfig, system: Any, template: Any, sde: Any, method: str,
                    states: np.ndarray) -> dict[str, np.ndarray]:
    """Learned and true force and noise at the test points of ``states`` [n, d]: keys
    x (site inputs), force, noise, force_true, noise_true (flattened over sites)."""
    if cfg.system == "langevin":
        q, p = states[:, 0], states[:, 1]
        if method == "template":
            force, noise = (a[:, 0] for a in sde.learned_functions(states))
        else:
            force = sde.drift(states)[:, 1]
            noise = np.sqrt(np.maximum(sde.covariance(states)[:, 1, 1], 0.0))
        return {"x": states, "force": force, "noise": noise, "force_true": system.force(q, p),
                "noise_true": system.noise(q)}
    n = template.n_points
    u, u_prev = states[:, :n], states[:, n:]
    ubar = 0.5 * (np.roll(u, -1, axis=1) + np.roll(u, 1, axis=1))
    dt = float(cfg.dt)
    if method == "template":
        force, noise = (a[:, 0] for a in sde.learned_functions(ubar.reshape(-1, 1)))
    else:   # remove the known d'Alembert part from the plain SDE's mean and variance of u(t + dt)
        mu = sde.drift(states)[:, :n]
        var = np.diagonal(sde.covariance(states), axis1=1, axis2=2)[:, :n]
        known = 2.0 * ubar - u_prev - u
        force = ((dt * mu - known) / dt ** 2).ravel()
        noise = np.sqrt(np.maximum(2.0 * system.speed * var / dt, 0.0)).ravel()
    return {"x": ubar.reshape(-1, 1), "force": force, "noise": noise,
            "force_true": system.f(ubar).ravel(), "noise_true": system.s(ubar).ravel()}


def wave_state_coefficients(cfg: IdentifyConfig, system: Any, template: Any, sde: Any | None, method: str,
                            states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drift of u(t + dt) [n, N] in [u]/[t] and its covariance per unit time Sigma_uu [n, N, N]
    in [u]^2/[t] at the wave states [n, 2N]: of the plain SDE (its first N drift components and
    the u block of Sigma), of the template fit (one Walsh step with the learned f and s:
    mean = known + dt^2 f, drift = (mean - u) / dt, Sigma = Cov / dt), or, with ``sde=None``,
    the true one-step values (the same step with the true f and s)."""
    import torch

    n = template.n_points
    dt = float(cfg.dt)
    if method == "plain":
        return sde.drift(states)[:, :n], sde.covariance(states)[:, :n, :n]
    u = states[:, :n]
    ubar = 0.5 * (np.roll(u, -1, axis=1) + np.roll(u, 1, axis=1))
    if sde is None:
        force, noise = system.f(ubar), system.s(ubar)
    else:
        force, noise = (a[:, 0].reshape(ubar.shape) for a in sde.learned_functions(ubar.reshape(-1, 1)))
    z = torch.as_tensor(states, dtype=torch.float64)
    with torch.no_grad():
        mean, cov = template.step_mean_cov(z, torch.full((len(states),), dt, dtype=torch.float64),
                                           torch.as_tensor(force, dtype=torch.float64)[..., None],
                                           torch.as_tensor(noise, dtype=torch.float64)[..., None])
    return (mean.numpy() - u) / dt, cov.numpy() / dt


def wave_state_errors(cfg: IdentifyConfig, system: Any, template: Any, sde: Any, method: str,
                      states: np.ndarray) -> dict[str, float]:
    """The learned object of either method compared as the same thing, the coefficients of the
    discretised state: relative L2 of the drift of u(t + dt) against the true one-step drift
    (the other half of the state, u(t), is copied exactly by both), relative Frobenius L2 of
    Sigma_uu, and the share of f in the true drift, RMS(dt f) / RMS(drift): the implied f
    = (dt drift - d'Alembert part) / dt^2 has about (drift error) / (f share) relative error."""
    mu, cov = wave_state_coefficients(cfg, system, template, sde, method, states)
    mu_true, cov_true = wave_state_coefficients(cfg, system, template, None, "template", states)
    n = template.n_points
    u = states[:, :n]
    ubar = 0.5 * (np.roll(u, -1, axis=1) + np.roll(u, 1, axis=1))
    f_part = float(cfg.dt) * system.f(ubar)
    return {"drift_rel_l2": relative_l2(mu, mu_true), "sigma_rel_l2": relative_l2(cov, cov_true),
            "f_share_of_drift": float(np.sqrt(np.mean(f_part ** 2) / np.mean(mu_true ** 2)))}


# ====================================================================== the workflow
def _load_data(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "data.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def run(cfg: IdentifyConfig, runner: Any, source: Path) -> dict[str, Any]:
    """Pairs, the two fits, the comparison; writes report.md, metrics.json and identify.png."""
    from matscale.sde import load_sde

    out = Path(runner.out)
    system = build_system(cfg)
    template = build_template(cfg, system)
    data_keys = ("system", "n_pairs", "n_test", "dt", "seed", "inner_steps", "n_fine")
    data_record = {k: v for k, v in asdict(cfg).items() if k in data_keys}

    def make_pairs(folder: Path) -> None:
        start = time.perf_counter()
        data = generate(cfg, system)
        np.savez(folder / "data.npz", **data)
        json_dump({"seconds": time.perf_counter() - start, "system": type(system).__name__,
                   "template": template.record(), "units": "reduced units of the system module"},
                  folder / "pairs.json")

    pairs_id = runner.run("pairs", out / "pairs", data_record, {}, make_pairs)
    data = _load_data(out / "pairs")
    fit_record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()
                  if k in ("hidden", "epochs", "batch_size", "lr", "seed")}
    metrics: dict[str, Any] = {"system": cfg.system, "n_pairs": int(cfg.n_pairs), "dt": float(cfg.dt),
                               "template": template.record(), "methods": {}}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for method in cfg.methods:
        folder = out / f"fit_{method}"

        def compute(tmp: Path, method: str = method) -> None:
            start = time.perf_counter()
            sde = fit(cfg, data, method, template)
            seconds = time.perf_counter() - start
            sde.save(tmp / "sde")
            json_dump({"fit_seconds": seconds, "epochs_run": sde.config["epochs_run"],
                       "best_epoch": sde.config["best_epoch"]}, tmp / "fit.json")

        runner.run(f"fit_{method}", folder, {**fit_record, "method": method}, {"pairs": pairs_id}, compute)
        sde = load_sde(folder / "sde")
        values = learned_vs_true(cfg, system, template, sde, method, data["test_z"])
        row = {"force_rel_l2": relative_l2(values["force"], values["force_true"]),
               "noise_rel_l2": relative_l2(values["noise"], values["noise_true"]),
               **read_json(folder / "fit.json")}
        if cfg.system == "stochastic_wave":
            row.update(wave_state_errors(cfg, system, template, sde, method, data["test_z"]))
        metrics["methods"][method] = row
        curves[method] = _curves(cfg, system, template, sde, method, data)
    figure = _figure(cfg, system, curves, out / "identify.png")
    metrics["figure"] = figure.name
    json_dump(metrics, out / "metrics.json")
    (out / "report.md").write_text(report_markdown(cfg, metrics), encoding="utf-8")
    return {"workflow": "identify", "system": cfg.system,
            **{f"{m}_{k}": v[k] for m, v in metrics["methods"].items() for k in ("force_rel_l2", "noise_rel_l2")}}


def _curves(cfg: IdentifyConfig, system: Any, template: Any, sde: Any, method: str,
            data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the figure draws: along q at p = 0 (Langevin) or over ubar (wave; the plain fit as
    a scatter of its implied f and s at held-out grid points, since it is no function of u alone)."""
    if cfg.system == "langevin":
        q = np.linspace(*system.q_range, 101)
        states = np.stack([q, np.zeros_like(q)], axis=1)
        return {"x": q, **{k: v for k, v in learned_vs_true(cfg, system, template, sde, method, states).items() if k != "x"}}
    if method == "template":
        n = template.n_points
        u = data["z0"][:, :n]
        ubar = 0.5 * (np.roll(u, -1, axis=1) + np.roll(u, 1, axis=1))
        grid = np.linspace(*np.quantile(ubar, [0.005, 0.995]), 101)
        force, noise = (a[:, 0] for a in sde.learned_functions(grid[:, None]))
        return {"x": grid, "force": force, "noise": noise, "force_true": system.f(grid), "noise_true": system.s(grid)}
    values = learned_vs_true(cfg, system, template, sde, method, data["test_z"][:100])
    return {"x": values["x"][:, 0], "force": values["force"], "noise": values["noise"], "scatter": np.ones(1)}


def _figure(cfg: IdentifyConfig, system: Any, curves: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    from matscale.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    langevin = cfg.system == "langevin"
    labels = (("force", "F(q, p=0)" if langevin else "f(u)"), ("noise", "sigma(q)" if langevin else "s(u)"))
    style = {"template": ("C3", "-"), "plain": ("C0", "--")}
    for ax, (key, label) in zip(axes, labels):
        truth = None
        for method, c in curves.items():
            colour, line = style[method]
            if "scatter" in c:
                ax.plot(c["x"], c[key], ".", ms=2, color=colour, alpha=0.4, label=f"{method} (implied, per grid point)")
            else:
                order = np.argsort(c["x"])
                ax.plot(c["x"][order], c[key][order], line, color=colour, label=method)
                truth = c
        if truth is not None:
            order = np.argsort(truth["x"])
            ax.plot(truth["x"][order], truth[f"{key}_true"][order], ":", color="k", label="true")
        ax.set_xlabel("q" if langevin else "u (side mean ubar)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    if not langevin and "template" in curves and "plain" in curves:   # keep the scatter from hiding the curves
        for ax, key in zip(axes, ("force_true", "noise_true")):
            low, high = float(curves["template"][key].min()), float(curves["template"][key].max())
            pad = 0.5 * (high - low) + 1e-12
            ax.set_ylim(low - pad, high + pad)
    fig.suptitle(f"{cfg.system}: learned vs true over the data support (dt = {cfg.dt:g}, {cfg.n_pairs} pairs)", fontsize=9)
    return _save(plt, fig, path)


def report_markdown(cfg: IdentifyConfig, metrics: dict[str, Any]) -> str:
    """report.md: the relative L2 table, the fit times and the figure (wave: also the errors of
    the state's drift and covariance, and why the plain fit's implied f is poor)."""
    wave = cfg.system != "langevin"
    force, noise = ("f", "s") if wave else ("F", "sigma")
    extra = " rel. L2 drift of u(t+dt) | rel. L2 Sigma_uu |" if wave else ""
    lines = [f"# identify: {cfg.system}", "",
             f"{cfg.n_pairs} scattered pairs at dt = {cfg.dt:g}; template {metrics['template']['name']} "
             f"({metrics['template']['params']}). Relative L2 error over the data support "
             f"(held-out points drawn like the training states).", "",
             f"| method | rel. L2 {force} | rel. L2 {noise} |{extra} fit time [s] | epochs (returned) |",
             "|---|---|---|" + ("---|---|" if wave else "") + "---|---|"]
    for method, row in metrics["methods"].items():
        cells = f" {row['drift_rel_l2']:.4f} | {row['sigma_rel_l2']:.4f} |" if wave else ""
        returned = "linear start" if row["best_epoch"] < 0 else row["best_epoch"] + 1
        lines.append(f"| {method} | {row['force_rel_l2']:.4f} | {row['noise_rel_l2']:.4f} |{cells} "
                     f"{row['fit_seconds']:.1f} | {row['epochs_run']} ({returned}) |")
    if wave:
        lines += ["", "Drift of u(t+dt) and Sigma_uu: the coefficients of the discretised state (per unit "
                  "time) against one Walsh step with the true f and s; the template's follow from its "
                  "learned f and s, the plain fit's are its network outputs. The plain fit's f and s are "
                  "implied: f = (dt drift - (u_{j+1} + u_{j-1} - u_prev - u)) / dt^2, s^2 = 2 c Sigma_jj / dt."]
    plain = metrics["methods"].get("plain", {})
    if "f_share_of_drift" in plain:
        share = plain["f_share_of_drift"]
        lines += ["", f"Without the template the networks learn the whole {2 * metrics['template']['params']['n_points']}"
                  f"-dimensional drift and covariance. Its drift of u(t+dt) has relative L2 error "
                  f"{plain['drift_rel_l2']:.4f}, but f is only {share:.4f} of that drift (RMS of dt f over RMS of the drift), so "
                  f"the implied f errs by about drift error / f share = {plain['drift_rel_l2'] / max(share, 1e-300):.2f} "
                  f"(measured: {plain['force_rel_l2']:.4f}): the known d'Alembert part dominates the mean and "
                  f"would have to be learned to a relative precision of 5 % x {share:.4f} for f within 5 %, by a "
                  f"model with {2 * metrics['template']['params']['n_points']} inputs per output and no shared sites "
                  f"(the template learns one function of one input, shared by all grid points). The other half of the state, "
                  f"u(t), is copied without noise, so the true covariance is singular there."]
        if plain.get("best_epoch", 0) < 0:
            lines += ["", f"The plain fit returned its starting linear model (least-squares drift, constant "
                          f"noise): in {plain['epochs_run']} epochs its networks did not beat it on the "
                          f"validation pairs."]
    lines += ["", f"![learned vs true]({metrics['figure']})", ""]
    return "\n".join(lines)


def describe(cfg: IdentifyConfig) -> str:
    """One line for ``matscale validate``."""
    return (f"identify {cfg.system}: {cfg.n_pairs} pairs at dt={cfg.dt:g}, methods {', '.join(cfg.methods)}, "
            f"hidden {list(cfg.hidden)}, up to {cfg.epochs} epochs")


STUDY = Study(name="identify", config=IdentifyConfig, run=run, describe=describe,
              stages=("pairs", "fit_template", "fit_plain"))
