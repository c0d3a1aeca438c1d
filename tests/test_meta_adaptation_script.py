"""Tests for the proof checks of scripts/meta_adaptation.py on hand-built returns."""

from __future__ import annotations

import importlib.util
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


def test_a_rising_curve_meets_all_four_checks():
    rising = np.linspace(0.3, 0.9, 32)
    results = {"s5 training": _result(rising), "mlp training": _result(np.full(32, 0.3), seed=1)}
    checks = meta_adaptation.checks(results, "s5 training", k_train=16)
    assert len(checks) == 4
    assert _met(checks) == [True, True, True, True]
    assert "episodes 2-16 minus episode 1" in checks[0][0]
    assert "episodes 17-32 minus 9-16" in checks[1][0]
    assert "episodes 25-32 minus 17-24" in checks[2][0]


def test_a_plateau_from_episode_8_fails_both_checks_past_the_training_length():
    curve = np.concatenate([np.linspace(0.3, 0.8, 8), np.full(24, 0.8)])
    results = {"s5 training": _result(curve), "mlp training": _result(np.full(32, 0.3), seed=1)}
    met = _met(meta_adaptation.checks(results, "s5 training", k_train=16))
    assert met == [True, False, False, True]


def test_a_curve_that_peaks_after_the_training_length_then_falls_fails_the_last_half():
    # Rises to episode 20, then gives back a fifth of the gain by episode 32: the
    # episodes past 16 still beat 9-16 on average, but do not keep rising.
    curve = np.concatenate([np.linspace(0.3, 0.8, 20), np.linspace(0.79, 0.7, 12)])
    results = {"s5 training": _result(curve), "mlp training": _result(np.full(32, 0.3), seed=1)}
    met = _met(meta_adaptation.checks(results, "s5 training", k_train=16))
    assert met == [True, True, False, True]


def test_the_mlp_check_compares_the_same_task_set_and_is_left_out_without_an_mlp():
    curve = np.linspace(0.3, 0.9, 32)
    results = {
        "s5 held out": _result(curve),
        "mlp training": _result(np.full(32, 0.95), seed=1),  # another set: not compared
        "mlp held out": _result(np.full(32, 0.1), seed=2),
    }
    checks = meta_adaptation.checks(results, "s5 held out", k_train=16)
    assert "mlp held out" in checks[3][0]
    assert checks[3][1]
    assert len(meta_adaptation.checks({"s5 held out": _result(curve)}, "s5 held out", 16)) == 3


def test_evaluation_only_to_the_training_length_has_no_past_check():
    results = {"s5 training": _result(np.linspace(0.3, 0.9, 16))}
    checks = meta_adaptation.checks(results, "s5 training", k_train=16)
    assert len(checks) == 1
    assert checks[0][1]


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
