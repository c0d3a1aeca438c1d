"""Transformer: a causal Transformer-XL-style core with a sliding memory of W steps per layer.

A Dense encoder to H (``features``), ``num_layers`` pre-norm blocks, then a LayerNorm.
A block maps ``h [T, B, H] -> [T, B, H]`` with N heads of size D:

    q, k, v = split(W_qkv LayerNorm(h) + b_qkv)                       each [T, B, N, D]
    a[t]    = Σ_{s ∈ S(t)} softmax_s((R_t q[t]) · (R_s k[s]) / √D) v[s]  per head
    h       = h + W_o a + b_o
    h       = h + W_2 GELU(W_1 LayerNorm(h) + b_1) + b_2

``S(t)``, the steps that step ``t`` attends to: itself and the W steps before it
(``t - W <= s <= t``), but only those of its own episode: none before the last
is-first reset at or before ``t``, neither inside a sequence call nor in the carry.
Each layer's window holds its own keys, computed from the layer below, so the whole
stack sees up to ``L·W`` steps back (as Transformer-XL does); an input further back has
no effect at all.

Positions are rotary: ``R_t`` turns each pair ``(x_i, x_{i+D/2})`` of a head by the angle
``t·θ_i``, ``θ_i = base^(-2i/D)``. As ``(R_t q)·(R_s k) = q·R_{s-t} k``, a score depends only
on the offset ``t - s``, so positions are indices in a local frame (within a block of the
sequence call, see `window_attention`) and the carry keeps no step counter: positions
stay below 2W however long the run (no float32 angle drift), and where a sequence is cut
into calls changes the result only by rounding.

Carry (`TransformerCarry`), the last W steps of every layer, oldest first:

| field    | shape           | dtype   | meaning                                             |
|----------|-----------------|---------|-----------------------------------------------------|
| keys     | [B, L, W, N, D] | float32 | each layer's keys of the last W steps, unrotated    |
| values   | [B, L, W, N, D] | float32 | their values                                        |
| valid    | [B, W]          | bool    | the slot holds a step of the current episode        |

``valid`` is shared by the layers (it is a property of the step). The initial carry is
zeros and ``valid`` all False; a reset replaces the carry by it before the input is
consumed, so slots from before the reset are zero and never attended to.

Costs: a sequence call splits its T queries into blocks of ``C = min(T, W)``, each
attending over the ``W + C`` keys it can reach, so time and memory grow as
``T·(W + C)`` per layer and head, not ``T²``. A step call is the sequence call with
T = 1 (W + 1 keys; the new carry is the window shifted by one), computed directly in
the carry's ``[B, L, W, N, D]`` layout. ``carries`` gathers each
step's window from the keys and values the sequence call computed anyway: no extra
attention, only the ``[T, B, L, W, N, D]`` output itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from ssmrl.cores.checks import check_positive


@dataclass(frozen=True)
class TransformerOptions:
    """Options of the Transformer core (`Transformer`); `validate` says which are allowed.

    The heads' width ``num_heads · head_size`` is its own option, not ``features`` split
    into heads, so every ``features`` is allowed (`ssmrl.matching.matched_width` tries
    them all); the defaults make it equal to the default ``features``.
    """

    name: tyro.conf.Suppress[str] = "transformer"
    """The core's registered name (the ``core.name`` of YAML files and flags)."""
    features: int = 128
    """Width H of the input encoder, of every layer's residual stream and of the output."""
    num_layers: int = 2
    """Number L of stacked attention + MLP blocks."""
    num_heads: int = 4
    """Number N of attention heads per layer."""
    head_size: int = 32
    """Width D of each head's queries, keys and values (even: rotary positions turn pairs)."""
    window: int = 64
    """Memory length W: a step attends to itself and the W steps before it in its episode."""
    mlp_ratio: int = 4
    """Hidden width of each block's GELU MLP, as a multiple of features."""
    rotary_base: float = 10000.0
    """Base b of the rotary frequencies θ_i = b^(-2i/D) (angle t·θ_i at offset t)."""

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option and what it allows) if invalid."""
        check_positive(
            self, "features", "num_layers", "num_heads", "head_size", "window", "mlp_ratio"
        )
        if self.head_size % 2:
            raise ValueError(
                f"head_size must be even (rotary positions turn pairs), got {self.head_size}"
            )
        if not self.rotary_base > 1:
            raise ValueError(f"rotary_base must be > 1, got {self.rotary_base}")


class TransformerCarry(NamedTuple):
    """The last W steps of every layer; see the module docstring's table.

    Fields ``keys``, ``values`` [B, L, W, N, D] and ``valid`` [B, W] (with a leading T
    from `Transformer.carries`).
    """

    keys: jax.Array
    values: jax.Array
    valid: jax.Array


def rotate(x: jax.Array, positions: np.ndarray, base: float) -> jax.Array:
    """Rotary positions: turn each pair ``(x_i, x_{i+D/2})`` by ``position · base^(-2i/D)``.

    | arg       | shape                            |
    |-----------|----------------------------------|
    | x         | [..., D], D even                 |
    | positions | broadcastable to ``x.shape[:-1]`` |
    | return    | [..., D]                         |
    """
    half = x.shape[-1] // 2
    angle = np.asarray(positions, np.float64)[..., None] * base ** (-np.arange(half) / half)
    cos, sin = jnp.asarray(np.cos(angle), x.dtype), jnp.asarray(np.sin(angle), x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis among the entries where ``mask`` is True.

    Masked entries are exactly 0 and pass exactly zero gradient (their scores are never
    used); a fully masked row is all zeros, not NaN. ``scores`` and ``mask`` broadcast
    to the same shape ``[..., K]``.
    """
    low = jnp.finfo(scores.dtype).min
    top = jax.lax.stop_gradient(jnp.max(jnp.where(mask, scores, low), axis=-1, keepdims=True))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, scores, top) - top), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def block_mask(valid: jax.Array, start: jax.Array, window: int) -> jax.Array:
    """Which key each query attends to, in blocks of ``C = min(T, W)`` queries.

    Indices are those of the concatenation ``[window ; sequence]`` (the carry's W slots,
    then the T steps): query ``t`` is index ``W + t``, and block ``n`` holds queries
    ``nC .. nC + C - 1`` and keys ``nC .. nC + W + C - 1``. Query ``i`` sees key ``j`` when
    ``i - W <= j <= i`` (causal, window), ``j >= start`` (same episode) and ``valid[j]``.

    | arg    | shape       | meaning                                                   |
    |--------|-------------|-----------------------------------------------------------|
    | valid  | [W + T, B]  | the carry's ``valid``, then True for the sequence          |
    | start  | [T, B]      | index of each step's episode start (0: it began earlier)   |
    | return | [n, C, W + C, B] bool, ``n = ceil(T / C)``; padded queries see padding   |
    """
    t_len, batch = start.shape
    c = min(t_len, window)
    n = -(-t_len // c)
    pad = n * c - t_len
    i = window + np.arange(n * c).reshape(n, c)[:, :, None, None]  # queries
    j = (c * np.arange(n)[:, None] + np.arange(window + c))[:, None, :, None]  # keys
    valid = jnp.pad(valid, ((0, pad), (0, 0)))[j[:, 0, :, 0]]  # [n, W + C, B]
    start = jnp.pad(start, ((0, pad), (0, 0))).reshape(n, c, 1, batch)
    return (j <= i) & (i - j <= window) & (j >= start) & valid[:, None]


def window_attention(q, k, v, mask, base: float) -> jax.Array:
    """Multi-head attention of each query over its block's keys (`block_mask`).

    Each block rotates its queries and keys in its own frame (keys at 0 .. W + C - 1,
    queries at W .. W + C - 1): only the offsets matter.

    | arg    | shape               | meaning                                   |
    |--------|---------------------|-------------------------------------------|
    | q      | [T, B, N, D]        | the sequence's queries (unrotated)         |
    | k, v   | [W + T, B, N, D]    | ``[window ; sequence]`` keys (unrotated), values |
    | mask   | [n, C, W + C, B]    | from `block_mask`                          |
    | return | [T, B, N, D]        | the attention's output per head            |
    """
    n, c, span, _ = mask.shape
    t_len, w = q.shape[0], span - c
    pad = n * c - t_len

    def pad_time(x):
        return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))

    def blocks(x):  # [W + T, ...] -> [n, W + C, ...], block n's keys nC .. nC + W + C - 1
        x = pad_time(x)
        if n == 1:
            return x[None]
        # n > 1 only when T > W, so C = W and block n is chunks n and n + 1 of size C:
        # slices and a concatenation, whose gradient is cheaper than a gather's.
        chunks = x.reshape(n + 1, c, *x.shape[1:])
        return jnp.concatenate([chunks[:-1], chunks[1:]], axis=1)

    q = rotate(pad_time(q).reshape(n, c, *q.shape[1:]), (w + np.arange(c))[:, None, None], base)
    k = rotate(blocks(k), np.arange(span)[:, None, None], base)
    v = blocks(v)
    scores = jnp.einsum("ncbhd,nkbhd->nbhck", q, k) / math.sqrt(q.shape[-1])
    p = masked_softmax(scores, jnp.moveaxis(mask, 3, 1)[:, :, None])  # [n, B, 1, C, W + C]
    out = jnp.einsum("nbhck,nkbhd->ncbhd", p, v)
    return out.reshape(n * c, *out.shape[2:])[:t_len]


class TransformerLayer(nn.Module):
    """One pre-norm block: LayerNorm, rotary multi-head attention over the window,
    residual; LayerNorm, GELU MLP, residual. Split in two around the attention, which the
    core runs (it owns the window)."""

    options: TransformerOptions

    def setup(self):
        o = self.options
        self.attention_norm = nn.LayerNorm()
        self.qkv = nn.Dense(3 * o.num_heads * o.head_size)
        self.out = nn.Dense(o.features)
        self.mlp_norm = nn.LayerNorm()
        self.mlp_hidden = nn.Dense(o.mlp_ratio * o.features)
        self.mlp_out = nn.Dense(o.features)

    def project(self, h):
        """h [..., H] -> queries, keys, values, each [..., N, D]."""
        o = self.options
        qkv = self.qkv(self.attention_norm(h)).reshape(*h.shape[:-1], 3, o.num_heads, o.head_size)
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def __call__(self, h, a):
        """h [..., H] and the attention's output a [..., N, D] -> the block's output [..., H]."""
        h = h + self.out(a.reshape(*a.shape[:-2], -1))
        return h + self.mlp_out(nn.gelu(self.mlp_hidden(self.mlp_norm(h))))


class Transformer(nn.Module):
    """Transformer memory core: Dense encoder, ``num_layers`` blocks over a sliding
    window of ``window`` steps per layer, final LayerNorm (see the module docstring).

    | call          | inputs                                     | outputs                      |
    |---------------|--------------------------------------------|------------------------------|
    | ``__call__``  | carry, xs [T, B, F], resets [T, B]         | carry, ys [T, B, features]   |
    | ``step``      | carry, x [B, F], reset [B]                 | carry, y [B, features]       |
    | ``carries``   | carry, xs [T, B, F], resets [T, B]         | carries, ys [T, B, features] |

    The carry is a `TransformerCarry`: ``keys``/``values`` [B, L, W, N, D], ``valid`` [B, W].

    ``carries`` has leaves ``[T, B, ...]``; ``carries[t]`` (each field indexed) is the
    carry after ``xs[t]``, and ``__call__`` returns ``carries[-1]``.
    The options are the fields of `TransformerOptions`.
    """

    options: TransformerOptions = TransformerOptions()

    def initialize_carry(self, batch_size: int) -> TransformerCarry:
        """Zero keys and values ``[batch_size, L, W, N, D]``; ``valid`` [batch_size, W] False."""
        o = self.options
        shape = (batch_size, o.num_layers, o.window, o.num_heads, o.head_size)
        return TransformerCarry(
            jnp.zeros(shape), jnp.zeros(shape), jnp.zeros((batch_size, o.window), bool)
        )

    def setup(self):
        o = self.options
        self.encoder = nn.Dense(o.features)
        self.layers = [TransformerLayer(o) for _ in range(o.num_layers)]
        self.norm = nn.LayerNorm()

    def _run(self, carry, xs, resets):
        """The sequence call's outputs and what the carries are gathered from.

        | return | shape                | meaning                                    |
        |--------|----------------------|--------------------------------------------|
        | keys   | [L, W + T, B, N, D]  | ``[window ; sequence]`` keys per layer     |
        | values | [L, W + T, B, N, D]  | their values                               |
        | valid  | [W + T, B]           | the carry's ``valid``, then True           |
        | start  | [T, B]               | index of each step's episode start, or 0   |
        | ys     | [T, B, features]     | the outputs                                |
        """
        o, w = self.options, self.options.window
        steps = w + jnp.arange(xs.shape[0])[:, None]
        start = jax.lax.cummax(jnp.where(resets, steps, 0), axis=0)
        valid = jnp.concatenate([carry.valid.T, jnp.ones(resets.shape, bool)])
        mask = block_mask(valid, start, w)
        h = self.encoder(xs)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = layer.project(h)
            k = jnp.concatenate([jnp.moveaxis(carry.keys[:, i], 1, 0), k])
            v = jnp.concatenate([jnp.moveaxis(carry.values[:, i], 1, 0), v])
            h = layer(h, window_attention(q, k, v, mask, o.rotary_base))
            keys.append(k)
            values.append(v)
        return jnp.stack(keys), jnp.stack(values), valid, start, self.norm(h)

    def _windows(self, keys, values, valid, start, steps: np.ndarray) -> TransformerCarry:
        """The carry after each of ``steps`` [S] (static): the W indices ending at step
        ``t``'s (``t + 1 .. t + W``), zero and invalid before its episode's start.

        Leaves ``[S, B, L, W, N, D]`` and ``[S, B, W]``; inputs as `_run` returns them.
        """
        index = steps[:, None] + 1 + np.arange(self.options.window)  # [S, W]
        keep = index[:, :, None] >= start[steps][:, None, :]  # [S, W, B]

        def gather(x):  # [L, W + T, B, N, D] -> [S, B, L, W, N, D]
            x = jnp.where(keep[None, ..., None, None], x[:, index], 0.0)
            return x.transpose(1, 3, 0, 2, 4, 5)

        return TransformerCarry(
            gather(keys), gather(values), (valid[index] & keep).transpose(0, 2, 1)
        )

    def __call__(self, carry, xs, resets):
        """carry, xs [T, B, F], resets [T, B] -> (carry, ys [T, B, features])."""
        keys, values, valid, start, ys = self._run(carry, xs, resets)
        last = self._windows(keys, values, valid, start, np.array([xs.shape[0] - 1]))
        return jax.tree.map(lambda x: x[0], last), ys

    def carries(self, carry, xs, resets):
        """carry, xs [T, B, F], resets [T, B] -> (carries with leaves [T, B, ...], ys)."""
        keys, values, valid, start, ys = self._run(carry, xs, resets)
        return self._windows(keys, values, valid, start, np.arange(xs.shape[0])), ys

    def step(self, carry, x, reset):
        """carry, x [B, F], reset [B] -> (carry, y [B, features]): the sequence call with
        T = 1, whose window is the carry's W steps and x, in the carry's own layout.

        Step calls run one after another in rollouts and imagination, so this path
        avoids the sequence call's gathers and transposes of the whole window: each
        layer scores its query against the W carried keys and its own key, and the new
        carry is the old one shifted by one slot, written once.
        """
        o, w = self.options, self.options.window
        keep = ~reset[:, None]
        valid = carry.valid & keep  # [B, W]
        slots = np.arange(w)[:, None]  # broadcasts over [B, W, N]
        h = self.encoder(x)
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = layer.project(h)  # [B, N, D]
            q = rotate(q, np.full((1, 1), w), o.rotary_base) / math.sqrt(o.head_size)
            old_k = rotate(carry.keys[:, i], slots, o.rotary_base)  # [B, W, N, D]
            scores = jnp.concatenate(
                [
                    jnp.einsum("bnd,bwnd->bnw", q, old_k),
                    jnp.sum(q * rotate(k, np.full((1, 1), w), o.rotary_base), -1)[..., None],
                ],
                axis=-1,
            )  # [B, N, W + 1]
            mask = jnp.concatenate([valid, jnp.ones_like(valid[:, :1])], axis=-1)
            p = masked_softmax(scores, mask[:, None])
            a = jnp.einsum("bnw,bwnd->bnd", p[..., :w], carry.values[:, i]) + p[..., w:] * v
            h = layer(h, a)
            new_keys.append(k)
            new_values.append(v)

        def shift(old, new):  # [B, L, W, N, D], L x [B, N, D] -> [B, L, W, N, D]
            old = jnp.where(keep[:, :, None, None, None], old[:, :, 1:], 0.0)
            return jnp.concatenate([old, jnp.stack(new, axis=1)[:, :, None]], axis=2)

        carry = TransformerCarry(
            shift(carry.keys, new_keys),
            shift(carry.values, new_values),
            jnp.concatenate([valid[:, 1:], jnp.ones_like(valid[:, :1])], axis=-1),
        )
        return carry, self.norm(h)
