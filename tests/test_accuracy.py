"""End-to-end accuracy: the pipeline's learned SDE against independent direct simulations.

The default-suite test runs a small Curie–Weiss configuration (10 s) and bounds its errors;
the ``slow`` test reruns one sub-pipeline of the shipped paper-setting configurations and checks
the test errors the README reports.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from matscale.config import load_config, loads_config
from matscale.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]

SMALL_CW = """
[system]
kind = "curie_weiss"
L = 32
T = 1.1
h = 0.1
[small]
p = 16
n_runs = 100
n_sweeps = 40
sweep_time = 2.0
[upsampling]
n_configs = 3000
n_random = 3000
mode = "tile"
[partial]
duration = 0.05
n_draws = 32
[closure]
dim = 0
[train]
method = "both"
diffusion = "diagonal"
hidden = [32, 32]
epochs = 100
batch_size = 2048
lr = 1e-2
[reference]
magnetizations = [-0.5, 0.0, 0.5]
n_runs = 100
duration = 60.0
grid_dt = 2.0
[evaluate]
n_paths = 400
mmd_bootstrap = 20
"""


def test_small_curie_weiss_matches_direct_runs(tmp_path):
    """n_s = 16², n = 32², K = 4; 100 direct runs and 400 predicted paths per condition.

    Bounds: (1) the test error is at most 8× its noise floor (the value an exact model scores
    with these path counts; measured 5×, the naive baseline, trained on the same data, 20×);
    (2) at every condition the mean curve stays within 6 direct standard errors at every one of
    the 31 grid times (an exact model's largest |z| over 31 correlated times stays below ~3.5 in
    > 99 % of runs; measured ≤ 4.6); (3) the predicted std is within 25 % of the direct one (the
    direct std of 100 runs has a 7 % standard error). A drift off by a few % or a diffusion off
    by a factor √K (the naive baseline) fails."""
    summary = run_pipeline(loads_config(SMALL_CW), tmp_path)
    res = summary["results"]["p16"]
    ours, naive = res["ours"], res["naive"]
    assert ours["test_error_all"] <= 8 * ours["test_error_all_floor"], ours["test_error_all"]
    for row in ours["per_condition"]:
        m = row["m"]
        assert m["max_abs_mean_error"] <= 6 * m["direct_sem"], m
        assert 0.75 <= m["std_ratio"] <= 1.33, m
    assert naive["test_error_all"] > 2 * ours["test_error_all"]


def _readme_row(system: str, n_s: str) -> tuple[float, float]:
    """(ours with 20 paths, ours with all paths) of a row of the README's measured table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| {re.escape(system)} \| {re.escape(n_s)} \| ([\d.e-]+) / ([\d.e-]+) \|", text, re.M)
    assert row, f"README row {system} {n_s} not found"
    return float(row.group(1)), float(row.group(2))


@pytest.mark.slow
@pytest.mark.parametrize("config, system", [("ising.toml", "Ising T = 2.5"),
                                            ("curie_weiss.toml", "Curie–Weiss T = 1.1")])
def test_readme_table_n_s_16(tmp_path, config, system):
    """The p = 16 sub-pipeline of the shipped configuration (the README's 16² row; a few
    minutes): its test errors reproduce the README's to 10 % (runs are seeded, so they agree to
    rounding on one platform; 10 % absorbs floating-point differences between machines), and
    ours beats the naive baseline."""
    cfg = load_config(REPO / "inputs" / config)
    cfg = dataclasses.replace(cfg, small=dataclasses.replace(cfg.small, p=(16,)))
    res = run_pipeline(cfg, tmp_path)["results"]["p16"]
    paper_paths, all_paths = _readme_row(system, "16²")
    assert res["ours"]["test_error_paper"] == pytest.approx(paper_paths, rel=0.1)
    assert res["ours"]["test_error_all"] == pytest.approx(all_paths, rel=0.1)
    assert res["naive"]["test_error_all"] > 3 * res["ours"]["test_error_all"]
