"""Order–disorder transitions of a BCC alloy from canonical swap Monte Carlo temperature scans.

:func:`temperature_scan` anneals one lattice through a temperature grid (highest T first, each
temperature starting from the last state of the previous one) with the Metropolis swap ensemble
of :mod:`matscale.systems.alloy.swap` (composition and vacancy positions fixed) and measures per
temperature, on the samples left after the equilibration cut:

- the mean energy per atom ⟨e⟩ (eV/atom) and its error;
- the heat capacity per atom from the energy fluctuations,
  c_v = (⟨E²⟩ − ⟨E⟩²) / (N k_B² T²)  (units of k_B per atom, E the total energy in eV);
- the Warren–Cowley α of shells 1 and 2 for every pair (:mod:`matscale.systems.alloy.sro`);
- sublattice order parameters: B2 (corner vs body-centre simple-cubic sublattices) and B32
  (NaTl-type: the BCC split into four FCC sublattices; see :func:`sublattice_order_parameters`).

Errors of means (correlation-aware)
-----------------------------------
For a stationary series x_1..x_n with normalised autocorrelation ρ(t), the variance of the
sample mean is var(x)·2τ_int/n with τ_int = ½ + Σ_{t≥1} ρ(t). ρ is estimated by FFT; the sum is
cut at the smallest window W with W ≥ c·τ_int(W), c = 5 (the self-consistent window of
A. Sokal, "Monte Carlo methods in statistical mechanics", Cargèse lectures 1996). The error of
c_v is the error of the mean of the series u_t = (E_t − Ē)², estimated the same way (the
uncertainty of Ē itself adds a relative O(1/n) and is neglected).

Equilibration
-------------
Each temperature first runs ``n_equilibration_sweeps`` unrecorded sweeps. Of the recorded
energy series, the first d samples are then discarded, with d chosen by the marginal standard
error rule (MSER, K. P. White, Simulation 69, 323 (1997)): d minimises
Σ_{t>d}(x_t − x̄_d)² / (n − d)², searched over d ≤ n/2. The same cut applies to every observable
of that temperature.

Transition temperature
----------------------
:func:`transition_temperature` fits a weighted parabola to the c_v points around the c_v maximum
and takes the vertex; its error is half the central 68 % interval of the vertex over a
parametric bootstrap that redraws every point from a normal distribution with its own error,
widened by sqrt(χ²/dof) of the fit when the points scatter about the parabola by more than
their errors. Alternatively
the inflection of an order parameter η(T), from a weighted tanh fit. On a finite periodic box this is the
pseudo-transition temperature of that box size.

Units: eV, K, k_B = 8.617333e-5 eV/K; one sweep = as many swap trials as atoms.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K
from matscale.systems.alloy.lattice import BCCLattice
from matscale.systems.alloy.sro import pair_labels, warren_cowley
from matscale.systems.alloy.swap import SwapMCEnsemble

__all__ = [
    "TemperatureScan",
    "TransitionTemperature",
    "b2_order_parameter",
    "b32_order_parameter",
    "detect_equilibration",
    "fcc_sublattices",
    "heat_capacity",
    "integrated_autocorrelation_time",
    "mean_and_error",
    "sublattice_order_parameters",
    "temperature_scan",
    "transition_temperature",
]

SRO_SHELLS = (1, 2)
#: Sokal's window constant: the autocorrelation sum stops at the first W with W >= c tau(W).
WINDOW_CONSTANT = 5.0


# ----------------------------------------------------------------------------------------------
# Statistics of correlated series
# ----------------------------------------------------------------------------------------------
def _series(x: Any, name: str, minimum: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size < minimum:
        raise ValueError(f"{name} must be a 1-D series of at least {minimum} values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or inf values; pass a finite series")
    return a


def integrated_autocorrelation_time(x: Any, *, window_constant: float = WINDOW_CONSTANT) -> float:
    """τ_int = ½ + Σ_{t=1}^{W} ρ(t) of a series, in samples (τ_int = ½ for uncorrelated data),
    with Sokal's self-consistent window W (module docstring); one series of
    :func:`matscale.critical.integrated_autocorrelation_time`. At least ½."""
    from matscale.critical import integrated_autocorrelation_time as tau_of_runs

    a = _series(x, "x")
    if not window_constant > 0:
        raise ValueError(f"window_constant must be > 0, got {window_constant}")
    if a.size < 4:
        return 0.5
    return tau_of_runs(a[None, :], window_factor=window_constant)


def mean_and_error(x: Any) -> tuple[float, float, float]:
    """(mean, standard error of the mean, τ_int) of a correlated series:
    error² = var(x)·2τ_int/n (module docstring)."""
    a = _series(x, "x")
    tau = integrated_autocorrelation_time(a)
    var = float(a.var(ddof=1))
    return float(a.mean()), math.sqrt(var * 2.0 * tau / a.size), tau


def detect_equilibration(x: Any, *, max_fraction: float = 0.5) -> int:
    """Number of leading samples to discard (MSER rule, module docstring), at most
    ``max_fraction`` of the series."""
    a = _series(x, "x", minimum=4)
    if not 0.0 <= max_fraction < 1.0:
        raise ValueError(f"max_fraction must lie in [0, 1), got {max_fraction}")
    n = a.size
    # suffix sums of y and y² (y = x − x̄, for round-off) give Σ_{t≥d} (x_t − x̄_d)² for every d
    y = a - a.mean()
    s1 = np.cumsum(y[::-1])[::-1]
    s2 = np.cumsum(y[::-1] ** 2)[::-1]
    d = np.arange(int(max_fraction * n) + 1)
    m = (n - d).astype(np.float64)
    ssd = np.maximum(s2[d] - s1[d] ** 2 / m, 0.0)
    return int(d[np.argmin(ssd / m ** 2)])


def heat_capacity(energies_eV: Any, temperature_K: float, n_atoms: int) -> tuple[float, float]:
    """(c_v, error) in k_B per atom from a series of *total* energies E_t (eV) at temperature T:
    c_v = var(E) / (N k_B² T²); the error is that of the mean of (E_t − Ē)² (module docstring)."""
    e = _series(energies_eV, "energies_eV")
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ValueError(f"temperature_K must be a finite temperature > 0 K, got {temperature_K}")
    if int(n_atoms) != n_atoms or n_atoms < 1:
        raise ValueError(f"n_atoms must be an integer >= 1, got {n_atoms}")
    scale = 1.0 / (n_atoms * (BOLTZMANN_EV_PER_K * temperature_K) ** 2)
    u = (e - e.mean()) ** 2
    mean_u, err_u, _ = mean_and_error(u)
    n = e.size
    return float(u.sum() / (n - 1) * scale), float(err_u * scale)


# ----------------------------------------------------------------------------------------------
# Sublattice order parameters
# ----------------------------------------------------------------------------------------------
def fcc_sublattices(lattice: BCCLattice) -> np.ndarray:
    """Index 0..3 of each site among the four FCC sublattices of edge 2a (int8 [N]):
    0 = corner with i+j+k even, 1 = body centre with i+j+k even, 2 = corner odd, 3 = body
    centre odd (i, j, k the cell indices). 0 and 2 are second neighbours (the simple-cubic
    corner sublattice of B2), 1 and 3 likewise; 0 and 1 (and 0 and 3) are first neighbours.
    Needs an even number of cells along every axis."""
    if any(c % 2 for c in lattice.cells):
        raise ValueError(f"lattice.cells={lattice.cells}: the four FCC sublattices (B32 order) need an even "
                         "number of cells along every axis")
    d = np.asarray(lattice.doubled_coords, dtype=np.int64)
    body = d[:, 0] & 1
    cell_parity = ((d - body[:, None]) // 2).sum(axis=1) & 1
    return (body + 2 * cell_parity).astype(np.int8)


def _split_order(lattice: BCCLattice, in_first: np.ndarray) -> np.ndarray:
    """|x_a(first half) − x_a(second half)| / (2 min(c_a, 1 − c_a)) per element a, vacancies
    counted as sites (they never move in swap MC)."""
    species = lattice.species
    first = species[in_first]
    second = species[~in_first]
    counts = lattice.species_counts().astype(np.float64)
    c = counts / species.size
    out = np.zeros(lattice.n_elements)
    for a in range(lattice.n_elements):
        x1 = np.count_nonzero(first == a + 1) / max(first.size, 1)
        x2 = np.count_nonzero(second == a + 1) / max(second.size, 1)
        norm = 2.0 * min(c[a], 1.0 - c[a])
        out[a] = abs(x1 - x2) / norm if norm > 0 else 0.0
    return out


def sublattice_order_parameters(lattice: BCCLattice, kind: str = "B2") -> np.ndarray:
    """Per-element long-range order η_a in [0, 1] (float64 [n_elements]).

    ``kind="B2"``: split into the corner and body-centre simple-cubic sublattices,
    η_a = |x_a(sub 1) − x_a(sub 2)| / (2 min(c_a, 1 − c_a)), with x_a(sub) the fraction of the
    sublattice's sites holding a and c_a the overall fraction: 1 when a fills its largest
    possible share of one sublattice, ~O(N^-1/2) in a random solution, unchanged by exchanging
    the sublattices. ``kind="B32"``: the same with the two halves {0, 1} | {2, 3} or
    {0, 3} | {1, 2} of :func:`fcc_sublattices` (the two B32 domain orientations; the larger η_a
    is kept per element), which needs even cell counts.
    """
    if not isinstance(lattice, BCCLattice):
        raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
    if kind == "B2":
        return _split_order(lattice, (np.arange(lattice.n_sites) & 1) == 0)
    if kind == "B32":
        sub = fcc_sublattices(lattice)
        return np.maximum(_split_order(lattice, (sub == 0) | (sub == 1)),
                          _split_order(lattice, (sub == 0) | (sub == 3)))
    raise ValueError(f"kind must be 'B2' or 'B32', got {kind!r}")


def b2_order_parameter(lattice: BCCLattice) -> float:
    """B2 order: the largest per-element η_a of :func:`sublattice_order_parameters` (1 on a
    perfect B2 arrangement, ~0 on a random solution)."""
    return float(sublattice_order_parameters(lattice, "B2").max())


def b32_order_parameter(lattice: BCCLattice) -> float:
    """B32 (NaTl-type) order: the largest per-element η_a of ``sublattice_order_parameters(...,
    "B32")``; needs even cell counts."""
    return float(sublattice_order_parameters(lattice, "B32").max())


# ----------------------------------------------------------------------------------------------
# The temperature scan
# ----------------------------------------------------------------------------------------------
@dataclass
class TemperatureScan:
    """Results of :func:`temperature_scan`, one row per temperature (increasing T).

    Arrays (float64 unless noted): ``temperatures_K`` [T]; ``energy_eV_per_atom`` and
    ``energy_err`` [T]; ``heat_capacity_kB`` and ``heat_capacity_err`` [T] (k_B per atom);
    ``sro`` and ``sro_err`` [T, 2, P] (Warren–Cowley α of shells 1, 2 for the P upper-triangle
    pairs ``pair_labels``); ``b2``/``b2_err`` and ``b32``/``b32_err`` [T] (max over elements;
    b32 is NaN for odd cell counts) and ``b2_per_element``/``b32_per_element`` [T, n_el];
    ``tau_energy`` [T] (τ_int of the energy in samples); ``n_samples`` and ``n_discarded`` (int
    [T]); ``acceptance`` [T]; ``seconds`` [T] (wall time). ``energy_series`` [T, n] holds the
    recorded per-atom energies (before the cut) for diagnostics. ``metadata``: lattice, model,
    sweeps, seed, units.
    """

    temperatures_K: np.ndarray
    energy_eV_per_atom: np.ndarray
    energy_err: np.ndarray
    heat_capacity_kB: np.ndarray
    heat_capacity_err: np.ndarray
    sro: np.ndarray
    sro_err: np.ndarray
    b2: np.ndarray
    b2_err: np.ndarray
    b32: np.ndarray
    b32_err: np.ndarray
    b2_per_element: np.ndarray
    b32_per_element: np.ndarray
    tau_energy: np.ndarray
    n_samples: np.ndarray
    n_discarded: np.ndarray
    acceptance: np.ndarray
    seconds: np.ndarray
    energy_series: np.ndarray
    pair_labels: tuple[str, ...]
    elements: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("temperatures_K", "energy_eV_per_atom", "energy_err", "heat_capacity_kB",
               "heat_capacity_err", "sro", "sro_err", "b2", "b2_err", "b32", "b32_err",
               "b2_per_element", "b32_per_element", "tau_energy", "n_samples", "n_discarded",
               "acceptance", "seconds", "energy_series")

    def sro_of(self, shell: int, pair: str) -> tuple[np.ndarray, np.ndarray]:
        """(α, error) [T] of one shell (1 or 2) and pair label (e.g. 'MoTa')."""
        if shell not in SRO_SHELLS:
            raise ValueError(f"shell must be one of {SRO_SHELLS}, got {shell}")
        if pair not in self.pair_labels:
            raise ValueError(f"pair {pair!r} not measured (allowed: {', '.join(self.pair_labels)})")
        k, p = SRO_SHELLS.index(shell), self.pair_labels.index(pair)
        return self.sro[:, k, p], self.sro_err[:, k, p]

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` with the arrays and a JSON header (labels, metadata, units)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"scan path must end in .npz, got {path.name!r}")
        header = {"pair_labels": list(self.pair_labels), "elements": list(self.elements),
                  "metadata": self.metadata}
        np.savez(path, header=np.array(json.dumps(header)),
                 **{name: np.asarray(getattr(self, name)) for name in self._ARRAYS})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TemperatureScan":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"temperature scan not found: {path}")
        with np.load(path, allow_pickle=False) as f:
            header = json.loads(str(f["header"]))
            arrays = {name: f[name] for name in cls._ARRAYS}
        return cls(**arrays, pair_labels=tuple(header["pair_labels"]), elements=tuple(header["elements"]),
                   metadata=header["metadata"])

    def table(self) -> list[dict[str, float]]:
        """One dict per temperature with the headline numbers (for reports and JSON)."""
        rows = []
        for i, T in enumerate(self.temperatures_K):
            row = {"T_K": float(T), "energy_eV_per_atom": float(self.energy_eV_per_atom[i]),
                   "energy_err": float(self.energy_err[i]), "heat_capacity_kB": float(self.heat_capacity_kB[i]),
                   "heat_capacity_err": float(self.heat_capacity_err[i]), "b2": float(self.b2[i]),
                   "b2_err": float(self.b2_err[i]), "b32": float(self.b32[i]), "b32_err": float(self.b32_err[i]),
                   "tau_energy_samples": float(self.tau_energy[i]), "n_samples": int(self.n_samples[i]),
                   "n_discarded": int(self.n_discarded[i]), "acceptance": float(self.acceptance[i])}
            for k, shell in enumerate(SRO_SHELLS):
                for p, label in enumerate(self.pair_labels):
                    row[f"alpha{shell}_{label}"] = float(self.sro[i, k, p])
                    row[f"alpha{shell}_{label}_err"] = float(self.sro_err[i, k, p])
            rows.append(row)
        return rows


def _check_temperatures(temperatures_K: Any) -> np.ndarray:
    try:
        t = np.asarray(temperatures_K, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"temperatures_K must be a sequence of temperatures in K, got {temperatures_K!r}") from None
    if t.size < 1:
        raise ValueError("temperatures_K must list at least one temperature")
    bad = np.flatnonzero(~(np.isfinite(t) & (t > 0)))
    if bad.size:
        raise ValueError(f"temperatures_K[{bad[0]}]={t[bad[0]]} out of range (allowed: finite > 0 K)")
    if np.unique(t).size != t.size:
        raise ValueError(f"temperatures_K={t.tolist()} has duplicates (allowed: distinct)")
    return t


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _total_energy(model: Any, lattice: BCCLattice) -> float | None:
    for name in ("total_energy", "energy"):
        method = getattr(model, name, None)
        if callable(method):
            return float(method(lattice))
    return None


def _observe(lattice: BCCLattice, with_b32: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alpha = warren_cowley(lattice, SRO_SHELLS)
    rows, cols = np.triu_indices(lattice.n_elements)
    b2 = sublattice_order_parameters(lattice, "B2")
    b32 = sublattice_order_parameters(lattice, "B32") if with_b32 else np.full(lattice.n_elements, np.nan)
    return alpha[:, rows, cols], b2, b32


def _errors(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and correlation-aware error of every column of samples [n, ...]."""
    flat = samples.reshape(samples.shape[0], -1)
    means = np.empty(flat.shape[1])
    errs = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        means[j], errs[j], _ = mean_and_error(flat[:, j])
    return means.reshape(samples.shape[1:]), errs.reshape(samples.shape[1:])


def temperature_scan(lattice: BCCLattice, energy_model: Any, temperatures_K: Sequence[float], *,
                     n_sweeps: int, rng: np.random.Generator | int,
                     n_equilibration_sweeps: int = 0, sample_interval: int = 1,
                     neighbor_shell: int | None = None,
                     progress: Callable[[str], None] | None = None) -> TemperatureScan:
    """Anneal ``lattice`` (modified in place) through ``temperatures_K`` by swap MC.

    Temperatures are visited from the highest to the lowest, each starting from the previous
    final state; the results are returned in increasing T. Per temperature:
    ``n_equilibration_sweeps`` unrecorded sweeps, then ``n_sweeps`` sweeps with a sample every
    ``sample_interval`` sweeps (one sweep = as many trials as atoms); the leading samples that
    the MSER rule flags are discarded (module docstring). ``energy_model``: any
    ``LocalEnergyModel`` (eV); its ``total_energy``/``energy`` method, when present, gives the
    absolute energy, else energies are relative to the starting state. ``neighbor_shell``: the
    swap proposal (None = any two atoms, 1/2/3 = shell neighbours). ``progress``: called with one
    line per finished temperature.
    """
    if not isinstance(lattice, BCCLattice):
        raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
    if not hasattr(energy_model, "swap_delta"):
        raise TypeError("energy_model must implement swap_delta(lattice, site_a, site_b) (a LocalEnergyModel)")
    temps = _check_temperatures(temperatures_K)
    n_sweeps = _check_count("n_sweeps", n_sweeps, 1)
    n_equilibration_sweeps = _check_count("n_equilibration_sweeps", n_equilibration_sweeps, 0)
    sample_interval = _check_count("sample_interval", sample_interval, 1)
    n_samples = n_sweeps // sample_interval
    if n_samples < 8:
        raise ValueError(f"n_sweeps // sample_interval = {n_samples} samples per temperature; need >= 8 "
                         "(raise n_sweeps or lower sample_interval)")
    if np.any(lattice.species_counts() == 0):
        raise ValueError(f"every element needs at least one atom on the lattice, counts "
                         f"{lattice.species_counts().tolist()}")
    seed = int(rng) if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else None
    generator = np.random.default_rng(seed) if seed is not None else rng
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
    n_atoms = int(np.count_nonzero(lattice.species > 0))
    with_b32 = not any(c % 2 for c in lattice.cells)
    e_start = _total_energy(energy_model, lattice)
    absolute = e_start is not None
    e_offset = 0.0  # energy relative to the start when the model has no total energy
    order = np.argsort(-temps)
    rows: list[dict[str, Any]] = []
    for T in temps[order]:
        start = time.perf_counter()
        ensemble = SwapMCEnsemble(lattice, energy_model, float(T), generator, neighbor_shell=neighbor_shell)
        ensemble.run(n_equilibration_sweeps * n_atoms)
        base = _total_energy(energy_model, lattice) if absolute else e_offset + ensemble.energy_change
        accepted_before, trials_before = ensemble.n_accepted, ensemble.n_trials
        change_before = ensemble.energy_change
        energies = np.empty(n_samples)
        sro = np.empty((n_samples, len(SRO_SHELLS), len(pair_labels(lattice.elements))))
        b2 = np.empty((n_samples, lattice.n_elements))
        b32 = np.empty((n_samples, lattice.n_elements))
        for s in range(n_samples):
            ensemble.run(sample_interval * n_atoms)
            energies[s] = base + (ensemble.energy_change - change_before)
            sro[s], b2[s], b32[s] = _observe(lattice, with_b32)
        if not absolute:
            e_offset = energies[-1]
        cut = detect_equilibration(energies)
        kept = energies[cut:]
        e_mean, e_err, tau = mean_and_error(kept / n_atoms)
        cv, cv_err = heat_capacity(kept, float(T), n_atoms)
        sro_mean, sro_err = _errors(sro[cut:])
        b2_max = b2[cut:].max(axis=1)
        b2_mean, b2_err, _ = mean_and_error(b2_max)
        if with_b32:
            b32_mean, b32_err, _ = mean_and_error(b32[cut:].max(axis=1))
        else:
            b32_mean = b32_err = float("nan")
        trials = ensemble.n_trials - trials_before
        rows.append(dict(T=float(T), e=e_mean, e_err=e_err, cv=cv, cv_err=cv_err, sro=sro_mean, sro_err=sro_err,
                         b2=b2_mean, b2_err=b2_err, b32=b32_mean, b32_err=b32_err,
                         b2_el=b2[cut:].mean(axis=0), b32_el=b32[cut:].mean(axis=0), tau=tau,
                         n=kept.size, cut=cut, acc=(ensemble.n_accepted - accepted_before) / max(trials, 1),
                         seconds=time.perf_counter() - start, series=energies / n_atoms))
        if progress is not None:
            progress(f"T = {T:g} K: e = {e_mean:.5f} ± {e_err:.1e} eV/atom, c_v = {cv:.3f} ± {cv_err:.3f} k_B, "
                     f"B2 = {b2_mean:.3f}, B32 = {b32_mean:.3f}, cut {cut}/{n_samples}, "
                     f"{rows[-1]['seconds']:.1f} s")
    rows.reverse()  # increasing temperature
    stack = lambda key: np.array([r[key] for r in rows])  # noqa: E731
    metadata = {
        "cells": list(lattice.cells), "lattice_constant_A": lattice.lattice_constant,
        "elements": list(lattice.elements), "n_atoms": n_atoms,
        "n_vacancies": int(lattice.n_sites - n_atoms),
        "composition": {el: float(c) / n_atoms for el, c in zip(lattice.elements, lattice.species_counts())},
        "energy_model": type(energy_model).__name__, "absolute_energy": absolute,
        "n_sweeps": n_sweeps, "n_equilibration_sweeps": n_equilibration_sweeps,
        "sample_interval_sweeps": sample_interval, "neighbor_shell": neighbor_shell, "seed": seed,
        "anneal_order_K": temps[order].tolist(),
        "error_method": f"integrated autocorrelation time, Sokal window c={WINDOW_CONSTANT:g}",
        "equilibration": "n_equilibration_sweeps unrecorded + MSER cut (max half the samples)",
        "units": {"energy": "eV/atom", "heat_capacity": "k_B per atom", "temperature": "K",
                  "tau_energy": "samples", "seconds": "s"},
    }
    return TemperatureScan(
        temperatures_K=stack("T"), energy_eV_per_atom=stack("e"), energy_err=stack("e_err"),
        heat_capacity_kB=stack("cv"), heat_capacity_err=stack("cv_err"), sro=stack("sro"),
        sro_err=stack("sro_err"), b2=stack("b2"), b2_err=stack("b2_err"), b32=stack("b32"),
        b32_err=stack("b32_err"), b2_per_element=stack("b2_el"), b32_per_element=stack("b32_el"),
        tau_energy=stack("tau"), n_samples=stack("n").astype(np.int64), n_discarded=stack("cut").astype(np.int64),
        acceptance=stack("acc"), seconds=stack("seconds"), energy_series=np.stack([r["series"] for r in rows]),
        pair_labels=tuple(pair_labels(lattice.elements)), elements=tuple(lattice.elements), metadata=metadata)


# ----------------------------------------------------------------------------------------------
# Transition temperature
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransitionTemperature:
    """Estimated transition temperature (K) ± ``error_K`` (bootstrap spread of the vertex);
    ``method``; ``fit_temperatures_K`` the grid points of the fit; ``peak_value`` the fitted c_v
    maximum (k_B per atom) or, for an order parameter, the fitted width w of the tanh (K);
    ``valid_fraction`` the share of bootstrap draws whose parabola had a maximum (a low share
    means a poorly resolved peak; 1 for tanh fits)."""

    temperature_K: float
    error_K: float
    method: str
    fit_temperatures_K: tuple[float, ...]
    peak_value: float
    valid_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vertex(t: np.ndarray, y: np.ndarray, w: np.ndarray, t0: float) -> tuple[float, float] | None:
    """Vertex (T*, y*) of the weighted least-squares parabola through (t, y), or None when the
    parabola opens upward."""
    x = t - t0
    c2, c1, c0 = np.polyfit(x, y, 2, w=w)
    if not c2 < 0:
        return None
    xv = -c1 / (2 * c2)
    return float(t0 + xv), float(c0 + c1 * xv + c2 * xv * xv)


def _peak(t: np.ndarray, y: np.ndarray, err: np.ndarray, n_points: int, n_bootstrap: int,
          rng: np.random.Generator, method: str, what: str) -> TransitionTemperature:
    if t.size < n_points:
        raise ValueError(f"{method}: {t.size} usable temperatures, the fit needs n_points={n_points}; "
                         "scan more temperatures or lower n_points")
    i = int(np.argmax(y))
    if i == 0 or i == t.size - 1:
        raise ValueError(f"{method}: the {what} maximum lies at the edge of the temperature grid "
                         f"(T = {t[i]:g} K); extend temperatures_K beyond it")
    lo = min(max(i - n_points // 2, 0), t.size - n_points)
    window = slice(lo, lo + n_points)
    tw, yw = t[window], y[window]
    ew = np.maximum(err[window], 1e-12 * max(np.abs(yw).max(), 1e-300))
    best = _vertex(tw, yw, 1.0 / ew, float(t[i]))
    if best is None:
        raise ValueError(f"{method}: the {what} around T = {t[i]:g} K is not peaked (parabola opens upward); "
                         "refine the temperature grid around the maximum")
    if not tw[0] <= best[0] <= tw[-1]:
        raise ValueError(f"{method}: the fitted {what} maximum ({best[0]:.0f} K) lies outside the fit window "
                         f"{tw[0]:g}-{tw[-1]:g} K; refine the temperature grid or lower the noise (more sweeps)")
    draws = []
    for _ in range(n_bootstrap):
        v = _vertex(tw, yw + ew * rng.standard_normal(yw.size), 1.0 / ew, float(t[i]))
        if v is not None:
            draws.append(v[0])
    valid = len(draws) / n_bootstrap if n_bootstrap else 0.0
    # half the central 68 % interval: the std of a normal law, robust against the rare nearly
    # flat parabolas of a noisy draw whose vertex flies far away
    error = float(np.subtract(*np.percentile(draws, [84.13, 15.87])) / 2) if len(draws) > 1 else float("nan")
    # a c_v peak is not exactly a parabola: when the points scatter about the fit by more than
    # their errors (χ²/dof > 1), widen the error by sqrt(χ²/dof) (the usual scale factor)
    c2, c1, c0 = np.polyfit(tw - t[i], yw, 2, w=1.0 / ew)
    residual = (yw - np.polyval((c2, c1, c0), tw - t[i])) / ew
    dof = max(tw.size - 3, 1)
    error *= math.sqrt(max(float(residual @ residual) / dof, 1.0))
    return TransitionTemperature(best[0], error, method, tuple(float(x) for x in tw), best[1], valid)


def _sigmoid(t: np.ndarray, low: float, high: float, t0: float, width: float) -> np.ndarray:
    """Order parameter model: ``low`` above, ``high`` below the transition, centred on t0 (K)."""
    return low + 0.5 * (high - low) * (1.0 - np.tanh((t - t0) / width))


def _inflection(t: np.ndarray, eta: np.ndarray, err: np.ndarray, method: str) -> TransitionTemperature:
    """Inflection t0 of an error-weighted tanh fit to η(T); error from the fit covariance."""
    from scipy.optimize import curve_fit

    name = method.upper()
    if not np.all(np.isfinite(eta)):
        raise ValueError(f"method={method!r}: the scan has no {name} values (odd cell counts?)")
    if t.size < 5:
        raise ValueError(f"method={method!r}: a tanh fit needs at least 5 temperatures, got {t.size}")
    low_t, high_t = eta[np.argmin(t)], eta[np.argmax(t)]
    if low_t < 0.5 or low_t - high_t < 0.3:
        raise ValueError(f"method={method!r}: {name} does not order in this scan ({low_t:.2f} at the lowest T, "
                         f"{high_t:.2f} at the highest; needs >= 0.5 and a rise >= 0.3)")
    sigma = np.maximum(err, 1e-3)
    crossing = t[np.argmin(np.abs(eta - 0.5 * (low_t + high_t)))]
    try:
        popt, pcov = curve_fit(_sigmoid, t, eta, p0=(high_t, low_t, crossing, 0.1 * np.ptp(t)), sigma=sigma,
                               absolute_sigma=True, maxfev=20_000)
    except RuntimeError:
        raise ValueError(f"method={method!r}: the tanh fit of {name}(T) did not converge; "
                         "refine the temperature grid around the transition") from None
    t0, error = float(popt[2]), float(math.sqrt(max(pcov[2, 2], 0.0)))
    if not (t.min() < t0 < t.max()) or not math.isfinite(error):
        raise ValueError(f"method={method!r}: the {name} inflection ({t0:.0f} K) lies outside the grid; "
                         "extend temperatures_K")
    return TransitionTemperature(t0, error, method, tuple(float(x) for x in t), float(abs(popt[3])), 1.0)


def transition_temperature(scan: TemperatureScan, *, method: str = "heat_capacity", n_points: int = 5,
                           n_bootstrap: int = 2000, rng: np.random.Generator | int = 0) -> TransitionTemperature:
    """Transition temperature of a :class:`TemperatureScan` (module docstring).

    ``method``: "heat_capacity" (vertex of a parabola through the ``n_points`` c_v points around
    the c_v maximum, weighted by their errors; bootstrap error) or "b2"/"b32" (inflection t0 of
    an error-weighted fit η(T) = low + ½(high − low)(1 − tanh((T − t0)/w)) over the whole grid;
    error from the fit covariance). An order parameter that does not order in the scan (below
    0.5 at the lowest T, or rising by less than 0.3) is refused.
    """
    if not isinstance(scan, TemperatureScan):
        raise TypeError(f"scan must be a TemperatureScan, got {type(scan).__name__}")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 3:
        raise ValueError(f"n_points must be an integer >= 3 (a parabola needs 3 points), got {n_points!r}")
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 0)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    t = np.asarray(scan.temperatures_K, dtype=np.float64)
    if method == "heat_capacity":
        return _peak(t, scan.heat_capacity_kB, scan.heat_capacity_err, int(n_points), n_bootstrap,
                     generator, method, "heat-capacity")
    if method in ("b2", "b32"):
        return _inflection(t, getattr(scan, method), getattr(scan, f"{method}_err"), method)
    raise ValueError(f"method must be 'heat_capacity', 'b2' or 'b32', got {method!r}")
