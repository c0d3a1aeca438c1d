"""PPO loss pieces (Schulman et al., 2017): pure functions over arrays of any shape.

Each takes an optional boolean ``mask`` shaped like its inputs; means then run over the
entries where ``mask`` is True only. Masked-out entries are replaced by neutral values
before any arithmetic, so padding that holds garbage (even inf or NaN) changes neither
the loss nor its gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SurrogateAux(NamedTuple):
    """Diagnostics of the clipped surrogate: scalars, with gradients stopped.

    ``approx_kl`` is the mean of ``(ratio - 1) - log(ratio)``, an unbiased and
    non-negative estimate of KL(old || new) from samples of the old policy.
    ``clip_fraction`` is the fraction of entries with ``|ratio - 1| > clip_eps``.
    """

    approx_kl: jax.Array
    clip_fraction: jax.Array


def _mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _masked(x: jax.Array, mask: jax.Array | None, fill: float = 0.0) -> jax.Array:
    return x if mask is None else jnp.where(mask, x, fill)


def clipped_surrogate(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    clip_eps: float | jax.Array,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, SurrogateAux]:
    """PPO's clipped policy loss, ``-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))``.

    | arg          | shape | meaning                                   |
    |--------------|-------|-------------------------------------------|
    | log_prob     | [...] | log pi(a|s) under the current parameters   |
    | old_log_prob | [...] | log pi(a|s) when the data was collected    |
    | advantages   | [...] | (usually normalised) advantage estimates   |
    | mask         | [...] | optional bool: which entries count         |
    | return       | ()    | loss, and a SurrogateAux of scalars        |
    """
    log_ratio = _masked(log_prob - old_log_prob, mask)
    advantages = _masked(advantages, mask)
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -_mean(jnp.minimum(unclipped, clipped), mask)
    ratio, log_ratio = jax.lax.stop_gradient((ratio, log_ratio))
    aux = SurrogateAux(
        approx_kl=_mean((ratio - 1.0) - log_ratio, mask),
        clip_fraction=_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(ratio.dtype), mask),
    )
    return loss, aux


def clipped_value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    clip_eps: float | jax.Array,
    mask: jax.Array | None = None,
) -> jax.Array:
    """PPO's clipped value loss, ``0.5 * mean(max((v - R)^2, (v_clip - R)^2))``.

    ``v_clip = old_values + clip(values - old_values, -eps, eps)``: the new prediction
    gets no gradient once it has moved more than ``eps`` away from the old one *and*
    that move would reduce the error further.

    | arg        | shape | meaning                              |
    |------------|-------|--------------------------------------|
    | values     | [...] | current value predictions            |
    | old_values | [...] | predictions when the data was collected |
    | returns    | [...] | value targets                        |
    | mask       | [...] | optional bool: which entries count   |
    | return     | ()    | loss                                 |
    """
    values = _masked(values, mask)
    old_values = _masked(old_values, mask)
    returns = _masked(returns, mask)
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    error = jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns))
    return 0.5 * _mean(error, mask)


def normalize(x: jax.Array, eps: float = 1e-8, mask: jax.Array | None = None) -> jax.Array:
    """``(x - mean(x)) / (std(x) + eps)`` over all entries (population std, ddof = 0).

    With ``mask``, the statistics come from the valid entries only and masked-out entries
    of the result are 0.

    | arg    | shape | meaning                             |
    |--------|-------|-------------------------------------|
    | x      | [...] | e.g. a minibatch of advantages      |
    | mask   | [...] | optional bool: which entries count  |
    | return | [...] | normalised x                        |
    """
    x = _masked(x, mask)
    mean = _mean(x, mask)
    centred = _masked(x - mean, mask)
    std = jnp.sqrt(_mean(jnp.square(centred), mask))
    return centred / (std + eps)
