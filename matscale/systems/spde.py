"""The stochastic predator–prey lattice system (arXiv 2511.12842, Chen, Huang, Novoselov, Li;
its stochastic predator–prey example) on the :mod:`matscale.systems.base` protocol.

Model
-----
``n`` grid points x_i = (i + ½)/n on [0, 1] carry the densities of two species, u (prey) and
v (predator), both dimensionless:

    du_i = [u_i (1 − u_i − v_i) + D Δ_i u] dt + σ dW_i^u,
    dv_i = [a v_i (u_i − b)   +   Δ_i v] dt + σ dW_i^v,

with Δ_i the *unscaled* second difference ``w_{i−1} − 2 w_i + w_{i+1}`` (no 1/dx²: the grid
spacing is the unit of length of the diffusion, so boxes of different ``n`` on the same [0, 1]
are different discretisations, not the same continuum field), Neumann boundaries by replicating
the edge value (w_{−1} = w_0, w_n = w_{n−1}), independent Wiener noises per site and species.
Defaults: a = 3, b = 0.4, D = 0, σ = 0.02. The noise-free, spatially uniform dynamics spirals
into the coexistence point (u, v) = (b, 1 − b) with rate 0.2 and period ≈ 7.6 (eigenvalues
−0.2 ± 0.825i of the Jacobian there), so the reference defaults run for 20 time units.

Integration is Euler–Maruyama with step ``dt`` (default 0.01): per step and site
w ← w + dt·f(w) + σ √dt ξ, ξ ~ N(0, 1). Times (``duration``, elapsed) are in model time t; a
duration that is not a multiple of ``dt`` ends with one shorter EM step, so the elapsed time
always equals the requested duration. ``n_events`` counts EM steps of ``dt``.

Initial states: u = m + k cos(10πx), v = (1 − m) − k cos(10πx); training draws m ~ U(m_range),
k ~ U(k_range) per state; the reference conditions are explicit (m, k) pairs.

State layout: float64 ``[n, 2]`` (grid axis, then (u, v)); ``grid_dim = 1``,
``cell_shape = (2,)``. Observables: the global means (u_mean, v_mean); a patch's observables are
its own means, so K times the change of the global mean is the change of the patch mean
(the protocol's patch shares).

Windows (partial evolution, LocalRelax): a window of ``size`` points at ``origin`` holds the
points (origin + j) mod n, j < size. Only those points move; each uses its true neighbours,
those outside the window held at their values (the frozen exterior), and at the domain edge the
replicated edge value of the moving point itself (Neumann). A window that wraps past the edge is
two segments [origin, n) and [0, origin + size − n), separated by frozen points, evolved one
after the other (their dynamics are independent); a window of the whole box is the whole box.
Only ``boundary="frozen"`` exists.

Random streams: state b of a batch draws all its normals, window after window and step after
step (site-major, u before v), from the counter stream of ``seeds[b]``
(:mod:`matscale.systems._rng`), so a result depends only on the state and its seed, never on the
batch or chunk it was computed in. Normals come from a 256-layer ziggurat (Marsaglia & Tsang
2000) on 64-bit draws: 8 bits choose the layer, 1 bit the sign, 53 bits the abscissa; ~99 % of
draws take the fast path (one table comparison and one multiply).

Upsampling: :meth:`PredatorPrey.refine` is the optional ``refine`` capability of the protocol
(linear interpolation in x; the ``"interpolate"`` upsampling mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

import numba as nb
import numpy as np

from matscale.systems._rng import check_seeds as _check_seeds
from matscale.systems._rng import next_u64, next_uniform, next_uniform_open0, stream_from_seed

__all__ = ["PredatorPrey", "PredatorPreyConfig", "PredatorPreyReferenceConfig",
           "check_predator_prey", "build_predator_prey", "standard_normals"]

#: wavenumber of the initial pattern cos(10πx): five periods on [0, 1]
IC_WAVENUMBER = 10.0 * math.pi


# --------------------------------------------------------------------------------------------
# Ziggurat tables for N(0, 1) (Marsaglia & Tsang 2000, 256 layers of equal area)
# --------------------------------------------------------------------------------------------
_ZIG_LAYERS = 256
_ZIG_R = 3.6541528853610088   # start of the tail: makes the top layer's area equal the others'


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x [N + 1], f(x) [N + 1], fast-accept thresholds uint64 [N], abscissa scales [N]).

    f(x) = exp(−x²/2); layer i spans abscissae [0, x_i] and ordinates [f(x_i), f(x_{i+1})],
    x_0 = v / f(r) (the base strip plus the tail), x_1 = r, x_N = 0, each layer of area v.
    A draw u (53 bits) in layer i gives x = u·x_i / 2**53, accepted at once when
    x < x_{i+1} (u < threshold_i)."""
    r, n = _ZIG_R, _ZIG_LAYERS
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    v = r * f(r) + math.sqrt(math.pi / 2.0) * math.erfc(r / math.sqrt(2.0))
    x = np.empty(n + 1)
    x[0], x[1] = v / f(r), r
    for i in range(1, n - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(f(x[i]) + v / x[i]))
    x[n] = 0.0
    fx = np.exp(-0.5 * x * x)
    ratio = x[1:] / x[:-1]
    threshold = np.array([int(q * 2.0**53) for q in ratio], dtype=np.uint64)
    return x, fx, threshold, x[:-1] * 2.0**-53


_ZIG_X, _ZIG_F, _ZIG_K, _ZIG_W = _ziggurat_tables()
_U64_LAYER_MASK = np.uint64(_ZIG_LAYERS - 1)
_U64_SIGN_BIT = np.uint64(_ZIG_LAYERS)
_U64_SHIFT_11 = np.uint64(11)
_U64_ZERO = np.uint64(0)


@nb.njit(cache=True, inline="always")
def _normal(counter, zig_f, zig_k, zig_w):
    """One N(0, 1) draw from the stream ``counter``; returns ``(new_counter, z)``."""
    while True:
        counter, bits = next_u64(counter)
        layer = np.int64(bits & _U64_LAYER_MASK)
        u = bits >> _U64_SHIFT_11
        x = float(u) * zig_w[layer]
        negative = (bits & _U64_SIGN_BIT) != _U64_ZERO
        if u < zig_k[layer]:
            return counter, -x if negative else x
        if layer == 0:  # the tail beyond r (Marsaglia 1964)
            while True:
                counter, u1 = next_uniform_open0(counter)
                counter, u2 = next_uniform_open0(counter)
                t = -math.log(u1) / _ZIG_R
                if -2.0 * math.log(u2) > t * t:
                    break
            x = _ZIG_R + t
            return counter, -x if negative else x
        counter, u2 = next_uniform(counter)  # the wedge between the layer's rectangles
        if zig_f[layer] + u2 * (zig_f[layer + 1] - zig_f[layer]) < math.exp(-0.5 * x * x):
            return counter, -x if negative else x


@nb.njit(cache=True)
def _standard_normals(seed, n, zig_f, zig_k, zig_w):
    out = np.empty(n)
    counter = stream_from_seed(seed)
    for i in range(n):
        counter, out[i] = _normal(counter, zig_f, zig_k, zig_w)
    return out


def standard_normals(seed: int, n: int) -> np.ndarray:
    """The first ``n`` N(0, 1) draws of the stream of ``seed`` (tests and inspection)."""
    return _standard_normals(np.uint64(seed), int(n), _ZIG_F, _ZIG_K, _ZIG_W)


# --------------------------------------------------------------------------------------------
# Euler–Maruyama kernels
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _em_steps(bu, bv, m, neumann_left, neumann_right, n_steps, dt, noise, a, b, D, counter,
              zig_f, zig_k, zig_w):
    """``n_steps`` EM steps of the points 1..m of the buffers ``bu``, ``bv`` [m + 2]; entries 0
    and m + 1 are the ghosts: held fixed, or (Neumann) copies of the edge point every step."""
    for _ in range(n_steps):
        if neumann_left:
            bu[0] = bu[1]
            bv[0] = bv[1]
        if neumann_right:
            bu[m + 1] = bu[m]
            bv[m + 1] = bv[m]
        u_left = bu[0]
        v_left = bv[0]
        for j in range(1, m + 1):
            u = bu[j]
            v = bv[j]
            drift_u = u * (1.0 - u - v) + D * (u_left - 2.0 * u + bu[j + 1])
            drift_v = a * v * (u - b) + (v_left - 2.0 * v + bv[j + 1])
            counter, xi = _normal(counter, zig_f, zig_k, zig_w)
            counter, eta = _normal(counter, zig_f, zig_k, zig_w)
            bu[j] = u + dt * drift_u + noise * xi
            bv[j] = v + dt * drift_v + noise * eta
            u_left = u
            v_left = v
    return counter


@nb.njit(cache=True)
def _evolve_segment(state, lo, hi, bu, bv, n_steps, dt, dt_last, sigma, a, b, D, counter,
                    zig_f, zig_k, zig_w):
    """Evolve points [lo, hi) of one state [n, 2] with the exterior frozen (Neumann at the
    domain edges); ``dt_last`` > 0 adds one final step of that length."""
    n = state.shape[0]
    m = hi - lo
    for j in range(m):
        bu[j + 1] = state[lo + j, 0]
        bv[j + 1] = state[lo + j, 1]
    if lo > 0:
        bu[0] = state[lo - 1, 0]
        bv[0] = state[lo - 1, 1]
    if hi < n:
        bu[m + 1] = state[hi, 0]
        bv[m + 1] = state[hi, 1]
    counter = _em_steps(bu, bv, m, lo == 0, hi == n, n_steps, dt, sigma * math.sqrt(dt), a, b, D,
                        counter, zig_f, zig_k, zig_w)
    if dt_last > 0.0:
        counter = _em_steps(bu, bv, m, lo == 0, hi == n, 1, dt_last, sigma * math.sqrt(dt_last),
                            a, b, D, counter, zig_f, zig_k, zig_w)
    for j in range(m):
        state[lo + j, 0] = bu[j + 1]
        state[lo + j, 1] = bv[j + 1]
    return counter


@nb.njit(cache=True)
def _evolve_windows(states, origins, width, n_steps, dt, dt_last, sigma, a, b, D, seeds,
                    zig_f, zig_k, zig_w):
    """Windows ``origins [B, W]`` of ``width`` points of ``states [B, n, 2]``, in order, in
    place; state b on the stream of ``seeds[b]``."""
    n = states.shape[1]
    bu = np.empty(n + 2)
    bv = np.empty(n + 2)
    for s in range(states.shape[0]):
        counter = stream_from_seed(seeds[s])
        state = states[s]
        for w in range(origins.shape[1]):
            lo = origins[s, w]
            if width >= n:
                counter = _evolve_segment(state, 0, n, bu, bv, n_steps, dt, dt_last, sigma, a, b, D,
                                          counter, zig_f, zig_k, zig_w)
            elif lo + width <= n:
                counter = _evolve_segment(state, lo, lo + width, bu, bv, n_steps, dt, dt_last, sigma,
                                          a, b, D, counter, zig_f, zig_k, zig_w)
            else:  # wraps: two independent segments separated by frozen points
                counter = _evolve_segment(state, lo, n, bu, bv, n_steps, dt, dt_last, sigma, a, b, D,
                                          counter, zig_f, zig_k, zig_w)
                counter = _evolve_segment(state, 0, lo + width - n, bu, bv, n_steps, dt, dt_last,
                                          sigma, a, b, D, counter, zig_f, zig_k, zig_w)


# --------------------------------------------------------------------------------------------
# Argument checks (one-line errors naming the argument)
# --------------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_real(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")
    return value


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be two finite numbers with low <= high, got {value!r}")
    return lo, hi




# --------------------------------------------------------------------------------------------
# The system
# --------------------------------------------------------------------------------------------
class PredatorPrey:
    """The stochastic predator–prey system of ``n`` grid points (module docstring).

    Parameters (all dimensionless): ``n`` grid points on [0, 1]; ``a`` predator growth rate
    per unit prey excess; ``b`` prey density at which predators neither grow nor decline;
    ``D`` prey diffusion coefficient (the predator's is 1), per unit time in grid units;
    ``sigma`` noise amplitude per site and species (variance σ² per unit time); ``dt`` EM step
    (model time); ``m_range``, ``k_range`` the uniform ranges of the training initial
    condition's mean prey density m and pattern amplitude k.
    """

    grid_dim = 1
    cell_shape: tuple[int, ...] = (2,)
    state_dtype = np.float64
    time_unit = "model time (dimensionless)"
    site_unit = "density (dimensionless) per grid point: [..., 0] prey u, [..., 1] predator v"
    observable_names: tuple[str, ...] = ("u_mean", "v_mean")
    observable_units: tuple[str, ...] = ("1", "1")
    parameter_name = None

    def __init__(self, n: int, *, a: float = 3.0, b: float = 0.4, D: float = 0.0,
                 sigma: float = 0.02, dt: float = 0.01,
                 m_range: Sequence[float] = (0.45, 0.55),
                 k_range: Sequence[float] = (0.05, 0.15)) -> None:
        self.n = _check_int("n", n, 1)
        self.a = _check_real("a", a)
        self.b = _check_real("b", b)
        self.D = _check_real("D", D, minimum=0.0)
        self.sigma = _check_real("sigma", sigma, minimum=0.0)
        self.dt = _check_real("dt", dt, minimum=0.0, strict=True)
        self.m_range = _check_range("m_range", m_range)
        self.k_range = _check_range("k_range", k_range)

    def __repr__(self) -> str:
        return (f"PredatorPrey(n={self.n}, a={self.a:g}, b={self.b:g}, D={self.D:g}, "
                f"sigma={self.sigma:g}, dt={self.dt:g})")

    # -- the system protocol -------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Grid points (the protocol's cells per grid axis)."""
        return self.n

    @property
    def x(self) -> np.ndarray:
        """Grid point positions (i + ½)/n on [0, 1]."""
        return (np.arange(self.n) + 0.5) / self.n

    def _kwargs(self) -> dict[str, Any]:
        return dict(a=self.a, b=self.b, D=self.D, sigma=self.sigma, dt=self.dt,
                    m_range=self.m_range, k_range=self.k_range)

    def resized(self, size: int) -> "PredatorPrey":
        """The same model on ``size`` grid points of [0, 1] (same unscaled Δ, see module doc)."""
        return self if size == self.n else PredatorPrey(size, **self._kwargs())

    def at(self, parameter: float) -> "PredatorPrey":
        """No conditioning parameter."""
        raise ValueError("PredatorPrey has no conditioning parameter")

    def metadata(self) -> dict[str, Any]:
        """Class name, n and the model parameters."""
        return {"class": "PredatorPrey", "n": self.n, "a": self.a, "b": self.b, "D": self.D,
                "sigma": self.sigma, "dt": self.dt, "m_low": self.m_range[0],
                "m_high": self.m_range[1], "k_low": self.k_range[0], "k_high": self.k_range[1]}

    def initial_state(self, m: float, k: float) -> np.ndarray:
        """u = m + k cos(10πx), v = (1 − m) − k cos(10πx): float64 [n, 2]."""
        pattern = k * np.cos(IC_WAVENUMBER * self.x)
        return np.stack([m + pattern, (1.0 - m) - pattern], axis=-1)

    def random_states(self, n: int, rng: np.random.Generator, condition: Any = None) -> np.ndarray:
        """``n`` initial states float64 [n, size, 2]. ``condition`` = (m, k) gives ``n`` copies
        of that initial state (the reference conditions); None draws m ~ U(m_range) and then
        k ~ U(k_range) from ``rng`` for each state in turn."""
        n = _check_int("n", n, 0)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if condition is not None:
            try:
                m, k = (float(c) for c in condition)
            except (TypeError, ValueError):
                raise ValueError(f"condition must be a pair (m, k), got {condition!r}") from None
            return np.repeat(self.initial_state(m, k)[None], n, axis=0)
        out = np.empty((n, self.n, 2))
        for i in range(n):
            m = rng.uniform(*self.m_range)
            k = rng.uniform(*self.k_range)
            out[i] = self.initial_state(m, k)
        return out

    def observables(self, states: np.ndarray) -> np.ndarray:
        """(u_mean, v_mean) ``float64 [B, 2]`` of states ``[B, n', 2]`` of any size n'."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 3 or states.shape[2] != 2 or states.shape[1] < 1:
            raise ValueError(f"states must have shape [B, n, 2], got {states.shape}")
        return states.mean(axis=1)

    def order_parameter(self, states: np.ndarray) -> np.ndarray:
        """The mean prey density u_mean ``float64 [B]`` (tiles are matched on it)."""
        return self.observables(states)[:, 0]

    def conserve(self, states: np.ndarray, rng: np.random.Generator) -> None:
        """The dynamics conserves nothing: upsampled states need no repair."""

    # -- optional capability: refine (linear interpolation in x) ----------------------------------
    def refine(self, states: np.ndarray, factor: int) -> np.ndarray:
        """States ``[B, n', 2]`` on ``factor`` times as many grid points, ``[B, factor·n', 2]``,
        by linear interpolation in x.

        Within every old cell the field is the linear function through the old point with the
        centred slope (w_{i+1} − w_{i−1})/2 per old spacing (one-sided at the two edge cells), read
        at the new points x'_j = (j + ½)/(factor·n'). Linear profiles are reproduced exactly, and
        because the new points of an old cell sit symmetrically about its centre, every old
        cell's mean, hence every patch mean and the global mean, is kept exactly.
        """
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 3 or states.shape[2] != 2 or states.shape[1] < 1:
            raise ValueError(f"states must have shape [B, n, 2], got {states.shape}")
        factor = _check_int("factor", factor, 1)
        B, n = states.shape[:2]
        slope = np.zeros_like(states)
        if n >= 2:
            slope[:, 1:-1] = 0.5 * (states[:, 2:] - states[:, :-2])
            slope[:, 0] = states[:, 1] - states[:, 0]
            slope[:, -1] = states[:, -1] - states[:, -2]
        offsets = (np.arange(factor) + 0.5) / factor - 0.5          # new points − old centre
        fine = states[:, :, None, :] + slope[:, :, None, :] * offsets[None, None, :, None]
        return np.ascontiguousarray(fine.reshape(B, n * factor, 2))

    # -- dynamics ----------------------------------------------------------------------------------
    def _check_states(self, states: Any) -> np.ndarray:
        if not isinstance(states, np.ndarray) or states.dtype != np.float64:
            got = f"{type(states).__name__} {getattr(states, 'dtype', '')}".strip()
            raise TypeError(f"states must be a float64 numpy array of shape (B, {self.n}, 2), got {got}")
        if states.ndim != 3 or states.shape[1:] != (self.n, 2):
            raise ValueError(f"states must have shape (B, {self.n}, 2), got {states.shape}")
        if not states.flags.c_contiguous or not states.flags.writeable:
            raise ValueError("states must be a writeable C-contiguous array (evolved in place)")
        return states

    def _budget(self, duration: Any, n_events: Any) -> tuple[int, float, float]:
        """(full EM steps, length of a last shorter step or 0, elapsed time)."""
        if (duration is None) == (n_events is None):
            raise ValueError("give exactly one of duration (model time >= 0) or n_events (EM steps >= 0)")
        if n_events is not None:
            steps = _check_int("n_events", n_events, 0)
            return steps, 0.0, steps * self.dt
        duration = _check_real("duration", duration, minimum=0.0)
        steps = int(math.floor(duration / self.dt + 1e-9))
        rest = duration - steps * self.dt
        return steps, (rest if rest > 1e-9 * self.dt else 0.0), duration

    def _check_width(self, size: Any) -> int:
        if not (isinstance(size, Integral) and not isinstance(size, bool)):
            try:
                (size,) = tuple(size)
            except (TypeError, ValueError):
                raise ValueError(f"size must be an int or one int in 1..{self.n} (window points), "
                                 f"got {size!r}") from None
        if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= self.n:
            raise ValueError(f"size must be an int or one int in 1..{self.n} (window points), got {size!r}")
        return int(size)

    def _run(self, states, origins, width, duration, n_events, seeds) -> float:
        steps, last, elapsed = self._budget(duration, n_events)
        _evolve_windows(states, origins, width, steps, self.dt, last, self.sigma, self.a, self.b,
                        self.D, seeds, _ZIG_F, _ZIG_K, _ZIG_W)
        return elapsed

    def evolve_batch(self, states: np.ndarray, *, duration: float | None = None,
                     n_events: int | None = None, seeds: Any) -> np.ndarray:
        """Evolve every state of ``states`` float64 [B, n, 2] in place for ``duration`` (model
        time) or ``n_events`` EM steps; state b on the stream of ``seeds[b]``. Elapsed [B]."""
        states = self._check_states(states)
        seeds = _check_seeds(seeds, states.shape[0])
        origins = np.zeros((states.shape[0], 1), dtype=np.int64)
        elapsed = self._run(states, origins, self.n, duration, n_events, seeds)
        return np.full(states.shape[0], elapsed)

    def evolve_windows(self, states: np.ndarray, origins: Any, size: Any, *,
                       n_events: int | None = None, duration: float | None = None,
                       boundary: str = "frozen", seeds: Any) -> np.ndarray:
        """Evolve windows ``origins`` int [B, W, 1] (first point, wrapping modulo n) of ``size``
        points of ``states`` float64 [B, n, 2], in order, in place, the exterior frozen (module
        docstring); each window for ``duration`` (model time) or ``n_events`` EM steps. State b
        uses one stream, ``seeds[b]``, across its windows. Elapsed float64 [B, W]."""
        states = self._check_states(states)
        if boundary != "frozen":
            raise ValueError(f"boundary must be 'frozen' (the only boundary of PredatorPrey), got {boundary!r}")
        origins = np.asarray(origins)
        B = states.shape[0]
        if (origins.ndim != 3 or origins.shape[0] != B or origins.shape[2] != 1
                or not np.issubdtype(origins.dtype, np.integer)):
            raise ValueError(f"origins must be an integer array of shape ({B}, W, 1), got "
                             f"{origins.dtype} {origins.shape}")
        width = self._check_width(size)
        seeds = _check_seeds(seeds, B)
        flat = np.ascontiguousarray(np.mod(origins[:, :, 0], self.n), dtype=np.int64)
        elapsed = self._run(states, flat, width, duration, n_events, seeds)
        return np.full(flat.shape, elapsed)


# --------------------------------------------------------------------------------------------
# Configuration kind "predator_prey" (registered in matscale.systems.registry)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredatorPreyConfig:
    """The stochastic predator–prey system (all quantities dimensionless, model time t):
    ``n`` grid points on [0, 1] of the large system; ``a`` predator growth rate per unit prey
    excess over ``b``, the prey density at which predators neither grow nor decline; ``D`` prey
    diffusion coefficient (predator: 1), per unit time on the unscaled grid Laplacian;
    ``sigma`` noise amplitude per site and species (variance σ² per unit time); ``dt``
    Euler–Maruyama step; ``m_range`` and ``k_range``: training initial conditions
    u = m + k cos(10πx), v = 1 − m − k cos(10πx) with m, k uniform in these ranges."""

    kind: str
    n: int
    a: float = 3.0
    b: float = 0.4
    D: float = 0.0
    sigma: float = 0.02
    dt: float = 0.01
    m_range: tuple[float, ...] = (0.45, 0.55)
    k_range: tuple[float, ...] = (0.05, 0.15)

    grid_dim = 1
    cell_bytes = 16            # two float64 densities per grid point
    supports_closure = True    # closure.dim > 0: a closure of the continuous fields (1-D conv over (u, v))
    default_closure = False    # opt-in ([closure] dim); inputs/predator_prey.toml uses dim = 1
                               # (quick test error 3.2e-4 without, 1.3e-4 with dim 1, 2.2e-4 dim 2)

    @property
    def size(self) -> int:
        """Grid points of the large system."""
        return self.n

    @property
    def parameter_points(self) -> tuple[float, ...]:
        """No conditioning parameter."""
        return ()

    @property
    def system_class(self) -> type:
        """The class :func:`build_predator_prey` builds (its optional capabilities are those
        of the system)."""
        return PredatorPrey

    def describe(self) -> str:
        return (f"{self.kind}, n = {self.n}, a = {self.a:g}, b = {self.b:g}, D = {self.D:g}, "
                f"sigma = {self.sigma:g}, dt = {self.dt:g}")


#: the paper's 3 x 3 test grid of initial conditions, m-major
_PAPER_M = (0.45, 0.45, 0.45, 0.5, 0.5, 0.5, 0.55, 0.55, 0.55)
_PAPER_K = (0.05, 0.1, 0.15, 0.05, 0.1, 0.15, 0.05, 0.1, 0.15)


@dataclass(frozen=True)
class PredatorPreyReferenceConfig:
    """Direct large-system runs, used ONLY for evaluation: condition i starts ``n_runs`` runs
    from the initial state (m, k) = (``m[i]``, ``k[i]``) (default: the paper's grid
    m ∈ {0.45, 0.5, 0.55} × k ∈ {0.05, 0.1, 0.15}), recorded every ``grid_dt`` model time up
    to ``duration``. Reports and plots number the conditions 0, 1, ... in this order (label
    "IC")."""

    m: tuple[float, ...] = _PAPER_M
    k: tuple[float, ...] = _PAPER_K
    n_runs: int = 50
    duration: float = 20.0
    grid_dt: float = 0.2
    seed: int = 5

    condition_label = "IC"

    @property
    def conditions(self) -> tuple[tuple[None, tuple[float, float]], ...]:
        """(parameter, initial condition (m, k)) of every reference condition."""
        return tuple((None, (float(m), float(k))) for m, k in zip(self.m, self.k))

    @property
    def condition_values(self) -> tuple[float, ...]:
        """The condition numbers 0, 1, ... (scalars for reports and plots)."""
        return tuple(float(i) for i in range(len(self.m)))


def _check_initial(c: Any, where: str, m: float, k: float) -> None:
    c._require(k >= 0 and m - k >= 0 and 1 - m - k >= 0,
               f"{where} = (m={m:g}, k={k:g}) out of range (allowed: 0 <= k <= m <= 1 - k, "
               "so that u and v start non-negative)")


def check_predator_prey(cfg: Any) -> None:
    """Value checks of the predator_prey kind against the whole run configuration."""
    from matscale import config as c

    s, ref = cfg.system, cfg.reference
    c._require(s.n >= 2, f"system.n={s.n} out of range (allowed: >= 2)")
    c._positive("system.a", s.a)
    c._positive("system.b", s.b)
    c._positive("system.D", s.D, allow_zero=True)
    c._positive("system.sigma", s.sigma, allow_zero=True)
    c._positive("system.dt", s.dt)
    # explicit diffusion is stable for dt * 4 * coefficient <= 2 (predator coefficient 1)
    c._require(s.dt * 4.0 * max(1.0, s.D) <= 2.0,
               f"system.dt={s.dt:g} out of range (allowed: <= {0.5 / max(1.0, s.D):g}, the explicit "
               "diffusion stability limit 1 / (2 max(1, system.D)))")
    for name in ("m_range", "k_range"):
        values = getattr(s, name)
        c._require(len(values) == 2 and values[0] <= values[1],
                   f"system.{name}={list(values)} out of range (allowed: [low, high] with low <= high)")
    _check_initial(c, "system.m_range/k_range extreme", s.m_range[0], s.k_range[1])
    _check_initial(c, "system.m_range/k_range extreme", s.m_range[1], s.k_range[1])
    c._require(cfg.partial.boundary == "frozen",
               f"partial.boundary={cfg.partial.boundary!r} is not allowed for system.kind='predator_prey' "
               "(allowed: frozen)")
    c._require(len(ref.m) == len(ref.k) >= 1,
               f"reference.m and reference.k have {len(ref.m)} and {len(ref.k)} values (allowed: "
               "the same number >= 1, one (m, k) pair per condition)")
    for i, (m, k) in enumerate(zip(ref.m, ref.k)):
        _check_initial(c, f"reference (m[{i}], k[{i}])", m, k)


def build_predator_prey(section: PredatorPreyConfig) -> PredatorPrey:
    """The large system of a validated ``[system]`` section."""
    return PredatorPrey(section.n, a=section.a, b=section.b, D=section.D, sigma=section.sigma,
                        dt=section.dt, m_range=section.m_range, k_range=section.k_range)
