"""The checks, report and width matching of scripts/imagination_faceoff.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ssmrl import experiment
from ssmrl.configfile import ConfigError
from ssmrl.matching import param_count

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "imagination_faceoff.py"
_spec = importlib.util.spec_from_file_location("imagination_faceoff", _SCRIPT)
faceoff = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = faceoff
_spec.loader.exec_module(faceoff)

HORIZONS = [1, 8, 128]


def _errors(accuracy):
    return {"accuracy": accuracy, "mse": [0.01] * len(accuracy)}


def _result(accuracy, params=1000):
    return {
        "horizons": HORIZONS,
        "context": 128,
        "episodes": 64,
        "model": _errors(accuracy),
        "copy_last": _errors([0.7, 0.6, 0.5]),
        "marginal": _errors([0.15, 0.15, 0.15]),
        "params": params,
        "features": 10,
        "update": 2000,
        "imagination_steps_per_s": 1e5,
        "wall_s": 3.0,
    }


def test_checks_are_met_and_missed_by_hand_built_figures():
    met = faceoff.checks({"s5": _result([0.99, 0.96, 0.95]), "gru": _result([0.98, 0.97, 0.8])})
    assert [ok for _, ok in met] == [True, True, True, True, True, True]
    missed = faceoff.checks({"s5": _result([0.99, 0.94, 0.89]), "gru": _result([0.9, 0.97, 0.8])})
    # s5 short-horizon, s5 baselines, gru short-horizon, gru baselines, s5 at 128, the ratio.
    assert [ok for _, ok in missed] == [False, True, False, True, False, False]
    below_copy = faceoff.checks({"s5": _result([0.6, 0.96, 0.95])})
    assert [ok for _, ok in below_copy] == [False, False, True]


def test_report_lists_every_core_and_baseline():
    summary = {"env": "TwoRoomsRecall", "results": {"s5": _result([0.99, 0.96, 0.95])}}
    summary["checks"] = faceoff.checks(summary["results"])
    text = faceoff.report(summary)
    assert "| 128 | 0.950 (0.0100) | 0.500 (0.0100) | 0.150 (0.0100) |" in text
    assert "- [x] s5: accuracy >= 0.9 at horizon 128 (0.950)" in text


def test_other_cores_get_the_s5_model_size():
    overrides = {"core": {"features": 16, "state_size": 8}, "hidden": 16, "depth": 1}
    settings = experiment.load_settings("worldmodel", overrides={**overrides, "latents": 4})
    target = param_count(settings.hparams.world_model(), 72, 5)
    for core in ("gru", "mlp"):
        resolved, count = faceoff.core_settings(settings, core, 72, 5)
        assert resolved.hparams.core.name == core
        assert count == param_count(resolved.hparams.world_model(), 72, 5)
        assert abs(count - target) <= 0.1 * target


def test_core_specs_set_options_and_name_their_runs():
    assert faceoff.parse_core("gru") == ("gru", {})
    assert faceoff.parse_core("gru:chrono_steps=256") == ("gru", {"chrono_steps": 256})
    assert faceoff.run_name("TwoRoomsRecall", "gru:chrono_steps=256") == (
        "TwoRoomsRecall-gru-chrono_steps256"
    )
    overrides = {"core": {"features": 16, "state_size": 8}, "hidden": 16, "depth": 1}
    settings = experiment.load_settings("worldmodel", overrides={**overrides, "latents": 4})
    resolved, _ = faceoff.core_settings(settings, "gru:chrono_steps=64", 72, 5)
    assert resolved.hparams.core.chrono_steps == 64
    for spec, match in (
        ("gru:chrono_steps", "expected NAME:KEY=VALUE"),
        ("s5:state_size=8", "s5 is the reference"),
        ("gru:features=8", "matched to S5's"),
    ):
        with pytest.raises(ConfigError, match=match):
            faceoff.parse_core(spec)
    with pytest.raises(ConfigError, match="core 'gru:window=8'.*window"):
        faceoff.core_settings(settings, "gru:window=8", 72, 5)


def test_each_gru_is_compared_with_s5_at_the_longest_horizon():
    results = {
        "s5": _result([0.99, 0.96, 0.95]),
        "gru": _result([0.98, 0.97, 0.8]),
        "gru:chrono_steps=256": _result([0.98, 0.97, 0.93]),
    }
    ratio = [(text, ok) for text, ok in faceoff.checks(results) if "error at" in text]
    assert [ok for _, ok in ratio] == [True, False]
    assert "gru:chrono_steps=256's (0.050 vs 0.070)" in ratio[1][0]
