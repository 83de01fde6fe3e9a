"""Study workflows: registry, configuration checks, resumable stages and CLI errors."""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from matscale.cli import main
from matscale.config import ConfigError, loads_config
from matscale.pipeline import run_pipeline
from matscale.pipeline.studies import STUDY_MODULES, Study


@dataclass(frozen=True)
class MeanStudyConfig:
    n: int = 1000
    seed: int = 0

    def check(self) -> None:
        if self.n < 2:
            raise ConfigError(f"mean.n={self.n} out of range (allowed: >= 2)")


def _run_mean(cfg: MeanStudyConfig, runner, source: Path) -> dict:
    """Sample mean of n standard normals in stage 'draw', its error in stage 'summarise'."""
    draws = runner.out / "draw"

    def draw(folder: Path) -> None:
        np.save(folder / "x.npy", np.random.default_rng(cfg.seed).standard_normal(cfg.n))

    runner.run("draw", draws, {"n": cfg.n, "seed": cfg.seed}, {}, draw)

    def summarise(folder: Path) -> None:
        x = np.load(draws / "x.npy")
        (folder / "summary.json").write_text(json.dumps({"mean": x.mean(), "se": x.std(ddof=1) / np.sqrt(x.size)}))

    runner.run("summarise", runner.out / "summarise", {}, {"draw": "x"}, summarise)
    summary = json.loads((runner.out / "summarise" / "summary.json").read_text())
    (runner.out / "report.md").write_text(f"mean {summary['mean']:.4f} ± {summary['se']:.4f}\n")
    return summary


MEAN_STUDY = Study(name="mean", config=MeanStudyConfig, run=_run_mean,
                   describe=lambda c: f"{c.n} draws", stages=("draw", "summarise"))


@pytest.fixture()
def mean_study(monkeypatch):
    module = types.ModuleType("matscale_test_mean_study")
    module.STUDY = MEAN_STUDY
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(STUDY_MODULES, "mean", f"{module.__name__}:STUDY")
    return MEAN_STUDY


def test_study_config_is_built_checked_and_round_trips(mean_study):
    cfg = loads_config('workflow = "mean"\n[mean]\nn = 50\n')
    assert cfg.study == MeanStudyConfig(n=50)
    with pytest.raises(ConfigError, match=r"mean.n=1 out of range"):
        loads_config('workflow = "mean"\n[mean]\nn = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key 'mean.m'"):
        loads_config('workflow = "mean"\n[mean]\nm = 1\n')
    with pytest.raises(ConfigError, match=r"section \[system\] is not allowed with workflow='mean'"):
        loads_config('workflow = "mean"\n[mean]\n[system]\nkind = "ising"\n')
    quick = loads_config('workflow = "mean"\n[mean]\nn = 50\n[quick.mean]\nn = 5\n', quick=True)
    assert quick.study.n == 5
    from matscale.config import config_to_toml
    assert loads_config(config_to_toml(cfg)) == cfg


def test_study_runs_resumes_and_forces_later_stages(mean_study, tmp_path):
    cfg = loads_config('workflow = "mean"\n[mean]\nn = 400\nseed = 3\n')
    first = run_pipeline(cfg, tmp_path)
    x = np.random.default_rng(3).standard_normal(400)
    assert first["mean"] == pytest.approx(x.mean())
    stamp = (tmp_path / "draw" / "x.npy").stat().st_mtime_ns
    assert run_pipeline(cfg, tmp_path) == first  # resumed: nothing recomputed
    assert (tmp_path / "draw" / "x.npy").stat().st_mtime_ns == stamp
    log = (tmp_path / "stages.log").read_text()
    run_pipeline(cfg, tmp_path, force_stages=["summarise"])
    assert (tmp_path / "draw" / "x.npy").stat().st_mtime_ns == stamp  # earlier stage kept
    assert (tmp_path / "stages.log").read_text().count("summarise ran") == log.count("summarise ran") + 1
    with pytest.raises(ConfigError, match=r"--force-stage 'fit' is not a stage of workflow='mean'"):
        run_pipeline(cfg, tmp_path, force_stages=["fit"])


def test_study_cli_validate_and_run(mean_study, tmp_path, capsys):
    path = tmp_path / "mean.toml"
    path.write_text('workflow = "mean"\nname = "toy"\n[mean]\nn = 20\n')
    assert main(["validate", str(path)]) == 0
    assert "workflow=mean, 20 draws" in capsys.readouterr().out
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert (tmp_path / "o" / "report.md").read_text().startswith("mean ")
    path.write_text('workflow = "meen"\n[mean]\n')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "workflow='meen' is not allowed" in err and "\n" not in err
