"""An env's actions as the float vectors a world model and its actor work with.

A ``spaces.Discrete(n)`` action is the one-hot vector of its ``n`` classes; a 1-D
``spaces.Box`` action is its own float vector, clipped to the box only when it is sent
to the env.

```python
codec = ActionCodec.of(env.action_space(env_params))
vector = codec.encode(action)         # [..., A] float32
env_action = codec.to_env(codec.decode(vector))
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces


@dataclass(frozen=True)
class ActionCodec:
    """How actions of one gymnax action space map to and from ``[..., A]`` float vectors."""

    size: int
    """A: the number of classes of a discrete space, or the length of a box's actions"""
    discrete: bool
    low: Any = None
    """the box's lower bounds (None for a discrete space)"""
    high: Any = None
    """the box's upper bounds (None for a discrete space)"""

    @classmethod
    def of(cls, space: Any) -> ActionCodec:
        """The codec of a ``spaces.Discrete`` or 1-D ``spaces.Box``; ValueError otherwise."""
        if isinstance(space, spaces.Discrete):
            return cls(int(space.n), True)
        if isinstance(space, spaces.Box) and len(space.shape) == 1:
            return cls(int(space.shape[0]), False, space.low, space.high)
        raise ValueError(
            f"actions must come from a Discrete or a 1-D Box space, got {type(space).__name__} "
            f"of shape {getattr(space, 'shape', None)}"
        )

    def encode(self, action: jax.Array) -> jax.Array:
        """Actions ``[...]`` int (discrete) or ``[..., A]`` -> ``[..., A]`` float32."""
        if self.discrete:
            return jax.nn.one_hot(action, self.size)
        return jnp.asarray(action).astype(jnp.float32)

    def decode(self, vector: jax.Array) -> jax.Array:
        """``[..., A]`` -> the class ``[...]`` of the largest entry (discrete) or the vector."""
        return jnp.argmax(vector, -1) if self.discrete else vector

    def to_env(self, action: jax.Array) -> jax.Array:
        """An action as the env takes it: int32 classes, or floats clipped to the box."""
        if self.discrete:
            return jnp.asarray(action).astype(jnp.int32)
        return jnp.clip(action, self.low, self.high)


def obs_size(env: Any, env_params: Any) -> int:
    """The number of floats in one of ``env``'s observations, flattened."""
    return int(np.prod(env.observation_space(env_params).shape))
