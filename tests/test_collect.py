"""Collection: every episode shows whole, its last observation included, then the next
episode's first observation without stepping the env."""

from __future__ import annotations

import jax
import numpy as np

from ssmrl import collect, envs

WRAPPERS = ("flatten", "episode_statistics")


def _collect(name: str, steps: int, num_envs: int, params_change=None, reward_scale=1.0):
    """Random actions: the rows shown at each step ``[T, E, ...]`` and the episode ends."""
    env, params = envs.make_for_agent(name, WRAPPERS)
    if params_change:
        params = params.replace(**params_change)
    space = env.action_space(params)

    def body(rows, key):
        key_a, key_env = jax.random.split(key)
        action = jax.vmap(space.sample)(jax.random.split(key_a, num_envs))
        after, episodes = collect.step(env, params, rows, action, key_env, reward_scale)
        return after, (rows._replace(env_state=None), episodes)

    @jax.jit
    def run(key):
        key, key_reset = jax.random.split(key)
        rows = collect.reset(env, params, key_reset, num_envs)
        return jax.lax.scan(body, rows, jax.random.split(key, steps))

    last, (shown, episodes) = jax.device_get(run(jax.random.PRNGKey(0)))
    return last, shown, episodes


def test_truncated_episodes_show_whole_with_a_reset_step():
    # Pendulum cut to 3 steps: 4 observations per episode, then the reset step.
    _, shown, episodes = _collect("Pendulum-v1", 8, 2, {"max_steps_in_episode": 3}, 2.0)
    first = np.asarray(shown.first)
    np.testing.assert_array_equal(first, np.tile([1, 0, 0, 0], (2, 2)).T.astype(bool))
    np.testing.assert_array_equal(shown.cont, 1.0)  # a time limit is not terminal
    np.testing.assert_array_equal(shown.last, np.roll(first, -1, axis=0))
    reward = np.asarray(shown.reward)
    assert (reward[first] == 0).all() and (reward[~first] < 0).all()
    # Episodes end at the steps that show their last observation; the logged returns are
    # the env's, the rows' rewards are scaled by 2.
    ended = np.asarray(episodes.ended)
    np.testing.assert_array_equal(ended, np.roll(first, -2, axis=0) & (np.arange(8) < 7)[:, None])
    np.testing.assert_allclose(2.0 * episodes.returns[2], reward[1:4].sum(0), rtol=1e-5)
    # The first observation is shown as the env gave it: Pendulum's is [cos, sin, speed].
    obs = np.asarray(shown.obs)
    np.testing.assert_allclose(np.hypot(obs[..., 0], obs[..., 1]), 1.0, rtol=1e-5)


def test_terminated_episodes_end_at_their_terminal_observation():
    _, shown, episodes = _collect("CartPole-v1", 96, 4)
    first, cont = np.asarray(shown.first), np.asarray(shown.cont)
    assert first[0].all() and (cont == 0).sum() >= 4, "too few episodes terminated"
    # The row after a terminal observation starts the next episode, and only those do.
    np.testing.assert_array_equal(first[1:], cont[:-1] == 0)
    np.testing.assert_array_equal(shown.reward, np.where(first, 0.0, 1.0))
    # A terminal observation is the state that failed: the pole past 12° or the cart
    # off the track; none other is.
    obs = np.asarray(shown.obs)
    failed = (np.abs(obs[..., 2]) > 0.2095) | (np.abs(obs[..., 0]) > 2.4)
    np.testing.assert_array_equal(failed, cont == 0)
    assert int(np.asarray(episodes.ended).sum()) == int((cont[:-1] == 0).sum())
