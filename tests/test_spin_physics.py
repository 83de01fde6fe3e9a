"""Physics of the exact Glauber kernels: rates, equilibrium values, reference agreement.

Statistical tolerances: every comparison of a sample mean uses the standard error estimated
from the same sample (batch means where samples are time-correlated) and a z threshold of
4.5 (two-sided false-alarm probability 7e-6 per check); distribution tests use a p-value
threshold of 1e-4. Seeds are fixed, so each test is deterministic.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from matscale.observables import domain_wall_density, magnetization
from matscale.systems import CurieWeiss, Ising2D
from matscale.systems._glauber import ising_class_rates
from matscale.systems.spin import reference_evolve

Z_TOL = 4.5
P_MIN = 1e-4


def _ising_site_rates(system: Ising2D, box: np.ndarray) -> np.ndarray:
    """Heat-bath rate of every site of a periodic box (numpy, independent of the kernels)."""
    s = box.astype(np.float64)
    nb = (np.roll(s, 1, 0) + np.roll(s, -1, 0) + np.roll(s, 1, 1) + np.roll(s, -1, 1))
    delta_e = 2.0 * s * (system.J * nb + system.h)
    return 1.0 / (1.0 + np.exp(system.beta * delta_e))


def _first_events(system, state, n_rep, region=None, boundary="frozen", seed0=0):
    """Run ``n_rep`` copies of ``state`` for one event; returns (flipped flat index, times)."""
    states = np.repeat(state[None], n_rep, axis=0)
    L = system.L
    r0, c0, h, w = region if region is not None else (0, 0, L, L)
    origins = np.tile(np.array([[[r0, c0]]]), (n_rep, 1, 1))
    seeds = np.arange(seed0, seed0 + n_rep, dtype=np.uint64)
    elapsed = system.evolve_windows(states, origins, (h, w), n_events=1, boundary=boundary,
                                    seeds=seeds)[:, 0]
    changed = (states != state[None]).reshape(n_rep, -1)
    assert np.all(changed.sum(axis=1) == 1)
    return changed.argmax(axis=1), elapsed


def _check_first_event_law(site, elapsed, rates_flat):
    """Chi-square of the flipped site against r_i / R and KS of R * t against Exp(1)."""
    total = rates_flat.sum()
    n_rep = site.size
    expected = n_rep * rates_flat / total
    observed = np.bincount(site, minlength=rates_flat.size)
    used = expected > 0
    assert observed[~used].sum() == 0  # sites with zero rate never flip
    assert expected[used].min() >= 5  # chi-square regime
    chi2 = ((observed[used] - expected[used]) ** 2 / expected[used]).sum()
    assert stats.chi2.sf(chi2, used.sum() - 1) > P_MIN, chi2
    assert stats.kstest(elapsed * total, "expon").pvalue > P_MIN
    # mean waiting time 1/R with standard error 1/(R sqrt(n))
    assert abs(elapsed.mean() * total - 1.0) < Z_TOL / math.sqrt(n_rep)


# ------------------------------------------------------------------------------------------
# event statistics against the analytic rates
# ------------------------------------------------------------------------------------------
def test_ising_first_event_matches_rates_whole_box():
    system = Ising2D(8, 2.5, h=0.1)
    state = system.random_state(np.random.default_rng(11), magnetization=0.3)
    site, elapsed = _first_events(system, state, 40_000)
    _check_first_event_law(site, elapsed, _ising_site_rates(system, state).ravel())


def test_ising_first_event_frozen_window_uses_exterior_neighbours():
    """A wrapping frozen window: edge sites feel the fixed exterior spins."""
    system = Ising2D(8, 2.0, h=-0.3)
    state = system.random_state(np.random.default_rng(12), magnetization=-0.1)
    region = (6, 5, 4, 5)
    rows, cols = (6 + np.arange(4)) % 8, (5 + np.arange(5)) % 8
    inside = np.zeros((8, 8), dtype=bool)
    inside[np.ix_(rows, cols)] = True
    rates = np.where(inside, _ising_site_rates(system, state), 0.0)
    site, elapsed = _first_events(system, state, 30_000, region=region)
    _check_first_event_law(site, elapsed, rates.ravel())


def test_ising_first_event_periodic_window_is_isolated_box():
    system = Ising2D(8, 2.5, h=0.1)
    state = system.random_state(np.random.default_rng(13), magnetization=0.0)
    region = (3, 6, 4, 6)
    rows, cols = (3 + np.arange(4)) % 8, (6 + np.arange(6)) % 8
    window_rates = _ising_site_rates(system, state[np.ix_(rows, cols)])
    rates = np.zeros((8, 8))
    rates[np.ix_(rows, cols)] = window_rates
    site, elapsed = _first_events(system, state, 30_000, region=region, boundary="periodic")
    _check_first_event_law(site, elapsed, rates.ravel())


@pytest.mark.parametrize("boundary", ["frozen", "periodic"])
def test_cw_window_first_event_uses_the_right_field(boundary):
    """Frozen: the window's spins feel the global field (exterior all up, N = L^2);
    periodic: an isolated CW system of the window's size. The two laws differ a lot."""
    system = CurieWeiss(16, 1.1, h=0.05)
    state = np.ones((16, 16), dtype=np.int8)
    rng = np.random.default_rng(14)
    window = (14, 3, 4, 4)
    rows, cols = (14 + np.arange(4)) % 16, (3 + np.arange(4)) % 16
    block = np.where(rng.permutation(16) < 5, 1, -1).reshape(4, 4).astype(np.int8)
    state[np.ix_(rows, cols)] = block
    if boundary == "frozen":
        r_up, r_down = system.flip_rates(int(state.sum()), n_field=256)
    else:
        r_up, r_down = system.flip_rates(int(block.sum()), n_field=16)
    rates = np.zeros((16, 16))
    rates[np.ix_(rows, cols)] = np.where(block > 0, r_up, r_down)
    site, elapsed = _first_events(system, state, 30_000, region=window, boundary=boundary)
    _check_first_event_law(site, elapsed, rates.ravel())
    # the alternative field would be rejected: total rates differ by > 5 x 4.5 s.e.
    other = (system.flip_rates(int(block.sum()), n_field=16) if boundary == "frozen"
             else system.flip_rates(int(state.sum()), n_field=256))
    other_total = np.sum(np.where(block > 0, other[0], other[1]))
    assert abs(other_total / rates.sum() - 1.0) > 5 * Z_TOL / math.sqrt(site.size)


def test_single_site_frozen_window_two_state_law():
    """A 1x1 frozen window is a two-state Markov chain: P(s(t) = s(0)) is analytic.

    Tests the duration mode (the event crossing the end time is dropped, exact by
    memorylessness) over many flips: t = 1.3 and rates ~ 0.3-0.7."""
    system = Ising2D(4, 2.5, h=0.2)
    state = np.ones((4, 4), dtype=np.int8)
    state[1, 2] = -1  # neighbours of (2, 2): three up, one down -> n = 2
    n_rep, duration = 40_000, 1.3
    states = np.repeat(state[None], n_rep, axis=0)
    origins = np.tile(np.array([[[2, 2]]]), (n_rep, 1, 1))
    elapsed = system.evolve_windows(states, origins, (1, 1), duration=duration,
                                    seeds=np.arange(n_rep, dtype=np.uint64) + 1000)
    assert np.all(elapsed == duration)
    rates = ising_class_rates(system.beta, system.J, system.h)
    a = rates[5 + 3]  # up -> down, n = 2
    b = rates[0 + 3]  # down -> up, n = 2
    stay_up = b / (a + b) + a / (a + b) * math.exp(-(a + b) * duration)
    frac = np.mean(states[:, 2, 2] == 1)
    assert abs(frac - stay_up) < Z_TOL * math.sqrt(stay_up * (1 - stay_up) / n_rep)
    mask = np.ones((4, 4), dtype=bool)
    mask[2, 2] = False
    assert np.all(states[:, mask] == state[mask])


def test_cw_frozen_window_up_count_law_matches_master_equation():
    """A frozen 2 x 2 CW window in a 16 x 16 box: its up count n is a birth-death chain on
    0..4 whose rates use the global field (exterior up count fixed, N = 256). The law of n at
    t = 0.9 from n = 0 is expm(Q t) exactly; chi-square over the 5 values (p > 1e-4).
    A window-isolated field (N = 4) gives a very different law (checked to be rejected)."""
    from scipy.linalg import expm

    system = CurieWeiss(16, 0.7, h=-0.05)
    state = np.ones((16, 16), dtype=np.int8)
    state[:5] = -1  # exterior: 80 down, 172 up; window rows 9-10, cols 3-4 start all down
    state[9:11, 3:5] = -1
    n_ext_up = int((state > 0).sum())
    n_rep, duration = 40_000, 0.9

    def law(n_field, ext_up):
        Q = np.zeros((5, 5))
        for n_up in range(5):
            r_up, r_down = system.flip_rates(2 * (n_up + ext_up) - n_field, n_field=n_field)
            if n_up > 0:
                Q[n_up, n_up - 1] = n_up * r_up
            if n_up < 4:
                Q[n_up, n_up + 1] = (4 - n_up) * r_down
            Q[n_up, n_up] = -Q[n_up].sum()
        return expm(Q * duration)[0]

    states = np.repeat(state[None], n_rep, axis=0)
    origins = np.tile(np.array([[[9, 3]]]), (n_rep, 1, 1))
    system.evolve_windows(states, origins, (2, 2), duration=duration,
                          seeds=np.arange(n_rep, dtype=np.uint64) + 5000)
    observed = np.bincount((states[:, 9:11, 3:5] > 0).sum(axis=(1, 2)), minlength=5)
    frozen_law = law(256, n_ext_up)
    isolated_law = law(4, 0)
    for probs, accept in ((frozen_law, True), (isolated_law, False)):
        expected = n_rep * probs
        keep = expected >= 5
        chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
        assert (stats.chi2.sf(chi2, keep.sum() - 1) > P_MIN) == accept, (observed, expected)


# ------------------------------------------------------------------------------------------
# n-fold kernels == straightforward O(N) reference (in law)
# ------------------------------------------------------------------------------------------
def _two_sample_close(a: np.ndarray, b: np.ndarray) -> None:
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) < Z_TOL * se, (a.mean(), b.mean(), se)


@pytest.mark.parametrize("cls, T, region, boundary, budget", [
    (Ising2D, 2.5, None, "frozen", dict(n_events=60)),
    (Ising2D, 2.2, (5, 6, 5, 4), "frozen", dict(duration=0.8)),
    (Ising2D, 2.2, (5, 6, 4, 4), "periodic", dict(n_events=30)),
    (CurieWeiss, 1.1, None, "frozen", dict(duration=0.3)),
    (CurieWeiss, 0.9, (5, 6, 4, 5), "frozen", dict(n_events=20)),
    (CurieWeiss, 0.9, (5, 6, 4, 5), "periodic", dict(n_events=20)),
])
def test_nfold_agrees_with_reference(cls, T, region, boundary, budget):
    system = cls(8, T, h=0.1)
    start = system.random_state(np.random.default_rng(21), magnetization=-0.2)
    n_rep = 3000
    fast_m, fast_dw, fast_t, ref_m, ref_dw, ref_t = ([] for _ in range(6))
    rng = np.random.default_rng(22)
    for k in range(n_rep):
        fast = start.copy()
        _, t = system.evolve(fast, region=region, boundary=boundary, rng=rng, **budget)
        fast_m.append(magnetization(fast)), fast_dw.append(domain_wall_density(fast))
        fast_t.append(t)
        ref = start.copy()
        _, t = reference_evolve(system, ref, region=region, boundary=boundary, seed=k, **budget)
        ref_m.append(magnetization(ref)), ref_dw.append(domain_wall_density(ref))
        ref_t.append(t)
    _two_sample_close(np.array(fast_m), np.array(ref_m))
    _two_sample_close(np.array(fast_dw), np.array(ref_dw))
    if "n_events" in budget:
        _two_sample_close(np.array(fast_t), np.array(ref_t))


# ------------------------------------------------------------------------------------------
# equilibrium values
# ------------------------------------------------------------------------------------------
def _batch_mean_stderr(series: np.ndarray, n_blocks: int = 20) -> float:
    """Standard error of the mean of a [time, replica] series from block averages in time."""
    n_time = series.shape[0] - series.shape[0] % n_blocks
    blocks = series[:n_time].reshape(n_blocks, -1, series.shape[1]).mean(axis=1).ravel()
    return blocks.std(ddof=1) / math.sqrt(blocks.size)


def test_ising_onsager_spontaneous_magnetisation():
    """<|m|> at h = 0, T = 2.0, L = 64 from an ordered start within 1 % of Onsager.

    Error budget: m_Onsager = 0.9113. Finite size: xi(T=2) ~ 1-2 lattice spacings, so the
    L = 64 correction ~ exp(-L/xi) is negligible; spin flips to -m need a domain wall across
    the box (never at this T and time). Equilibration: 100 time units (relaxation time ~ a few
    units). Statistics: 4 replicas x 600 unit-spaced samples, batch-means s.e. ~ 9e-4 (measured
    0.9117 +- 0.0011 with 400 samples), asserted < 2e-3, so the 1 % (9.1e-3) tolerance is
    > 4.5 s.e.
    """
    system = Ising2D(64, 2.0, h=0.0)
    onsager = (1.0 - math.sinh(2.0 / system.T) ** -4) ** 0.125
    n_rep = 4
    states = np.ones((n_rep, 64, 64), dtype=np.int8)
    seeds = np.arange(n_rep, dtype=np.uint64) + 7
    system.evolve_batch(states, duration=100.0, seeds=seeds)
    samples = []
    for step in range(600):
        system.evolve_batch(states, duration=1.0, seeds=seeds + np.uint64(1000 * (step + 1)))
        samples.append(np.abs(magnetization(states)))
    series = np.array(samples)
    stderr = _batch_mean_stderr(series)
    assert stderr < 2e-3
    assert abs(series.mean() / onsager - 1.0) < 0.01, (series.mean(), onsager)


def test_curie_weiss_stationary_magnetisation():
    """T = 1.1, h = 0.1, N = 4096: <m> near m* = tanh(beta (m* + h)) ~ 0.490, std ~ 0.0245.

    Relaxation time 1/(1 - beta (1 - m*^2)) ~ 3.2 units; 16 replicas x 500 unit-spaced samples
    give ~1300 independent samples: s.e.(mean) ~ 7e-4 and relative s.e.(std) ~ 2 %. The
    tolerances (mean: 4.5 s.e. + 2e-3 for the O(1/N) shift of the finite system; std: 10 %,
    the issue's own criterion) leave > 4 s.e.
    """
    system = CurieWeiss(64, 1.1, h=0.1)
    beta, h = system.beta, system.h
    m_star = optimize.brentq(lambda m: m - math.tanh(beta * (m + h)), 0.1, 1.0)
    slope = 1.0 - beta * (1.0 - math.tanh(beta * (m_star + h)) ** 2)
    var_diffusion = 2.0 * (1.0 - m_star * math.tanh(beta * (m_star + h))) / system.n_sites
    std_star = math.sqrt(var_diffusion / (2.0 * slope))
    assert m_star == pytest.approx(0.490, abs=1e-3) and std_star == pytest.approx(0.0245, abs=5e-4)

    n_rep = 16
    rng = np.random.default_rng(31)
    states = np.stack([system.random_state(rng, magnetization=0.49) for _ in range(n_rep)])
    seeds = np.arange(n_rep, dtype=np.uint64)
    system.evolve_batch(states, duration=30.0, seeds=seeds)
    samples = []
    for step in range(500):
        system.evolve_batch(states, duration=1.0, seeds=seeds + np.uint64(100 * (step + 1)))
        samples.append(magnetization(states))
    series = np.array(samples)
    stderr = _batch_mean_stderr(series)
    assert abs(series.mean() - m_star) < Z_TOL * stderr + 2e-3, (series.mean(), stderr)
    assert abs(series.std() / std_star - 1.0) < 0.10, series.std()


# ------------------------------------------------------------------------------------------
# detailed balance: the stationary law is Boltzmann (exact enumeration on a tiny system)
# ------------------------------------------------------------------------------------------
def _enumerate_energy_magnetisation(system) -> tuple[np.ndarray, np.ndarray]:
    """Energy and total spin of all 2**N configurations of an L x L system (L = 3)."""
    L, N = system.L, system.n_sites
    bits = (np.arange(2 ** N)[:, None] >> np.arange(N)) & 1
    spins = (2 * bits - 1).reshape(-1, L, L).astype(np.float64)
    total = spins.sum(axis=(1, 2))
    if isinstance(system, Ising2D):
        bonds = (spins * np.roll(spins, 1, 1) + spins * np.roll(spins, 1, 2)).sum(axis=(1, 2))
        energy = -system.J * bonds - system.h * total
    else:
        energy = -system.J * total ** 2 / (2 * N) - system.h * total
    return energy, total


@pytest.mark.parametrize("cls, T, h", [(Ising2D, 3.0, 0.2), (CurieWeiss, 0.8, 0.1)])
def test_stationary_law_is_boltzmann(cls, T, h):
    """Histogram of (E, M) classes of a 3 x 3 system against exp(-E/T) times degeneracy.

    Samples: 64 replicas x 400 snapshots 2 time units apart (longer than the relaxation time of
    this tiny system, so the snapshots are close to independent); chi-square over classes with
    >= 20 expected counts (rarer ones pooled), p-value threshold 1e-4."""
    system = cls(3, T, h=h)
    energy, total = _enumerate_energy_magnetisation(system)
    keys = np.round(energy, 9) * 1000 + total  # (E, M) class label
    labels, class_of = np.unique(keys, return_inverse=True)
    weight = np.exp(-(energy - energy.min()) / T)
    prob = np.bincount(class_of, weights=weight) / weight.sum()

    n_rep, n_snap = 64, 400
    rng = np.random.default_rng(41)
    states = np.stack([system.random_state(rng) for _ in range(n_rep)])
    seeds = np.arange(n_rep, dtype=np.uint64) * np.uint64(1000)
    system.evolve_batch(states, duration=10.0, seeds=seeds)
    powers = 1 << np.arange(9)
    counts = np.zeros(labels.size)
    for k in range(n_snap):
        system.evolve_batch(states, duration=2.0, seeds=seeds + np.uint64(k + 1))
        index = ((states.reshape(n_rep, 9) > 0) * powers).sum(axis=1)
        counts += np.bincount(class_of[index], minlength=labels.size)
    n = n_rep * n_snap
    expected = n * prob
    rare = expected < 20
    observed, expected = counts[~rare], expected[~rare]
    if rare.any():
        observed = np.append(observed, counts[rare].sum())
        expected = np.append(expected, n * prob[rare].sum())
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, observed.size - 1) > P_MIN, (chi2, observed.size)


@pytest.mark.slow
@pytest.mark.parametrize("cls, T", [(Ising2D, 2.3), (CurieWeiss, 1.0)])
def test_nfold_agrees_with_reference_long_runs(cls, T):
    """Slow (pytest -m slow tests/test_spin_physics.py): L = 16, a frozen 8 x 8 window and the
    whole box, 2000 events from one start, 1500 replicas per kernel; means of m, rho_dw and
    elapsed time agree within 4.5 combined s.e."""
    system = cls(16, T, h=0.05)
    start = system.random_state(np.random.default_rng(51), magnetization=0.3)
    for region in (None, (12, 4, 8, 8)):
        fast_obs, ref_obs = [], []
        rng = np.random.default_rng(52)
        for k in range(1500):
            fast = start.copy()
            _, t_fast = system.evolve(fast, n_events=2000, region=region, rng=rng)
            ref = start.copy()
            _, t_ref = reference_evolve(system, ref, n_events=2000, region=region, seed=k)
            fast_obs.append((magnetization(fast), domain_wall_density(fast), t_fast))
            ref_obs.append((magnetization(ref), domain_wall_density(ref), t_ref))
        fast_obs, ref_obs = np.array(fast_obs), np.array(ref_obs)
        for j in range(3):
            _two_sample_close(fast_obs[:, j], ref_obs[:, j])
