"""MMER against hand-computed numbers; the JSON-lines log; the learning-curve plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ssmrl.metrics import (
    MetricsWriter,
    last_episodes_mean,
    mmer,
    nanmean,
    plot_learning_curve,
    read_metrics,
    returns_matrix,
    truncate,
)

nan = math.nan


def test_mmer_max_over_updates_then_mean_over_seeds():
    returns = [  # updates x seeds
        [0.1, nan, -1.0],
        [0.5, 0.2, -0.5],
        [0.3, 0.4, nan],
    ]
    # per seed: max(0.1, 0.5, 0.3) = 0.5; max(0.2, 0.4) = 0.4; max(-1.0, -0.5) = -0.5
    assert mmer(returns) == pytest.approx((0.5 + 0.4 - 0.5) / 3)


def test_mmer_one_seed_and_undefined_cases():
    assert mmer([nan, -0.25, -0.75]) == -0.25
    assert mmer([[0.0, 1.0]]) == 0.5
    assert math.isnan(mmer([[0.3, nan], [0.2, nan]]))  # seed 1 never finished an episode
    assert math.isnan(mmer(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="updates, seeds"):
        mmer(np.zeros((2, 2, 2)))


def test_nanmean_without_warnings():
    with np.errstate(all="raise"):
        out = nanmean([[1.0, nan], [nan, nan]], axis=1)
    assert out[0] == 1.0 and math.isnan(out[1])


def test_writer_appends_flushed_lines_and_nulls_non_finite(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsWriter(path) as writer:
        writer.write({"update": 1, "loss": np.float32(0.5), "per_seed": np.array([nan, 2.0])})
        # flushed: readable before the writer closes
        assert json.loads(path.read_text()) == {"update": 1, "loss": 0.5, "per_seed": [None, 2.0]}
    with MetricsWriter(path) as writer:
        writer.write({"update": 2, "loss": math.inf})
    assert [r["update"] for r in read_metrics(path)] == [1, 2]
    assert read_metrics(path)[1]["loss"] is None
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_read_skips_a_torn_last_line_and_truncate_keeps_earlier_updates(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"update": u, "env_steps": 10 * u}) for u in (1, 2, 3)]
    path.write_text("\n".join(lines) + '\n{"update": 4, "env_')
    assert [r["update"] for r in read_metrics(path)] == [1, 2, 3]
    assert [r["update"] for r in truncate(path, 2)] == [1, 2]
    assert [r["update"] for r in read_metrics(path)] == [1, 2]
    assert truncate(path, 0) == [] and path.read_text() == ""


def test_returns_matrix_and_plot(tmp_path):
    records = [
        {"env_steps": 100, "mean_return_per_seed": [None, 0.5]},
        {"env_steps": 200, "mean_return_per_seed": [0.25, 0.75]},
    ]
    steps, returns = returns_matrix(records)
    np.testing.assert_array_equal(steps, [100, 200])
    np.testing.assert_array_equal(returns, [[nan, 0.5], [0.25, 0.75]])
    assert mmer(returns) == pytest.approx(0.5)
    path = plot_learning_curve(steps, returns, tmp_path / "curve.png", title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_last_episodes_mean_counts_back_whole_updates_then_part_of_one():
    # Seed 0: updates with (mean, count) (10, 4), (20, 0), (30, 3), (40, 2); the last 4
    # episodes are 40, 40, 30, 30 (one of update 3's episodes is left out).
    # Seed 1: 5 episodes in all, fewer than 6 -> NaN; seed 2 with n = 1: only the last.
    records = [
        {"env_steps": 1, "mean_return_per_seed": [10.0, 1.0, 5.0], "episodes_per_seed": [4, 2, 1]},
        {
            "env_steps": 2,
            "mean_return_per_seed": [None, None, None],
            "episodes_per_seed": [0, 0, 0],
        },
        {"env_steps": 3, "mean_return_per_seed": [30.0, 2.0, 6.0], "episodes_per_seed": [3, 3, 1]},
        {"env_steps": 4, "mean_return_per_seed": [40.0, None, 7.0], "episodes_per_seed": [2, 0, 2]},
    ]
    np.testing.assert_allclose(last_episodes_mean(records, 4)[0], (2 * 40 + 2 * 30) / 4)
    np.testing.assert_allclose(last_episodes_mean(records, 9)[0], (80 + 90 + 40) / 9)
    assert math.isnan(last_episodes_mean(records, 6)[1])
    assert last_episodes_mean(records, 1)[2] == 7.0
    assert math.isnan(last_episodes_mean(records, 10)[0])
    with pytest.raises(ValueError, match="episodes_per_seed"):
        last_episodes_mean([{"env_steps": 1, "mean_return_per_seed": [1.0]}])
