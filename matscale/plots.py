"""Pictures of an evaluation: mean ± std of the observables vs time (predicted vs direct), one
colour per reference condition, MMD² between the ensembles vs time with its confidence band,
and the paper's test error vs the small-system size n_s. Files
are PNG (Agg backend); times on the axes are in the system's time unit."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

_METHOD_STYLE = {"ours": ("C3", "-"), "naive": ("C2", ":")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_conditions(ax: Any, t: np.ndarray, means: np.ndarray, conditions: Sequence[float],
                      label: str) -> None:
    """Write each condition next to its direct mean curve ``means [C, n_t]`` at the end of the
    time axis where the curves are most spread, nudged apart so that no two labels overlap."""
    at_end = np.ptp(means[:, -1]) >= np.ptp(means[:, 0])
    y = means[:, -1] if at_end else means[:, 0]
    low, high = ax.get_ylim()
    gap = 0.06 * (high - low)  # about one 7-pt text line on a 4-inch panel
    order = np.argsort(y)
    placed = np.array(y, dtype=np.float64)
    for i, j in zip(order[:-1], order[1:]):
        placed[j] = max(placed[j], placed[i] + gap)
    span = float(t[-1] - t[0]) or 1.0
    x_curve = t[-1] if at_end else t[0]
    x_text = x_curve + (0.02 if at_end else -0.02) * span
    if at_end:  # room for the labels inside the panel
        ax.set_xlim(right=t[-1] + 0.2 * span)
    else:
        ax.set_xlim(left=t[0] - 0.2 * span)
    for c, value in enumerate(conditions):
        ax.annotate(f"{label}={value:g}", (x_curve, y[c]), xytext=(x_text, placed[c]), fontsize=7,
                    ha="left" if at_end else "right", va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"})


def plot_mean_std_curves(curves: Mapping[str, np.ndarray], conditions: Sequence[float],
                         path: str | Path, *, title: str = "", condition_label: str = "m0",
                         time_unit: str = "Glauber time") -> Path:
    """One panel per observable; per reference condition (e.g. initial magnetization or
    temperature) the direct mean ± std (band, black) and each method's predicted mean ± std
    (coloured lines; the condition is written next to its direct curve, at the start or the
    end of the time axis, whichever separates the conditions more).

    ``curves``: ``times`` [n_t], ``names`` [d], ``true_mean``/``true_std`` [C, n_t, d] and
    ``{method}_mean``/``{method}_std`` for each method.
    """
    plt = _pyplot()
    names = [str(n) for n in np.asarray(curves["names"]).tolist()]
    t = np.asarray(curves["times"])
    methods = [k[:-5] for k in curves if k.endswith("_mean") and k != "true_mean"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.0), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        for c, value in enumerate(conditions):
            mu, sd = curves["true_mean"][c, :, k], curves["true_std"][c, :, k]
            ax.fill_between(t, mu - sd, mu + sd, color="0.6", alpha=0.25, lw=0,
                            label="direct ± std" if c == 0 else None)
            ax.plot(t, mu, color="k", lw=1.0, label="direct mean" if c == 0 else None)
            for method in methods:
                color, ls = _METHOD_STYLE.get(method, ("C0", "--"))
                pm, ps = curves[f"{method}_mean"][c, :, k], curves[f"{method}_std"][c, :, k]
                ax.plot(t, pm, color=color, ls=ls, lw=1.2, label=f"{method} mean" if c == 0 else None)
                ax.plot(t, pm + ps, color=color, ls=ls, lw=0.6, alpha=0.7,
                        label=f"{method} ± std" if c == 0 else None)
                ax.plot(t, pm - ps, color=color, ls=ls, lw=0.6, alpha=0.7)
        _label_conditions(ax, t, curves["true_mean"][:, :, k], conditions, condition_label)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def plot_test_error_vs_ns(results: Mapping[str, Mapping[str, Any]], methods: Sequence[str],
                          path: str | Path) -> Path:
    """The paper's test error (paper-size path count and all paths) vs n_s (log-log).

    ``results``: {"p{p}": metrics of that p} as written by the evaluate stage.
    """
    plt = _pyplot()
    rows = sorted(results.values(), key=lambda r: r["n_s"])
    ns = [r["n_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for method in methods:
        color, ls = _METHOD_STYLE.get(method, ("C0", "--"))
        ax.plot(ns, [r[method]["test_error_all"] for r in rows], color=color, ls=ls, marker="o",
                label=f"{method} ({rows[0][method]['n_paths_pred']} paths)")
        ax.plot(ns, [r[method]["test_error_paper"] for r in rows], color=color, ls=ls, marker="x",
                alpha=0.6, label=f"{method} ({rows[0][method]['test_error_paper_paths']} paths)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n_s (sites of the small system)")
    ax.set_ylabel("test error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_equilibrium_vs_parameter(eq: Mapping[str, Any], names: Sequence[str], path: str | Path,
                                  *, parameter_label: str = "parameter") -> Path:
    """Late-time mean of every observable vs the conditioning parameter: the learned SDE (line),
    the small-box direct runs (points with standard errors) and the large-box direct reference
    runs (squares), one panel per observable (``eq``: the ``equilibrium`` metrics of evaluate)."""
    plt = _pyplot()
    x = np.asarray(eq["values"])
    pred, small = np.asarray(eq["predicted"]), np.asarray(eq["small_direct"])
    sem = np.asarray(eq["small_direct_sem"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        ax.plot(x, pred[:, k], "-o", color="C3", ms=3, label="learned SDE (large box)")
        ax.errorbar(x, small[:, k], yerr=sem[:, k], fmt="s", color="k", ms=3, capsize=2,
                    label=f"direct small box ({eq['small_n_sites']} sites)")
        if len(eq.get("reference_values", [])):
            ax.plot(eq["reference_values"], np.asarray(eq["reference_direct"])[:, k], "D", color="C0",
                    ms=5, mfc="none", label="direct large box")
        ax.set_xlabel(parameter_label)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_std_vs_size(scaling: Mapping[str, Any], names: Sequence[str], conditions: Sequence[float],
                     path: str | Path, *, condition_label: str = "condition") -> Path:
    """Late-time std of every observable vs the number of sites (log-log), predicted at each
    size and direct at the trained size, with the n^-1/2 line through the trained size."""
    plt = _pyplot()
    n = np.asarray(scaling["n_sites"], dtype=np.float64)
    pred, direct = np.asarray(scaling["predicted_std"]), np.asarray(scaling["direct_std"])
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.6 * len(conditions), 3.8), squeeze=False)
    for c, value in enumerate(conditions):
        ax = axes[0][c]
        for k, name in enumerate(names):
            ax.loglog(n, pred[c, :, k], "-o", color=f"C{k}", ms=3, label=name)
            ax.loglog([scaling["direct_n_sites"]], [direct[c, k]], "s", color=f"C{k}", mfc="none", ms=7)
            ax.loglog(n, pred[c, 0, k] * np.sqrt(n[0] / n), ":", color=f"C{k}", lw=0.8)
        ax.set_xlabel("sites n")
        ax.set_ylabel("late-time std")
        ax.set_title(f"{condition_label} = {value:g} (squares: direct; dotted: n^-1/2)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_mmd_over_time(mmd: Mapping[str, Sequence[Mapping[str, Any]]], times: np.ndarray,
                       conditions: Sequence[float], path: str | Path, *, title: str = "",
                       condition_label: str = "condition", time_unit: str = "time") -> Path:
    """MMD²(t) between the predicted and direct ensembles with its pointwise CI band, one panel
    per condition and one line per method; the dotted line is the method's time average.

    ``mmd``: {method: the ``mmd_over_time`` list of the evaluate metrics (one entry per
    condition with ``time_index``, ``mmd2``, ``ci_low``, ``ci_high``, ``mean``)}; ``times``: the
    grid times that ``time_index`` refers to. The unbiased MMD² can be slightly negative; a band
    that contains 0 means no difference the reference can resolve at that time.
    """
    plt = _pyplot()
    t_grid = np.asarray(times, dtype=np.float64)
    cols = min(3, max(1, len(conditions)))
    rows = -(-len(conditions) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for c, value in enumerate(conditions):
        ax = axes[c // cols][c % cols]
        for method, per_condition in mmd.items():
            entry = per_condition[c]
            color, ls = _METHOD_STYLE.get(method, ("C0", "--"))
            t = t_grid[np.asarray(entry["time_index"], dtype=int)]
            ax.fill_between(t, entry["ci_low"], entry["ci_high"], color=color, alpha=0.2, lw=0)
            ax.plot(t, entry["mmd2"], color=color, ls=ls, lw=1.2, marker=".", ms=3, label=method)
            ax.axhline(entry["mean"], color=color, ls=":", lw=0.8)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(f"{condition_label} = {value:g}", fontsize=9)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel("MMD²(t)")
        ax.grid(alpha=0.3)
    for k in range(len(conditions), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7, title="band: CI (bootstrap over paths)", title_fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


__all__ = ["plot_mean_std_curves", "plot_test_error_vs_ns", "plot_equilibrium_vs_parameter",
           "plot_std_vs_size", "plot_mmd_over_time"]
