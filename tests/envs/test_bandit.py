"""The POPGym MultiarmedBandit tasks against the reference popgym package.

Exact conformance loads arm probabilities into both the reference and our
state (0/1 probabilities make every pull deterministic), then pulls the same
arms in both and compares every observation, reward and flag. With the
reference's own probabilities the payout frequency of each arm is checked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import popgym.envs
import pytest

from ssmrl.envs import make
from tests.envs.reference import assert_means_match, reference_random_returns

TASKS = ["MultiarmedBanditEasy", "MultiarmedBanditMedium", "MultiarmedBanditHard"]
FAST_COMPILE = {"xla_backend_optimization_level": 0}
EPISODES = 256  # every call of `play` for one task has this many rows: one compile per task
BEST = -1  # action meaning "pull the arm with the highest probability"


@functools.cache
def task(name):
    return make(name)


def reference(name, seed=0):
    ref = getattr(popgym.envs, name)()
    ref.reset(seed=seed)
    return ref


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _play(env, keys, params, probs, actions):
    def one(key, probs, actions):
        key_reset, key_run = jax.random.split(key)
        obs0, state = env.reset(key_reset, params)
        state = state.replace(probs=jnp.where(probs[0] < 0, state.probs, probs))

        def body(state, inputs):
            key, action = inputs
            action = jnp.where(action == BEST, jnp.argmax(state.probs), action)
            _, new, reward, terminated, truncated, info = env.step(key, state, action, params)
            return new, (info["final_observation"], reward, terminated, truncated)

        keys = jax.random.split(key_run, actions.shape[0])
        return obs0, state.probs, jax.lax.scan(body, state, (keys, actions))[1]

    return jax.vmap(one)(keys, probs, actions)


def play(name, actions, probs=None, seed=0):
    """One episode per row of ``actions`` (``EPISODES`` rows, ``BEST`` pulls the best arm)
    from a reset whose probabilities are replaced by the rows of ``probs`` if given ->
    numpy (reset obs, probabilities used, per-step obs, rewards, terminated, truncated)."""
    env, params = task(name)
    if probs is None:
        probs = -np.ones((EPISODES, env.num_arms), np.float32)
    keys = jax.random.split(jax.random.key(seed), EPISODES)
    obs0, used, (obs, rewards, terminated, truncated) = _play(
        env, keys, params, jnp.asarray(probs, jnp.float32), jnp.asarray(actions, jnp.int32)
    )
    return tuple(map(np.asarray, (obs0, used, obs, rewards, terminated, truncated)))


@functools.cache
def random_play(name):
    """Uniformly random pulls for a full episode in every row (run once, shared)."""
    env, params = task(name)
    rng = np.random.default_rng(1)
    actions = rng.integers(0, env.num_arms, (EPISODES, params.max_steps_in_episode))
    return play(name, actions, seed=1)


@pytest.mark.parametrize("name", TASKS)
def test_spaces_lengths_and_resets_match_reference(name):
    env, params = task(name)
    ref = reference(name)
    assert env.num_arms == env.num_actions == ref.action_space.n == ref.num_bandits
    assert env.action_space(params).n == ref.action_space.n
    assert env.observation_space(params).shape == (ref.observation_space.n,) == (2,)
    assert params.max_steps_in_episode == ref.max_episode_length
    alias_env, alias_params = make(name.replace("Multiarmed", "MultiArmed"))
    assert alias_env.num_arms == env.num_arms and alias_params == params

    obs0, probs, obs, rewards, terminated, truncated = random_play(name)
    np.testing.assert_array_equal(obs0, np.broadcast_to([1.0, 0.0], obs0.shape))
    assert not terminated.any()
    assert truncated[:, -1].all() and not truncated[:, :-1].any()
    np.testing.assert_array_equal(obs.sum(-1), 1.0)
    np.testing.assert_array_equal(np.abs(rewards), np.float32(1 / ref.max_episode_length))
    assert (probs >= 0).all() and (probs < 1).all()
    assert abs(probs.mean() - 0.5) < 0.01 and probs.var() == pytest.approx(1 / 12, rel=0.05)


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_pulls_match_reference(name):
    """With the reference's probabilities rounded to 0/1 in both, identical episodes."""
    env, params = task(name)
    ref = reference(name, seed=5)
    probs = np.round(ref.bandits).astype(np.float32)
    assert 0 < probs.sum() < env.num_arms
    ref.bandits = probs
    actions = np.random.default_rng(2).integers(0, env.num_arms, params.max_steps_in_episode)
    ref_out = [ref.step(int(a)) for a in actions]
    ref_obs = np.eye(2, dtype=np.float32)[[o for o, *_ in ref_out]]
    _, _, obs, rewards, terminated, truncated = play(
        name, np.tile(actions, (EPISODES, 1)), np.tile(probs, (EPISODES, 1))
    )
    np.testing.assert_array_equal(obs[0], ref_obs)
    np.testing.assert_allclose(rewards[0], [r for _, r, *_ in ref_out], rtol=1e-6)
    np.testing.assert_array_equal(terminated[0], [t for _, _, t, *_ in ref_out])
    np.testing.assert_array_equal(truncated[0], [t for *_, t, _ in ref_out])


@pytest.mark.parametrize("name", TASKS)
def test_payout_frequencies_match_reference_probabilities(name):
    """With the reference's arm probabilities, each arm pays with its probability."""
    env, params = task(name)
    probs = reference(name, seed=7).bandits
    length = params.max_steps_in_episode
    actions = np.arange(EPISODES * length).reshape(EPISODES, length) % env.num_arms
    _, used, obs, *_ = play(name, actions, np.tile(probs, (EPISODES, 1)), seed=3)
    np.testing.assert_array_equal(used[0], probs)
    pulls = EPISODES * length / env.num_arms
    freq = np.bincount(actions.ravel(), weights=obs[..., 1].ravel()) / pulls
    se = np.sqrt(probs * (1 - probs) / pulls) + 1e-9
    assert (np.abs(freq - probs) < 4.5 * se).all()


@pytest.mark.parametrize("name", TASKS)
def test_best_arm_reaches_the_max_expected_return(name):
    """Always pulling the best arm returns 2 p_max - 1 in expectation, and p_max has the
    law of the maximum of the uniform arm probabilities: E = 2 n / (n + 1) - 1."""
    env, params = task(name)
    n, length = env.num_arms, params.max_steps_in_episode
    _, probs, _, rewards, *_ = play(name, np.full((EPISODES, length), BEST), seed=4)
    returns = rewards.sum(1)
    best = probs.max(1)
    se = np.sqrt(np.sum(4 * best * (1 - best) / length)) / EPISODES
    assert abs((returns - (2 * best - 1)).mean()) < 4.5 * se
    assert_means_match(returns, np.full(EPISODES, 2 * n / (n + 1) - 1), z=4.5)
    assert returns.mean() > random_play(name)[3].sum(1).mean() + 0.5


@pytest.mark.parametrize(("name", "ref_episodes"), list(zip(TASKS, (120, 80, 60), strict=True)))
def test_random_returns_match_reference(name, ref_episodes):
    returns = random_play(name)[3].sum(1)
    assert_means_match(returns, reference_random_returns(name, ref_episodes))


def test_out_of_range_actions_are_clipped():
    name = "MultiarmedBanditEasy"
    env, params = task(name)
    probs = np.zeros((EPISODES, env.num_arms), np.float32)
    probs[:, 0] = probs[:, -1] = 1.0
    probs[1::2, -1] = 0.0  # odd rows: only the first arm pays
    actions = np.zeros((EPISODES, params.max_steps_in_episode), np.int32)
    actions[:, 0], actions[:, 1] = -5, env.num_arms + 3
    _, _, obs, rewards, *_ = play(name, actions, probs)
    assert np.isfinite(rewards).all() and np.isfinite(obs).all()
    assert (rewards[:, 0] > 0).all()
    np.testing.assert_array_equal(rewards[:, 1] > 0, np.arange(EPISODES) % 2 == 0)
