"""A memoryless core with the recurrent contract, the baseline for memory tasks."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import tyro

from ssmrl.cores.checks import check_positive


@dataclass(frozen=True)
class MLPOptions:
    """Options of the memoryless MLP core (`MLP`)."""

    name: tyro.conf.Suppress[str] = "mlp"
    """The core's registered name (the ``core.name`` of YAML files and flags)."""
    features: int = 128
    """Width H of every layer, and the output width."""
    num_layers: int = 2
    """Number of Dense+GELU layers."""

    def validate(self) -> None:
        """Raise ValueError if a size is below 1."""
        check_positive(self, "features", "num_layers")


class MLP(nn.Module):
    """``num_layers`` Dense+GELU layers applied to each step independently.

    The carry is an empty ``[B, 0]`` array and ``resets`` are ignored: the output at
    step t depends on ``xs[t]`` alone.

    | call         | inputs                                    | outputs                  |
    |--------------|-------------------------------------------|--------------------------|
    | ``__call__`` | carry [B, 0], xs [T, B, F], resets [T, B] | carry, ys [T, B, H]      |
    | ``step``     | carry [B, 0], x [B, F], reset [B]         | carry, y [B, H]          |
    | ``carries``  | carry [B, 0], xs [T, B, F], resets [T, B] | carries [T, B, 0], ys    |
    """

    options: MLPOptions = MLPOptions()

    def initialize_carry(self, batch_size: int) -> jax.Array:
        """Empty carry ``[batch_size, 0]``."""
        return jnp.zeros((batch_size, 0))

    @nn.compact
    def __call__(self, carry, xs, resets):
        h = xs
        for _ in range(self.options.num_layers):
            h = nn.gelu(nn.Dense(self.options.features)(h))
        return carry, h

    def carries(self, carry, xs, resets):
        carry, ys = self(carry, xs, resets)
        return jnp.broadcast_to(carry, (xs.shape[0], *carry.shape)), ys

    def step(self, carry, x, reset):
        return self(carry, x, reset)
