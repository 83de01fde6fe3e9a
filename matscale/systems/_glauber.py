"""Compiled kernels for exact continuous-time (heat-bath) Glauber dynamics.

Two families live here:

* **n-fold way (BKL, rejection-free)** kernels used by :mod:`matscale.systems.spin`.
  The flip rate of a site depends on a handful of integers only, so sites are grouped into
  *rate classes* and an event costs O(1):

  - 2-D Ising: class = (spin s, neighbour sum n in {-4,-2,0,2,4}) -> 10 classes, each a member
    list with swap-remove plus the position of every site in its list. After a flip the site
    and its (in-window) neighbours are re-classified.
  - Curie-Weiss: class = spin sign; both rates depend only on the total up count U of the
    field population, so they are tabulated once per U (no ``exp`` per event). Sites are kept
    in one permutation array whose first ``n_up`` entries are the up spins.

  An event draws the waiting time ``-ln(u)/R`` (R = total rate), then one uniform ``v`` in
  [0, R): the class is the first whose cumulative rate exceeds ``v``; the member index is the
  residual divided by the class rate (uniform given the class). With a ``duration`` the event
  that would cross the end time is not executed and the elapsed time is the duration, which is
  exact because the exponential clock is memoryless. A window whose total rate is 0 (every
  rate underflowed: frozen) stops with elapsed time ``t_end``; under an event budget that is
  +inf, which the front ends in :mod:`matscale.systems.spin` turn into a one-line error.

* **Straightforward O(N)-per-event reference** kernels (all rates, cumulative sum, search),
  written to be obviously correct; they are the statistical reference in the tests and the
  baseline in ``benchmarks/bench_spin_kernels.py``.

Windows. Dynamics may be restricted to an ``h x w`` window with top-left corner
(row0, col0) of an ``L x L`` periodic box (indices wrap modulo L). ``frozen``: spins outside
the window are a fixed boundary (Ising: they enter the neighbour sums of the window's edge
sites; Curie-Weiss: they enter the global field through a fixed up count, and the field is
normalised by the whole system size). ``periodic``: the window is an isolated periodic box
(Ising: neighbours wrap inside the window; Curie-Weiss: an isolated system of h*w spins).

Batched drivers evolve many configurations in parallel (``prange``); each configuration owns
one counter-based random stream (see :mod:`matscale.systems._rng`), so results do not depend
on the thread count. Time is in Glauber units (unit attempt rate per spin).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from matscale.systems._rng import next_uniform, next_uniform_open0, stream_from_seed

N_ISING_CLASSES = 10
# Direction offsets (d_row, d_col): up, down, left, right.
_D_ROW = np.array([-1, 1, 0, 0], dtype=np.int64)
_D_COL = np.array([0, 0, -1, 1], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Window geometry and rate tables (built once per call, shared read-only by all threads)
# --------------------------------------------------------------------------------------------
def window_neighbours(L: int, height: int, width: int, periodic: bool) -> np.ndarray:
    """Local neighbour table ``int32 [height*width, 4]`` of a window (up, down, left, right).

    Entry = local index (row-major) of the neighbour inside the window, or -1 when the
    neighbour is an exterior (frozen) site. With ``periodic`` every neighbour wraps inside the
    window. A frozen window spanning the whole box along an axis wraps along that axis (its
    neighbour across the box edge is inside the window).
    """
    rows, cols = np.divmod(np.arange(height * width), width)
    table = np.empty((height * width, 4), dtype=np.int32)
    for d in range(4):
        r = rows + _D_ROW[d]
        c = cols + _D_COL[d]
        wrap_r = periodic or height == L
        wrap_c = periodic or width == L
        inside = np.ones_like(r, dtype=bool)
        if wrap_r:
            r = r % height
        else:
            inside &= (r >= 0) & (r < height)
        if wrap_c:
            c = c % width
        else:
            inside &= (c >= 0) & (c < width)
        table[:, d] = np.where(inside, r * width + c, -1)
    return table


def ising_class_rates(beta: float, J: float, h: float) -> np.ndarray:
    """Heat-bath rates ``float64 [10]`` of the Ising classes.

    Class c = 5 * (s > 0) + (n + 4) / 2 for spin s and neighbour sum n; flip cost
    dE = 2 s (J n + h); rate = 1 / (1 + exp(beta dE)) (evaluated overflow-safely).
    """
    c = np.arange(N_ISING_CLASSES)
    spin = np.where(c >= 5, 1.0, -1.0)
    nsum = 2.0 * (c % 5) - 4.0
    delta_e = 2.0 * spin * (J * nsum + h)
    return _heat_bath(beta * delta_e)


def cw_rate_tables(beta: float, J: float, h: float, n_field: int) -> tuple[np.ndarray, np.ndarray]:
    """Curie-Weiss flip rates by total up count U = 0..n_field of the field population.

    Returns ``(rate_up, rate_down)``, float64 [n_field + 1]: the rate of one up (down) spin when
    S = 2U - n_field. Flip cost dE_i = 2 s_i [J (S - s_i) / n_field + h].
    """
    up_count = np.arange(n_field + 1, dtype=np.float64)
    total = 2.0 * up_count - n_field
    de_up = 2.0 * (J * (total - 1.0) / n_field + h)
    de_down = -2.0 * (J * (total + 1.0) / n_field + h)
    return _heat_bath(beta * de_up), _heat_bath(beta * de_down)


def _heat_bath(beta_delta_e: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(x)) without overflow warnings."""
    x = np.asarray(beta_delta_e, dtype=np.float64)
    out = np.empty_like(x)
    pos = x > 0
    e = np.exp(-x[pos])
    out[pos] = e / (1.0 + e)
    out[~pos] = 1.0 / (1.0 + np.exp(x[~pos]))
    return out


# --------------------------------------------------------------------------------------------
# Ising n-fold way
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _ising_class(spin: np.int8, nsum: np.int64) -> np.int64:
    return 5 * (spin > 0) + ((nsum + 4) >> 1)


@nb.njit(cache=True, inline="always")
def _move_to_class(site, new_class, cls, pos, members, counts):
    """Swap-remove ``site`` from its class list and append it to ``new_class``."""
    old = cls[site]
    k = pos[site]
    last = counts[old] - 1
    moved = members[old, last]
    members[old, k] = moved
    pos[moved] = k
    counts[old] = last
    m = counts[new_class]
    members[new_class, m] = site
    pos[site] = m
    counts[new_class] = m + 1
    cls[site] = new_class


@nb.njit(cache=True, inline="always")
def _total_rate(counts, rates) -> float:
    """Exact total rate sum_c counts[c] rates[c] of the 10 classes, summed as a balanced tree
    (short dependency chain; recomputed every event, so no round-off accumulates)."""
    w0 = counts[0] * rates[0]
    w1 = counts[1] * rates[1]
    w2 = counts[2] * rates[2]
    w3 = counts[3] * rates[3]
    w4 = counts[4] * rates[4]
    w5 = counts[5] * rates[5]
    w6 = counts[6] * rates[6]
    w7 = counts[7] * rates[7]
    w8 = counts[8] * rates[8]
    w9 = counts[9] * rates[9]
    return (((w0 + w1) + (w2 + w3)) + ((w4 + w5) + (w6 + w7))) + (w8 + w9)


@nb.njit(cache=True)
def _ising_window(state, row0, col0, height, width, nbr, rates, max_events, t_end, counter,
                  spin, nsum, cls, pos, members, counts):
    """Evolve one window of ``state`` (int8 [L, L], in place). Returns (counter, elapsed)."""
    L = state.shape[0]
    n = height * width
    # global row / column of local rows -1..height and columns -1..width
    rows = np.empty(height + 2, dtype=np.int64)
    cols = np.empty(width + 2, dtype=np.int64)
    for a in range(height + 2):
        rows[a] = (row0 - 1 + a + L) % L
    for b in range(width + 2):
        cols[b] = (col0 - 1 + b + L) % L
    for a in range(height):
        r = rows[a + 1]
        for b in range(width):
            spin[a * width + b] = state[r, cols[b + 1]]
    # neighbour sums; exterior (frozen) neighbours contribute fixed spins
    for a in range(height):
        for b in range(width):
            i = a * width + b
            s = 0
            for d in range(4):
                j = nbr[i, d]
                if j >= 0:
                    s += spin[j]
                elif d == 0:
                    s += state[rows[a], cols[b + 1]]
                elif d == 1:
                    s += state[rows[a + 2], cols[b + 1]]
                elif d == 2:
                    s += state[rows[a + 1], cols[b]]
                else:
                    s += state[rows[a + 1], cols[b + 2]]
            nsum[i] = s
    # class lists
    for c in range(N_ISING_CLASSES):
        counts[c] = 0
    for i in range(n):
        c = _ising_class(spin[i], nsum[i])
        cls[i] = c
        m = counts[c]
        members[c, m] = i
        pos[i] = m
        counts[c] = m + 1

    inverse_rates = np.empty(N_ISING_CLASSES, dtype=np.float64)
    for c in range(N_ISING_CLASSES):
        inverse_rates[c] = 1.0 / rates[c] if rates[c] > 0.0 else 0.0
    t = 0.0
    for _ in range(max_events):
        total = _total_rate(counts, rates)
        if not total > 0.0:  # frozen ground state: no event can ever happen
            t = t_end
            break
        counter, u = next_uniform_open0(counter)
        dt = -np.log(u) / total
        if t + dt > t_end:
            t = t_end
            break
        t += dt
        counter, v = next_uniform(counter)
        target = v * total
        acc = 0.0
        chosen = -1
        for c in range(N_ISING_CLASSES):
            class_rate = counts[c] * rates[c]
            if target < acc + class_rate:
                chosen = c
                break
            acc += class_rate
        if chosen < 0:  # round-off at the upper end: last member of the last class with weight
            for c in range(N_ISING_CLASSES - 1, -1, -1):
                if counts[c] > 0 and rates[c] > 0.0:
                    chosen = c
                    break
            if chosen < 0:  # only zero rates left (rates underflowed at tiny T): frozen
                t = t_end
                break
            acc = target - counts[chosen] * rates[chosen]
        k = int((target - acc) * inverse_rates[chosen])
        if k >= counts[chosen]:
            k = counts[chosen] - 1
        site = members[chosen, k]
        new_spin = -spin[site]
        spin[site] = new_spin
        _move_to_class(site, _ising_class(new_spin, nsum[site]), cls, pos, members, counts)
        for d in range(4):
            j = nbr[site, d]
            if j >= 0:
                nsum[j] += 2 * new_spin
                _move_to_class(j, _ising_class(spin[j], nsum[j]), cls, pos, members, counts)
    # write back
    for a in range(height):
        r = rows[a + 1]
        for b in range(width):
            state[r, cols[b + 1]] = spin[a * width + b]
    return counter, t


@nb.njit(cache=True)
def _ising_configuration(state, origins, height, width, nbr, rates, max_events, t_end, seed,
                         elapsed):
    """All windows of one configuration, sequentially, on the stream of ``seed``."""
    n = height * width
    spin = np.empty(n, dtype=np.int8)
    nsum = np.empty(n, dtype=np.int8)
    cls = np.empty(n, dtype=np.int8)
    pos = np.empty(n, dtype=np.int32)
    members = np.empty((N_ISING_CLASSES, n), dtype=np.int32)
    counts = np.empty(N_ISING_CLASSES, dtype=np.int64)
    counter = stream_from_seed(seed)
    for k in range(origins.shape[0]):
        counter, t = _ising_window(state, origins[k, 0], origins[k, 1], height, width, nbr,
                                   rates, max_events, t_end, counter, spin, nsum, cls, pos,
                                   members, counts)
        elapsed[k] = t


@nb.njit(cache=True, parallel=True)
def ising_evolve_windows(states, origins, height, width, nbr, rates, max_events, t_end, seeds):
    """n-fold Ising on windows: states int8 [B, L, L] (in place), origins [B, W, 2].

    Windows of one configuration run sequentially in the given order, configurations in
    parallel; configuration b uses the random stream of ``seeds[b]``. Each window runs until
    ``max_events`` events or time ``t_end`` (pass a huge value for the unused one), or until
    no spin can flip (elapsed = ``t_end``, +inf under an event budget).
    Returns elapsed float64 [B, W].
    """
    elapsed = np.empty((states.shape[0], origins.shape[1]), dtype=np.float64)
    for b in nb.prange(states.shape[0]):
        _ising_configuration(states[b], origins[b], height, width, nbr, rates, max_events,
                             t_end, seeds[b], elapsed[b])
    return elapsed


@nb.njit(cache=True)
def ising_evolve_windows_serial(states, origins, height, width, nbr, rates, max_events, t_end,
                                seeds):
    """Single-threaded twin of :func:`ising_evolve_windows` (identical results; no thread
    start-up cost for small batches)."""
    elapsed = np.empty((states.shape[0], origins.shape[1]), dtype=np.float64)
    for b in range(states.shape[0]):
        _ising_configuration(states[b], origins[b], height, width, nbr, rates, max_events,
                             t_end, seeds[b], elapsed[b])
    return elapsed


# --------------------------------------------------------------------------------------------
# Curie-Weiss n-fold way (two classes, tabulated rates)
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _cw_window(state, row0, col0, height, width, frozen, total_up, rate_up, rate_down,
               max_events, t_end, counter, perm, spin):
    """Evolve one Curie-Weiss window of ``state`` in place.

    Returns (counter, elapsed, new total up count of the configuration). ``perm[:n_up]`` are
    the local indices of up spins, ``perm[n_up:]`` of down spins; a flip is one swap across the
    boundary. The field population has U = n_up + n_up_exterior up spins (frozen: the exterior
    is the rest of the configuration, whose up count is ``total_up`` minus the window's;
    periodic: no exterior); the rate tables are indexed by U.
    """
    L = state.shape[0]
    n = height * width
    rows = np.empty(height, dtype=np.int64)
    cols = np.empty(width, dtype=np.int64)
    for a in range(height):
        rows[a] = (row0 + a) % L
    for b in range(width):
        cols[b] = (col0 + b) % L
    front = 0
    back = n - 1
    for a in range(height):
        r = rows[a]
        for b in range(width):
            i = a * width + b
            if state[r, cols[b]] > 0:
                perm[front] = i
                front += 1
            else:
                perm[back] = i
                back -= 1
    n_up = front
    n_up_exterior = total_up - n_up if frozen else 0
    t = 0.0
    for _ in range(max_events):
        u_total = n_up + n_up_exterior
        r_up = rate_up[u_total]
        r_down = rate_down[u_total]
        weight_up = n_up * r_up
        total = weight_up + (n - n_up) * r_down
        if not total > 0.0:
            t = t_end
            break
        counter, u = next_uniform_open0(counter)
        dt = -np.log(u) / total
        if t + dt > t_end:
            t = t_end
            break
        t += dt
        counter, v = next_uniform(counter)
        target = v * total
        if target < weight_up or n_up == n:  # an up spin flips down (2nd: round-off guard)
            k = int(target / r_up)
            if k >= n_up:
                k = n_up - 1
            last = n_up - 1
            tmp = perm[k]
            perm[k] = perm[last]
            perm[last] = tmp
            n_up -= 1
        else:  # a down spin flips up
            k = int((target - weight_up) / r_down)
            if k >= n - n_up:
                k = n - n_up - 1
            p = n_up + k
            tmp = perm[p]
            perm[p] = perm[n_up]
            perm[n_up] = tmp
            n_up += 1
    for p in range(n):  # perm is a permutation of the window: write spins, then copy back
        spin[perm[p]] = 1 if p < n_up else -1
    for a in range(height):
        r = rows[a]
        for b in range(width):
            state[r, cols[b]] = spin[a * width + b]
    return counter, t, n_up + n_up_exterior


@nb.njit(cache=True)
def _count_up(state):
    total = 0
    for r in range(state.shape[0]):
        for c in range(state.shape[1]):
            if state[r, c] > 0:
                total += 1
    return total


@nb.njit(cache=True)
def _cw_configuration(state, origins, height, width, frozen, rate_up, rate_down, max_events,
                      t_end, seed, elapsed):
    """All windows of one configuration, sequentially, on the stream of ``seed``; the
    global up count is carried from window to window."""
    perm = np.empty(height * width, dtype=np.int32)
    spin = np.empty(height * width, dtype=np.int8)
    counter = stream_from_seed(seed)
    total_up = _count_up(state) if frozen else 0
    for k in range(origins.shape[0]):
        counter, t, total_up = _cw_window(state, origins[k, 0], origins[k, 1], height, width,
                                          frozen, total_up, rate_up, rate_down, max_events,
                                          t_end, counter, perm, spin)
        elapsed[k] = t


@nb.njit(cache=True, parallel=True)
def cw_evolve_windows(states, origins, height, width, frozen, rate_up, rate_down,
                      max_events, t_end, seeds):
    """n-fold Curie-Weiss on windows; same conventions as :func:`ising_evolve_windows`.

    ``frozen``: the exterior's up count enters the field (tables built for n_field = L*L);
    otherwise each window is an isolated system (tables built for n_field = height*width).
    """
    elapsed = np.empty((states.shape[0], origins.shape[1]), dtype=np.float64)
    for b in nb.prange(states.shape[0]):
        _cw_configuration(states[b], origins[b], height, width, frozen, rate_up, rate_down,
                          max_events, t_end, seeds[b], elapsed[b])
    return elapsed


@nb.njit(cache=True)
def cw_evolve_windows_serial(states, origins, height, width, frozen, rate_up, rate_down,
                             max_events, t_end, seeds):
    """Single-threaded twin of :func:`cw_evolve_windows` (identical results)."""
    elapsed = np.empty((states.shape[0], origins.shape[1]), dtype=np.float64)
    for b in range(states.shape[0]):
        _cw_configuration(states[b], origins[b], height, width, frozen, rate_up, rate_down,
                          max_events, t_end, seeds[b], elapsed[b])
    return elapsed


# --------------------------------------------------------------------------------------------
# Straightforward O(N)-per-event references
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _ising_site_rate(box, r, c, beta, J, h):
    H, W = box.shape
    s = box[r, c]
    nb_sum = (box[(r - 1 + H) % H, c] + box[(r + 1) % H, c]
              + box[r, (c - 1 + W) % W] + box[r, (c + 1) % W])
    return 1.0 / (1.0 + np.exp(beta * 2.0 * s * (J * nb_sum + h)))


@nb.njit(cache=True)
def ising_reference(box, active, beta, J, h, max_events, t_end, seed):
    """O(N) Ising Glauber on a periodic ``H x W`` box; only ``active`` sites may flip.

    The paper's scheme: a rate per site, refreshed for the flipped site and its neighbours,
    and every event a full cumulative sum over all sites and a binary search. Returns the
    elapsed time.
    """
    H, W = box.shape
    n = H * W
    rates = np.zeros(n, dtype=np.float64)
    cum = np.empty(n, dtype=np.float64)
    for i in range(n):
        if active[i // W, i % W]:
            rates[i] = _ising_site_rate(box, i // W, i % W, beta, J, h)
    counter = stream_from_seed(seed)
    t = 0.0
    for _ in range(max_events):
        acc = 0.0
        for k in range(n):
            acc += rates[k]
            cum[k] = acc
        total = acc
        if not total > 0.0:
            return t_end
        counter, u = next_uniform_open0(counter)
        dt = -np.log(u) / total
        if t + dt > t_end:
            return t_end
        t += dt
        counter, v = next_uniform(counter)
        k = np.searchsorted(cum, v * total, side="right")
        while k >= n or rates[k] == 0.0:  # round-off guard: step back to a flippable site
            k -= 1
        r = k // W
        c = k - r * W
        box[r, c] = -box[r, c]
        for d in range(5):
            rr = r
            cc = c
            if d == 1:
                rr = (r - 1 + H) % H
            elif d == 2:
                rr = (r + 1) % H
            elif d == 3:
                cc = (c - 1 + W) % W
            elif d == 4:
                cc = (c + 1) % W
            if active[rr, cc]:
                rates[rr * W + cc] = _ising_site_rate(box, rr, cc, beta, J, h)
    return t


@nb.njit(cache=True)
def cw_reference(spins, active, beta, J, h, max_events, t_end, seed):
    """O(N) Curie-Weiss Glauber on the flat spin array ``spins`` (field from all of it).

    Only ``active`` sites may flip; the field is (J/N) (S - s_i) + h with N = spins.size and S
    the sum of all spins (frozen exterior semantics). Every event: the two rates from the
    current S, a rate per active site, a full cumulative sum and a binary search.
    Returns the elapsed time.
    """
    n_field = spins.size
    sites = np.flatnonzero(active)
    n = sites.size
    cum = np.empty(n, dtype=np.float64)
    total_spin = 0
    for i in range(n_field):
        total_spin += spins[i]
    counter = stream_from_seed(seed)
    t = 0.0
    for _ in range(max_events):
        r_up = 1.0 / (1.0 + np.exp(beta * 2.0 * (J * (total_spin - 1) / n_field + h)))
        r_down = 1.0 / (1.0 + np.exp(-beta * 2.0 * (J * (total_spin + 1) / n_field + h)))
        acc = 0.0
        for k in range(n):
            acc += r_up if spins[sites[k]] > 0 else r_down
            cum[k] = acc
        total = acc
        if not total > 0.0:
            return t_end
        counter, u = next_uniform_open0(counter)
        dt = -np.log(u) / total
        if t + dt > t_end:
            return t_end
        t += dt
        counter, v = next_uniform(counter)
        k = np.searchsorted(cum, v * total, side="right")
        if k >= n:
            k = n - 1
        i = sites[k]
        total_spin -= 2 * spins[i]
        spins[i] = -spins[i]
    return t
