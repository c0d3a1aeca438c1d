"""Generalised advantage estimation with gymnax's auto-reset alignment, and TD(λ) returns.

At step ``t`` the agent saw ``obs[t]`` (value ``values[t]``), received ``rewards[t]``, and
then one of three things happened:

- the episode continued: the next state is ``obs[t+1]``;
- it *terminated* (a true terminal state): nothing follows, so no bootstrap;
- it was *truncated* (a time limit): the return is bootstrapped from the value of the
  episode's final observation, ``info["final_observation"]``, not from ``obs[t+1]``
  (which, after the auto-reset, already belongs to the next episode).

``next_values[t]`` is the value of whatever state followed step ``t``; build it with
:func:`next_values_from`. Every array is time-major; any trailing batch dims are allowed.

:func:`lambda_returns` computes the TD(λ) value targets DreamerV3 trains its critic on
from imagined rollouts, where a continue flag (or probability) replaces the two flags;
:func:`percentile_scale` the scale DreamerV3 divides its advantages by;
:func:`imagined_targets` both targets and loss weights of imagined rollouts.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class GAEOutput(NamedTuple):
    """Advantages and value targets, both shaped like ``values``."""

    advantages: jax.Array
    returns: jax.Array


def next_values_from(
    values: jax.Array, last_value: jax.Array, final_values: jax.Array, truncated: jax.Array
) -> jax.Array:
    """The value of the state that followed each step.

    ``values`` shifted one step earlier with ``last_value`` appended, except at truncated
    steps, where the value of the truncated episode's final observation is used.

    | arg          | shape     | meaning                                            |
    |--------------|-----------|----------------------------------------------------|
    | values       | [T, ...]  | V(obs[t])                                          |
    | last_value   | [...]     | V(obs after the rollout)                           |
    | final_values | [T, ...]  | V(final observation of step t); read where truncated |
    | truncated    | [T, ...]  | bool                                               |
    | return       | [T, ...]  | next_values[t]                                     |
    """
    shifted = jnp.concatenate([values[1:], jnp.expand_dims(last_value, 0)], axis=0)
    return jnp.where(truncated, final_values, shifted)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> GAEOutput:
    """Generalised advantage estimates (Schulman et al., 2016) over a time-major rollout.

    ``delta[t] = r[t] + g[t] * (1 - terminated[t]) * next_values[t] - values[t]`` and
    ``A[t] = delta[t] + g[t] * lam * (1 - done[t]) * A[t+1]`` with
    ``done = terminated | truncated``, ``g = gamma`` (a scalar, or one discount per step)
    and ``A[T] = 0``; ``returns = A + values``. ``next_values`` is ignored at terminated
    steps.

    | arg         | shape          | dtype            |
    |-------------|----------------|------------------|
    | rewards     | [T, ...]       | float            |
    | values      | [T, ...]       | float            |
    | next_values | [T, ...]       | float            |
    | terminated  | [T, ...]       | bool (or 0/1)    |
    | truncated   | [T, ...]       | bool (or 0/1)    |
    | gamma       | [] or [T, ...] | float            |
    | lam         | []             | float            |
    | return      | GAEOutput      | two [T, ...] arrays, dtype of values |
    """
    rewards, values, next_values, terminated, truncated = map(
        jnp.asarray, (rewards, values, next_values, terminated, truncated)
    )
    shape = values.shape
    for name, x in (
        ("rewards", rewards),
        ("next_values", next_values),
        ("terminated", terminated),
        ("truncated", truncated),
    ):
        if x.shape != shape:
            raise ValueError(f"gae: {name} has shape {x.shape}, values has {shape}")
    dtype = jnp.result_type(values.dtype, jnp.float32)
    terminated = terminated.astype(bool)
    done = terminated | truncated.astype(bool)
    # where (not multiplication by 1 - terminated) so an inf/NaN placeholder in
    # next_values at a terminated step cannot leak into the result.
    bootstrap = jnp.where(terminated, 0.0, gamma * next_values)
    deltas = (rewards + bootstrap - values).astype(dtype)
    decay = jnp.where(done, 0.0, gamma * lam).astype(dtype)

    def step(next_advantage, inputs):
        delta, d = inputs
        advantage = delta + d * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(step, jnp.zeros(shape[1:], dtype), (deltas, decay), reverse=True)
    return GAEOutput(advantages, advantages + values.astype(dtype))


def lambda_returns(
    rewards: jax.Array,
    next_values: jax.Array,
    continues: jax.Array,
    discount: float | jax.Array,
    lam: float | jax.Array,
) -> jax.Array:
    """TD(λ) returns over a time-major trajectory, as DreamerV3 computes on imagined rollouts.

    Step ``t`` leaves state ``s[t]`` with reward ``rewards[t]`` and reaches ``s[t+1]``, whose
    value is ``next_values[t] = v(s[t+1])`` and whose continue flag (or probability) is
    ``continues[t]`` (0 when ``s[t+1]`` is terminal). With ``g[t] = discount[t] * continues[t]``:

    ``R[t] = rewards[t] + g[t] * ((1 - lam) * next_values[t] + lam * R[t+1])``,
    ``R[T] = next_values[T-1]`` (the value after the last step),

    so ``R[T-1] = rewards[T-1] + g[T-1] * next_values[T-1]``. ``lam=0`` gives one-step TD
    targets, ``lam=1`` discounted reward sums bootstrapped with the last value. Where
    ``g[t] == 0`` nothing after step ``t`` enters ``R[t]`` (not even an inf or NaN).

    | arg         | shape          | meaning                                           |
    |-------------|----------------|---------------------------------------------------|
    | rewards     | [T, ...]       | r[t], the reward of the step from s[t] to s[t+1]  |
    | next_values | [T, ...]       | v(s[t+1]); the value of s[0] is not an input      |
    | continues   | [T, ...]       | c[t] in [0, 1] for s[t+1], float or bool          |
    | discount    | [] or [T, ...] | γ, a scalar or one per step                       |
    | lam         | []             | λ                                                 |
    | return      | [T, ...]       | R[t], the target for v(s[t])                      |

    The result has the dtype of ``next_values`` (at least float32).

    Any trailing batch dims are allowed. An imagined DreamerV3 rollout holds ``H + 1``
    states ``s[0..H]`` with reward, continue and value predicted at each; pass
    ``rewards=rew[1:], next_values=val[1:], continues=cont[1:]`` to get the ``H`` targets
    for ``val[:-1]``. (This matches :func:`gae`'s ``returns`` when
    ``continues = 1 - terminated``, nothing is truncated and ``values[t+1] = next_values[t]``.)
    """
    rewards, next_values, continues = map(jnp.asarray, (rewards, next_values, continues))
    shape = next_values.shape
    if len(shape) < 1:
        raise ValueError("lambda_returns: inputs need a leading time axis [T, ...]")
    for name, x in (("rewards", rewards), ("continues", continues)):
        if x.shape != shape:
            raise ValueError(f"lambda_returns: {name} has shape {x.shape}, next_values has {shape}")
    dtype = jnp.result_type(next_values.dtype, jnp.float32)
    g = jnp.broadcast_to(jnp.asarray(discount, dtype) * continues.astype(dtype), shape)
    cut = g == 0
    next_values = next_values.astype(dtype)
    # where (not multiplication by g = 0) so an inf/NaN after a cut cannot leak back.
    interm = rewards.astype(dtype) + jnp.where(cut, 0.0, g * (1 - lam) * next_values)
    decay = (g * lam).astype(dtype)

    def step(next_return, inputs):
        x, d, c = inputs
        ret = x + jnp.where(c, 0.0, d * next_return)
        return ret, ret

    _, returns = jax.lax.scan(step, next_values[-1], (interm, decay, cut), reverse=True)
    return returns


class PercentileScale(NamedTuple):
    """EMAs of the low and high percentiles of returns, and the scale they give (scalars)."""

    low: jax.Array
    high: jax.Array
    scale: jax.Array


def percentile_scale(
    returns: jax.Array,
    low: jax.Array,
    high: jax.Array,
    low_percentile: float = 5.0,
    high_percentile: float = 95.0,
    decay: float = 0.99,
) -> PercentileScale:
    """One EMA step of the returns' percentiles and the scale ``max(1, high - low)``.

    | arg       | shape      | meaning                                   |
    |-----------|------------|-------------------------------------------|
    | returns   | any        | a batch of returns (all entries count)    |
    | low, high | []         | the EMAs so far (zeros at the start)      |
    | result    | [] each    | the new EMAs and the scale from them      |

    Dividing advantages by the scale shrinks large return ranges to about 1 and leaves
    small ones (below 1) as they are, so that sparse small rewards are not amplified.
    """
    now = jnp.percentile(returns, jnp.array([low_percentile, high_percentile]))
    low = decay * low + (1.0 - decay) * now[0]
    high = decay * high + (1.0 - decay) * now[1]
    return PercentileScale(low, high, jnp.maximum(1.0, high - low))


def imagined_targets(
    reward: jax.Array,
    cont: jax.Array,
    start_cont: jax.Array,
    values: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """λ-returns of imagined rollouts and the weight of each imagined state.

    The continue head's probabilities discount the return (DreamerV3 rounds them to
    flags; with ssmrl's Dreamer that learned CartPole more slowly, docs/dreamer.md); the start
    states' flags are the replayed ones (0 for padding). ``weight[t] = prod_{i <= t}
    (gamma * cont[i]) / gamma`` is the discounted chance that state ``t`` is reached.

    | arg        | shape      | meaning                                          |
    |------------|------------|--------------------------------------------------|
    | reward     | [H + 1, N] | predicted reward of reaching state t (t >= 1)    |
    | cont       | [H + 1, N] | predicted P(state t is not terminal) (t >= 1)    |
    | start_cont | [N]        | the start states' continue flags                 |
    | values     | [H + 1, N] | the critic's value of state t                    |
    | returns    | [H, N]     | the λ-return targets for values[:-1]             |
    | weight     | [H, N]     | loss weights of states 0 .. H - 1                |
    """
    cont = jnp.concatenate([start_cont[None], cont[1:].astype(values.dtype)], 0)
    weight = jnp.cumprod(gamma * cont, 0) / gamma
    returns = lambda_returns(reward[1:], values[1:], cont[1:], gamma, lam)
    return returns, weight[:-1]


def replayed_targets(
    reward: jax.Array,
    cont: jax.Array,
    is_first: jax.Array,
    valid: jax.Array,
    boot: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """λ-returns along replayed sequences, with the real rewards and terminals, bootstrapped
    with the imagined returns from each replayed state (DreamerV3's replayed-value targets).

    Row ``t`` holds state ``s_t`` with the reward ``reward[t]`` and continue flag
    ``cont[t]`` that came with it. Within an episode

    ``R[t] = reward[t+1] + gamma * cont[t+1] * ((1 - lam) * boot[t+1] + lam * R[t+1])``;

    the last row, and a row whose next row starts an episode or is padding, take
    ``R[t] = boot[t]``. Those rows, terminal rows (no value to learn) and padding weigh 0;
    the others weigh 1, so a terminal a few steps ahead reaches the critic through the
    real flags even where the world model's continue head misses it.

    | arg      | shape  | meaning                                                  |
    |----------|--------|----------------------------------------------------------|
    | reward   | [T, B] | r_t, the reward that came with s_t                       |
    | cont     | [T, B] | 0 where s_t is terminal, else 1                          |
    | is_first | [T, B] | s_t starts an episode                                    |
    | valid    | [T, B] | the row holds data (not padding)                         |
    | boot     | [T, B] | the imagined λ-return from s_t (its value estimate)      |
    | returns  | [T, B] | R[t], the target for v(s_t)                              |
    | weight   | [T, B] | 1 where R[t] holds a real step, else 0                   |
    """
    dtype = jnp.result_type(boot.dtype, jnp.float32)
    reward, cont, boot = (jnp.asarray(x, dtype) for x in (reward, cont, boot))
    # ends[t]: nothing real follows row t within its episode and sequence.
    ends = jnp.concatenate([is_first[1:] | ~valid[1:], jnp.ones_like(is_first[:1])], 0)
    nxt = (reward[1:], cont[1:], boot[1:], ends[:-1], boot[:-1])

    def step(next_return, inputs):
        r, c, v, end, own = inputs
        ahead = jnp.where(c > 0, gamma * c * ((1.0 - lam) * v + lam * next_return), 0.0)
        ret = jnp.where(end, own, r + ahead)
        return ret, ret

    _, returns = jax.lax.scan(step, boot[-1], nxt, reverse=True)
    returns = jnp.concatenate([returns, boot[-1:]], 0)
    weight = (valid & (cont > 0) & ~ends).astype(dtype)
    return returns, weight
