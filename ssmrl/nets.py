"""Feed-forward networks that agents share: an MLP, a policy head per action space, a value head.

```python
policy = PolicyHead.from_space(env.action_space(env_params), hidden=(64,))
value = ValueHead(hidden=(64,))
pi = policy.apply(policy_params, features)         # distrax distribution, batch shape [...]
v = value.apply(value_params, features)            # [...]
```

Every module maps features ``[..., F]`` with any leading batch shape (``[B, F]``,
``[T, B, F]``, ...) and acts on the last axis only.

Layers follow ``flax.linen.Sequential``'s layout: one list ``layers`` of Dense,
optional LayerNorm, and activation entries, so parameters are named ``layers_<i>`` by
position in that list (activations hold no parameters and leave gaps in the numbering):

| module                                 | layers                       | params             |
|----------------------------------------|------------------------------|--------------------|
| ``MLP((64,), out=4)``                  | Dense, act, Dense            | layers_0, 2        |
| ``MLP((64,), out=4, layer_norm=True)`` | Dense, LayerNorm, act, Dense | layers_0, 1, 3     |
| ``MLP((64, 64))``                      | Dense, act, Dense, act       | layers_0, 2        |

The default heads (one GELU layer of 64, an orthogonally initialised output) are exactly
the ``nn.Sequential([Dense(64), gelu, Dense(n, orthogonal_init(scale))])`` heads that PPO
used before this module existed: a module that holds them as attributes ``policy`` and
``value`` gets the same parameter paths, hence the same initial values from the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
from gymnax.environments import spaces

from ssmrl.linalg import orthogonal_init

Activation = Callable[[jax.Array], jax.Array]


def _layers(
    widths: Sequence[int],
    out: int | None,
    activation: Activation,
    layer_norm: bool,
    out_scale: float | None,
) -> list[Any]:
    """Dense [-> LayerNorm] -> activation per width, then an optional output Dense."""
    layers: list[Any] = []
    for width in widths:
        layers.append(nn.Dense(width))
        if layer_norm:
            layers.append(nn.LayerNorm())
        layers.append(activation)
    if out is not None:
        if out_scale is None:
            layers.append(nn.Dense(out))
        else:
            layers.append(nn.Dense(out, kernel_init=orthogonal_init(out_scale)))
    return layers


def _run(layers: Sequence[Any], x: jax.Array) -> jax.Array:
    for layer in layers:
        x = layer(x)
    return x


class MLP(nn.Module):
    """Dense [-> LayerNorm] -> activation for each width, then an optional linear output.

    | input | shape      |
    |-------|------------|
    | x     | [..., F]   |
    | out   | [..., out] (or [..., widths[-1]] without an output layer; x itself if both empty) |

    Hidden kernels use flax's default (LeCun normal) initialisation and zero biases.
    The output kernel is ``orthogonal_init(out_scale)`` (``out_scale=None``: LeCun normal;
    ``0.0``: zeros, as DreamerV3 starts its reward and critic outputs). DreamerV3's blocks
    are ``MLP(widths, layer_norm=True, activation=nn.silu)``.
    """

    widths: Sequence[int]
    out: int | None = None
    activation: Activation = nn.gelu
    layer_norm: bool = False
    out_scale: float | None = 1.0

    def setup(self):
        self.layers = _layers(
            self.widths, self.out, self.activation, self.layer_norm, self.out_scale
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return _run(self.layers, x)


class PolicyHead(nn.Module):
    """An MLP from features to an action distribution.

    | call           | input                | output                                          |
    |----------------|----------------------|-------------------------------------------------|
    | ``__call__``   | h [..., F]           | distrax distribution, batch shape [...]         |
    | ``outputs``    | h [..., F]           | logits [..., n] (discrete) or mean [..., n]     |
    | ``distribution`` | outputs [..., n]   | the distribution those outputs parameterise     |

    - discrete (``continuous=False``): ``distrax.Categorical(logits)``; samples ``[...]`` int.
    - continuous: ``distrax.MultivariateNormalDiag(mean, exp(log_std))``; samples
      ``[..., n]``. ``log_std`` ``[n]`` is a state-independent parameter of this module,
      initialised to 0 (standard deviation 1).

    The output kernel is ``orthogonal_init(out_scale)``; the default 0.01 starts the policy
    near uniform (discrete) or near a zero mean (continuous). ``outputs`` and
    ``distribution`` let a caller carry the raw arrays through ``lax.scan`` and build the
    distribution later. Build one from a gymnax space with :meth:`from_space`.
    """

    action_dim: int
    continuous: bool = False
    hidden: Sequence[int] = (64,)
    activation: Activation = nn.gelu
    layer_norm: bool = False
    out_scale: float | None = 0.01

    def setup(self):
        self.layers = _layers(
            self.hidden, self.action_dim, self.activation, self.layer_norm, self.out_scale
        )
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))

    @classmethod
    def from_space(cls, action_space: Any, **kwargs: Any) -> PolicyHead:
        """The head for a gymnax ``spaces.Discrete`` or 1-D ``spaces.Box`` action space.

        ``kwargs`` are the other fields (``hidden``, ``activation``, ``layer_norm``,
        ``out_scale``, ``name``, ...). Any other space raises ``ValueError``.
        """
        if isinstance(action_space, spaces.Discrete):
            return cls(action_dim=int(action_space.n), continuous=False, **kwargs)
        if isinstance(action_space, spaces.Box):
            shape = tuple(action_space.shape)
            if len(shape) != 1:
                raise ValueError(
                    f"PolicyHead supports 1-D Box action spaces, got shape {shape}; "
                    "flatten the action space first"
                )
            return cls(action_dim=int(shape[0]), continuous=True, **kwargs)
        raise ValueError(
            f"PolicyHead supports gymnax spaces.Discrete and 1-D spaces.Box action spaces, "
            f"got {type(action_space).__name__}"
        )

    def outputs(self, h: jax.Array) -> jax.Array:
        return _run(self.layers, h)

    def distribution(self, outputs: jax.Array) -> distrax.Distribution:
        if self.continuous:
            return distrax.MultivariateNormalDiag(outputs, jnp.exp(self.log_std))
        return distrax.Categorical(logits=outputs)

    def __call__(self, h: jax.Array) -> distrax.Distribution:
        return self.distribution(self.outputs(h))


class ValueHead(nn.Module):
    """An MLP from features to one scalar per batch element.

    | input | shape     |
    |-------|-----------|
    | h     | [..., F]  |
    | out   | [...]     |

    The output kernel is ``orthogonal_init(out_scale)`` (default 1.0, as PPO uses).
    """

    hidden: Sequence[int] = (64,)
    activation: Activation = nn.gelu
    layer_norm: bool = False
    out_scale: float | None = 1.0

    def setup(self):
        self.layers = _layers(self.hidden, 1, self.activation, self.layer_norm, self.out_scale)

    def __call__(self, h: jax.Array) -> jax.Array:
        return _run(self.layers, h)[..., 0]
