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
means ubar_j of every grid point of held-out pairs).

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


def wave_drift_share(cfg: IdentifyConfig, system: Any, template: Any, sde: Any, states: np.ndarray) -> dict[str, float]:
    """Why the plain fit of the wave loses f: the relative L2 error of its whole drift (u part)
    against the true scheme's mean increment per dt, and the share of f in that drift,
    RMS(dt f) / RMS(true drift)."""
    n = template.n_points
    u, u_prev = states[:, :n], states[:, n:]
    ubar = 0.5 * (np.roll(u, -1, axis=1) + np.roll(u, 1, axis=1))
    dt = float(cfg.dt)
    true_drift = (2.0 * ubar - u_prev - u) / dt + dt * system.f(ubar)
    mu = sde.drift(states)[:, :n]
    return {"whole_drift_rel_l2": relative_l2(mu, true_drift),
            "f_share_of_drift": float(np.sqrt(np.mean((dt * system.f(ubar)) ** 2) / np.mean(true_drift ** 2)))}


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
        if cfg.system == "stochastic_wave" and method == "plain":
            row.update(wave_drift_share(cfg, system, template, sde, data["test_z"]))
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
    """report.md: the relative L2 table, the fit times and the figure."""
    force, noise = ("F", "sigma") if cfg.system == "langevin" else ("f", "s")
    lines = [f"# identify: {cfg.system}", "",
             f"{cfg.n_pairs} scattered pairs at dt = {cfg.dt:g}; template {metrics['template']['name']} "
             f"({metrics['template']['params']}). Relative L2 error over the data support "
             f"(held-out points drawn like the training states).", "",
             f"| method | rel. L2 {force} | rel. L2 {noise} | fit time [s] | epochs |",
             "|---|---|---|---|---|"]
    for method, row in metrics["methods"].items():
        lines.append(f"| {method} | {row['force_rel_l2']:.4f} | {row['noise_rel_l2']:.4f} | "
                     f"{row['fit_seconds']:.1f} | {row['epochs_run']} |")
    plain = metrics["methods"].get("plain", {})
    if "f_share_of_drift" in plain:
        lines += ["", f"Without the template the network learns the whole {2 * metrics['template']['params']['n_points']}"
                  f"-dimensional drift; its relative L2 error is {plain['whole_drift_rel_l2']:.4f}, but f is only "
                  f"{plain['f_share_of_drift']:.4f} of that drift (RMS of dt f over RMS of the drift), so the error "
                  f"of the implied f is about {plain['whole_drift_rel_l2'] / max(plain['f_share_of_drift'], 1e-300):.1f}x "
                  f"the drift's relative error: the known d'Alembert part dominates the mean and must be learned "
                  f"to a precision the data cannot give."]
    lines += ["", f"![learned vs true]({metrics['figure']})", ""]
    return "\n".join(lines)


def describe(cfg: IdentifyConfig) -> str:
    """One line for ``matscale validate``."""
    return (f"identify {cfg.system}: {cfg.n_pairs} pairs at dt={cfg.dt:g}, methods {', '.join(cfg.methods)}, "
            f"hidden {list(cfg.hidden)}, up to {cfg.epochs} epochs")


STUDY = Study(name="identify", config=IdentifyConfig, run=run, describe=describe,
              stages=("pairs", "fit_template", "fit_plain"))
