"""On-device replay of env steps as sequences, for sequence-model agents (Dreamer-style).

The buffer lives inside the agent's training state, so env steps, replay writes, sampling
and updates compile into one XLA program, and ``jax.vmap`` over a leading seed axis gives
every seed its own buffer. Every function here is pure and jittable.

```python
cfg = ReplayConfig(capacity=10_000, sequence_length=64, batch_size=16, train_ratio=512.0)
state = init(cfg, example_step, num_envs)     # example_step: ONE env's step (no env axis)
state = add(state, step_batch)                # every field [E, ...]: one step of every env
batch, valid = sample(state, key)             # every field [T, B, ...]; valid [T, B]
ready = can_sample(state)                     # bool []: at least T steps stored per env
due = updates_due(env_steps, cfg.train_ratio, cfg.batch_steps)   # updates owed so far
```

Steps are whatever pytree the agent chooses (a dict, NamedTuple or flax struct of
arrays, e.g. ``obs``, ``action``, ``reward``, ``cont``, ``is_first``); the one field the
buffer reads is ``is_first`` (bool ``[E]``: this step starts a new episode, the memory is
reset before it is read, as in `ssmrl.cores`). Each field is stored in the dtype of
``example_step`` (``add`` casts to it: store image observations as uint8 to save memory).

Sampling. ``sample`` draws B sequences of T consecutive steps, each from one env,
uniformly over the (env, start) pairs whose T steps are all stored; a sequence never
crosses the ring's seam between the newest and the oldest step. Sequences do cross
episode boundaries: the ``is_first`` flags inside them mark the resets, where the world
model clears its memory, so no data is cut away. ``is_first[0]`` of every sampled
sequence is set True (a sequence that starts mid-episode starts from fresh memory, as in
DreamerV3); the stored flags are unchanged. ``valid[t, b]`` is False where a step was
never written, which happens only when sampling before ``can_sample`` (fewer than T
steps stored): such sequences start at the oldest step and are padded with zeros.

Train ratio. ``train_ratio`` is replayed steps (``B * T`` per update) per env step, as in
DreamerV3. ``updates_due(n, ratio, batch_steps)`` is the number of updates owed after n
env steps, ``floor(n * ratio / batch_steps)``, computed exactly in integers; an agent
does ``updates_due(steps_after) - updates_due(steps_before)`` updates per env-step batch,
so the ratio holds over the run whatever the env batch is (with Python ints the count is
static; when ``ratio * env_steps_per_iteration / batch_steps`` is whole it is constant).

Storage, checkpoints, memory. Storage and sampling are flashbax 0.1.3's trajectory buffer
(`flashbax.make_trajectory_buffer`, period 1), which works with the pinned jax and flax:
its state is a pytree of arrays (a chex dataclass), jittable and vmappable. Flashbax is
not episode-aware, so ``is_first`` is stored as an ordinary field and handled here, and a
``written`` flag per step (1 byte) is stored beside the agent's fields to give ``valid``.

`ReplayState` is a plain pytree (its `ReplayConfig` is static, not a leaf), so
`ssmrl.checkpoint.Checkpointer` saves it with the rest of the training state: the WHOLE
buffer is saved, every field of every stored step plus the write position and the
full flag, so on resume the buffer is exactly as it was when saved (never refilled from
scratch). A checkpoint therefore holds, per seed (times the number of seeds when vmapped),

    bytes = capacity x num_envs x (bytes of one env's step + 1) + 5

(`nbytes` computes it; the driver's memory check counts it as part of the state). The
capacity and the step fields must match on resume (a different shape is an unreadable
checkpoint); batch size, sequence length and train ratio come from the resumed run's
config (they are static, not saved), so they may change on resume.

| array           | shape (one seed)                  |
|-----------------|-----------------------------------|
| ``example_step`` | any pytree, leaves ``[...]``     |
| ``step_batch``  | same pytree, leaves ``[E, ...]``  |
| stored steps    | leaves ``[E, capacity, ...]`` (env-major, flashbax's layout) |
| ``batch``       | same pytree, leaves ``[T, B, ...]`` (time-major) |
| ``valid``       | ``[T, B]`` bool                   |
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import flashbax as fbx
import jax
import jax.numpy as jnp
import numpy as np
from flashbax.buffers.trajectory_buffer import TrajectoryBuffer, TrajectoryBufferState
from flax import struct

IS_FIRST = "is_first"


@dataclass(frozen=True)
class ReplayConfig:
    """Size of the replay buffer, of the sampled batches, and the train ratio."""

    capacity: int = 10_000
    """Env steps kept per env (a ring buffer: the oldest are overwritten)."""
    sequence_length: int = 64
    """T: consecutive steps per sampled sequence."""
    batch_size: int = 16
    """B: sequences per sampled batch."""
    train_ratio: float = 512.0
    """Replayed steps (B x T per update) per env step."""

    @property
    def batch_steps(self) -> int:
        """Steps replayed by one sampled batch, ``B x T``."""
        return self.batch_size * self.sequence_length

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        for name in ("capacity", "sequence_length", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.sequence_length > self.capacity:
            raise ValueError(
                f"sequence_length must be <= capacity ({self.capacity}), got {self.sequence_length}"
            )
        ratio = self.train_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise ValueError(f"train_ratio must be a number, got {ratio!r}")
        if not (math.isfinite(ratio) and 0 < ratio <= 1e6):
            raise ValueError(f"train_ratio must be finite and in (0, 1e+06], got {ratio}")
        _updates_per_step(ratio, self.batch_steps)


class Stored(NamedTuple):
    """What the buffer holds for each step of each env (leaves ``[E, capacity, ...]``)."""

    step: Any
    """The agent's step pytree."""
    written: jax.Array
    """``[E, capacity]`` bool: the step has been written."""


@struct.dataclass
class ReplayState:
    """The replay buffer of one seed: a pytree of arrays (the config is static)."""

    buffer: TrajectoryBufferState
    """Flashbax's state: ``experience`` (a `Stored`, leaves ``[E, capacity, ...]``),
    ``current_index`` (int32 ``[]``, the next write position) and ``is_full`` (bool ``[]``)."""
    config: ReplayConfig = struct.field(pytree_node=False)


@functools.lru_cache(maxsize=64)
def _buffer(config: ReplayConfig, num_envs: int) -> TrajectoryBuffer:
    return fbx.make_trajectory_buffer(
        add_batch_size=num_envs,
        sample_batch_size=config.batch_size,
        sample_sequence_length=config.sequence_length,
        period=1,
        min_length_time_axis=config.sequence_length,
        max_length_time_axis=config.capacity,
    )


def _get(step: Any, name: str) -> Any:
    if isinstance(step, Mapping):
        return step[name]
    return getattr(step, name)


def _set(step: Any, name: str, value: Any) -> Any:
    if hasattr(step, "_replace"):
        return step._replace(**{name: value})
    if hasattr(step, "replace"):
        return step.replace(**{name: value})
    if isinstance(step, Mapping):
        return type(step)({**step, name: value})
    raise TypeError(f"cannot set {name!r} of a step of type {type(step).__name__}")


def _dtype(x: Any) -> Any:
    return x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype


def _has(step: Any, name: str) -> bool:
    return name in step if isinstance(step, Mapping) else hasattr(step, name)


def init(config: ReplayConfig, example_step: Any, num_envs: int) -> ReplayState:
    """An empty buffer for ``num_envs`` envs whose steps look like ``example_step``.

    | argument        | shape                                                  |
    |-----------------|--------------------------------------------------------|
    | ``example_step`` | pytree of ONE env's step, leaves ``[...]`` (arrays or |
    |                 | ``jax.ShapeDtypeStruct``); must have a scalar ``is_first`` |
    | returns         | `ReplayState`, stored leaves ``[num_envs, capacity, ...]`` |
    """
    config.validate()
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a whole number >= 1, got {num_envs!r}")
    if not _has(example_step, IS_FIRST):
        raise ValueError(f"a replayed step needs an {IS_FIRST!r} field")
    if np.shape(_get(example_step, IS_FIRST)) != ():
        raise ValueError(f"{IS_FIRST!r} of one env's step must be a scalar")
    zeros = jax.tree.map(lambda x: jnp.zeros(np.shape(x), _dtype(x)), example_step)
    zeros = _set(zeros, IS_FIRST, jnp.zeros((), bool))
    buffer = _buffer(config, num_envs).init(Stored(zeros, jnp.zeros((), bool)))
    return ReplayState(buffer=buffer, config=config)


def _envs(state: ReplayState) -> int:
    return state.buffer.experience.written.shape[-2]


def add(state: ReplayState, step_batch: Any) -> ReplayState:
    """Write one step of every env, overwriting each env's oldest step once full.

    | argument       | shape                                                     |
    |----------------|-----------------------------------------------------------|
    | ``step_batch`` | the example step's pytree, leaves ``[E, ...]``; cast to   |
    |                | the stored dtypes                                         |
    """
    stored = state.buffer.experience.step
    envs = _envs(state)

    def column(path: Any, x: Any, s: jax.Array) -> jax.Array:
        want = (envs, *s.shape[2:])
        if np.shape(x) != want:
            raise ValueError(
                f"step field {jax.tree_util.keystr(path)} has shape {np.shape(x)}, expected {want}"
            )
        return jnp.asarray(x).astype(s.dtype)[:, None]

    step = jax.tree_util.tree_map_with_path(column, step_batch, stored)
    written = jnp.ones((envs, 1), bool)
    buffer = _buffer(state.config, envs).add(state.buffer, Stored(step, written))
    return state.replace(buffer=buffer)


def sample(state: ReplayState, key: jax.Array) -> tuple[Any, jax.Array]:
    """B sequences of T consecutive steps, each from one env, uniformly over the stored ones.

    ``is_first[0]`` is True in every sequence; inner ``is_first`` flags are as stored.

    | output   | shape                                       |
    |----------|---------------------------------------------|
    | ``batch`` | the step pytree, leaves ``[T, B, ...]``    |
    | ``valid`` | ``[T, B]`` bool: the step was written       |
    """
    out = _buffer(state.config, _envs(state)).sample(state.buffer, key).experience
    batch = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out.step)
    batch = _set(batch, IS_FIRST, _get(batch, IS_FIRST).at[0].set(True))
    return batch, out.written.T


def size(state: ReplayState) -> jax.Array:
    """int32 ``[]``: steps stored per env (``size x E`` in all), at most ``capacity``."""
    buffer = state.buffer
    return jnp.where(buffer.is_full, state.config.capacity, buffer.current_index).astype(jnp.int32)


def can_sample(state: ReplayState) -> jax.Array:
    """bool ``[]``: every env has at least T steps stored, so sampled steps are all valid."""
    return _buffer(state.config, _envs(state)).can_sample(state.buffer)


def nbytes(config: ReplayConfig, example_step: Any, num_envs: int) -> int:
    """Bytes of one seed's `ReplayState` (device memory and checkpoint size):
    ``capacity x num_envs x (bytes of one env's step + 1)`` plus 5 for the counters."""
    shapes = jax.eval_shape(lambda: init(config, example_step, num_envs))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def _updates_per_step(ratio: float, batch_steps: int) -> tuple[int, int]:
    """``(p, q)``: updates per env step as the fraction p / q, the ratio rounded to the
    nearest fraction whose denominator is at most 1000."""
    rate = Fraction(ratio).limit_denominator(1000) / batch_steps
    if rate <= 0 or rate.numerator * rate.denominator >= 2**31:
        raise ValueError(
            f"train_ratio {ratio} over {batch_steps} replayed steps per update is not a "
            "usable fraction; round it"
        )
    return rate.numerator, rate.denominator


def updates_due(env_steps: Any, ratio: float, batch_steps: int) -> Any:
    """Updates owed after ``env_steps`` env steps: ``floor(env_steps x ratio / batch_steps)``.

    Exact integer arithmetic: no float rounding, and no intermediate product reaches
    2**31 (only a result above 2**31 updates would overflow). The per-iteration count
    is ``updates_due(after) - updates_due(before)``.

    | argument / output | type                                                   |
    |-------------------|--------------------------------------------------------|
    | ``env_steps``     | Python int, or an integer array (any shape, traced ok) |
    | ``ratio``         | Python float: replayed steps per env step              |
    | ``batch_steps``   | Python int: replayed steps per update (``B x T``)      |
    | returns           | Python int for an int, else an int32 array             |
    """
    p, q = _updates_per_step(ratio, batch_steps)
    if isinstance(env_steps, int):
        return env_steps * p // q
    env_steps = jnp.asarray(env_steps, jnp.int32)
    whole, rest = jnp.divmod(env_steps, q)
    return whole * p + rest * p // q
