"""Tests for ssmrl.config: the optimiser settings."""

from __future__ import annotations

import numpy as np
import optax

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
