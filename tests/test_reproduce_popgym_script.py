"""Tests for scripts/reproduce_popgym.py: which targets a set of results checks, and how."""

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_popgym.py"
_spec = importlib.util.spec_from_file_location("reproduce_popgym", _SCRIPT)
reproduce_popgym = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce_popgym)


def _result(task: str, core: str, mmer: float) -> dict:
    return dict(task=task, core=core, mmer=mmer)


def test_targets_check_only_what_ran_against_their_thresholds():
    results = [
        _result("RepeatPreviousEasy", "s5", 0.96),
        _result("RepeatPreviousEasy", "mlp", 0.90),
        _result("RepeatPreviousEasy", "lru", 0.90),
        _result("RepeatPreviousEasy", "transformer", 0.89),
        _result("CountRecallEasy", "s5", -0.3),
    ]
    checks = dict(reproduce_popgym.targets(results))
    assert len(checks) == 4  # CountRecallEasy has no MLP run to compare with
    met = {text.split(" (")[0]: ok for text, ok in checks.items()}
    assert met == {
        "S5 on RepeatPreviousEasy >= 0.95": True,
        "lru on RepeatPreviousEasy >= 0.9": True,
        "transformer on RepeatPreviousEasy >= 0.9": False,
        "S5 above MLP by >= 0.1 on RepeatPreviousEasy": False,  # 0.96 < 0.90 + 0.1
    }
