"""Recurrent PPO: the stored and recomputed log-probabilities agree, and training runs."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl import cores
from ssmrl.agents import ppo
from ssmrl.cores import MLPOptions, S5Options
from ssmrl.envs.wrappers import EpisodeStatistics
from ssmrl.returns import gae


@struct.dataclass
class CoinState(environment.EnvState):
    coin: jax.Array


@struct.dataclass
class CoinParams(environment.EnvParams):
    max_steps_in_episode: int = 6
    p_end: float = 0.25


class CoinEnv(environment.Environment):
    """Shows a coin at the first step only; reward 1 for naming it later.

    Episodes terminate at random (p_end per step) or are truncated at 6 steps, so a
    16-step rollout holds both kinds of episode end.
    """

    @property
    def default_params(self):
        return CoinParams()

    def reset_env(self, key, params):
        coin = jax.random.bernoulli(key).astype(jnp.int32)
        state = CoinState(time=0, coin=coin)
        return jnp.array([coin, 1 - coin, 1.0], jnp.float32), state

    def step_env(self, key, state, action, params):
        reward = (action == state.coin).astype(jnp.float32)
        state = state.replace(time=state.time + 1)
        terminated = jax.random.bernoulli(key, params.p_end)
        return jnp.zeros(3, jnp.float32), state, reward, terminated, {}

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (3,), jnp.float32)

    def action_space(self, params):
        return spaces.Discrete(2)


TINY = ppo.Config(
    core=S5Options(features=16, num_layers=1, state_size=8),
    total_timesteps=4 * 16 * 2,
    num_envs=4,
    num_steps=16,
    update_epochs=2,
    num_minibatches=2,
    head_width=16,
)


def _env(kind: str):
    if kind == "discrete":
        env = CoinEnv()
        return EpisodeStatistics(env), env.default_params
    env, params = gymnax.make("Pendulum-v1")
    return EpisodeStatistics(env), params.replace(max_steps_in_episode=5)


@cache
def _agent(core: str, kind: str):
    cfg = replace(TINY, core=cores.convert(TINY.core, core))
    env, params = _env(kind)
    agent = ppo.make_parts(cfg, env, params)
    return agent, jax.jit(agent.init), jax.jit(agent.rollout)


@pytest.mark.parametrize(
    "core,kind",
    [
        ("s5", "discrete"),
        ("gru", "discrete"),
        ("lstm", "discrete"),
        ("mlp", "discrete"),
        ("s5", "continuous"),
    ],
)
def test_recomputed_log_probs_match_rollout(core, kind):
    agent, init, rollout = _agent(core, kind)
    runner, _, _ = rollout(init(jax.random.PRNGKey(0)))  # start the next rollout mid-episode
    _, traj, start_carry = rollout(runner)
    assert bool(traj.reset[1:].any()), "no episode ended inside the rollout"
    if kind == "discrete":
        assert bool(traj.terminated.any()) and bool(traj.truncated.any())
    idx = jnp.arange(TINY.num_envs // TINY.num_minibatches)  # the first minibatch's envs
    take = lambda x: x[:, idx]  # noqa: E731
    ev = jax.jit(agent.evaluate)(
        runner.train_state.params,
        jax.tree.map(lambda x: x[idx], start_carry),
        jax.tree.map(take, traj),
    )
    ratio = np.exp(np.asarray(ev.log_prob) - np.asarray(take(traj.log_prob)))
    np.testing.assert_allclose(ratio, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ev.value), np.asarray(take(traj.value)), atol=1e-5)


def _replay_final_value(agent, params, start_carry, traj, t, b):
    """Value after replaying env ``b`` up to step ``t`` and then its final observation."""
    batch = jax.tree.map(lambda x: jnp.concatenate([x[: t + 1, b], x[t : t + 1, b]])[:, None], traj)
    # CoinEnv's observations after the first step are zeros, the final one included.
    batch = batch._replace(obs=batch.obs.at[-1].set(0.0), reset=batch.reset.at[-1].set(False))
    carry = jax.tree.map(lambda x: x[b : b + 1], start_carry)
    return float(jax.jit(agent.evaluate)(params, carry, batch).value[-1, 0])


@pytest.mark.parametrize("core", ["s5", "gru"])
def test_final_value_is_the_value_of_the_truncating_observation(core):
    agent, init, rollout = _agent(core, "discrete")
    runner, _, _ = rollout(init(jax.random.PRNGKey(3)))
    _, traj, start_carry = rollout(runner)
    params = runner.train_state.params
    ends = list(zip(*np.nonzero(np.asarray(traj.truncated)), strict=True))
    assert ends, "no episode was truncated inside the rollout"
    for t, b in ends:
        want = _replay_final_value(agent, params, start_carry, traj, t, b)
        np.testing.assert_allclose(want, float(traj.final_value[t, b]), atol=1e-5)


def test_train_vmaps_over_seeds():
    env, params = _env("discrete")
    train = ppo.make_train(replace(TINY, core=MLPOptions(features=16)), env, params)
    _, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(1), 2))
    assert metrics.total_loss.shape == (2, TINY.num_updates)
    assert np.isfinite(np.asarray(metrics.total_loss)).all()
    assert (np.asarray(metrics.episodes) > 0).all()
    assert np.all((np.asarray(metrics.mean_return) >= 0) & (np.asarray(metrics.mean_return) <= 6))


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(num_minibatches=3), "num_minibatches=3 must divide num_envs=4"),
        (dict(total_timesteps=10), "less than one update"),
        (dict(gamma=1.5), "gamma"),
        (dict(next_episode_discount=-0.5), "next_episode_discount"),
        (dict(core=S5Options(state_size=6, blocks=4)), "blocks"),
        (dict(core=S5Options(name="gru")), "not 'gru'"),
    ],
)
def test_config_errors(change, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **change).validate()


def test_episode_returns_end_returns_at_every_episode_end_inside_a_trial():
    from ssmrl.envs.meta import MetaEnv
    from ssmrl.envs.wrappers import PreviousActionReward

    # 12-step episodes: random CartPole play falls after ~10-25 steps, so inner episodes
    # end both ways (the pole falls, or the time limit), and the 4-episode trials (at
    # most 48 steps) end inside a 64-step rollout.
    meta = MetaEnv(("CartPole-v1",), episode_steps=12, episodes_per_trial=4)
    env, params = EpisodeStatistics(PreviousActionReward(meta)), meta.default_params
    cfg = replace(TINY, core=MLPOptions(features=16), num_steps=64, total_timesteps=512)
    cfg = replace(cfg, num_envs=8, num_minibatches=2)
    runs = {}
    for flag, next_discount in ((False, 0.0), (True, 0.0), (True, 0.25)):
        change = dict(episode_returns=flag, next_episode_discount=next_discount)
        agent = ppo.make_parts(replace(cfg, **change), env, params)
        runner = agent.init(jax.random.PRNGKey(0))
        runs[flag, next_discount] = jax.jit(agent.rollout)(runner)[1]
    # Same key, same policy: one rollout, read three ways.
    across, alone, partly = runs[False, 0.0], runs[True, 0.0], runs[True, 0.25]
    inner = np.asarray(alone.discount) == 0.0
    assert np.all(np.asarray(across.discount) == 1.0)
    np.testing.assert_array_equal(np.asarray(partly.discount), np.where(inner, 0.25, 1.0))
    np.testing.assert_array_equal(alone.reward, across.reward)
    np.testing.assert_array_equal(np.asarray(alone.reset), np.asarray(across.reset))
    # A trial's end is terminal, never truncated; memory resets only after it.
    terminated = np.asarray(alone.terminated)
    assert terminated[:, :].any(axis=0).all() and not np.asarray(alone.truncated).any()
    np.testing.assert_array_equal(np.asarray(alone.reset)[1:], terminated[:-1])
    assert not (inner & terminated).any()
    # Returns end exactly where the next observation starts a new episode (of this trial
    # or, after a terminal step, of the next one),
    # and inner episodes end both by falling (< 12 steps) and by the time limit (12).
    episode_start = np.asarray(alone.obs[1:, :, meta.obs_size]) > 0.5
    np.testing.assert_array_equal(inner[:-1] | terminated[:-1], episode_start)
    lengths = []
    for b in range(cfg.num_envs):
        starts = np.flatnonzero(np.asarray(alone.obs[:, b, meta.obs_size]) > 0.5)
        lengths += list(np.diff(starts))
    assert 12 in lengths and min(lengths) < 12
    # GAE: no advantage flows back across an inner episode end (discount 0) or a trial end.
    t, b = map(int, np.argwhere(inner[:-1])[0])
    bumped = alone._replace(reward=alone.reward.at[t + 1, b].add(100.0))
    base = gae(
        alone.reward,
        alone.value,
        alone.value,
        alone.terminated,
        alone.truncated,
        cfg.gamma * alone.discount,
        cfg.gae_lambda,
    ).advantages
    moved = gae(
        bumped.reward,
        bumped.value,
        bumped.value,
        bumped.terminated,
        bumped.truncated,
        cfg.gamma * bumped.discount,
        cfg.gae_lambda,
    ).advantages
    np.testing.assert_array_equal(np.asarray(base)[: t + 1, b], np.asarray(moved)[: t + 1, b])

    with pytest.raises(ValueError, match="trial_episode_done"):
        env, params = _env("discrete")
        agent = ppo.make_parts(replace(TINY, episode_returns=True), env, params)
        agent.rollout(agent.init(jax.random.PRNGKey(0)))
