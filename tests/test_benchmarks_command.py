"""``python -m benchmarks``: one table and a JSON file whose rows are consistent.

Runs two cheap benchmarks at --quick sizes in a subprocess (about 10-20 s, more on a cold numba
cache), and checks without running anything that a missing LAMMPS gives skipped rows.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHEAP = ("sde_rollout", "spin_kernels")
ROW_KEYS = {"benchmark", "name", "value", "unit", "baseline", "baseline_value", "baseline_unit", "ratio",
            "higher_is_better", "status", "note", "extra", "seconds"}


def test_quick_command_prints_one_table_and_consistent_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", ",".join(CHEAP),
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for head in ("CPU:", "torch", "numpy", "numba", "threads: OMP_NUM_THREADS=1", "GPU:"):
        assert head in text, head
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "benchmark" and set(table[1]) <= {"|", "-"}
    assert {line.split("|")[1].strip() for line in table[2:]} == set(CHEAP)

    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert {"cpu", "logical_cores", "torch", "numpy", "numba", "torch_threads", "gpu"} <= set(data["machine"])
    assert list(data["benchmarks"]) == list(CHEAP)
    assert all(g["status"] == "ok" and g["seconds"] > 0 for g in data["benchmarks"].values())
    rows = data["rows"]
    assert len(rows) == len(table) - 2
    for r in rows:
        assert set(r) == ROW_KEYS, r["name"]
        assert r["status"] == "ok", r
        assert r["value"] > 0 and math.isfinite(r["value"]) and r["unit"]
        if r["baseline_value"] is not None:
            assert r["baseline_value"] > 0 and r["baseline"]
            assert r["baseline_unit"] == r["unit"]
            assert math.isclose(r["ratio"], r["value"] / r["baseline_value"], rel_tol=1e-9)
        else:
            assert r["ratio"] is None and r["baseline_unit"] is None
    for name in CHEAP:  # each benchmark has at least one row against a baseline
        assert any(r["benchmark"] == name and r["ratio"] is not None for r in rows)


def test_missing_lammps_gives_skipped_rows_not_a_crash(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import bench_kra_lammps
    from benchmarks.suite import table_lines

    fake = {"kind": "size", "cells": 8, "n_sites": 1024, "eam": 2e-4, "de": 1e-5, "one": 2e-5}
    rows = bench_kra_lammps.rows_of(fake, {"compile": 0.1}, "LAMMPS not available: no module")
    assert [r["status"] for r in rows] == ["skipped", "ok", "ok"]
    assert "LAMMPS not available" in rows[0]["note"] and rows[0]["value"] is None
    assert rows[1]["baseline_value"] is None and math.isclose(rows[1]["value"], 5000.0)
    for r in rows:
        r["benchmark"] = "kra_lammps"
    assert any("skipped" in line and "LAMMPS not available" in line for line in table_lines(rows))
