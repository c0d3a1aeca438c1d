"""Stepping auto-resetting gymnax envs so that every episode reaches a replay buffer whole.

Gymnax resets an env inside the step that ends its episode, so the observation that step
returns is already the next episode's first one. A world model must also see the last
one (to learn the terminal state), so collection here splits that step in two, as
DreamerV3 does: the step that ends an episode shows its last observation
(``info["final_observation"]``, with its reward and ``cont = 1 - terminated``), and the
next one shows the new episode's first observation without stepping the env (its action
is ignored, its reward is 0). That reset step counts as an env step.

```python
rows = collect.reset(env, env_params, key, num_envs)
row = (rows.obs, rows.reward, rows.cont, rows.first)   # what to store and act on now
rows, episodes = collect.step(env, env_params, rows, action, key)
```
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Rows(NamedTuple):
    """``E`` envs and the row each shows now (the one to act on and store).

    | field      | shape  | meaning                                                     |
    |------------|--------|-------------------------------------------------------------|
    | env_state  | [E...] | the envs' states                                            |
    | obs        | [E, O] | o_t, the observation to act on (or an episode's last one)   |
    | reward     | [E]    | r_t, the reward that came with o_t (0 where first)          |
    | cont       | [E]    | 0 where o_t is terminal, else 1                             |
    | first      | [E]    | o_t starts an episode                                       |
    | last       | [E]    | o_t ends one: the next step shows ``next_first``            |
    | next_first | [E, O] | the next episode's first observation, held while ``last``   |
    """

    env_state: Any
    obs: jax.Array
    reward: jax.Array
    cont: jax.Array
    first: jax.Array
    last: jax.Array
    next_first: jax.Array


class Episodes(NamedTuple):
    """Episode ends of one step, ``[E]``: whether one ended, and its return (else 0)."""

    ended: jax.Array
    returns: jax.Array


def reset(env: Any, env_params: Any, key: jax.Array, num_envs: int) -> Rows:
    """``num_envs`` envs at their first observations (float32)."""
    obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(key, num_envs), env_params)
    obs = obs.astype(jnp.float32)
    return Rows(
        env_state=env_state,
        obs=obs,
        reward=jnp.zeros(num_envs),
        cont=jnp.ones(num_envs),
        first=jnp.ones(num_envs, bool),
        last=jnp.zeros(num_envs, bool),
        next_first=obs,
    )


def step(
    env: Any, env_params: Any, rows: Rows, action: Any, key: jax.Array, reward_scale: float = 1.0
) -> tuple[Rows, Episodes]:
    """Step the envs with ``action`` (``[E]`` or ``[E, A]``; ignored where ``rows.last``).

    Rewards in the returned rows are multiplied by ``reward_scale``; episode returns come
    from the `ssmrl.envs.wrappers.EpisodeStatistics` info (0 without it) and are the env's.
    """
    n = rows.obs.shape[0]
    obs, env_state, reward, terminated, truncated, info = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(key, n), rows.env_state, action, env_params
    )
    obs = obs.astype(jnp.float32)
    reset = rows.last  # show the new episode's first observation; the env is not stepped
    done = (terminated | truncated) & ~reset
    ended = info.get("returned_episode", jnp.zeros(n, bool)) & ~reset
    episode_return = info.get("episode_return", jnp.zeros(n))
    final_obs = info["final_observation"].astype(jnp.float32)
    rows = Rows(
        env_state=where(reset, rows.env_state, env_state),
        obs=where(reset, rows.next_first, where(done, final_obs, obs)),
        reward=jnp.where(reset, 0.0, reward_scale * jnp.asarray(reward, jnp.float32)),
        cont=jnp.where(reset, 1.0, 1.0 - terminated.astype(jnp.float32)),
        first=reset,
        last=done,
        next_first=where(done, obs, rows.next_first),
    )
    return rows, Episodes(ended, jnp.where(ended, episode_return, 0.0))


def where(flag: jax.Array, a: Any, b: Any) -> Any:
    """``a`` where ``flag [E]`` else ``b``, leaf by leaf (leaves ``[E, ...]``)."""

    def pick(x, y):
        return jnp.where(flag.reshape(-1, *(1,) * (jnp.ndim(x) - 1)), x, y)

    return jax.tree.map(pick, a, b)
