"""Tests for scripts/bench_scaling.py: the efficiency arithmetic, the table and a refusal
(what it times is the driver's program, whose multi-device form tests/test_scale.py checks)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scaling.py"
_spec = importlib.util.spec_from_file_location("bench_scaling", _SCRIPT)
bench_scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scaling)


def test_efficiency_is_the_speed_up_per_device():
    rows = [
        {"agent": "ppo", "devices": 1, "steps_per_s": 100.0},
        {"agent": "ppo", "devices": 4, "steps_per_s": 300.0},
        {"agent": "dreamer", "devices": 2, "steps_per_s": 50.0},  # no 1-device row
    ]
    out = bench_scaling.with_efficiency(rows)
    assert [r["efficiency"] for r in out] == [1.0, 0.75, None]
    table = bench_scaling.table(
        {
            "device": "cpu",
            "device_count": 4,
            "rows": [{**r, "num_envs": 8, "first_call_s": 1.0} for r in out],
        }
    )
    assert "| ppo | 4 | 8 | 300 | 0.75 | 1.0 |" in table and "| dreamer | 2 | 8 | 50 | - |" in table


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, str(_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_devices_that_do_not_divide_the_envs_are_refused():
    done = _run("--devices", "1", "3", "--num-envs", "8")
    assert done.returncode != 0 and "divide --num-envs 8" in done.stderr
    assert "Traceback" not in done.stderr
