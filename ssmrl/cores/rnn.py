"""GRU and LSTM memory cores with the same contract as S5.

Input projections for the whole sequence are one matmul outside the time loop;
only the recurrent matmul runs inside ``lax.scan``. Layers run one after another
over the full sequence. A reset zeroes a layer's carry before its input is used.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssmrl.linalg import orthogonal_init


def _dense_params(module: nn.Module, name: str, fan_in: int, features: int, gates: int):
    """Input kernel [F, G*H], recurrent kernel [H, G*H], bias [G*H]."""
    wi = module.param(f"{name}_wi", nn.initializers.lecun_normal(), (fan_in, gates * features))
    wh = module.param(
        f"{name}_wh",
        lambda key, shape: jnp.concatenate(
            [orthogonal_init()(k, (features, features)) for k in jax.random.split(key, gates)],
            axis=1,
        ),
        (features, gates * features),
    )
    b = module.param(f"{name}_b", nn.initializers.zeros, (gates * features,))
    return wi, wh, b


def _time_scan(cell, carry, gi, resets):
    """Run ``cell(carry, gi_t) -> carry`` over time with resets; returns (carry, ys)."""

    def step(carry, inputs):
        gi_t, r_t = inputs
        carry = jax.tree.map(lambda c: jnp.where(r_t[:, None], 0.0, c), carry)
        carry, y = cell(carry, gi_t)
        return carry, y

    return jax.lax.scan(step, carry, (gi, resets))


def _gru_cell(wh, bh_n):
    """PyTorch/flax-convention GRU: the reset gate multiplies ``W_hn h + b_hn``."""

    def cell(h, gi):
        gh = h @ wh
        hidden = h.shape[-1]
        r = nn.sigmoid(gi[..., :hidden] + gh[..., :hidden])
        z = nn.sigmoid(gi[..., hidden : 2 * hidden] + gh[..., hidden : 2 * hidden])
        n = jnp.tanh(gi[..., 2 * hidden :] + r * (gh[..., 2 * hidden :] + bh_n))
        h = (1.0 - z) * n + z * h
        return h, h

    return cell


class GRU(nn.Module):
    """Stacked GRU core.

    | call         | inputs                                     | outputs                |
    |--------------|--------------------------------------------|------------------------|
    | ``__call__`` | carry [B, L, H], xs [T, B, F], resets [T, B] | carry, ys [T, B, H]  |
    | ``step``     | carry [B, L, H], x [B, F], reset [B]       | carry, y [B, H]        |
    """

    features: int = 128
    num_layers: int = 1

    def initialize_carry(self, batch_size: int) -> jax.Array:
        """Zero state ``[batch_size, num_layers, features]``."""
        return jnp.zeros((batch_size, self.num_layers, self.features))

    def _layers(self, in_features: int):
        out = []
        for i in range(self.num_layers):
            fan_in = in_features if i == 0 else self.features
            wi, wh, b = _dense_params(self, f"layer{i}", fan_in, self.features, 3)
            bh_n = self.param(f"layer{i}_bhn", nn.initializers.zeros, (self.features,))
            out.append((wi, wh, b, bh_n))
        return out

    @nn.compact
    def __call__(self, carry, xs, resets):
        h, new = xs, []
        for i, (wi, wh, b, bh_n) in enumerate(self._layers(xs.shape[-1])):
            c, h = _time_scan(_gru_cell(wh, bh_n), carry[:, i], h @ wi + b, resets)
            new.append(c)
        return jnp.stack(new, axis=1), h

    def step(self, carry, x, reset):
        new, ys = self(carry, x[None], reset[None])
        return new, ys[0]


class LSTMCarry(NamedTuple):
    """LSTM state; each field ``[B, L, H]``."""

    cell: jax.Array
    hidden: jax.Array


def _lstm_cell(wh):
    def cell(carry, gi):
        c, h = carry
        g = gi + h @ wh
        i, f, u, o = jnp.split(g, 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(u)
        h = nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    return cell


class LSTM(nn.Module):
    """Stacked LSTM core (forget-gate bias initialised to 1).

    | call         | inputs                                         | outputs             |
    |--------------|------------------------------------------------|---------------------|
    | ``__call__`` | carry LSTMCarry, xs [T, B, F], resets [T, B]   | carry, ys [T, B, H] |
    | ``step``     | carry LSTMCarry, x [B, F], reset [B]           | carry, y [B, H]     |
    """

    features: int = 128
    num_layers: int = 1

    def initialize_carry(self, batch_size: int) -> LSTMCarry:
        """Zero cell and hidden state, each ``[batch_size, num_layers, features]``."""
        zeros = jnp.zeros((batch_size, self.num_layers, self.features))
        return LSTMCarry(zeros, zeros)

    @nn.compact
    def __call__(self, carry, xs, resets):
        h, cells, hiddens = xs, [], []
        for i in range(self.num_layers):
            fan_in = xs.shape[-1] if i == 0 else self.features
            wi, wh, b = _dense_params(self, f"layer{i}", fan_in, self.features, 4)
            forget_bias = (
                jnp.zeros(4 * self.features).at[self.features : 2 * self.features].set(1.0)
            )
            layer_carry = (carry.cell[:, i], carry.hidden[:, i])
            (c, hid), h = _time_scan(_lstm_cell(wh), layer_carry, h @ wi + b + forget_bias, resets)
            cells.append(c)
            hiddens.append(hid)
        return LSTMCarry(jnp.stack(cells, axis=1), jnp.stack(hiddens, axis=1)), h

    def step(self, carry, x, reset):
        new, ys = self(carry, x[None], reset[None])
        return new, ys[0]
