"""Tracer diffusion from vacancy kinetic Monte Carlo, and Arrhenius fits.

Tracer diffusivity of species i from the unwrapped displacements R of its N_i atoms over the
simulated time t (Einstein relation, three dimensions),

    D_i = Σ_{atoms of i} |R|² / (6 N_i t)                                  (m²/s),

and its tracer correlation factor against the uncorrelated random walk of the same hops,

    f_i = Σ_{atoms of i} |R|² / (n_i λ²),        λ = √3 a / 2 (first-neighbour hop length),

n_i the number of hops made by atoms of i. For the vacancy mechanism on BCC with every hop
equally fast, f = 0.7272 (Compaan & Haven, Trans. Faraday Soc. 52, 786 (1956) and 54, 1498
(1958); Le Claire, in *Physical Chemistry: an Advanced Treatise* vol. 10, 1970);
:class:`ConstantBarrierModel` is that limit, and the vacancy then walks without correlation,
D_v = z ν0 exp(−E / k_B T) λ² / 6 with z = 8.

Vacancy concentration: vacancies are conserved in the kMC, so the lattice's vacancy site
fraction c_v = n_vac / N_sites is fixed and D_i ∝ c_v (each atom hops only when a vacancy
visits it). The results hold for the simulated c_v; the physical tracer diffusivity at the
equilibrium vacancy fraction c_v^eq(T) = exp(S_f / k_B) exp(−E_f / k_B T) is
D_i · c_v^eq(T) / c_v (:meth:`TracerDiffusionResult.at_vacancy_fraction`), and an Arrhenius
fit of the simulated D_i gives the migration part of the activation energy only
(Q_i = E_f + E_a,i when c_v^eq is applied).

Units: eV, Å, K, seconds inside; D in m²/s (1 Å²/s = 1e-20 m²/s); k_B = 8.617333e-5 eV/K.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K, DisplacementTracker, VacancyKMC
from matscale.systems.alloy.lattice import SHELL_DISTANCES, BCCLattice

__all__ = [
    "ArrheniusFit",
    "BCC_CORRELATION_FACTOR",
    "ConstantBarrierModel",
    "TracerDiffusionResult",
    "arrhenius_fit",
    "tracer_diffusion",
    "vacancy_diffusivity_constant_barrier",
]

#: Tracer correlation factor of the vacancy mechanism on the BCC lattice (Compaan & Haven 1958).
BCC_CORRELATION_FACTOR = 0.7272
_A2_TO_M2 = 1e-20


# ---------------------------------------------------------------------------------- barrier model
class ConstantBarrierModel:
    """Every vacancy hop onto an atom has the same barrier ``barrier_eV`` (eV); a hop onto a
    vacancy is forbidden (inf). Implements ``BarrierModel`` for :class:`VacancyKMC`.

    The analytic limit of vacancy diffusion: the vacancy walks without memory (rate
    ν0 exp(−E / k_B T) per free neighbour) and the tracer correlation factor is the geometric
    BCC value 0.7272. ``interaction_range`` is 0 Å: a hop's barrier depends on its two sites only
    (whether the target holds a vacancy), so kMC recomputes only the vacancies next to the sites
    of the last hop.
    """

    interaction_range: float = 0.0
    vacancy_centred: bool = False

    def __init__(self, barrier_eV: float) -> None:
        if isinstance(barrier_eV, bool) or not isinstance(barrier_eV, (int, float, np.floating, np.integer)):
            raise TypeError(f"barrier_eV must be a number (eV), got {type(barrier_eV).__name__}")
        if not math.isfinite(barrier_eV) or barrier_eV < 0:
            raise ValueError(f"barrier_eV must be a finite barrier >= 0 eV, got {barrier_eV}")
        self.barrier_eV = float(barrier_eV)

    def hop_barriers(self, lattice: BCCLattice, vacancy_sites: np.ndarray) -> np.ndarray:
        """Barriers [M, 8] (eV) of the 8 first-shell hops of each vacancy, in the order of
        ``lattice.neighbors(1)[vacancy]``: ``barrier_eV``, inf where the target holds a vacancy."""
        vac = np.atleast_1d(np.asarray(vacancy_sites))
        if vac.ndim != 1 or (vac.size and vac.dtype.kind not in "iu"):
            raise ValueError("vacancy_sites must be a 1-D integer array of site indices")
        if vac.size and (vac.min() < 0 or vac.max() >= lattice.n_sites):
            raise ValueError(f"vacancy_sites must lie in [0, {lattice.n_sites - 1}]")
        if np.any(lattice.species[vac] != 0):
            raise ValueError("every entry of vacancy_sites must hold a vacancy (species 0)")
        targets = lattice.neighbors(1)[vac]
        return np.where(lattice.species[targets] == 0, np.inf, self.barrier_eV)

    def jump_barriers(self, atoms: Any, vacancy_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Barriers of the 8 jumps of the vacancy at atom ``vacancy_index`` of a periodic BCC
        ``ase.Atoms``: ``(neighbour atom indices int64 [8], barriers_eV float64 [8])``."""
        from matscale.systems.alloy.lattice import jump_barriers_of_atoms

        return jump_barriers_of_atoms(self, atoms, vacancy_index)

    def __repr__(self) -> str:
        return f"ConstantBarrierModel(barrier_eV={self.barrier_eV})"


def vacancy_diffusivity_constant_barrier(barrier_eV: float, temperature_K: float, lattice_constant_A: float,
                                         nu0: float = 1e13) -> float:
    """D_v = z ν0 exp(−E / k_B T) λ² / 6 in m²/s, z = 8, λ = √3 a / 2: the uncorrelated walk of
    an isolated vacancy when every hop has the barrier E (eV)."""
    hop = SHELL_DISTANCES[1] * lattice_constant_A
    rate = nu0 * math.exp(-barrier_eV / (BOLTZMANN_EV_PER_K * temperature_K))
    return 8 * rate * hop**2 / 6.0 * _A2_TO_M2


# ---------------------------------------------------------------------------------- estimators
def _ratio_estimate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Ratio Σx / Σy of block sums and its standard error from the spread of the B blocks
    (first-order ratio estimator: se² = Σ_b (x_b − r y_b)² / (B (B − 1) ȳ²))."""
    r = float(x.sum() / y.sum())
    b = x.size
    se = math.sqrt(float(np.sum((x - r * y) ** 2)) / (b * (b - 1))) / float(y.mean())
    return r, se


@dataclass(frozen=True)
class TracerDiffusionResult:
    """Tracer diffusivities and correlation factors per element from one kMC run.

    D, D_err: tracer diffusivity per element and its standard error (m²/s), at the lattice's
    vacancy site fraction ``vacancy_fraction`` (D ∝ c_v; see :meth:`at_vacancy_fraction`).
    correlation_factor, correlation_factor_err: f_i = Σ|R|² / (n_i λ²) and its standard error.
    D_uncorrelated: Σ n_i λ² / (6 N_i t), the diffusivity of the same hops without correlation.
    hops: hops made by atoms of each element; n_atoms: atoms of each element.
    D_vacancy, D_vacancy_err: the vacancies' own diffusivity (m²/s); vacancy_hops: their hops.
    time_s: simulated time of the measured blocks (s); n_events: measured hops; n_blocks: the
    independent blocks the standard errors come from (see :func:`tracer_diffusion`).
    hop_length_A: λ (Å). block_*: per-block sums behind the estimates (|R|² in Å², time in s).
    """

    temperature_K: float
    elements: tuple[str, ...]
    D: dict[str, float]
    D_err: dict[str, float]
    correlation_factor: dict[str, float]
    correlation_factor_err: dict[str, float]
    D_uncorrelated: dict[str, float]
    hops: dict[str, int]
    n_atoms: dict[str, int]
    D_vacancy: float
    D_vacancy_err: float
    vacancy_hops: int
    n_vacancies: int
    time_s: float
    n_events: int
    n_blocks: int
    vacancy_fraction: float
    hop_length_A: float
    block_time_s: tuple[float, ...] = field(repr=False, default=())
    block_r2_A2: dict[str, tuple[float, ...]] = field(repr=False, default_factory=dict)
    block_hops: dict[str, tuple[int, ...]] = field(repr=False, default_factory=dict)

    def at_vacancy_fraction(self, vacancy_fraction: float) -> "TracerDiffusionResult":
        """The result rescaled to another vacancy site fraction c_v' (e.g. the equilibrium
        c_v^eq(T) = exp(S_f / k_B − E_f / k_B T)): D_i, D_uncorrelated and their errors times
        c_v' / c_v; correlation factors, hops and D_vacancy unchanged; the simulated time is
        the time the same hops take at c_v' (times c_v / c_v')."""
        if not (math.isfinite(vacancy_fraction) and 0 < vacancy_fraction < 1):
            raise ValueError(f"vacancy_fraction must lie in (0, 1), got {vacancy_fraction}")
        s = vacancy_fraction / self.vacancy_fraction
        scale = lambda d: {k: v * s for k, v in d.items()}  # noqa: E731
        return replace(self, D=scale(self.D), D_err=scale(self.D_err), D_uncorrelated=scale(self.D_uncorrelated),
                       vacancy_fraction=float(vacancy_fraction), time_s=self.time_s / s,
                       block_time_s=tuple(t / s for t in self.block_time_s))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record (units in the keys' descriptions: D in m²/s, time in s, λ in Å)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["elements"] = list(self.elements)
        d["units"] = {"D": "m^2/s", "time_s": "s", "hop_length_A": "angstrom", "temperature_K": "K",
                      "block_r2_A2": "angstrom^2"}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TracerDiffusionResult":
        """Inverse of :meth:`as_dict`."""
        kwargs = {k: d[k] for k in cls.__dataclass_fields__}
        kwargs["elements"] = tuple(kwargs["elements"])
        kwargs["block_time_s"] = tuple(kwargs["block_time_s"])
        kwargs["block_r2_A2"] = {k: tuple(v) for k, v in kwargs["block_r2_A2"].items()}
        kwargs["block_hops"] = {k: tuple(v) for k, v in kwargs["block_hops"].items()}
        return cls(**kwargs)


def tracer_diffusion(
    lattice: BCCLattice,
    barrier_model: Any,
    temperature_K: float,
    *,
    n_events: int,
    rng: np.random.Generator,
    n_blocks: int = 10,
    warmup_events: int = 0,
    nu0: float = 1e13,
) -> TracerDiffusionResult:
    """Tracer diffusivity D_i [m²/s] and correlation factor f_i of every element by vacancy kMC.

    The lattice is advanced in place (as :meth:`VacancyKMC.evolve` does): first
    ``warmup_events`` hops unrecorded, then ``n_events`` hops split into ``n_blocks`` consecutive
    blocks of (nearly) equal hop counts. Each block starts a fresh
    :class:`~matscale.systems.alloy.kmc.DisplacementTracker`, so it is an independent measurement
    of Σ|R|², hops and time; the estimates are ratios of the sums over all blocks
    (D_i = Σ|R|² / (6 N_i Σt), f_i = Σ|R|² / (λ² Σn_i)) and their standard errors come from the
    spread of the per-block values (first-order ratio estimator). Blocks are independent up to
    the correlated hops that straddle a block boundary (a few hops out of ``n_events /
    n_blocks``), so use blocks of ≥ 1e4 hops for a correlation factor unbiased to < 1e-3.

    Vacancy concentration: D_i ∝ c_v; the result is for this lattice's vacancy site fraction
    c_v = n_vacancies / n_sites (stored as ``vacancy_fraction``). For an equilibrium c_v^eq(T)
    rescale with ``result.at_vacancy_fraction(c_v_eq)``: D_i · c_v^eq / c_v.

    Parameters
    ----------
    lattice : BCC lattice with at least one vacancy and 2 cells along every axis.
    barrier_model : a ``BarrierModel`` (``hop_barriers``, ``interaction_range``).
    temperature_K : T > 0 (K).
    n_events : measured hops (≥ n_blocks).
    rng : numpy Generator (the kMC's random numbers).
    n_blocks : independent blocks for the standard errors (≥ 2).
    warmup_events : hops run before measuring (≥ 0), e.g. to let the vacancy find the
        equilibrium of its surroundings.
    nu0 : attempt frequency (s⁻¹).
    """
    if not isinstance(lattice, BCCLattice):
        raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
    n_blocks = _check_count("n_blocks", n_blocks, 2)
    n_events = _check_count("n_events", n_events, n_blocks)
    warmup_events = _check_count("warmup_events", warmup_events, 0)
    n_vac = int(np.sum(lattice.species == 0))
    if n_vac == 0:
        raise ValueError("lattice has no vacancy: tracer diffusion by the vacancy mechanism needs n_vacancies >= 1")
    kmc = VacancyKMC(lattice, barrier_model, temperature_K, nu0=nu0)  # checks T, nu0, barrier model
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    DisplacementTracker(lattice)  # checks the box (>= 2 cells per axis) before any work
    if warmup_events:
        kmc.evolve(lattice, n_events=warmup_events, rng=rng)
    elements = lattice.elements
    codes = range(len(elements) + 1)  # 0 = vacancy
    sizes = np.full(n_blocks, n_events // n_blocks)
    sizes[: n_events % n_blocks] += 1
    r2 = np.zeros((n_blocks, len(codes)))
    hops = np.zeros((n_blocks, len(codes)), dtype=np.int64)
    times = np.zeros(n_blocks)
    counts = np.bincount(lattice.species, minlength=len(codes))
    for b, size in enumerate(sizes):
        tracker = DisplacementTracker(lattice)
        _, times[b] = kmc.evolve(lattice, n_events=int(size), rng=rng, tracker=tracker)
        r2[b] = np.bincount(tracker.species, weights=tracker.squared_displacement_A2, minlength=len(codes))
        hops[b] = np.bincount(tracker.species, weights=tracker.hops, minlength=len(codes)).astype(np.int64)
    hop_length = SHELL_DISTANCES[1] * lattice.lattice_constant
    D, D_err, f, f_err, D_unc = {}, {}, {}, {}, {}
    for c, el in enumerate(elements, start=1):
        if counts[c] == 0:
            continue
        d, d_se = _ratio_estimate(r2[:, c], 6.0 * counts[c] * times)
        D[el], D_err[el] = d * _A2_TO_M2, d_se * _A2_TO_M2
        D_unc[el] = float(hops[:, c].sum() * hop_length**2 / (6.0 * counts[c] * times.sum())) * _A2_TO_M2
        if hops[:, c].sum() > 0:
            f[el], f_err[el] = _ratio_estimate(r2[:, c], hop_length**2 * hops[:, c].astype(float))
        else:
            f[el], f_err[el] = math.nan, math.nan
    dv, dv_se = _ratio_estimate(r2[:, 0], 6.0 * n_vac * times)
    present = [(c, el) for c, el in enumerate(elements, start=1) if counts[c]]
    return TracerDiffusionResult(
        temperature_K=float(temperature_K), elements=tuple(el for _, el in present),
        D=D, D_err=D_err, correlation_factor=f, correlation_factor_err=f_err, D_uncorrelated=D_unc,
        hops={el: int(hops[:, c].sum()) for c, el in present},
        n_atoms={el: int(counts[c]) for c, el in present},
        D_vacancy=dv * _A2_TO_M2, D_vacancy_err=dv_se * _A2_TO_M2, vacancy_hops=int(hops[:, 0].sum()),
        n_vacancies=n_vac, time_s=float(times.sum()), n_events=int(n_events), n_blocks=int(n_blocks),
        vacancy_fraction=n_vac / lattice.n_sites, hop_length_A=float(hop_length),
        block_time_s=tuple(float(t) for t in times),
        block_r2_A2={el: tuple(float(v) for v in r2[:, c]) for c, el in present},
        block_hops={el: tuple(int(v) for v in hops[:, c]) for c, el in present},
    )


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------- Arrhenius
@dataclass(frozen=True)
class ArrheniusFit:
    """D(T) = D_0 exp(−E_a / k_B T) fitted to measured D(T) ± D_err.

    activation_energy_eV ± activation_energy_err_eV; prefactor_m2_s ± prefactor_err_m2_s (the
    error of D_0 = exp(ln D_0) to first order, D_0 · σ(ln D_0)); covariance: 2 × 2 covariance of
    (ln D_0, E_a) from the given D_err (not rescaled by χ²); chi2, dof: the weighted residual
    sum and its degrees of freedom (n − 2), to judge whether the Arrhenius form and the errors
    agree (χ²/dof ≈ 1).
    """

    activation_energy_eV: float
    activation_energy_err_eV: float
    prefactor_m2_s: float
    prefactor_err_m2_s: float
    covariance: tuple[tuple[float, float], tuple[float, float]]
    chi2: float
    dof: int

    def predict(self, temperatures_K: Sequence[float] | np.ndarray) -> np.ndarray:
        """D_0 exp(−E_a / k_B T) in m²/s at the given temperatures (K)."""
        t = np.asarray(temperatures_K, dtype=float)
        return self.prefactor_m2_s * np.exp(-self.activation_energy_eV / (BOLTZMANN_EV_PER_K * t))

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def arrhenius_fit(temperatures_K: Sequence[float] | np.ndarray, D: Sequence[float] | np.ndarray,
                  D_err: Sequence[float] | np.ndarray) -> ArrheniusFit:
    """Weighted least squares of ln D = ln D_0 − E_a / (k_B T) (D in m²/s, T in K).

    Each point has the standard error σ(ln D) = D_err / D (first order); the parameters are
    (Aᵀ W A)⁻¹ Aᵀ W ln D with rows A = (1, −1 / k_B T) and W = diag(1 / σ²), and their covariance
    is (Aᵀ W A)⁻¹. Needs ≥ 2 distinct temperatures, D > 0 and D_err > 0.
    """
    t = np.asarray(temperatures_K, dtype=float).ravel()
    d = np.asarray(D, dtype=float).ravel()
    e = np.asarray(D_err, dtype=float).ravel()
    if not (t.size == d.size == e.size):
        raise ValueError(f"temperatures_K, D and D_err must have equal lengths, got {t.size}, {d.size}, {e.size}")
    if np.unique(t).size < 2:
        raise ValueError(f"arrhenius_fit needs >= 2 distinct temperatures, got {t.tolist()}")
    for name, values, what in (("temperatures_K", t, "temperatures > 0 K"), ("D", d, "diffusivities > 0 m^2/s"),
                               ("D_err", e, "standard errors > 0 m^2/s")):
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}]={values[bad[0]]} out of range (allowed: finite {what})")
    x = 1.0 / (BOLTZMANN_EV_PER_K * t)
    y = np.log(d)
    w = (d / e) ** 2
    a = np.stack([np.ones_like(x), -x], axis=1)
    normal = a.T @ (w[:, None] * a)
    cov = np.linalg.inv(normal)
    params = cov @ (a.T @ (w * y))
    residual = y - a @ params
    ln_d0, e_a = float(params[0]), float(params[1])
    d0 = math.exp(ln_d0)
    return ArrheniusFit(
        activation_energy_eV=e_a, activation_energy_err_eV=math.sqrt(cov[1, 1]),
        prefactor_m2_s=d0, prefactor_err_m2_s=d0 * math.sqrt(cov[0, 0]),
        covariance=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        chi2=float(np.sum(w * residual**2)), dof=int(t.size - 2),
    )
