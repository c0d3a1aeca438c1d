"""Configuration pieces shared by the agents: the optimiser.

A memory core's settings are its options dataclass (`ssmrl.cores.S5Options`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import optax


@dataclass(frozen=True)
class OptimConfig:
    """Adam with global-norm gradient clipping and an optional linear learning-rate anneal."""

    lr: float = 2.5e-4
    anneal_lr: bool = False
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5

    def build(self, total_steps: int) -> optax.GradientTransformation:
        """Optimiser whose learning rate (if annealed) reaches 0 after ``total_steps`` updates."""
        lr = optax.linear_schedule(self.lr, 0.0, total_steps) if self.anneal_lr else self.lr
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adam(lr, eps=self.adam_eps),
        )
