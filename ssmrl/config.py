"""Configuration pieces shared by the agents: the memory core and the optimiser."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import flax.linen as nn
import optax

from ssmrl import cores


@dataclass(frozen=True)
class CoreConfig:
    """Which memory core to build and its size; fields a core lacks are ignored.

    ``state_size``, ``blocks``, ``scan``, ``input_decay`` and the range ``dt_min`` ..
    ``dt_max`` of the initial step sizes (timescales) apply to S5 only.
    """

    name: str = "s5"
    features: int = 256
    num_layers: int = 2
    state_size: int = 128
    blocks: int = 1
    scan: str = "auto"
    input_decay: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1

    def build(self) -> nn.Module:
        """The flax module; raises ValueError for an unknown name or impossible sizes."""
        allowed = cores.options(self.name)
        options = {k: v for k, v in dataclasses.asdict(self).items() if k in allowed}
        return cores.make(self.name, **options)


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
