"""Command line: help, validate, one-line errors with exit status 2."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matscale.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_console_script_help():
    exe = shutil.which("matscale") or str(Path(sys.executable).parent / "matscale")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "run" in res.stdout and "validate" in res.stdout


def test_run_help_lists_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--force-stage" in out and "--out" in out


def test_validate_good_configs(capsys):
    for name in ("ising.toml", "curie_weiss.toml", "fit_pairs.toml"):
        assert main(["validate", str(REPO / "inputs" / name)]) == 0
    out = capsys.readouterr().out
    assert "ising.toml: ising, L = 64" in out and "p=16 (K=16)" in out
    # several files at once, and their [quick] presets
    assert main(["validate", "--quick", str(REPO / "inputs" / "ising.toml"),
                 str(REPO / "inputs" / "nbmota.toml")]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 2 and "ising, L = 32" in out and "training T = [1600.0, 2000.0, 2400.0]" in out


def _one_line_error(capsys, argv, expect: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("matscale: error:")
    assert "Traceback" not in err
    assert expect in err


def test_validate_bad_config_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[system]\nkind = "ising"\nL = 64\nT = -2.0\n[small]\np = 16\n')
    _one_line_error(capsys, ["validate", str(bad)], "system.T")
    bad.write_text('[system]\nkind = "ising"\nL = 64\nT = 2.0\n[small]\np = 12\n')
    _one_line_error(capsys, ["validate", str(bad)], "small.p=12")
    bad.write_text('[system]\nkind = "ising"\nL = 64\nT = 2.0\ncolour = "red"\n[small]\np = 16\n')
    _one_line_error(capsys, ["validate", str(bad)], "system.colour")


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["validate", str(tmp_path / "missing.toml")], "not found")
    _one_line_error(capsys, ["run", "--out", str(tmp_path / "o")], "--quick")
    _one_line_error(capsys, ["frobnicate"], "invalid choice")
    _one_line_error(capsys, ["run", str(REPO / "inputs" / "ising.toml")], "--out")
    _one_line_error(capsys, ["run", str(REPO / "inputs" / "ising.toml"), "--out", str(tmp_path),
                             "--force-stage", "cooking"], "is not a stage")


def test_fit_workflow_with_missing_pairs_file(tmp_path, capsys):
    cfg = tmp_path / "fit.toml"
    cfg.write_text('workflow = "fit"\n[fit]\npairs = "nothing.npz"\n')
    _one_line_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"], "fit.pairs")


def test_absurd_size_is_refused_before_anything_is_written(tmp_path, capsys):
    """L = 2**20 needs a terabyte per stage: validate and run refuse it, naming the estimate and
    the remedy, and run writes nothing; the estimate of a shipped config is in validate's line."""
    huge = tmp_path / "huge.toml"
    huge.write_text('[system]\nkind = "ising"\nL = 1048576\nT = 2.5\n[small]\np = 16\n')
    _one_line_error(capsys, ["validate", str(huge)], "more than this machine's")
    out = tmp_path / "out"
    _one_line_error(capsys, ["run", str(huge), "--out", str(out)], "--yes")
    assert not out.exists()
    from matscale.config import load_config, resource_estimate

    est = resource_estimate(load_config(huge))
    assert est.state_bytes == 1048576 ** 2  # one int8 spin per site
    assert main(["validate", str(REPO / "inputs" / "ising.toml")]) == 0
    assert "on disk" in capsys.readouterr().out
