"""Scripts stop on a missing optional extra or an unknown task with one line and exit 2."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_DMC = importlib.util.find_spec("mujoco_playground") is not None


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.skipif(HAS_DMC, reason="the dmc extra is installed")
@pytest.mark.parametrize(
    "script, args",
    [
        ("bench_ppo.py", ["--env", "dmc/cartpole-swingup", "--cores", "mlp"]),
        ("bench_envs.py", ["--tasks", "RepeatFirstEasy", "MetaDMC"]),
    ],
)
def test_a_missing_extra_is_one_line(script, args):
    result = _run(script, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "pip install 'ssmrl[dmc]'" in last and script in last
    assert result.stdout == ""  # nothing was timed


def test_bench_envs_names_an_unknown_task_in_one_line():
    result = _run("bench_envs.py", "--tasks", "NoSuchTask")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "NoSuchTask" in lines[0]
