"""Tests for ssmrl.envs.wrappers on a hand-checkable toy env and on gymnax envs."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.wrappers import EpisodeStatistics, FlattenObservation, PreviousActionReward

# The rollouts here are short, so XLA's backend optimisation costs more than it saves.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@struct.dataclass
class CounterState:
    time: jax.Array


@struct.dataclass
class CounterParams:
    max_steps_in_episode: int = 3


class Counter(environment.Environment):
    """Toy env: obs [t, -t] after t steps; reward 1 + action; action 2 terminates.

    Episodes are truncated after 3 steps. With ``continuous=True`` the action is a
    Box(-1, 1, (2,)), the reward is the sum of the clipped action and nothing
    terminates. With ``pytree=True`` the observation is a Dict/Tuple pytree.
    """

    def __init__(self, continuous: bool = False, pytree: bool = False):
        super().__init__()
        self.continuous = continuous
        self.pytree = pytree

    @property
    def default_params(self) -> CounterParams:
        return CounterParams()

    def _obs(self, state: CounterState):
        t = state.time.astype(jnp.float32)
        if not self.pytree:
            return jnp.array([t, -t])
        grid = jnp.array([[t, t + 1.0], [t + 2.0, t + 3.0]])
        return {"pair": (state.time, jnp.array([-t, t])), "grid": grid}

    def reset_env(self, key, params):
        state = CounterState(time=jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def step_env(self, key, state, action, params):
        state = CounterState(time=state.time + 1)
        if self.continuous:
            reward = jnp.clip(action, -1.0, 1.0).sum()
            terminated = jnp.array(False)
        else:
            reward = 1.0 + action.astype(jnp.float32)
            terminated = action == 2
        return self._obs(state), state, reward, terminated, {"time": state.time}

    @property
    def num_actions(self) -> int:
        return 3

    def action_space(self, params):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (2,), jnp.float32)
        return spaces.Discrete(3)

    def observation_space(self, params):
        if not self.pytree:
            return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)
        pair = spaces.Tuple([spaces.Discrete(4), spaces.Box(-3.0, 3.0, (2,))])
        return spaces.Dict({"pair": pair, "grid": spaces.Box(0.0, 6.0, (2, 2))})


def rollout(env, actions, key=None):
    """Jitted reset + scan over `actions`; returns (obs0, per-step outputs)."""
    key = jax.random.key(0) if key is None else key

    def run(key, actions):
        obs, state = env.reset(key, env.default_params)

        def body(state, action):
            obs, state, reward, terminated, truncated, info = env.step(
                key, state, action, env.default_params
            )
            return state, (obs, reward, terminated, truncated, info)

        return obs, jax.lax.scan(body, state, actions)[1]

    return jax.jit(run, compiler_options=FAST_COMPILE)(key, actions)


# actions 0, 1, 0 -> truncated after 3 steps; then 2 -> terminated after 1 step; then 1.
ACTIONS = jnp.array([0, 1, 0, 2, 1], jnp.int32)


def test_episode_statistics_toy():
    env = EpisodeStatistics(Counter())
    _, (obs, reward, terminated, truncated, info) = rollout(env, ACTIONS)
    np.testing.assert_array_equal(reward, [1, 2, 1, 3, 2])
    np.testing.assert_array_equal(terminated, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(truncated, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(info["returned_episode"], [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(info["episode_return"], [0, 0, 4, 3, 0])
    np.testing.assert_array_equal(info["episode_length"], [0, 0, 3, 1, 0])
    assert info["episode_return"].dtype == jnp.float32
    assert info["episode_length"].dtype == jnp.int32
    # Observations and the inner info are passed through untouched.
    np.testing.assert_array_equal(obs[:, 0], [1, 2, 0, 0, 1])
    np.testing.assert_array_equal(info["final_observation"][:, 0], [1, 2, 3, 1, 1])
    np.testing.assert_array_equal(info["time"], [1, 2, 3, 1, 1])


def test_episode_statistics_state_and_api():
    inner = Counter()
    env = EpisodeStatistics(inner)
    obs, state = env.reset(jax.random.key(1))
    assert state.episode_return.dtype == jnp.float32 and float(state.episode_return) == 0.0
    _, state, *_ = env.step(jax.random.key(2), state, 1)
    _, state, *_ = env.step(jax.random.key(2), state, 1)
    assert float(state.episode_return) == 4.0 and int(state.episode_length) == 2
    assert int(state.env_state.time) == 2
    assert env.name == inner.name == "Counter"
    assert env.num_actions == 3
    assert env.default_params == inner.default_params
    assert env.action_space(env.default_params).n == 3
    assert env.observation_space(env.default_params).shape == (2,)
    # Other attributes are looked up on the wrapped env.
    assert env.continuous is False and env.unwrapped is inner
    assert EpisodeStatistics(PreviousActionReward(inner)).unwrapped is inner


def test_previous_action_reward_discrete_toy():
    env = PreviousActionReward(Counter())
    space = env.observation_space(env.default_params)
    assert space.shape == (2 + 3 + 2,) and space.dtype == jnp.float32
    np.testing.assert_array_equal(space.low[2:], [0, 0, 0, -np.inf, 0])
    np.testing.assert_array_equal(space.high[2:], [1, 1, 1, np.inf, 1])
    obs0, (obs, _, _, _, info) = rollout(env, ACTIONS)
    #                    obs      one-hot a  r  first
    np.testing.assert_array_equal(obs0, [0, 0, 0, 0, 0, 0, 1])
    expected_obs = [
        [1, -1, 1, 0, 0, 1, 0],
        [2, -2, 0, 1, 0, 2, 0],
        [0, 0, 0, 0, 0, 0, 1],  # truncated: first obs of episode 2
        [0, 0, 0, 0, 0, 0, 1],  # terminated: first obs of episode 3
        [1, -1, 0, 1, 0, 2, 0],
    ]
    expected_final = [
        [1, -1, 1, 0, 0, 1, 0],
        [2, -2, 0, 1, 0, 2, 0],
        [3, -3, 1, 0, 0, 1, 0],
        [1, -1, 0, 0, 1, 3, 0],
        [1, -1, 0, 1, 0, 2, 0],
    ]
    np.testing.assert_array_equal(obs, expected_obs)
    np.testing.assert_array_equal(info["final_observation"], expected_final)
    assert obs.dtype == info["final_observation"].dtype == jnp.float32
    np.testing.assert_array_equal(info["time"], [1, 2, 3, 1, 1])


def test_previous_action_reward_clips_discrete_actions():
    env = PreviousActionReward(Counter())
    _, state = env.reset(jax.random.key(0))
    for action, onehot in [(-5, [1, 0, 0]), (7, [0, 0, 1])]:
        obs, *_ = env.step(jax.random.key(0), state, jnp.int32(action))
        np.testing.assert_array_equal(obs[2:5], onehot)


def test_previous_action_reward_box_toy():
    env = PreviousActionReward(Counter(continuous=True))
    space = env.observation_space(env.default_params)
    assert space.shape == (2 + 2 + 2,)
    np.testing.assert_array_equal(space.low[2:], [-1, -1, -np.inf, 0])
    np.testing.assert_array_equal(space.high[2:], [1, 1, np.inf, 1])
    actions = jnp.array([[0.5, 3.0], [-0.25, 0.0], [0.1, 0.2], [-2.0, 1.0]], jnp.float32)
    obs0, (obs, reward, _, truncated, info) = rollout(env, actions)
    np.testing.assert_array_equal(obs0, [0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(reward, [1.5, -0.25, 0.3, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(truncated, [0, 0, 1, 0])
    np.testing.assert_allclose(
        obs,
        [[1, -1, 0.5, 1.0, 1.5, 0], [2, -2, -0.25, 0, -0.25, 0], [0, 0, 0, 0, 0, 1],
         [1, -1, -1.0, 1.0, 0.0, 0]],
        rtol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(info["final_observation"][2], [3, -3, 0.1, 0.2, 0.3, 0], rtol=1e-6)


def test_previous_action_reward_rejects_unflattened_obs():
    with pytest.raises(ValueError, match="FlattenObservation"):
        PreviousActionReward(Counter(pytree=True))
    assert PreviousActionReward(FlattenObservation(Counter(pytree=True))).observation_space(
        CounterParams()
    ).shape == (1 + 2 + 4 + 3 + 2,)


def test_flatten_observation_pytree_toy():
    env = FlattenObservation(Counter(pytree=True))
    space = env.observation_space(env.default_params)
    # Dict in the space's key order ("pair" then "grid"); Tuple in order; Discrete -> index.
    assert space.shape == (7,) and space.dtype == jnp.float32
    np.testing.assert_array_equal(space.low, [0, -3, -3, 0, 0, 0, 0])
    np.testing.assert_array_equal(space.high, [3, 3, 3, 6, 6, 6, 6])
    obs0, (obs, _, _, _, info) = rollout(env, ACTIONS[:3])
    np.testing.assert_array_equal(obs0, [0, 0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(obs[1], [2, -2, 2, 2, 3, 4, 5])
    np.testing.assert_array_equal(obs[2], obs0)  # auto-reset
    np.testing.assert_array_equal(info["final_observation"][2], [3, -3, 3, 3, 4, 5, 6])
    assert obs.dtype == info["final_observation"].dtype == jnp.float32


def test_composed_wrappers_vmap_toy():
    """EpisodeStatistics(PreviousActionReward(env)) under jit + vmap, per-env action sequences."""
    env = EpisodeStatistics(PreviousActionReward(Counter()))
    actions = jnp.array([[0, 1, 0, 2, 1], [2, 2, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.int32)
    keys = jax.random.split(jax.random.key(0), 3)
    obs0, (obs, _, _, _, info) = jax.vmap(lambda a, k: rollout(env, a, k))(actions, keys)
    assert obs0.shape == (3, 7) and obs.shape == (3, 5, 7)
    np.testing.assert_array_equal(obs0[:, -1], 1)
    np.testing.assert_array_equal(info["returned_episode"], [[0, 0, 1, 1, 0], [1, 1, 0, 0, 1],
                                                             [0, 0, 1, 0, 0]])  # fmt: skip
    np.testing.assert_array_equal(info["episode_return"], [[0, 0, 4, 3, 0], [3, 3, 0, 0, 6],
                                                           [0, 0, 6, 0, 0]])  # fmt: skip
    np.testing.assert_array_equal(info["episode_length"], [[0, 0, 3, 1, 0], [1, 1, 0, 0, 3],
                                                           [0, 0, 3, 0, 0]])  # fmt: skip
    # is_first exactly where the previous step ended an episode.
    np.testing.assert_array_equal(obs[..., -1], info["returned_episode"])
    np.testing.assert_array_equal(info["final_observation"][1, 4], [3, -3, 0, 1, 0, 2, 0])
    np.testing.assert_array_equal(obs[1, 4], [0, 0, 0, 0, 0, 0, 1])


def test_composition_order_and_default_params():
    """PreviousActionReward outside EpisodeStatistics keeps the statistics in info."""
    env = PreviousActionReward(EpisodeStatistics(Counter()))
    obs, state = env.reset(jax.random.key(0))  # params=None -> default params
    for _ in range(3):
        obs, state, _, _, truncated, info = env.step(jax.random.key(0), state, 1)
    assert bool(truncated) and bool(info["returned_episode"])
    assert float(info["episode_return"]) == 6.0
    np.testing.assert_array_equal(info["final_observation"], [3, -3, 0, 1, 0, 2, 0])
    np.testing.assert_array_equal(obs, [0, 0, 0, 0, 0, 0, 1])


def _cartpole_pair(num_envs: int, num_steps: int):
    """Roll out raw and wrapped CartPole-v1 with identical keys and random actions."""
    raw, params = gymnax.make("CartPole-v1")
    wrapped = EpisodeStatistics(PreviousActionReward(raw))

    def run(key):
        return rollout(raw, key), rollout(wrapped, key)

    def rollout(env, key):
        def one(key):
            key, key_reset = jax.random.split(key)
            _, state = env.reset(key_reset, params)

            def body(state, key):
                key_act, key_step = jax.random.split(key)
                action = jax.random.randint(key_act, (), 0, 2)
                obs, state, reward, terminated, truncated, info = env.step(
                    key_step, state, action, params
                )
                return state, (obs, action, reward, terminated | truncated, info)

            return jax.lax.scan(body, state, jax.random.split(key, num_steps))[1]

        return jax.vmap(one)(jax.random.split(key, num_envs))

    return jax.jit(run, compiler_options=FAST_COMPILE)(jax.random.key(3))


def test_wrappers_on_cartpole():
    raw, wrapped = _cartpole_pair(num_envs=4, num_steps=200)
    r_obs, r_act, r_rew, r_done, r_info = raw
    w_obs, _, w_rew, w_done, w_info = wrapped
    assert w_obs.shape == (4, 200, 4 + 2 + 2) and w_obs.dtype == jnp.float32
    np.testing.assert_array_equal(w_obs[..., :4], r_obs)
    np.testing.assert_array_equal(w_rew, r_rew)
    np.testing.assert_array_equal(w_done, r_done)
    np.testing.assert_array_equal(w_info["final_observation"][..., :4], r_info["final_observation"])
    onehot = np.eye(2)[np.asarray(r_act)]
    done = np.asarray(r_done)
    assert done.any()
    np.testing.assert_array_equal(w_obs[..., 4:6], np.where(done[..., None], 0.0, onehot))
    np.testing.assert_array_equal(w_obs[..., 6], np.where(done, 0.0, 1.0))
    np.testing.assert_array_equal(w_obs[..., 7], done)
    np.testing.assert_array_equal(w_info["final_observation"][..., 4:6], onehot)
    # Episode statistics against a plain Python tally of the rewards.
    rew = np.asarray(r_rew)
    ep_return, ep_length = (
        np.asarray(w_info["episode_return"]),
        np.asarray(w_info["episode_length"]),
    )
    for e in range(4):
        ret, length = 0.0, 0
        for t in range(200):
            ret, length = ret + float(rew[e, t]), length + 1
            if done[e, t]:
                assert (ep_return[e, t], ep_length[e, t]) == (ret, length)
                ret, length = 0.0, 0
            else:
                assert (ep_return[e, t], ep_length[e, t]) == (0.0, 0)
    # CartPole pays 1 per step, so return == length for every finished episode.
    np.testing.assert_array_equal(w_info["episode_return"], w_info["episode_length"])


def test_wrappers_on_pendulum_box_action():
    raw, params = gymnax.make("Pendulum-v1")
    env = PreviousActionReward(raw)
    space = env.observation_space(params)
    assert space.shape == (3 + 1 + 2,)
    np.testing.assert_allclose(space.low[3], -raw.action_space(params).high)
    obs, state = env.reset(jax.random.key(0), params)
    obs, state, reward, *_ = env.step(jax.random.key(1), state, jnp.array([5.0]), params)
    assert float(obs[3]) == float(params.max_torque) and float(obs[4]) == float(reward)
    assert float(obs[5]) == 0.0


def test_flatten_observation_on_minatar():
    raw, params = gymnax.make("Breakout-MinAtar")
    env = PreviousActionReward(FlattenObservation(raw))
    space = env.observation_space(params)
    size = int(np.prod(raw.observation_space(params).shape))
    assert space.shape == (size + raw.num_actions + 2,) and size == 400

    def run(key):
        obs, state = env.reset(key, params)
        raw_obs, raw_state = raw.reset(key, params)

        def body(carry, key):
            state, raw_state = carry
            action = jax.random.randint(key, (), 0, raw.num_actions)
            out = env.step(key, state, action, params)
            raw_out = raw.step(key, raw_state, action, params)
            return (out[1], raw_out[1]), (out, raw_out)

        return (obs, raw_obs), jax.lax.scan(body, (state, raw_state), jax.random.split(key, 300))[1]

    (obs0, raw_obs0), (out, raw_out) = jax.jit(run, compiler_options=FAST_COMPILE)(
        jax.random.key(0)
    )
    np.testing.assert_array_equal(obs0[:size], raw_obs0.reshape(-1))
    np.testing.assert_array_equal(out[0][:, :size], raw_out[0].reshape(300, -1))
    np.testing.assert_array_equal(
        out[5]["final_observation"][:, :size], raw_out[5]["final_observation"].reshape(300, -1)
    )
    done = np.asarray(raw_out[3] | raw_out[4])
    assert done.any(), "no Breakout episode ended in 300 random steps"
    np.testing.assert_array_equal(out[0][:, -1], done)
    assert bool(space.contains(out[0]))
