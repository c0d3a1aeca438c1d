"""Tests for the proof checks of scripts/meta_adaptation.py on hand-built returns."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ssmrl import evaluation

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "meta_adaptation.py"
_spec = importlib.util.spec_from_file_location("meta_adaptation", _SCRIPT)
meta_adaptation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(meta_adaptation)


def _result(curve, trials=200, noise=0.05, seed=0):
    """Adaptation of one seed whose trials follow ``curve [K]`` plus per-trial offsets."""
    rng = np.random.default_rng(seed)
    k = len(curve)
    offsets = rng.normal(0.0, 0.2, (1, trials, 1))  # easy and hard trials
    returns = np.asarray(curve)[None, None, :] + offsets + rng.normal(0, noise, (1, trials, k))
    finished = np.ones_like(returns, bool)
    return evaluation.Adaptation(evaluation.summarize(returns, finished), returns, finished)


def _met(checks):
    return [met for _, met in checks]


def test_a_rising_curve_that_holds_meets_all_three_checks():
    curve = np.concatenate([np.linspace(0.3, 0.9, 16), np.full(16, 0.9)])
    results = {"s5 training": _result(curve), "mlp training": _result(np.full(32, 0.3), seed=1)}
    checks = meta_adaptation.checks(results, "s5 training", k_train=16)
    assert _met(checks) == [True, True, True]
    assert "episodes 2-16 minus episode 1" in checks[0][0]
    assert "episodes 17-32 minus 9-16" in checks[1][0]
    assert "mlp training (trial mean)" in checks[2][0]


def test_a_small_or_noisy_rise_does_not_count_as_adapting():
    small = np.concatenate([[0.5], np.full(31, 0.53)])  # +0.03 < 0.05
    results = {"s5 training": _result(small, noise=0.01)}
    assert not meta_adaptation.checks(results, "s5 training", k_train=16)[0][1]
    # +0.06 on average, but 20 trials with large noise: not 3 standard errors above 0.
    noisy = np.concatenate([[0.5], np.full(31, 0.56)])
    results = {"s5 training": _result(noisy, trials=20, noise=0.6)}
    assert not meta_adaptation.checks(results, "s5 training", k_train=16)[0][1]


def test_forgetting_past_the_training_length_fails_the_hold_check():
    # Peaks at episode 16, then falls: episodes 17-32 average 0.13 below 9-16.
    curve = np.concatenate([np.linspace(0.3, 0.8, 16), np.linspace(0.7, 0.4, 16)])
    results = {"s5 training": _result(curve), "mlp training": _result(np.full(32, 0.3), seed=1)}
    assert _met(meta_adaptation.checks(results, "s5 training", k_train=16)) == [True, False, True]


def test_the_mlp_check_needs_a_margin_and_compares_the_same_task_set():
    curve = np.linspace(0.3, 0.9, 32)  # trial mean 0.6
    results = {
        "s5 held out": _result(curve),
        "mlp training": _result(np.full(32, 0.1), seed=1),  # another set: not compared
        "mlp held out": _result(np.full(32, 0.5), seed=2),  # 0.1 below: under the margin
    }
    checks = meta_adaptation.checks(results, "s5 held out", k_train=16)
    assert "mlp held out" in checks[2][0] and not checks[2][1]
    assert len(meta_adaptation.checks({"s5 held out": _result(curve)}, "s5 held out", 16)) == 2


def test_evaluation_only_to_the_training_length_has_no_past_check():
    results = {"s5 training": _result(np.linspace(0.3, 0.9, 16))}
    checks = meta_adaptation.checks(results, "s5 training", k_train=16)
    assert len(checks) == 1
    assert checks[0][1]


def test_report_renders_a_saved_summary():
    summary = {
        "trials": 4,
        "seeds": 2,
        "actions": "sampled",
        "k_train": 2,
        "total_timesteps": 1000,
        "overrides": ["gamma=0.5"],
        "curves": {"s5 training": [0.1, 0.3, 0.5, 0.7], "mlp training": [0.2, 0.2, 0.2, 0.2]},
        "checks": [["s5 training: episodes 2-2 minus episode 1: +0.2", True]],
        "solved": None,
        "transitions": None,
    }
    text = meta_adaptation.report(summary)
    assert "overrides: gamma=0.5" in text and "- met: s5 training" in text
    rows = [line for line in text.splitlines() if line.startswith("| s5")]
    # Episodes 1, 2, 4; windows 2-2 and 3-4; mean.
    assert rows == ["| s5 training | 0.100 | 0.300 | 0.700 | 0.300 | 0.600 | 0.400 |"]


def test_transition_table_has_a_row_per_core_and_window():
    returns = np.array([[[1.0, 0.0, 1.0, 1.0, 1.0, 0.0]]])  # one seed, one trial of 6
    res = evaluation.Adaptation(
        evaluation.summarize(returns, returns >= 0), returns, np.ones_like(returns, bool)
    )
    table = meta_adaptation.transition_table({"s5 training": res}, 1.0, k_train=4)
    rows = table.splitlines()[2:]
    # Episodes 2-4: pairs SF FS SS -> after solved 1/2, after failed 1/1, 2 of 3 solved.
    assert rows[0] == "| s5 training | 2-4 | 0.500 | 1.000 | -0.500 | 0.667 |"
    # Episodes 5-6: pairs SS SF -> after solved 1/2, no failure before, 1 of 2 solved.
    assert rows[1] == "| s5 training | 5-6 | 0.500 | nan | nan | 0.500 |"


def test_checks_are_plain_json():
    curve = np.linspace(0.3, 0.9, 32)
    results = {"s5 training": _result(curve), "mlp training": _result(np.full(32, 0.3), seed=1)}
    checks = meta_adaptation.checks(results, "s5 training", k_train=16)
    assert json.loads(json.dumps(checks)) == [list(c) for c in checks]
