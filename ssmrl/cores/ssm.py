"""What the diagonal state-space cores (S5, LRU) share: the layer block and the layer stack.

A layer (`SSMLayer`) maps ``h [T, B, H] -> [T, B, H]``:

    u    = LayerNorm(h) if prenorm else h
    x[t] = a ⊙ x[t-1] + b u[t]         (x reset to 0 at episode starts; `linear_recurrence`)
    y    = readout(x, u)                 (the subclass's output map, e.g. Re(C x) + D ⊙ u)
    out  = h + mix(GELU(y))              (LayerNorm(out) if not prenorm)

with ``mix(y) = y ⊙ σ(W y)`` (half_glu) or ``(V y) ⊙ σ(W y)`` (full_glu). A subclass
defines its parameters and ``a``, ``b``, ``C`` (`SSMLayer._system`) and the readout.

A core (`SSMStack`) is a Dense encoder to ``features`` followed by ``num_layers`` layers;
its carry stacks the layers' complex states, ``[B, L, P']``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssmrl.cores.scan import linear_recurrence


def project(u: jax.Array, b: jax.Array) -> jax.Array:
    """``B u`` for real ``u``, as two real matmuls (a complex matmul costs twice as much on CPU).

    | arg    | shape          | dtype   |
    |--------|----------------|---------|
    | u      | [..., H]       | real    |
    | b      | [P, H]         | complex |
    | return | [..., P]       | complex |
    """
    return jax.lax.complex(u @ b.real.T, u @ b.imag.T)


def readout(x: jax.Array, c: jax.Array) -> jax.Array:
    """``Re(C x)`` without forming the complex product.

    | arg    | shape      | dtype   |
    |--------|------------|---------|
    | x      | [..., P]   | complex |
    | c      | [H, P]     | complex |
    | return | [..., H]   | real    |
    """
    return x.real @ c.real.T - x.imag @ c.imag.T


class SSMLayer(nn.Module):
    """Base of one SSM layer: norm, diagonal recurrence, GELU, GLU mixing, residual.

    A subclass has a field ``options`` (with ``features``, ``prenorm``, ``mixing`` and
    ``scan``), calls `_setup_block` in its ``setup`` after declaring its own parameters,
    and implements `_system` and `_readout`; `_factor` may make the recurrence's factor
    depend on the input. Carry: the complex state ``[B, P']``.
    """

    options: Any

    def _setup_block(self) -> None:
        """Declare the block's modules: ``norm``, ``mix_gate`` (and ``mix_value``, full_glu)."""
        h = self.options.features
        self.norm = nn.LayerNorm()
        self.mix_gate = nn.Dense(h)
        if self.options.mixing == "full_glu":
            self.mix_value = nn.Dense(h)

    def _system(self) -> tuple[jax.Array, jax.Array, Any]:
        """``(a [P'] complex, b [P', H] complex, readout parameters)`` of the recurrence."""
        raise NotImplementedError

    def _readout(self, x: jax.Array, u: jax.Array, c: Any) -> jax.Array:
        """States ``x [..., P']`` and layer inputs ``u [..., H]`` -> ``y [..., H]`` (real)."""
        raise NotImplementedError

    def _factor(self, a: jax.Array, u: jax.Array) -> jax.Array:
        """The recurrence's factor: ``a [P']``, or one per step ``[..., P']`` from ``u``."""
        return a

    def _block(self, h: jax.Array, y: jax.Array) -> jax.Array:
        """``h + mix(GELU(y))``, then LayerNorm unless prenorm; ``[..., H]``."""
        y = nn.gelu(y)
        value = self.mix_value(y) if self.options.mixing == "full_glu" else y
        out = h + value * nn.sigmoid(self.mix_gate(y))
        return out if self.options.prenorm else self.norm(out)

    def __call__(self, carry, h, resets):
        """carry [B, P'] complex, h [T, B, H], resets [T, B] -> (states [T, B, P'], [T, B, H]).

        ``states[t]`` is the state after input ``t``; the last one is the new carry.
        """
        a, b, c = self._system()
        u = self.norm(h) if self.options.prenorm else h
        xs = linear_recurrence(self._factor(a, u), project(u, b), resets, carry, self.options.scan)
        return xs, self._block(h, self._readout(xs, u, c))

    def step(self, carry, h, reset):
        """carry [B, P'] complex, h [B, H], reset [B] -> (carry, [B, H])."""
        a, b, c = self._system()
        u = self.norm(h) if self.options.prenorm else h
        bu = project(u, b)
        x = jnp.where(reset[:, None], bu, self._factor(a, u) * carry + bu)
        return x, self._block(h, self._readout(x, u, c))


class SSMStack(nn.Module):
    """Base of an SSM core: a Dense encoder to ``features``, then ``num_layers`` layers.

    A subclass sets the field ``options`` (with ``features``, ``num_layers`` and the
    property ``carry_size``, P') and the class attribute ``layer``, its `SSMLayer`.

    | call          | inputs                                        | outputs                      |
    |---------------|-----------------------------------------------|------------------------------|
    | ``__call__``  | carry [B, L, P'], xs [T, B, F], resets [T, B] | carry, ys [T, B, features]   |
    | ``step``      | carry [B, L, P'], x [B, F], reset [B]         | carry, y [B, features]       |
    | ``carries``   | carry [B, L, P'], xs [T, B, F], resets [T, B] | carries [T, B, L, P'], ys    |
    """

    options: Any
    layer: ClassVar[type[SSMLayer]]

    def initialize_carry(self, batch_size: int) -> jax.Array:
        """Zero state, ``[batch_size, num_layers, P']`` complex64."""
        o = self.options
        return jnp.zeros((batch_size, o.num_layers, o.carry_size), jnp.complex64)

    def setup(self):
        self.encoder = nn.Dense(self.options.features)
        self.layers = [self.layer(self.options) for _ in range(self.options.num_layers)]

    def _states(self, carry, xs, resets):
        """Each layer's states [T, B, P'] (a list of L) and the outputs ys [T, B, features]."""
        h = self.encoder(xs)
        states = []
        for i, layer in enumerate(self.layers):
            x, h = layer(carry[:, i], h, resets)
            states.append(x)
        return states, h

    def __call__(self, carry, xs, resets):
        """carry [B, L, P'], xs [T, B, F], resets [T, B] -> (carry, ys [T, B, features])."""
        states, ys = self._states(carry, xs, resets)
        return jnp.stack([x[-1] for x in states], axis=1), ys

    def carries(self, carry, xs, resets):
        """carry [B, L, P'], xs [T, B, F], resets [T, B] -> (carries [T, B, L, P'], ys)."""
        states, ys = self._states(carry, xs, resets)
        return jnp.stack(states, axis=2), ys

    def step(self, carry, x, reset):
        """carry [B, L, P'], x [B, F], reset [B] -> (carry, y [B, features])."""
        h = self.encoder(x)
        new = []
        for i, layer in enumerate(self.layers):
            c, h = layer.step(carry[:, i], h, reset)
            new.append(c)
        return jnp.stack(new, axis=1), h
