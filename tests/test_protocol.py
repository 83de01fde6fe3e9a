"""The system protocol: registry, check at entry, grid geometry, the [quick] preset."""
from __future__ import annotations

import numpy as np
import pytest

from matscale import geometry
from matscale.config import ConfigError, loads_config
from matscale.systems import Ising2D
from matscale.systems.base import check_system
from matscale.systems.registry import build_system, get_kind, kinds
from matscale.upsampling import relax_window_origins


def test_registry_builds_checked_systems():
    assert {"ising", "curie_weiss", "nbmota"} <= set(kinds())
    cfg = loads_config('[system]\nkind = "ising"\nL = 16\nT = 2.5\n[small]\np = 8\n')
    system = build_system(cfg.system)
    assert isinstance(system, Ising2D) and system.size == 16 and system.grid_dim == 2
    assert system.observable_names == ("m", "rho_dw")
    with pytest.raises(ConfigError, match="system.kind='potts' is not allowed"):
        get_kind("potts")


def test_check_system_names_what_is_missing():
    class Half:
        grid_dim, cell_shape, size, state_dtype = 2, (), 8, np.int8
        time_unit = site_unit = "x"
        observable_names, parameter_name = ("a",), None

    with pytest.raises(TypeError, match="lacks method 'resized'"):
        check_system(Half())
    del Half.grid_dim
    with pytest.raises(TypeError, match="lacks attribute 'grid_dim'"):
        check_system(Half())


@pytest.mark.parametrize("grid_dim, cell", [(2, ()), (3, (2,)), (1, (3,))])
def test_tile_and_extract_are_inverse(grid_dim, cell):
    """Tile j of a tiled state is source j, and the K patches of side s are the tiles in order."""
    rng = np.random.default_rng(0)
    f, s = 2, 3
    sources = rng.integers(0, 100, size=(4, f ** grid_dim) + (s,) * grid_dim + cell)
    big = geometry.tile(sources, f, grid_dim)
    assert big.shape == (4,) + (f * s,) * grid_dim + cell
    K = geometry.n_patches(f * s, s, grid_dim)
    for k in range(K):
        origins = np.broadcast_to(geometry.patch_origins(k, f * s, s, grid_dim), (4, grid_dim))
        np.testing.assert_array_equal(geometry.extract_blocks(big, origins, s, grid_dim), sources[:, k])


def test_extract_wraps_periodically():
    states = np.arange(16).reshape(1, 4, 4)
    block = geometry.extract_blocks(states, np.array([[3, 3]]), 2, 2)
    np.testing.assert_array_equal(block[0], [[15, 12], [3, 0]])


def test_window_origins_cover_the_grid_in_any_dimension():
    keys = np.arange(5, dtype=np.uint64)
    o3 = geometry.window_grid_origins(8, keys, 3, window=4, stride=2)
    assert o3.shape == (5, 64, 3) and o3.min() >= 0 and o3.max() < 8
    # each state visits every grid point once (a shifted, permuted grid)
    for b in range(5):
        assert len({tuple(x) for x in (o3[b] - o3[b, :1]) % 2}) == 1
        assert len({tuple(x) for x in o3[b]}) == 64
    np.testing.assert_array_equal(geometry.window_grid_origins(32, keys, 2, window=8, stride=4),
                                  relax_window_origins(32, keys, window=8, stride=4))


QUICK = """
[system]
kind = "ising"
L = 16
T = 2.5

[small]
p = 8
n_runs = 100

[quick.small]
n_runs = 7

[quick.train]
epochs = 3
"""


def test_quick_preset_overrides_only_its_keys():
    full = loads_config(QUICK)
    quick = loads_config(QUICK, quick=True)
    assert full.small.n_runs == 100 and full.train.epochs == 100
    assert quick.small.n_runs == 7 and quick.train.epochs == 3 and quick.small.p == (8,)
    with pytest.raises(ConfigError, match="no \\[quick\\] table"):
        loads_config(QUICK.split("[quick.small]")[0], quick=True)
    with pytest.raises(ConfigError, match="quick.bogus"):
        loads_config(QUICK + "\n[quick.bogus]\nx = 1\n")
    with pytest.raises(ConfigError, match="small.n_runs"):
        loads_config(QUICK.replace("n_runs = 7", "n_runs = -1"), quick=True)


def test_stage_records_follow_the_stage_table():
    """Each stage records the sections it depends on through its inputs, and the partial stage
    also whether it keeps the patches (a closure switched on later must recompute it)."""
    import dataclasses

    from matscale.pipeline.runner import dependents, stage_config, stage_sections

    assert stage_sections("small_sim") == ("system", "small")
    assert stage_sections("encode") == ("system", "small", "upsampling", "partial", "closure")
    assert stage_sections("plots") == ("system", "small", "upsampling", "partial", "closure",
                                       "train", "reference", "evaluate")
    assert dependents("reference") == ("evaluate", "plots")
    assert dependents("upsample") == ("partial", "closure", "encode", "fit", "evaluate", "plots")
    cfg = loads_config('[system]\nkind = "ising"\nL = 16\nT = 2.5\n[small]\np = 8\n[closure]\ndim = 0\n')
    off = stage_config(cfg, "partial", 8)
    on = stage_config(dataclasses.replace(cfg, closure=dataclasses.replace(cfg.closure, dim=2)), "partial", 8)
    assert off["settings"] == {"store_patches": False} and on["settings"] == {"store_patches": True}
    assert {k: v for k, v in off.items() if k != "settings"} == {k: v for k, v in on.items() if k != "settings"}


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    """While one run holds OUT, another is refused with one line and writes nothing there;
    the lock goes with its holder (no stale lock after the first run ends)."""
    from matscale.pipeline import run_pipeline
    from matscale.pipeline.runner import RunLock

    cfg = loads_config('[system]\nkind = "ising"\nL = 16\nT = 2.5\n[small]\np = 8\n')
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match="in use by another matscale run") as info:
            run_pipeline(cfg, tmp_path, stop_after="small_sim")
        assert "\n" not in str(info.value) and not (tmp_path / "config.toml").exists()
    with RunLock(tmp_path):  # released: can be taken again
        pass


def test_reference_does_not_depend_on_the_training_temperatures():
    """Changing the training temperatures of the alloy recomputes the data stages but keeps the
    expensive direct reference runs."""
    from matscale.pipeline.runner import stage_config

    text = ('[system]\nkind = "nbmota"\ncells = 8\ntemperatures = [{}]\nvacancy_fraction = 0.0078125\n'
            '[small]\np = 4\n[reference]\ntemperatures = [2000.0]\nn_runs = 3\n[evaluate]\npaper_paths = 3\n')
    a = loads_config(text.format("1800.0, 2400.0"))
    b = loads_config(text.format("1600.0, 2400.0"))
    assert stage_config(a, "reference", None) == stage_config(b, "reference", None)
    assert stage_config(a, "small_sim", 4) != stage_config(b, "small_sim", 4)
    assert "temperatures" in stage_config(a, "small_sim", 4)["system"]


def test_stage_lines_announce_the_start_and_the_end(tmp_path, capsys):
    from matscale.pipeline.runner import StageRunner

    runner = StageRunner(tmp_path, progress=True)
    runner.run("small_sim", tmp_path / "stage", {"x": 1}, {}, lambda folder: print("working"))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[matscale] stage: running" and out[1] == "working"
    assert out[2].startswith("[matscale] stage: ran")
