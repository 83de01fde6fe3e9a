"""Partial evolution: exterior frozen, increments = patch-share changes, resumable, seeded."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from matscale.observables import patch_shares, spin_observables
from matscale.partial import extract_patches, partial_evolution, patch_origins
from matscale.systems import CurieWeiss, Ising2D

T, H = 2.5, 0.1


class RecordingIsing(Ising2D):
    """The real Ising2D kernel; keeps a copy of the whole states after every batched call."""

    window_halo = None  # evolve patches inside copies of the whole states, which are recorded

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after: list[np.ndarray] = []

    def evolve_windows(self, states, *args, **kwargs):
        elapsed = super().evolve_windows(states, *args, **kwargs)
        self.after.append(states.copy())
        return elapsed


class InterruptedIsing(Ising2D):
    """The real Ising2D kernel, made to fail on its ``fail_at``-th batched call (a crash)."""

    window_halo = None  # patches evolve through this instance's evolve_windows

    def __init__(self, *args, fail_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_at = 0, fail_at

    def evolve_windows(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return super().evolve_windows(*args, **kwargs)


def _snapshots(system, n: int, seed: int, t_equil: float = 0.0, m0: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    states = np.stack([system.random_state(rng, magnetization=m0) for _ in range(n)])
    if t_equil > 0:
        system.evolve_batch(states, duration=t_equil, seeds=rng.integers(0, 2**63, n).astype(np.uint64))
    return states


@pytest.fixture(scope="module")
def ising_case():
    system = RecordingIsing(32, T, H)
    snaps = _snapshots(system, 40, seed=1, t_equil=2.0)
    system.after.clear()
    data = partial_evolution(system, snaps, 8, seed=7, chunk_size=16, progress=False)
    after = np.concatenate(system.after)
    return system, snaps, data, after


def test_only_patch_I_changes_and_patches_are_recorded(ising_case):
    system, snaps, data, after = ising_case
    origins = patch_origins(data.patch_index, 32, 8)
    inside = np.zeros(snaps.shape, dtype=bool)
    for b, (r, c) in enumerate(origins):
        inside[b, r:r + 8, c:c + 8] = True
    assert np.array_equal(after[~inside], snaps[~inside])
    assert (after[inside] != snaps[inside]).any()  # the patch did evolve
    assert np.array_equal(data.patch_before, extract_patches(snaps, origins, 8))
    assert np.array_equal(data.patch_after, extract_patches(after, origins, 8))


def test_delta_is_K_times_global_increment_and_sum_of_share_changes(ising_case):
    system, snaps, data, after = ising_case
    K = data.K
    assert K == 16
    np.testing.assert_allclose(data.z0, spin_observables(snaps), rtol=0, atol=1e-15)
    np.testing.assert_allclose(data.delta, K * (spin_observables(after) - spin_observables(snaps)),
                               rtol=0, atol=1e-12)
    for j, name in enumerate(("m", "rho_dw")):
        share_change = patch_shares(after, 8, name) - patch_shares(snaps, 8, name)
        np.testing.assert_allclose(data.delta[:, j], share_change.sum(-1), rtol=0, atol=1e-12)
    # m is site-additive: only patch I's share moves, and delta equals its change
    rows = np.arange(len(snaps))
    share_m = patch_shares(after, 8, "m") - patch_shares(snaps, 8, "m")
    np.testing.assert_allclose(data.delta[:, 0], share_m[rows, data.patch_index], atol=1e-12)
    # naive target: the observables of the evolved patch on its own (periodic patch)
    np.testing.assert_allclose(data.z1_naive, spin_observables(data.patch_after), atol=1e-15)
    np.testing.assert_allclose(data.dt, 1.0)  # default budget: a fixed duration of 1 time unit


def test_same_seed_same_data_any_chunking_and_patch_index_uniform():
    system = Ising2D(32, T, H)
    snaps = _snapshots(system, 60, seed=2)
    a = partial_evolution(system, snaps, 8, n_events=64, seed=3, chunk_size=60, progress=False)
    b = partial_evolution(system, snaps, 8, n_events=64, seed=3, chunk_size=7, progress=False)
    c = partial_evolution(system, snaps, 8, n_events=64, seed=4, chunk_size=60, progress=False)
    for name, values in a.arrays().items():
        assert np.array_equal(values, b.arrays()[name]), name
    assert not np.array_equal(a.patch_after, c.patch_after)
    assert (a.dt > 0).all() and np.ptp(a.dt) > 0  # fixed events: random elapsed time
    # Patch index: chi-square over K = 16 cells of 4000 draws (15 dof): mean 15, sd sqrt(30);
    # the 1e-4 upper quantile is 44.3, so a correct uniform draw fails with probability 1e-4.
    keys_system = CurieWeiss(16, 1.1, 0.1)
    cw_snaps = _snapshots(keys_system, 4000, seed=5)
    draws = partial_evolution(keys_system, cw_snaps, 4, n_events=1, seed=11, progress=False,
                              store_patches=False)
    counts = np.bincount(draws.patch_index, minlength=16)
    chi2 = ((counts - 250.0) ** 2 / 250.0).sum()
    assert chi2 < 44.3
    assert draws.patch_before is None


def test_curie_weiss_exterior_frozen_and_periodic_boundary():
    system = CurieWeiss(16, 1.1, 0.1)
    snaps = _snapshots(system, 30, seed=6)
    data = partial_evolution(system, snaps, 8, n_events=64, seed=1, progress=False)
    np.testing.assert_allclose(data.delta[:, 0],
                               (data.patch_after.astype(int) - data.patch_before).sum((1, 2)) / 64,
                               atol=1e-12)
    per = partial_evolution(Ising2D(16, T, H), snaps, 8, duration=0.5, boundary="periodic",
                            seed=1, progress=False)
    assert per.attrs["boundary"] == "periodic"
    np.testing.assert_allclose(per.delta[:, 0], (per.patch_after.astype(int) - per.patch_before).sum((1, 2)) / 64,
                               atol=1e-12)


def test_resume_after_interruption_is_bit_identical(tmp_path):
    snaps = _snapshots(Ising2D(32, T, H), 50, seed=8)
    reference = partial_evolution(Ising2D(32, T, H), snaps, 16, seed=5, chunk_size=10, progress=False)
    # (a) a crash in the third chunk: two chunks are on disk, the rerun computes the rest
    path = tmp_path / "partial.h5"
    with pytest.raises(KeyboardInterrupt):
        partial_evolution(InterruptedIsing(32, T, H, fail_at=3), snaps, 16, seed=5, chunk_size=10,
                          out=path, progress=False)
    with h5py.File(path, "r") as f:
        assert f["partial"].attrs["n_complete"] == 20
    resumed_system = InterruptedIsing(32, T, H, fail_at=-1)
    resumed = partial_evolution(resumed_system, snaps, 16, seed=5, chunk_size=10, out=path,
                                progress=False)
    assert resumed_system.calls == 3  # only the three missing chunks were computed
    for name, values in reference.arrays().items():
        assert np.array_equal(values, resumed.arrays()[name]), name
    # (b) a time-sliced run with a different chunk size gives the same numbers
    path_b = tmp_path / "sliced.h5"
    part = partial_evolution(Ising2D(32, T, H), snaps, 16, seed=5, chunk_size=8, out=path_b,
                             max_chunks=3, progress=False)
    assert part.n_samples == 24
    full = partial_evolution(Ising2D(32, T, H), snaps, 16, seed=5, chunk_size=8, out=path_b,
                             progress=False)
    for name, values in reference.arrays().items():
        assert np.array_equal(values, full.arrays()[name]), name
    assert full.attrs["K"] == 4 and full.attrs["units"]["dt"]
    # (c) a finished output with another configuration is refused in one line
    with pytest.raises(ValueError, match="differing keys: seed") as err:
        partial_evolution(Ising2D(32, T, H), snaps, 16, seed=6, chunk_size=8, out=path_b,
                          progress=False)
    assert "\n" not in str(err.value)


def test_bad_input_is_rejected():
    system = Ising2D(16, T, H)
    snaps = _snapshots(system, 3, seed=0)
    with pytest.raises(ValueError, match="divisor"):
        partial_evolution(system, snaps, 5, progress=False)
    with pytest.raises(ValueError, match="either n_events or duration"):
        partial_evolution(system, snaps, 8, n_events=3, duration=1.0, progress=False)
    with pytest.raises(TypeError, match="int8"):
        partial_evolution(system, snaps.astype(float), 8, progress=False)
    with pytest.raises(ValueError, match="system.s box"):
        partial_evolution(Ising2D(32, T, H), snaps, 8, progress=False)


def test_stationary_increment_has_zero_mean_for_fixed_duration_only():
    """From equilibrium, E[delta] = 0 for a fixed duration (exact); a fixed event count is biased.

    Every sample has its own independently equilibrated snapshot (started at m0 = 0.7, near the
    equilibrium m = 0.72, then 40 time units ≈ several relaxation times), so the n = 3000
    increments are i.i.d.; tolerance = 4 standard errors std/sqrt(n) (false alarm 6e-5).
    """
    system = Ising2D(32, T, H)
    snaps = _snapshots(system, 3000, seed=9, t_equil=40.0, m0=0.7)
    exact = partial_evolution(system, snaps, 8, duration=1.0, seed=1, progress=False,
                              store_patches=False)
    biased = partial_evolution(system, snaps, 8, n_events=64, seed=1, progress=False,
                               store_patches=False)
    for data, should_pass in ((exact, True), (biased, False)):
        mean = data.delta.mean(0)
        sem = data.delta.std(0, ddof=1) / np.sqrt(data.n_samples)
        assert (np.abs(mean) < 4 * sem).all() == should_pass, (mean, sem)


def _with_patch(snapshots: np.ndarray, patch_index: np.ndarray, patches: np.ndarray, p: int) -> np.ndarray:
    """Copies of ``snapshots`` with the patch ``patch_index`` replaced by ``patches``."""
    out = snapshots.copy()
    origins = patch_origins(patch_index, snapshots.shape[-1], p)
    for k, (r0, c0) in enumerate(origins):
        out[k, r0:r0 + p, c0:c0 + p] = patches[k]
    return out


def test_n_draws_delta_is_mean_of_independent_draws():
    """n_draws = R: every draw evolves its own copy of the snapshot; delta is the mean of the R
    K x global increments (rebuilt here from the recorded patches), dt the mean δt, lam = K / R;
    the first draw is the single-draw sample."""
    system, p, R = Ising2D(32, T, H), 8, 4
    snaps = _snapshots(system, 12, seed=3, t_equil=2.0)
    multi = partial_evolution(system, snaps, p, duration=0.3, n_draws=R, seed=5, chunk_size=5,
                              progress=False)
    single = partial_evolution(system, snaps, p, duration=0.3, seed=5, progress=False)
    K = 16
    assert multi.patch_index.shape == (12, R) and multi.patch_before.shape == (12, R, p, p)
    assert multi.n_draws == R and multi.lam == K / R and single.lam == K
    z0 = spin_observables(snaps)
    increments = np.stack([K * (spin_observables(_with_patch(snaps, multi.patch_index[:, r],
                                                             multi.patch_after[:, r], p)) - z0)
                           for r in range(R)], axis=1)
    np.testing.assert_allclose(multi.delta, increments.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(multi.dt, 0.3)
    assert not np.all(increments == increments[:, :1])          # the draws differ
    np.testing.assert_array_equal(multi.patch_index[:, 0], single.patch_index)
    np.testing.assert_array_equal(multi.patch_after[:, 0], single.patch_after)
    np.testing.assert_allclose(multi.z1_naive, single.z1_naive)


def test_n_draws_divides_the_increment_variance_by_R():
    """Averaging R conditionally independent draws divides the increment variance by R (the
    L_p covariance lam·δt·σσᵀ with lam = K / R). Equilibrium snapshots, δt short, so the
    snapshot-to-snapshot spread of the drift is negligible. The ratio of two sample variances
    of n values has relative standard error ~ sqrt(4 / n) = 0.08 for n = 600: tolerance 3σ."""
    system, p, R, n = Ising2D(32, T, H), 8, 8, 600
    snaps = _snapshots(system, n, seed=11, t_equil=20.0)
    one = partial_evolution(system, snaps, p, duration=0.1, seed=1, progress=False,
                            store_patches=False)
    avg = partial_evolution(system, snaps, p, duration=0.1, seed=2, n_draws=R, progress=False,
                            store_patches=False)
    ratio = avg.delta.var(axis=0) / one.delta.var(axis=0)
    np.testing.assert_allclose(ratio * R, 1.0, atol=3 * np.sqrt(4 / n))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_n_draws_is_rejected(bad):
    system = Ising2D(16, T, H)
    snaps = _snapshots(system, 2, seed=0)
    with pytest.raises(ValueError, match="n_draws"):
        partial_evolution(system, snaps, 8, n_draws=bad, progress=False)


def test_patch_increments_estimate_the_exact_generator_drift():
    """The method's core claim, checked against the exact Glauber generator: K x the increment of
    one frozen-exterior patch, over a short δt, is an unbiased estimate of the whole system's
    drift b(x) (Ising2D.generator_moments), sample by sample. Off-equilibrium states (m from
    -0.6 to 0.6, relaxed for 2 units, so b ≠ 0); tolerance 4 standard errors of the mean residual
    plus the O(δt) bias (δt/2)·|Lb| ≲ 2e-3 at δt = 0.05."""
    system, p, n = Ising2D(32, T, H), 8, 2000
    rng = np.random.default_rng(21)
    snaps = np.stack([system.random_state(rng, magnetization=m0)
                      for m0 in np.linspace(-0.6, 0.6, n)])
    system.evolve_batch(snaps, duration=2.0, seeds=rng.integers(0, 2**63, n).astype(np.uint64))
    data = partial_evolution(system, snaps, p, duration=0.05, n_draws=64, seed=4, progress=False,
                             store_patches=False, chunk_size=250)
    drift, _ = system.generator_moments(snaps)
    residual = data.delta / data.dt[:, None] - drift
    se = residual.std(axis=0) / np.sqrt(n)
    tolerance = 4 * se + 2e-3
    assert np.all(np.abs(residual.mean(axis=0)) <= tolerance), (residual.mean(axis=0), tolerance)
    assert np.all(np.abs(drift).mean(axis=0) > 2 * tolerance)   # a bias of half the drift would fail


def test_patch_increment_covariance_is_the_exact_generator_diffusion():
    """The noise model of the L_p loss, checked against the exact Glauber generator: the stored
    increment delta (K × the patch's contribution, R = 1) has conditional second moment
    K·δt·a(x) + O(δt²), where a(x) = Σ_i w_i Δz_i Δz_iᵀ is the whole system's diffusion
    (Ising2D.generator_moments). So E[(delta − δt·b(x))(…)ᵀ] / (K·δt) must equal E[a(x)].

    Bias: the patch's own drift varies between patches, adding K²δt²·Var_I(b_I) ≈ 2δt·(K δt a)
    for Ising, i.e. a relative bias ≈ 2δt = 1 % at δt = 0.005. Noise: 16 000 samples whose
    second moments are very skewed (≈ 0.16 flips per patch evolution); the tolerance is 4
    standard errors of the mean (from the per-sample spread) plus that 1 % bias."""
    system, p, n_snap, repeats = Ising2D(32, T, H), 8, 2000, 8
    K, dt = (32 // p) ** 2, 0.005
    rng = np.random.default_rng(5)
    snaps = np.stack([system.random_state(rng, magnetization=m0) for m0 in np.linspace(-0.6, 0.6, n_snap)])
    system.evolve_batch(snaps, duration=2.0, seeds=rng.integers(0, 2**63, n_snap).astype(np.uint64))
    snaps = np.repeat(snaps, repeats, axis=0)  # each copy gets its own patch and random stream
    data = partial_evolution(system, snaps, p, duration=dt, seed=9, progress=False,
                             store_patches=False, chunk_size=4000)
    drift, diffusion = system.generator_moments(snaps)
    r = data.delta - data.dt[:, None] * drift
    per_sample = np.einsum("nk,nl->nkl", r, r) / (K * data.dt[:, None, None])
    estimate, exact = per_sample.mean(axis=0), diffusion.mean(axis=0)
    se = per_sample.std(axis=0) / np.sqrt(len(r))
    tolerance = 4 * se + 0.01 * np.abs(exact)
    assert np.all(np.abs(estimate - exact) <= tolerance), (estimate, exact, tolerance)
    # resolving power: a λ of K/2 or 2K (estimate off by a factor 2) lies > 0.5·exact away
    assert np.all(0.5 * np.abs(exact.diagonal()) > 1.5 * tolerance.diagonal())


@pytest.mark.parametrize("system", [Ising2D(32, 2.5, 0.1), CurieWeiss(16, 1.2, 0.05)],
                         ids=["ising", "curie_weiss"])
def test_local_observable_change_and_pairs_per_snapshot_give_the_same_data(system):
    """The block-share increment equals the whole-box observables' change exactly, and P pairs
    per snapshot equal the snapshots repeated P times (any chunking)."""
    from matscale.partial import partial_evolution

    class WholeBox(type(system)):
        block_observable_sums = None
        window_halo = None

    states = system.random_states(6, np.random.default_rng(0))
    local = partial_evolution(system, states, 8, duration=0.5, seed=3, progress=False)
    whole = partial_evolution(WholeBox(system.size, system.T, system.h), states, 8, duration=0.5,
                              seed=3, progress=False)
    np.testing.assert_array_equal(local.delta, whole.delta)
    np.testing.assert_array_equal(local.patch_after, whole.patch_after)  # (Ising: evolved in a halo box)
    np.testing.assert_array_equal(local.dt, whole.dt)
    assert np.abs(local.delta).max() > 0
    per = partial_evolution(system, states, 8, duration=0.5, seed=3, progress=False,
                            pairs_per_snapshot=3, chunk_size=4)
    rep = partial_evolution(system, np.repeat(states, 3, axis=0), 8, duration=0.5, seed=3,
                            progress=False, chunk_size=5)
    for name in ("z0", "delta", "dt", "patch_index", "patch_after"):
        np.testing.assert_array_equal(getattr(per, name), getattr(rep, name))
    with pytest.raises(ValueError, match="pairs_per_snapshot"):
        partial_evolution(system, states, 8, pairs_per_snapshot=0, progress=False)


def test_generator_pairs_carry_the_exact_moments_and_expected_likelihood():
    """generator_pairs: per state, the 2d pairs' mean increment is b δt and their covariance a δt
    (exactly, to rounding), and their mean Gaussian NLL under any (μ, Σ) equals the NLL averaged
    over an increment law with those two moments (closed form)."""
    from matscale.partial import generator_pairs

    system, dt = Ising2D(16, T, H), 0.3
    rng = np.random.default_rng(8)
    snaps = np.stack([system.random_state(rng, magnetization=m0) for m0 in np.linspace(-0.8, 0.8, 40)])
    system.evolve_batch(snaps, duration=1.0, seeds=rng.integers(0, 2**63, len(snaps)).astype(np.uint64))
    z0, z1, steps = generator_pairs(system, snaps, dt, chunk_size=7)
    drift, diffusion = system.generator_moments(snaps)
    d = drift.shape[1]
    inc = (z1 - z0).reshape(len(snaps), 2 * d, d)
    np.testing.assert_allclose(z0.reshape(len(snaps), 2 * d, d)[:, 0], system.observables(snaps))
    np.testing.assert_allclose(steps, dt)
    np.testing.assert_allclose(inc.mean(axis=1), drift * dt, atol=1e-15)
    centred = inc - inc.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("bkl,bkm->blm", centred, centred) / (2 * d), diffusion * dt,
                               rtol=1e-10, atol=1e-15)
    mu, cov = np.array([0.01, -0.02]), np.array([[2e-3, 1e-4], [1e-4, 5e-3]])
    prec = np.linalg.inv(cov * dt)
    r = inc - mu * dt
    nll = 0.5 * np.einsum("bkl,lm,bkm->bk", r, prec, r).mean(axis=1)
    want = 0.5 * (np.einsum("lm,bml->b", prec, diffusion * dt)
                  + np.einsum("bl,lm,bm->b", (drift - mu) * dt, prec, (drift - mu) * dt))
    np.testing.assert_allclose(nll, want, rtol=1e-10)


def test_generator_pairs_reject_systems_without_a_generator_and_bad_steps():
    from matscale.partial import generator_pairs

    with pytest.raises(ValueError, match="no generator_moments"):
        generator_pairs(object(), np.zeros((2, 4, 4), np.int8), 0.1)
    with pytest.raises(ValueError, match="dt="):
        generator_pairs(Ising2D(16, T, H), np.ones((2, 16, 16), np.int8), 0.0)
