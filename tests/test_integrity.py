"""Damaged run data is detected by checksums and reported in one line with the remedy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import matscale
from matscale.cli import main
from matscale.io import DamagedDataError, read_h5, read_json, write_h5
from matscale.pipeline import run_pipeline
from tests.test_pipeline import tiny


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    run_pipeline(tiny(kind="curie_weiss", T=1.1), out)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _snapshot(out: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "stages.log"}


def _rerun(out: Path, capsys, *extra: str) -> tuple[int, str]:
    status = main(["run", str(out / "config.toml"), "--out", str(out), "--quiet", *extra])
    return status, capsys.readouterr().err


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_every_finished_stage_records_its_files(finished_run):
    record = read_json(finished_run / "p8" / "partial" / "stage.json")
    assert "pairs.h5" in record["files"]
    entry = record["files"]["pairs.h5"]
    assert entry["bytes"] == (finished_run / "p8" / "partial" / "pairs.h5").stat().st_size
    assert len(entry["sha256"]) == 64


@pytest.mark.parametrize("relpath, damage, stage, words", [
    ("p8/partial/pairs.h5", _truncate, "partial", "bytes"),
    ("p8/fit/ours/sde/model.pt", _flip_byte, "fit", "SHA-256"),
    ("reference/reference.h5", lambda p: p.unlink(), "reference", "missing"),
])
def test_plain_rerun_over_damaged_stage_fails_with_the_remedy(run_copy, capsys, relpath, damage, stage, words):
    damage(run_copy / relpath)
    before = _snapshot(run_copy)
    status, err = _rerun(run_copy, capsys)
    assert status == 2  # used to exit 0, trusting the damaged file
    line = err.strip()
    assert "\n" not in line and relpath.split("/")[-1] in line and words in line
    assert f"--force-stage {stage}" in line
    assert _snapshot(run_copy) == before  # nothing overwritten


def test_half_written_stage_record_names_file_and_stage(run_copy, capsys):
    _truncate(run_copy / "p8" / "encode" / "stage.json")
    before = _snapshot(run_copy)
    status, err = _rerun(run_copy, capsys)
    assert status == 2
    assert "encode/stage.json" in err and "--force-stage encode" in err and err.count("\n") == 1
    assert "JSONDecodeError" in err  # the cause, after the file name
    assert _snapshot(run_copy) == before


def test_forcing_the_named_stage_repairs_the_run(run_copy, capsys):
    _truncate(run_copy / "p8" / "partial" / "pairs.h5")
    status, _ = _rerun(run_copy, capsys, "--force-stage", "partial")
    assert status == 0
    assert read_h5(run_copy / "p8" / "partial" / "pairs.h5")  # readable again
    status, _ = _rerun(run_copy, capsys)  # and trusted by the next plain rerun
    assert status == 0


def test_record_without_checksums_is_not_trusted(run_copy, capsys):
    record = run_copy / "p8" / "encode" / "stage.json"
    data = json.loads(record.read_text())
    data.pop("files")
    record.write_text(json.dumps(data))
    status, err = _rerun(run_copy, capsys)
    assert status == 2 and "no file checksums" in err and "--force-stage encode" in err


def test_changed_config_names_every_stage_to_redo_in_one_line(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    changed = tiny(kind="curie_weiss", T=1.2)  # changes the system: every stage, reference too
    with pytest.raises(matscale.config.ConfigError) as info:
        run_pipeline(changed, out)
    message = str(info.value)
    assert "\n" not in message
    # one command does it all: small_sim and reference are the roots of everything else
    assert message.count("--force-stage") == 2
    assert "--force-stage small_sim" in message and "--force-stage reference" in message
    run_pipeline(changed, out, force_stages=["small_sim", "reference"])  # the advice works


def test_damaged_h5_read_names_file_and_remedy(tmp_path):
    path = tmp_path / "data.h5"
    write_h5(path, {"x": np.arange(10_000.0)}, {})
    _truncate(path)
    with pytest.raises(DamagedDataError) as info:
        read_h5(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "regenerate" in message
    with h5py.File(tmp_path / "ok.h5", "w"):
        pass
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_h5(tmp_path / "missing.h5")


def test_load_of_damaged_model_names_file_and_remedy(run_copy):
    _truncate(run_copy / "p8" / "fit" / "ours" / "sde" / "model.pt")
    with pytest.raises(DamagedDataError) as info:
        matscale.load(run_copy)
    message = str(info.value)
    assert "model.pt" in message and "--force-stage fit" in message and "\n" not in message


def test_truncated_torch_file_outside_a_run_is_one_line(run_copy, tmp_path):
    from matscale.sde import load_sde

    sde_dir = tmp_path / "sde"
    shutil.copytree(run_copy / "p8" / "fit" / "ours" / "sde", sde_dir)
    _truncate(sde_dir / "model.pt")
    with pytest.raises(DamagedDataError) as info:
        load_sde(sde_dir)
    assert "model.pt" in str(info.value) and "\n" not in str(info.value)
