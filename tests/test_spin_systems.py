"""API, geometry, reproducibility and argument checks of CurieWeiss / Ising2D."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from matscale.systems import CurieWeiss, Ising2D
from matscale.systems.base import MicroscopicSystem, patch_region
from matscale.systems.spin import reference_evolve

SYSTEMS = [Ising2D, CurieWeiss]


@pytest.mark.parametrize("cls", SYSTEMS)
def test_attributes_and_protocol(cls):
    system = cls(8, 2.5, h=0.1, J=1.5)
    assert (system.L, system.T, system.h, system.J) == (8, 2.5, 0.1, 1.5)
    assert system.beta == pytest.approx(0.4)
    assert system.n_sites == 64
    assert isinstance(system, MicroscopicSystem)


@pytest.mark.parametrize("cls", SYSTEMS)
def test_random_state_exact_up_count(cls):
    system = cls(16, 2.0)
    rng = np.random.default_rng(3)
    for m0 in (-1.0, -0.3, 0.0, 0.49, 1.0):
        state = system.random_state(rng, magnetization=m0)
        assert state.dtype == np.int8 and state.shape == (16, 16)
        assert np.sum(state == 1) == int(np.floor((1 + m0) * 256 / 2))
        assert set(np.unique(state)) <= {-1, 1}
    # None: m0 ~ U(-1, 1), so magnetisations differ between draws
    ms = [system.random_state(rng).mean() for _ in range(20)]
    assert np.std(ms) > 0.2


@pytest.mark.parametrize("cls", SYSTEMS)
def test_event_count_and_elapsed(cls):
    """n_events flips happen (every event flips one spin); duration is returned exactly."""
    system = cls(16, 2.5, h=0.1)
    rng = np.random.default_rng(0)
    state = system.random_state(rng, magnetization=0.0)
    before = state.copy()
    out, elapsed = system.evolve(state, n_events=1, rng=rng)
    assert out is state and elapsed > 0.0
    assert np.sum(before != state) == 1
    _, elapsed = system.evolve(state, duration=3.25, rng=rng)
    assert elapsed == 3.25
    unchanged = state.copy()
    _, elapsed = system.evolve(state, n_events=0, rng=rng)
    assert elapsed == 0.0 and np.array_equal(state, unchanged)


@pytest.mark.parametrize("cls", SYSTEMS)
@pytest.mark.parametrize("boundary", ["frozen", "periodic"])
def test_region_leaves_exterior_bit_identical(cls, boundary):
    system = cls(16, 2.5, h=0.1)
    rng = np.random.default_rng(1)
    state = system.random_state(rng, magnetization=0.1)
    before = state.copy()
    region = (13, 10, 6, 9)  # wraps in both directions
    system.evolve(state, n_events=400, region=region, boundary=boundary, rng=rng)
    rows = (13 + np.arange(6)) % 16
    cols = (10 + np.arange(9)) % 16
    inside = np.zeros((16, 16), dtype=bool)
    inside[np.ix_(rows, cols)] = True
    assert np.array_equal(state[~inside], before[~inside])
    assert np.any(state[inside] != before[inside])


@pytest.mark.parametrize("cls", SYSTEMS)
def test_seed_reproducible_and_batched_equals_serial(cls):
    system = cls(16, 2.5, h=0.1)
    rng = np.random.default_rng(5)
    n_conf, n_win = 6, 3
    states = np.stack([system.random_state(rng) for _ in range(n_conf)])
    origins = rng.integers(0, 16, size=(n_conf, n_win, 2))
    seeds = rng.integers(0, 2**64, size=n_conf, dtype=np.uint64)

    batched = states.copy()
    el_b = system.evolve_windows(batched, origins, (8, 8), n_events=50, seeds=seeds)
    again = states.copy()
    el_a = system.evolve_windows(again, origins, (8, 8), n_events=50, seeds=seeds)
    assert np.array_equal(batched, again) and np.array_equal(el_b, el_a)
    for b in range(n_conf):  # one configuration at a time, same stream
        single = states[b:b + 1].copy()
        el_s = system.evolve_windows(single, origins[b:b + 1], (8, 8), n_events=50,
                                     seeds=seeds[b:b + 1])
        assert np.array_equal(single[0], batched[b]) and np.array_equal(el_s[0], el_b[b])
    # different seeds give different trajectories
    other = states.copy()
    system.evolve_windows(other, origins, (8, 8), n_events=50, seeds=seeds + np.uint64(1))
    assert not np.array_equal(other, batched)


@pytest.mark.parametrize("cls", SYSTEMS)
def test_parallel_kernel_independent_of_thread_count(cls):
    """A batch big enough for the threaded kernel (B * window sites >= 2**16) gives the same
    result with 1 and 2 threads and the same as each configuration evolved alone."""
    system = cls(16, 2.5, h=0.1)
    rng = np.random.default_rng(6)
    n_conf = 300
    states = np.stack([system.random_state(rng) for _ in range(n_conf)])
    seeds = np.arange(n_conf, dtype=np.uint64)
    results = []
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, 2, saved}):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            work = states.copy()
            elapsed = system.evolve_batch(work, duration=2.0, seeds=seeds)
            results.append((work, elapsed))
    finally:
        numba.set_num_threads(saved)
    for work, elapsed in results[1:]:
        assert np.array_equal(work, results[0][0]) and np.array_equal(elapsed, results[0][1])
    for b in (0, 17, 299):
        alone = states[b:b + 1].copy()
        elapsed = system.evolve_batch(alone, duration=2.0, seeds=seeds[b:b + 1])
        assert np.array_equal(alone[0], results[0][0][b]) and elapsed[0] == results[0][1][b]


@pytest.mark.parametrize("cls", SYSTEMS)
def test_serial_evolve_uses_one_seed_from_rng(cls):
    """evolve(rng) == evolve_windows with the uint64 seed drawn from the same generator."""
    system = cls(16, 2.5, h=0.1)
    state = system.random_state(np.random.default_rng(0))
    region = patch_region(3, 16, 8)
    serial = state.copy()
    _, el_serial = system.evolve(serial, n_events=100, region=region,
                                 rng=np.random.default_rng(42))
    seed = np.random.default_rng(42).integers(0, 2**64, dtype=np.uint64)
    batched = state[None].copy()
    el = system.evolve_windows(batched, [[region[:2]]], region[2:], n_events=100, seeds=[seed])
    assert np.array_equal(batched[0], serial) and el[0, 0] == el_serial


@pytest.mark.parametrize("cls", SYSTEMS)
def test_whole_box_region_frozen_equals_periodic(cls):
    """A window covering the whole box has no exterior: both boundaries give the same law
    and, with the same stream, the same trajectory."""
    system = cls(8, 2.5, h=0.1)
    state = system.random_state(np.random.default_rng(2))
    a, b = state.copy(), state.copy()
    _, ta = system.evolve(a, n_events=200, boundary="frozen", rng=np.random.default_rng(9))
    _, tb = system.evolve(b, n_events=200, boundary="periodic", rng=np.random.default_rng(9))
    assert np.array_equal(a, b) and ta == tb


@pytest.mark.parametrize("cls", SYSTEMS)
def test_ground_state_with_underflowing_rates_is_frozen(cls):
    """At T = 0.001 every rate of the aligned state underflows to 0: no event can happen.
    n_events cannot be spent: a one-line RuntimeError naming the state and the remedy (as the
    alloy kMC; it used to return an infinite elapsed time). duration gives the duration."""
    system = cls(8, 0.001, h=0.1)
    state = np.ones((8, 8), dtype=np.int8)
    with pytest.raises(RuntimeError, match=r"no spin can flip \(configuration 0, m = \+1") as excinfo:
        system.evolve(state, n_events=5, rng=np.random.default_rng(0))
    _one_line_error(excinfo)
    assert "T=0.001" in str(excinfo.value) and "use duration=" in str(excinfo.value)
    assert np.all(state == 1)
    _, elapsed = system.evolve(state, duration=2.0, rng=np.random.default_rng(0))
    assert elapsed == 2.0 and np.all(state == 1)


@pytest.mark.parametrize("cls", SYSTEMS)
def test_huge_field_freezes_after_some_events_in_batched_and_reference_evolve(cls):
    """h = 1000 at T = 1: down spins flip up at rate ~1, up spins never (rate exp(-2000) = 0).
    A budget larger than the number of down spins runs dry: every front end raises, naming
    the configuration; a budget the state can spend still works."""
    system = cls(4, 1.0, h=1000.0)
    states = np.ones((3, 4, 4), dtype=np.int8)
    states[0, 0, 0] = -1   # configuration 0: window (0, 0) can make one flip, window (2, 2) none
    states[1, 0, :2] = -1  # configuration 1: two spins can flip, then nothing
    origins = np.tile([[0, 0], [2, 2]], (3, 1, 1))
    with pytest.raises(RuntimeError, match=r"configuration 0, window 1, m = \+1\.0000") as excinfo:
        system.evolve_windows(states.copy(), origins, (2, 2), n_events=1, seeds=[1, 2, 3])
    _one_line_error(excinfo)
    with pytest.raises(RuntimeError, match="configuration 0, m"):
        system.evolve_batch(states.copy(), n_events=2, seeds=[1, 2, 3])
    one = states[1].copy()
    _, elapsed = system.evolve(one, n_events=2, rng=np.random.default_rng(0))
    assert np.isfinite(elapsed) and np.all(one == 1)
    with pytest.raises(RuntimeError, match="no spin can flip"):
        system.evolve(one, n_events=1, rng=np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="no spin can flip"):
        reference_evolve(system, states[1].copy(), n_events=3, seed=0)
    with pytest.raises(RuntimeError, match="no spin can flip"):
        reference_evolve(system, states[1].copy(), n_events=3, region=(0, 0, 2, 2), boundary="periodic", seed=0)
    assert reference_evolve(system, states[1].copy(), duration=5.0, seed=0)[1] == 5.0


def _one_line_error(excinfo):
    message = str(excinfo.value)
    assert message and "\n" not in message


@pytest.mark.parametrize("cls", SYSTEMS)
@pytest.mark.parametrize("kwargs, error", [
    (dict(L=1, T=1.0), ValueError),
    (dict(L=8.0, T=1.0), TypeError),
    (dict(L=True, T=1.0), TypeError),
    (dict(L=8, T=0.0), ValueError),
    (dict(L=8, T=-1.0), ValueError),
    (dict(L=8, T=float("inf")), ValueError),
    (dict(L=8, T=float("nan")), ValueError),
    (dict(L=8, T=1.0, h=float("nan")), ValueError),
    (dict(L=8, T=1.0, J="1"), TypeError),
])
def test_bad_constructor_arguments(cls, kwargs, error):
    with pytest.raises(error) as excinfo:
        cls(**kwargs)
    _one_line_error(excinfo)


@pytest.mark.parametrize("cls", SYSTEMS)
def test_bad_evolve_arguments(cls):
    system = cls(8, 2.0)
    rng = np.random.default_rng(0)
    good = system.random_state(rng)
    cases = [
        (lambda: system.evolve(good, rng=rng), ValueError),  # neither budget
        (lambda: system.evolve(good, n_events=3, duration=1.0, rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=-1, rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=2.5, rng=rng), TypeError),
        (lambda: system.evolve(good, duration=-1.0, rng=rng), ValueError),
        (lambda: system.evolve(good, duration=float("inf"), rng=rng), ValueError),
        (lambda: system.evolve(good.astype(np.int64), n_events=1, rng=rng), TypeError),
        (lambda: system.evolve(np.zeros((8, 8), np.int8), n_events=1, rng=rng), ValueError),
        (lambda: system.evolve(good[:4], n_events=1, rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=1, boundary="open", rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=1, region=(0, 0, 9, 2), rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=1, region=(0, 0, 0, 2), rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=1, region=(0, 0, 2), rng=rng), ValueError),
        (lambda: system.evolve(good, n_events=1, rng=1), TypeError),
        (lambda: system.random_state(rng, magnetization=1.5), ValueError),
        (lambda: system.evolve_windows(good[None].copy(), np.zeros((2, 1, 2), int), (4, 4),
                                       n_events=1, seeds=[1]), ValueError),
        (lambda: system.evolve_windows(good[None].copy(), np.zeros((1, 1, 2), int), (4, 4),
                                       n_events=1, seeds=[-1]), ValueError),
        (lambda: system.evolve_windows(good[None].copy(), np.zeros((1, 1, 2), int), (4, 4),
                                       n_events=1, seeds=[1, 2]), ValueError),
        (lambda: system.evolve_windows(good[None].copy(), np.zeros((1, 1, 2), int), (4, 9),
                                       n_events=1, seeds=[1]), ValueError),
    ]
    for call, error in cases:
        with pytest.raises(error) as excinfo:
            call()
        _one_line_error(excinfo)


def test_periodic_ising_window_needs_two_sites_per_axis():
    system = Ising2D(8, 2.0)
    state = system.random_state(np.random.default_rng(0))
    with pytest.raises(ValueError, match="periodic"):
        system.evolve(state, n_events=1, region=(0, 0, 1, 4), boundary="periodic",
                      rng=np.random.default_rng(0))


def test_published_results_only_at_the_papers_setting():
    from matscale.systems.spin import CurieWeiss, Ising2D

    text = Ising2D(64, 2.5, h=0.1).published_results()
    assert "7.98e-04" in text and "arXiv 2511.12842" in text
    assert "4.38e-03" in CurieWeiss(64, 1.1, h=0.1).published_results()
    assert Ising2D(32, 2.5, h=0.1).published_results() is None  # another size: no comparison
    assert Ising2D(64, 2.4, h=0.1).published_results() is None


def test_torch_window_evolution_has_the_numba_kernels_law():
    """The torch path (uniformised Glauber, for GPUs) against the exact numba kernel on the same
    6000 off-equilibrium states, one 8×8 window each at the same origins, duration 0.5. Per
    state: the window's magnetisation change Δ (in spins) and the number of window spins that
    differ afterwards. The means of Δ, Δ² and of that number agree within 4 combined standard
    errors (per-sample values; the two runs are independent). Resolving power: the same
    comparison with the rates of T = 2.0 instead of 2.5 is more than 8 standard errors off."""
    import numpy as np

    from matscale.systems import Ising2D

    system = Ising2D(32, 2.5, h=0.1)
    rng = np.random.default_rng(4)
    n = 6000
    states = np.stack([system.random_state(rng, magnetization=m0) for m0 in np.linspace(-0.6, 0.6, n)])
    system.evolve_batch(states, duration=1.0, seeds=np.arange(n, dtype=np.uint64))
    origins = rng.integers(0, 32, size=(n, 2))

    def window_stats(after):
        diff = np.stack([np.roll(after[i] - states[i], (-origins[i, 0], -origins[i, 1]), axis=(0, 1))[:8, :8]
                         for i in range(n)]).astype(np.float64)
        delta = diff.sum(axis=(1, 2)) / 2.0
        return [delta, delta ** 2, (diff != 0).sum(axis=(1, 2)).astype(np.float64)]

    def z_scores(x, y):
        return [abs(a.mean() - b.mean()) / np.sqrt(a.var() / n + b.var() / n) for a, b in zip(x, y)]

    exact = states.copy()
    system.evolve_windows(exact, origins[:, None, :], (8, 8), duration=0.5, seeds=np.arange(n, dtype=np.uint64) + 7)
    ours = system.evolve_windows_torch(states.copy(), origins, 8, duration=0.5, seed=3, device="cpu")
    colder = Ising2D(32, 2.0, h=0.1).evolve_windows_torch(states.copy(), origins, 8, duration=0.5, seed=3,
                                                          device="cpu")
    assert max(z_scores(window_stats(exact), window_stats(ours))) <= 4
    assert max(z_scores(window_stats(exact), window_stats(colder))) > 8
