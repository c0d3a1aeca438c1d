"""Configuration pieces shared by the agents: the optimiser, the update count check and
the range checks of their ``validate`` methods.

A memory core's settings are its options dataclass (`ssmrl.cores.S5Options`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optax


@dataclass(frozen=True)
class OptimConfig:
    """Adam with global-norm gradient clipping and an optional linear learning-rate anneal."""

    lr: float = 2.5e-4
    anneal_lr: bool = False
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is not finite or out of range."""
        for name, low, high in (
            ("lr", 0.0, 1.0),
            ("max_grad_norm", 0.0, 1e6),
            ("adam_eps", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and low < value <= high):
                raise ValueError(f"{name} must be finite and in ({low:g}, {high:g}], got {value}")

    def build(self, total_steps: int) -> optax.GradientTransformation:
        """Optimiser whose learning rate (if annealed) reaches 0 after ``total_steps`` updates."""
        lr = optax.linear_schedule(self.lr, 0.0, total_steps) if self.anneal_lr else self.lr
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adam(lr, eps=self.adam_eps),
        )


def check_whole_updates(total_timesteps: int, steps_per_update: int) -> None:
    """Raise ValueError unless ``total_timesteps`` is a whole, positive number of updates
    of ``steps_per_update`` env steps, naming the nearest valid totals."""
    updates = total_timesteps // steps_per_update
    if updates < 1:
        raise ValueError(
            f"total_timesteps={total_timesteps} is less than one update "
            f"(num_envs * num_steps = {steps_per_update})"
        )
    if total_timesteps % steps_per_update:
        below = updates * steps_per_update
        raise ValueError(
            f"total_timesteps={total_timesteps} is not a whole number of updates of "
            f"num_envs * num_steps = {steps_per_update} steps; nearest: {below} or "
            f"{below + steps_per_update}"
        )


def check_counts(config: Any, *names: str) -> None:
    """Raise ValueError unless each named setting of ``config`` is an int >= 1 (not a bool)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def check_range(
    config: Any, names: tuple[str, ...], low: float, high: float, *, open_low: bool = False
) -> None:
    """Raise ValueError unless each named setting lies in ``[low, high]`` (``(low, high]``
    with ``open_low``); NaN never does."""
    for name in names:
        value = getattr(config, name)
        inside = low < value <= high if open_low else low <= value <= high
        if not inside:
            bracket = "(" if open_low else "["
            raise ValueError(f"{name} must lie in {bracket}{low:g}, {high:g}], got {value}")
