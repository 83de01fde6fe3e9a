"""Every shell command of README.md runs as written (from a copy of ``inputs/`` in a temporary
folder), or is checked against what does run it:

* the install-and-test command is ``.ci/run``'s, verbatim (CI runs it);
* the quick start's main job (``matscale run --quick ...``) runs in full here;
* ``pip install torch ... --index-url`` (the CPU build from PyTorch's index) needs that index,
  which tests cannot reach: its pinned version must equal the one the other commands install;
* runs of the full shipped configurations take minutes to hours: they run as written up to their
  first stage (``--stop-after small_sim`` appended) here, and the NbMoTa one, whose first stage
  alone takes minutes, only under the ``slow`` marker.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SHELL = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
         for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
INSTALL = "python -m venv .venv && . .venv/bin/activate && pip install torch=="
FULL_RUNS = ("inputs/ising.toml --out", "inputs/curie_weiss.toml --out", "inputs/nbmota.toml --out")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "inputs", work / "inputs", symlinks=False,
                    ignore=shutil.ignore_patterns("ou_pairs.npz"))
    return work


def _run(command: str, cwd: Path) -> str:
    proc = subprocess.run(shlex.split(command), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, f"{command!r} failed: {proc.stderr.strip()[-2000:]}"
    return proc.stdout


def _kind(command: str) -> str:
    if command.startswith(INSTALL):
        return "install"
    if command.startswith("pip install torch"):
        return "torch_cpu"
    if command.startswith("matscale run") and any(f in command for f in FULL_RUNS) and "--quick" not in command:
        return "slow" if "nbmota" in command else "first_stage"
    return "plain"


def test_readme_shell_commands_are_all_classified():
    kinds = [_kind(c) for c in SHELL]
    assert kinds.count("install") == 2 and kinds.count("torch_cpu") == 1
    assert sum(c.startswith("matscale") or c.startswith("python inputs/") for c in SHELL) >= 8
    for command in SHELL:  # nothing else slips in untested
        assert _kind(command) != "plain" or command.split()[0] in ("matscale", "python"), command


def test_install_commands_match_ci_and_pin_one_torch():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    installs = [c for c in SHELL if _kind(c) == "install"]
    assert ci in installs  # the test command is CI's, verbatim
    pins = {re.search(r"torch==([\w.+]+)", c).group(1) for c in SHELL if "torch==" in c}
    assert len(pins) == 1, pins


def test_readme_commands_run_as_written(workdir):
    """In README order (the OU pairs are written before they are fitted)."""
    main_job = next(c for c in SHELL if _kind(c) == "install" and "matscale run" in c)
    commands = [main_job.split("&& ")[-1]] + [c for c in SHELL if _kind(c) in ("plain", "first_stage")]
    for command in commands:
        if _kind(command) == "first_stage":
            command += " --stop-after small_sim"
        out = _run(command, workdir)
        if command.startswith("matscale validate"):
            assert out.startswith("OK ")
    assert (workdir / "runs" / "quick" / "report.md").is_file()
    assert (workdir / "runs" / "ou" / "fit_pairs" / "sde").is_dir()


@pytest.mark.slow
def test_full_nbmota_command_starts(workdir):
    command = next(c for c in SHELL if _kind(c) == "slow")
    _run(command + " --stop-after small_sim", workdir)
