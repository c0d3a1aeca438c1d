"""GRU and LSTM memory cores with the same contract as S5.

Input projections for the whole sequence are one matmul outside the time loop;
only the recurrent matmul runs inside ``lax.scan``. Layers run one after another
over the full sequence. A reset zeroes a layer's carry before its input is used.
The scan emits each layer's carry after every step: the last one is the new carry,
and a layer's hidden states are its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import tyro

from ssmrl.cores.checks import StackOptions, check_positive
from ssmrl.linalg import orthogonal_init


@dataclass(frozen=True)
class GRUOptions(StackOptions):
    """Options of the stacked GRU core (`GRU`)."""

    name: tyro.conf.Suppress[str] = "gru"
    chrono_steps: int = 0
    """If >= 2, chrono initialisation of the update gate: each unit's bias starts at
    log(u), u ~ U[1, chrono_steps - 1], so at first a unit keeps its state for 2 to
    chrono_steps steps (its keep fraction is sigmoid(log u) = u / (1 + u)); 0 starts
    every bias at zero (about 2 steps)."""

    def validate(self) -> None:
        """Raise ValueError if a size is below 1 or ``chrono_steps`` is 1 or negative."""
        check_positive(self, "features", "num_layers")
        if self.chrono_steps < 0 or self.chrono_steps == 1:
            raise ValueError(f"chrono_steps must be 0 or >= 2, got {self.chrono_steps}")


@dataclass(frozen=True)
class LSTMOptions(StackOptions):
    """Options of the stacked LSTM core (`LSTM`)."""

    name: tyro.conf.Suppress[str] = "lstm"


def _dense_params(
    module: nn.Module,
    name: str,
    fan_in: int,
    features: int,
    gates: int,
    bias_init: nn.initializers.Initializer = nn.initializers.zeros,
):
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
    b = module.param(f"{name}_b", bias_init, (gates * features,))
    return wi, wh, b


def _time_scan(cell, carry, gi, resets):
    """Run ``cell(carry, gi_t) -> carry`` over time with resets.

    | arg    | shape                     |
    |--------|---------------------------|
    | carry  | pytree of [B, H]          |
    | gi     | [T, B, G*H]               |
    | resets | [T, B]                    |
    | return | pytree of [T, B, H]: the carry after every step |
    """

    def step(carry, inputs):
        gi_t, r_t = inputs
        carry = jax.tree.map(lambda c: jnp.where(r_t[:, None], 0.0, c), carry)
        carry = cell(carry, gi_t)
        return carry, carry

    return jax.lax.scan(step, carry, (gi, resets))[1]


def _chrono_bias(steps: int) -> nn.initializers.Initializer:
    """GRU bias [3H] (gates r, z, n) with the update gate z's part at log(U[1, steps - 1])
    (Tallec & Ollivier, 2018): with ``h' = (1 - z) n + z h`` a unit then forgets a
    fraction 1 / (1 + u) per step, a memory of about 1 + u steps."""

    def init(key, shape, dtype=jnp.float32):
        hidden = shape[0] // 3
        u = jax.random.uniform(key, (hidden,), dtype, 1.0, steps - 1.0)
        return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(jnp.log(u))

    return init


def _gru_cell(wh, bh_n):
    """PyTorch/flax-convention GRU: the reset gate multiplies ``W_hn h + b_hn``."""

    def cell(h, gi):
        gh = h @ wh
        hidden = h.shape[-1]
        r = nn.sigmoid(gi[..., :hidden] + gh[..., :hidden])
        z = nn.sigmoid(gi[..., hidden : 2 * hidden] + gh[..., hidden : 2 * hidden])
        n = jnp.tanh(gi[..., 2 * hidden :] + r * (gh[..., 2 * hidden :] + bh_n))
        return (1.0 - z) * n + z * h

    return cell


class GRU(nn.Module):
    """Stacked GRU core.

    | call         | inputs                                       | outputs                  |
    |--------------|----------------------------------------------|--------------------------|
    | ``__call__`` | carry [B, L, H], xs [T, B, F], resets [T, B] | carry, ys [T, B, H]      |
    | ``step``     | carry [B, L, H], x [B, F], reset [B]         | carry, y [B, H]          |
    | ``carries``  | carry [B, L, H], xs [T, B, F], resets [T, B] | carries [T, B, L, H], ys |

    ``carries[t]`` is the carry after ``xs[t]``; ``__call__`` returns ``carries[-1]``.
    """

    options: GRUOptions = GRUOptions()

    def initialize_carry(self, batch_size: int) -> jax.Array:
        """Zero state ``[batch_size, num_layers, features]``."""
        return jnp.zeros((batch_size, self.options.num_layers, self.options.features))

    @nn.compact
    def _states(self, carry, xs, resets):
        """Each layer's states [T, B, H] (a list of L); the last layer's are the outputs."""
        width, steps = self.options.features, self.options.chrono_steps
        bias_init = _chrono_bias(steps) if steps else nn.initializers.zeros
        h, states = xs, []
        for i in range(self.options.num_layers):
            wi, wh, b = _dense_params(self, f"layer{i}", h.shape[-1], width, 3, bias_init)
            bh_n = self.param(f"layer{i}_bhn", nn.initializers.zeros, (width,))
            h = _time_scan(_gru_cell(wh, bh_n), carry[:, i], h @ wi + b, resets)
            states.append(h)
        return states

    def __call__(self, carry, xs, resets):
        states = self._states(carry, xs, resets)
        return jnp.stack([h[-1] for h in states], axis=1), states[-1]

    def carries(self, carry, xs, resets):
        states = self._states(carry, xs, resets)
        return jnp.stack(states, axis=2), states[-1]

    def step(self, carry, x, reset):
        carry, ys = self(carry, x[None], reset[None])
        return carry, ys[0]


class LSTMCarry(NamedTuple):
    """LSTM state; each field ``[B, L, H]`` (``[T, B, L, H]`` from ``LSTM.carries``)."""

    cell: jax.Array
    hidden: jax.Array


def _lstm_cell(wh):
    def cell(carry, gi):
        c, h = carry
        g = gi + h @ wh
        i, f, u, o = jnp.split(g, 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(u)
        return c, nn.sigmoid(o) * jnp.tanh(c)

    return cell


class LSTM(nn.Module):
    """Stacked LSTM core (forget-gate bias initialised to 1).

    | call         | inputs                                       | outputs                   |
    |--------------|----------------------------------------------|---------------------------|
    | ``__call__`` | carry LSTMCarry, xs [T, B, F], resets [T, B] | carry, ys [T, B, H]       |
    | ``step``     | carry LSTMCarry, x [B, F], reset [B]         | carry, y [B, H]           |
    | ``carries``  | carry LSTMCarry, xs [T, B, F], resets [T, B] | carries LSTMCarry, ys     |

    ``carries`` holds fields ``[T, B, L, H]``; ``carries[t]`` (each field indexed) is the
    carry after ``xs[t]``, and ``__call__`` returns ``carries[-1]``.
    """

    options: LSTMOptions = LSTMOptions()

    def initialize_carry(self, batch_size: int) -> LSTMCarry:
        """Zero cell and hidden state, each ``[batch_size, num_layers, features]``."""
        zeros = jnp.zeros((batch_size, self.options.num_layers, self.options.features))
        return LSTMCarry(zeros, zeros)

    @nn.compact
    def _states(self, carry, xs, resets):
        """Each layer's cell and hidden states, each [T, B, H] (lists of L)."""
        width = self.options.features
        forget_bias = jnp.zeros(4 * width).at[width : 2 * width].set(1.0)
        h, cells, hiddens = xs, [], []
        for i in range(self.options.num_layers):
            wi, wh, b = _dense_params(self, f"layer{i}", h.shape[-1], width, 4)
            layer_carry = (carry.cell[:, i], carry.hidden[:, i])
            c, h = _time_scan(_lstm_cell(wh), layer_carry, h @ wi + b + forget_bias, resets)
            cells.append(c)
            hiddens.append(h)
        return cells, hiddens

    def __call__(self, carry, xs, resets):
        cells, hiddens = self._states(carry, xs, resets)
        last = LSTMCarry(*(jnp.stack([x[-1] for x in s], axis=1) for s in (cells, hiddens)))
        return last, hiddens[-1]

    def carries(self, carry, xs, resets):
        cells, hiddens = self._states(carry, xs, resets)
        return LSTMCarry(jnp.stack(cells, axis=2), jnp.stack(hiddens, axis=2)), hiddens[-1]

    def step(self, carry, x, reset):
        carry, ys = self(carry, x[None], reset[None])
        return carry, ys[0]
