"""The proof checks and report of scripts/reproduce_dreamer.py on hand-built figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_dreamer.py"
_spec = importlib.util.spec_from_file_location("reproduce_dreamer", _SCRIPT)
reproduce_dreamer = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = reproduce_dreamer  # its dataclasses look their module up
_spec.loader.exec_module(reproduce_dreamer)


def _result(core, last, mmer, env_steps):
    return dict(
        core=core,
        last_mean_per_seed=last,
        mmer=mmer,
        mmer_per_seed=[mmer] * len(last),
        env_steps=env_steps,
        train_wall_s=1.0,
        seeds=len(last),
    )


def _met(checks):
    return [met for _, met in checks]


def test_cartpole_needs_two_of_three_seeds_at_400_within_100k_steps():
    def check(last, steps=99_968):
        return reproduce_dreamer.checks("cartpole", {"s5": _result("s5", last, 500.0, steps)})

    assert _met(check([450.0, 401.0, 20.0])) == [True]
    assert _met(check([450.0, 399.0, 20.0])) == [False]
    assert _met(check([450.0, None, 400.0])) == [True]  # a seed without 20 episodes fails
    assert _met(check([450.0, 450.0, 450.0], steps=100_096)) == [False]  # past 100k
    assert "2 of 3" in check([450.0, 401.0, 20.0])[0][0]
    assert reproduce_dreamer.checks("cartpole", {"gru": _result("gru", [500.0], 500.0, 1)}) == []


def test_repeat_previous_needs_mmer_and_a_margin_over_the_mlp():
    def check(s5, mlp=None, steps=200_192):
        results = {"s5": _result("s5", [s5], s5, steps)}
        if mlp is not None:
            results["mlp"] = _result("mlp", [mlp], mlp, steps)
        return _met(reproduce_dreamer.checks("repeat_previous", results))

    assert check(0.85, -0.4) == [True, True]
    assert check(0.85, 0.6) == [True, False]  # only 0.25 above the MLP
    assert check(0.75, -0.4) == [False, True]
    assert check(0.9) == [True]
    assert check(0.9, steps=500_224) == [False]


def test_report_lists_every_core_and_check():
    summary = {
        "results": {
            "s5": _result("s5", [52.3, None], 500.0, 99_968),
            "gru": _result("gru", [214.0], 500.0, 99_968),
        },
        "checks": [("S5: something", False)],
    }
    text = reproduce_dreamer.report(summary)
    assert "| s5 | 52.3, - | 500 (500, 500) | 99,968 | 1 |" in text
    assert "| gru | 214 |" in text and "- NOT MET: S5: something" in text
