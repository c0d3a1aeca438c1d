"""Tests for ssmrl.config: the optimiser settings and the shared checks."""

from __future__ import annotations

import numpy as np
import optax
import pytest

from ssmrl.config import OptimConfig


def test_annealed_learning_rate_reaches_zero_and_gradients_are_clipped():
    cfg = OptimConfig(lr=0.1, anneal_lr=True, max_grad_norm=1.0, adam_eps=1e-8)
    tx = cfg.build(total_steps=4)
    params = {"w": np.zeros(2, np.float32)}
    state = tx.init(params)
    grads = {"w": np.array([30.0, 40.0], np.float32)}  # norm 50, clipped to 1
    sizes = []
    for _ in range(5):
        updates, state = tx.update(grads, state, params)
        sizes.append(float(np.abs(np.asarray(updates["w"])).max()))
    # Adam's first step moves each coordinate by lr (the sign of the clipped gradient).
    np.testing.assert_allclose(sizes[0], 0.1, rtol=1e-3)
    assert sizes[1] < sizes[0] and sizes[4] == 0.0
    fixed = OptimConfig(lr=0.1).build(total_steps=4)
    updates, _ = fixed.update(grads, fixed.init(params), params)
    np.testing.assert_allclose(np.abs(np.asarray(updates["w"])), 0.1, rtol=1e-3)
    assert isinstance(tx, optax.GradientTransformation)


def test_check_whole_updates_names_the_nearest_totals():
    from ssmrl.config import check_whole_updates

    check_whole_updates(4096, 2048)
    with pytest.raises(ValueError, match="nearest: 2048 or 4096"):
        check_whole_updates(2100, 2048)
    with pytest.raises(ValueError, match="less than one update"):
        check_whole_updates(100, 2048)


def test_count_and_range_checks_name_the_setting_and_its_bounds():
    from types import SimpleNamespace

    from ssmrl.config import check_counts, check_range

    cfg = SimpleNamespace(a=1, b=0, flag=True, half=0.5, zero=0.0, nan=float("nan"), big=2.0)
    check_counts(cfg, "a")
    for name, shown in (("b", "0"), ("flag", "True"), ("half", "0.5")):
        with pytest.raises(ValueError, match=f"^{name} must be a whole number >= 1, got {shown}$"):
            check_counts(cfg, "a", name)
    check_range(cfg, ("half", "zero"), 0.0, 1.0)
    check_range(cfg, ("half",), 0.0, 1.0, open_low=True)
    with pytest.raises(ValueError, match=r"^zero must lie in \(0, 1\], got 0.0$"):
        check_range(cfg, ("half", "zero"), 0.0, 1.0, open_low=True)
    with pytest.raises(ValueError, match=r"^nan must lie in \[0, 1e\+06\], got nan$"):
        check_range(cfg, ("nan",), 0.0, 1e6)
    with pytest.raises(ValueError, match=r"^big must lie in \[0, 1\], got 2.0$"):
        check_range(cfg, ("big",), 0.0, 1.0)
