"""A memoryless core with the recurrent contract, the baseline for memory tasks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """``num_layers`` Dense+GELU layers applied to each step independently.

    The carry is an empty ``[B, 0]`` array and ``resets`` are ignored: the output at
    step t depends on ``xs[t]`` alone.

    | call         | inputs                                  | outputs             |
    |--------------|-----------------------------------------|---------------------|
    | ``__call__`` | carry [B, 0], xs [T, B, F], resets [T, B] | carry, ys [T, B, H] |
    | ``step``     | carry [B, 0], x [B, F], reset [B]       | carry, y [B, H]     |
    """

    features: int = 128
    num_layers: int = 2

    def initialize_carry(self, batch_size: int) -> jax.Array:
        """Empty carry ``[batch_size, 0]``."""
        return jnp.zeros((batch_size, 0))

    @nn.compact
    def __call__(self, carry, xs, resets):
        h = xs
        for _ in range(self.num_layers):
            h = nn.gelu(nn.Dense(self.features)(h))
        return carry, h

    def step(self, carry, x, reset):
        return self(carry, x, reset)
