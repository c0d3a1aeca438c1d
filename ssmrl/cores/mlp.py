"""A memoryless core with the recurrent contract, the baseline for memory tasks."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import tyro

from ssmrl.cores.checks import StackOptions


@dataclass(frozen=True)
class MLPOptions(StackOptions):
    """Options of the memoryless MLP core (`MLP`): ``num_layers`` Dense+GELU layers."""

    name: tyro.conf.Suppress[str] = "mlp"
    num_layers: int = 2


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
