"""Hierarchical upsampling: operators, LocalRelax geometry, resume, statistics vs direct runs."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.observables import magnetization
from matscale.systems import CurieWeiss, Ising2D
from matscale.upsampling import (block_gibbs_sweeps, compare_snapshots, hierarchical_upsample, local_relax,
                                 plot_upsampling_diagnostics, relax_window_origins, upsample)

T, H = 2.5, 0.1


def _equilibrium(L: int, n: int, seed: int, t_total: float = 60.0) -> np.ndarray:
    """n independent Ising snapshots after t_total Glauber time units from m0 = 0.7."""
    system = Ising2D(L, T, H)
    rng = np.random.default_rng(seed)
    states = np.stack([system.random_state(rng, magnetization=0.7) for _ in range(n)])
    system.evolve_batch(states, duration=t_total, seeds=rng.integers(0, 2**63, n).astype(np.uint64))
    return states


def test_duplicate_preserves_m_exactly_and_tile_uses_pool_blocks():
    rng = np.random.default_rng(0)
    pool = np.stack([Ising2D(8, T).random_state(rng) for _ in range(5)])
    dup = upsample(pool, 2, "duplicate")
    assert dup.shape == (5, 16, 16) and dup.dtype == np.int8
    np.testing.assert_array_equal(magnetization(dup), magnetization(pool))
    np.testing.assert_array_equal(dup[:, ::2, ::2], pool)
    tiled = upsample(pool, 2, "tile", np.random.default_rng(1), n_out=7)
    assert tiled.shape == (7, 16, 16)
    for b in range(7):
        for r in (0, 8):
            for c in (0, 8):
                block = tiled[b, r:r + 8, c:c + 8]
                assert any(np.array_equal(block, x) for x in pool)
    again = upsample(pool, 2, "tile", np.random.default_rng(1), n_out=7)
    np.testing.assert_array_equal(tiled, again)
    with pytest.raises(ValueError, match="mode must be one of"):
        upsample(pool, 2, "bicubic")
    with pytest.raises(ValueError, match="factor"):
        upsample(pool, 1)


def test_window_grid_covers_box_and_random_order_is_a_shifted_permutation():
    keys = np.arange(3, dtype=np.uint64)
    raster = relax_window_origins(32, keys, window=8, stride=4, order="row-major")
    assert raster.shape == (3, 64, 2)
    np.testing.assert_array_equal(raster[0, :3], [[0, 0], [0, 4], [0, 8]])
    shuffled = relax_window_origins(32, keys, window=8, stride=4)
    for b in range(3):
        offset = (shuffled[b] - raster[b]) % 4  # same offset for every window of config b
        assert set(map(tuple, shuffled[b] % 4)) == {tuple(offset.min(0))}
        assert not np.array_equal(shuffled[b], raster[b])
        covered = np.zeros((32, 32), bool)
        for r, c in shuffled[b]:
            covered[np.ix_((r + np.arange(8)) % 32, (c + np.arange(8)) % 32)] = True
        assert covered.all()
    with pytest.raises(ValueError, match="stride"):
        relax_window_origins(32, keys, window=8, stride=9)


@pytest.mark.parametrize("system", [Ising2D(32, T, H), CurieWeiss(32, 1.1, 0.1)], ids=repr)
def test_frozen_local_relax_only_touches_the_windows(system):
    rng = np.random.default_rng(3)
    configs = np.stack([system.random_state(rng) for _ in range(20)])
    before = configs.copy()
    origins = np.broadcast_to(np.array([[2, 30], [17, 5]]), (20, 2, 2)).copy()  # 2nd wraps
    union = np.zeros((32, 32), bool)
    for r, c in origins[0]:
        union[np.ix_((r + np.arange(8)) % 32, (c + np.arange(8)) % 32)] = True
    _, elapsed = local_relax(system, configs, window=8, origins=origins, seeds=5)
    assert elapsed.shape == (20, 2)
    np.testing.assert_allclose(elapsed, 1.0)
    np.testing.assert_array_equal(configs[:, ~union], before[:, ~union])
    assert (configs[:, union] != before[:, union]).mean() > 0.05


def test_hierarchical_upsample_is_seeded_chunk_independent_and_resumes(tmp_path):
    pool = _equilibrium(8, 30, seed=1, t_total=5.0)
    big = Ising2D(32, T, H)
    a = hierarchical_upsample(big, pool, 32, 24, seed=4, chunk_size=24, progress=False)
    b = hierarchical_upsample(big, pool, 32, 24, seed=4, chunk_size=5, progress=False)
    c = hierarchical_upsample(big, pool, 32, 24, seed=5, chunk_size=24, progress=False)
    assert a.shape == (24, 32, 32) and a.dtype == np.int8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    from matscale.parallel import open_executor
    with open_executor("processes:2") as pool_of_two:  # spawned processes: every task pickled
        d = hierarchical_upsample(big, pool, 32, 24, seed=4, chunk_size=10, progress=False,
                                  executor=pool_of_two, mode="tile_matched")
    np.testing.assert_array_equal(d, hierarchical_upsample(big, pool, 32, 24, seed=4, chunk_size=24,
                                                           progress=False, mode="tile_matched"))
    path = tmp_path / "up.h5"

    class Interrupted(Ising2D):  # the real kernel, crashing in the 4th batched call
        calls = 0

        def evolve_windows(self, *args, **kwargs):
            Interrupted.calls += 1
            if Interrupted.calls == 4:
                raise KeyboardInterrupt
            return super().evolve_windows(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):  # level 1 (16^2) finishes in 3 chunks, level 2 stops
        hierarchical_upsample(Interrupted(32, T, H), pool, 32, 24, seed=4, chunk_size=8,
                              out=path, progress=False)
    resumed = hierarchical_upsample(big, pool, 32, 24, seed=4, chunk_size=8, out=path, progress=False)
    np.testing.assert_array_equal(resumed, a)
    with pytest.raises(ValueError, match="differing keys: .*seed"):
        hierarchical_upsample(big, pool, 32, 24, seed=6, chunk_size=8, out=path, progress=False)
    with pytest.raises(ValueError, match="target_L"):
        hierarchical_upsample(Ising2D(24, T, H), pool, 24, 4, progress=False)


def test_upsampled_ising_matches_direct_means_and_diagnostics_run(tmp_path):
    """Tile-upsampled 16^2 -> 64^2 Ising (T = 2.5, h = 0.1) vs direct 64^2 equilibrium.

    Tolerance: 4 combined standard errors sqrt(sem_up^2 + sem_direct^2) with sem = std/sqrt(n)
    (n = 160 each; the 16^2 pool has 1600 snapshots, so repeated draws are rare), plus the
    finite-size shift the upsampler inherits from its pool: |mean(16^2 pool) - mean(direct)|
    (the pool is the best the method can see; m(16^2) - m(64^2) is ~0.005 at this T).
    Measured on a larger run (n = 1024): m 0.733 vs 0.722, rho_dw 0.155 vs 0.157.
    """
    from matscale.observables import spin_observables

    direct = _equilibrium(64, 160, seed=2)
    pool = _equilibrium(16, 1600, seed=3)
    up = hierarchical_upsample(Ising2D(64, T, H), pool, 64, 160, mode="tile", seed=7, progress=False)
    diag = compare_snapshots(up, direct)
    shift = np.abs(spin_observables(pool).mean(0) - spin_observables(direct).mean(0))
    for j, name in enumerate(("m", "rho_dw")):
        d = diag["observables"][name]
        tol = 4 * np.hypot(d["sem_upsampled"], d["sem_direct"]) + shift[j]
        assert abs(d["mean_upsampled"] - d["mean_direct"]) < tol, (name, d["mean_upsampled"], d["mean_direct"], tol)
        assert d["hist_upsampled"].shape == d["hist_direct"].shape == (30,)
        assert 0 <= d["ks_statistic"] <= 1 and d["energy_distance"] >= 0
    sf = diag["structure_factor"]
    assert sf["k"].shape == sf["S_direct"].shape and (sf["k"] > 0).all()
    assert sf["max_rel_diff"] < 0.5  # duplicate mode without enough relaxation gives > 1
    out = plot_upsampling_diagnostics(diag, tmp_path / "diag.png")
    assert (tmp_path / "diag.png").stat().st_size > 10_000 and out.endswith("diag.png")


def test_tile_matched_tiles_share_the_anchor_magnetization():
    """tile_matched: the factor**2 tiles of an output come from the closest 1 % of the pool in m,
    so their magnetizations agree to ~1 % of the pool's m range; plain tiling mixes the pool."""
    rng = np.random.default_rng(0)
    pool = np.where(rng.random((4000, 8, 8)) < rng.random((4000, 1, 1)), 1, -1).astype(np.int8)
    def tile_spread(mode):
        out = upsample(pool, 2, mode, np.random.default_rng(1), n_out=400)
        tile_m = out.reshape(400, 2, 8, 2, 8).mean(axis=(2, 4)).reshape(400, 4)
        return tile_m.std(axis=1).mean()
    assert tile_spread("tile_matched") < 0.02 < 0.3 < tile_spread("tile")
    first = upsample(pool, 2, "tile_matched", np.random.default_rng(5), n_out=50)
    again = upsample(pool, 2, "tile_matched", np.random.default_rng(5), n_out=50)
    np.testing.assert_array_equal(first, again)


def test_seam_windows_straddle_every_seam_and_seam_relax_heals_them():
    """Seam windows: the same count for every state, each straddling a tile boundary; relaxing
    only them gives tiled states whose seam bonds look like the interior (domain-wall density
    across seams within sampling error of the bonds inside the tiles)."""
    from matscale.geometry import seam_window_origins

    keys = np.arange(5, dtype=np.uint64)
    origins = seam_window_origins(32, keys, 2, tile=16, window=8, stride=4)
    assert origins.shape == (5, 2 * 2 * 8, 2)
    for o in origins.reshape(-1, 2):
        centre = (o + 4) % 32
        assert centre[0] % 16 == 0 or centre[1] % 16 == 0  # straddles a seam at 0 or 16
    pool = _equilibrium(16, 40, seed=3, t_total=20.0)
    big = Ising2D(64, T, H)
    tiled = hierarchical_upsample(big, pool, 64, 40, seed=2, duration=0.0, progress=False)
    healed = hierarchical_upsample(big, pool, 64, 40, seed=2, duration=2.0, relax_region="seams",
                                   window=8, progress=False)

    def seam_and_bulk_walls(states):
        s = states.astype(np.int8)
        walls = s != np.roll(s, -1, axis=2)  # bond (x, x+1) along axis 2
        seam_cols = np.arange(64) % 16 == 15  # bonds 15|16, 31|32, ... and 63|0
        return walls[:, :, seam_cols].mean(), walls[:, :, ~seam_cols].mean()

    seam_t, bulk_t = seam_and_bulk_walls(tiled)
    seam_h, bulk_h = seam_and_bulk_walls(healed)
    # 40 states x 64 rows x 4 seam columns = 10 240 seam bonds: the standard error of a wall
    # fraction ~0.15 is sqrt(0.15 * 0.85 / 10240) ~ 0.0035 (ignoring correlations, hence 4x).
    assert seam_t > bulk_t + 0.02            # raw tiling: unrelated neighbours across seams
    assert abs(seam_h - bulk_h) < 4 * 0.0035 * 2
    with pytest.raises(ValueError, match="relax_region"):
        hierarchical_upsample(big, pool, 64, 2, relax_region="edges", progress=False)


def _exact_abs_m_probabilities(L: int, T: float) -> np.ndarray:
    """P(|Σσ| = 2k), k = 0 .. L²/2, of the periodic L × L Ising model (J = 1, h = 0) by enumeration."""
    n = L * L
    spins = (((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.int8) * 2 - 1).reshape(-1, L, L)
    energy = -(spins * np.roll(spins, 1, 1)).sum((1, 2)) - (spins * np.roll(spins, 1, 2)).sum((1, 2))
    weight = np.exp(-(energy - energy.min()) / T)
    total = np.abs(spins.sum((1, 2)))
    return np.array([weight[total == 2 * k].sum() for k in range(n // 2 + 1)]) / weight.sum()


def _chi2_abs_m(states: np.ndarray, p: np.ndarray) -> float:
    observed = np.bincount(np.abs(states.sum((1, 2), dtype=np.int64)) // 2, minlength=len(p))
    expected = p * len(states)
    return float(((observed - expected) ** 2 / expected).sum())


def test_block_gibbs_sweeps_reach_the_exact_boltzmann_distribution():
    """4000 periodic 4 × 4 Ising boxes (T = 3), half all up and half all down, after 30 passes of
    2 × 2 windows (exterior frozen, 1 Glauber time each): the histogram of |M| against exact
    enumeration. Pearson's χ² with 8 degrees of freedom stays below 26.1 with probability
    0.999 when the chain samples the Boltzmann distribution (the smallest expected count is
    ~165, so the χ² approximation holds); one short pass is far from it (the test can fail)."""
    system, p = Ising2D(4, 3.0), _exact_abs_m_probabilities(4, 3.0)
    states = np.ones((4000, 4, 4), np.int8)
    states[2000:] = -1
    short = states.copy()
    passes = list(block_gibbs_sweeps(system, states, 30, duration=1.0, window=2, seed=3))
    assert passes == list(range(1, 31))
    assert _chi2_abs_m(states, p) < 26.1
    list(block_gibbs_sweeps(system, short, 1, duration=0.05, window=2, seed=3))
    assert _chi2_abs_m(short, p) > 1000


def test_block_gibbs_sweeps_stream_per_config_and_checks():
    """Config i's pass k depends only on (seed, k, i): a subset gives the same states; bad
    arguments name the field."""
    system = Ising2D(16, 2.4)
    start = np.ones((6, 16, 16), np.int8)
    whole, part = start.copy(), start[2:5].copy()
    list(block_gibbs_sweeps(system, whole, 3, duration=0.5, window=8, seed=11))
    list(block_gibbs_sweeps(system, part, 3, duration=0.5, window=8, seed=11, index=np.arange(2, 5)))
    np.testing.assert_array_equal(whole[2:5], part)
    assert not np.array_equal(whole, start)
    with pytest.raises(ValueError, match="passes=-1"):
        list(block_gibbs_sweeps(system, whole, -1, duration=1.0))
    with pytest.raises(ValueError, match="index has shape"):
        list(block_gibbs_sweeps(system, whole, 1, duration=1.0, index=np.arange(3)))
    with pytest.raises(ValueError, match="duration=0"):
        list(block_gibbs_sweeps(system, whole, 1, duration=0.0))
