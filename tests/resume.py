"""Shared by the agents' tests: a run stopped by Ctrl-C, then resumed, and bit-identity."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ssmrl import configfile, driver, experiment


def interrupted_then_resumed(settings: experiment.Settings, run_dir: Path, stop_at: int):
    """Train ``settings`` into ``run_dir``, stopped (KeyboardInterrupt) after the chunk that
    reaches ``stop_at`` updates, then resumed to the end; the resumed `driver.Summary`."""
    built = experiment.build(settings)
    config = configfile.to_dict(settings)

    def stop(done, state):
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        driver.train(built.agent, run_dir=run_dir, run=settings.run, config=config, on_chunk=stop)
    return driver.train(built.agent, run_dir=run_dir, run=settings.run, config=config, resume=True)


def assert_same(a, b):
    """Bit-identical leaves at the same paths."""
    leaves = jax.tree_util.tree_leaves_with_path(a)
    expected = jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in leaves] == [p for p, _ in expected]
    for (path, x), (_, y) in zip(leaves, expected, strict=True):
        np.testing.assert_array_equal(
            np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path)
        )
