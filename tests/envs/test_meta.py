"""Tests for ssmrl.envs.meta: randomly projected tasks, trials of several episodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssmrl.envs
from ssmrl.envs.meta import MetaEnv
from ssmrl.envs.wrappers import PreviousActionReward

FAST_COMPILE = {"xla_backend_optimization_level": 0}
B, T = 6, 60


def rollout(env, params, actions_fn, steps=T, batch=B, seed=0):
    """``(obs [T+1, B, ...], states [T+1, B], rewards, terminated, truncated, infos [T, B])``."""

    def run(key):
        key, key_reset = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(key_reset, batch), params)

        def body(carry, key):
            obs, state = carry
            key_act, key_step = jax.random.split(key)
            action = jax.vmap(actions_fn)(jax.random.split(key_act, batch), obs)
            out = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(key_step, batch), state, action, params
            )
            nobs, nstate, reward, terminated, truncated, info = out
            return (nobs, nstate), (nobs, nstate, reward, terminated, truncated, info)

        _, ys = jax.lax.scan(body, (obs, state), jax.random.split(key, steps))
        all_obs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), obs, ys[0])
        all_states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), state, ys[1])
        return all_obs, all_states, *ys[2:]

    return jax.jit(run, compiler_options=FAST_COMPILE)(jax.random.PRNGKey(seed))


def random_actions(env, params):
    space = env.action_space(params)
    return lambda key, obs: space.sample(key)


def test_trials_keep_their_projections_and_hold_k_episodes():
    env = MetaEnv(("CartPole-v1", "Acrobot-v1"), episode_steps=4, episodes_per_trial=3)
    params = env.default_params
    obs, states, _, terminated, truncated, info = rollout(env, params, random_actions(env, params))
    trial_end = np.asarray(terminated | truncated)
    episode_done = np.asarray(info["trial_episode_done"])
    proj, task = np.asarray(states.obs_proj), np.asarray(states.task)
    for b in range(B):
        ends = np.flatnonzero(trial_end[:, b])
        assert len(ends) >= 3
        starts = [0, *(ends + 1)]
        for s, e in zip(starts[:-1], ends, strict=False):
            # Projections and task fixed from the trial's reset (state s) to its last step.
            assert (proj[s : e + 1, b] == proj[s, b]).all() and (
                task[s : e + 1, b] == task[s, b]
            ).all()
            assert episode_done[s : e + 1, b].sum() == 3, "a trial holds exactly K episodes"
            assert np.asarray(info["trial_episode_index"])[e, b] == 2
        firsts = [proj[s, b] for s in starts[:-1]]
        assert not np.allclose(firsts[0], firsts[1]), "projections change across trials"
    assert (trial_end <= episode_done).all()


def test_core_resets_only_at_trial_starts():
    env = MetaEnv(("CartPole-v1",), episode_steps=3, episodes_per_trial=4)
    wrapped = PreviousActionReward(env)
    params = env.default_params
    obs, _, _, terminated, truncated, info = rollout(
        wrapped, params, random_actions(env, params), steps=40, batch=3
    )
    is_first = np.asarray(obs[..., -1])  # the wrapper's flag, last entry
    episode_start = np.asarray(obs[..., env.obs_size])  # the meta env's flag
    trial_end = np.asarray(terminated | truncated)
    np.testing.assert_array_equal(is_first[1:], trial_end)
    assert is_first[0].all() and episode_start[0].all()
    inner_end = np.asarray(info["trial_episode_done"]) & ~trial_end
    np.testing.assert_array_equal(episode_start[1:], inner_end | trial_end)
    t = np.arange(1, 41)[:, None]  # CartPole never falls within 3 steps
    np.testing.assert_array_equal(trial_end, np.broadcast_to(t % 12 == 0, (40, 3)))
    np.testing.assert_array_equal(inner_end, np.broadcast_to((t % 3 == 0) & (t % 12 != 0), (40, 3)))


def test_observation_is_the_projected_state_and_rewards_are_scaled():
    env = MetaEnv(("CartPole-v1",), obs_size=5, episode_steps=7, episodes_per_trial=2)
    params = env.default_params
    obs, states, reward, _, _, info = rollout(env, params, random_actions(env, params))
    s = states.base[0]
    x = np.stack([s.x, s.x_dot, s.theta, s.theta_dot], -1).astype(np.float64)
    # Positions are bounded (|x| <= 4.8, |theta| <= 24 degrees) and mapped to [-1, 1];
    # the velocities are unbounded and kept as they are.
    x = x / np.array([4.8, 1.0, 24 * np.pi / 180, 1.0])
    proj = np.asarray(states.obs_proj, np.float64)
    want = np.einsum("tbij,tbj->tbi", proj, x)
    np.testing.assert_allclose(np.asarray(obs[..., :5]), want, rtol=1e-5, atol=1e-5)
    # CartPole pays 1 per step; the default scale is 1 / episode length.
    np.testing.assert_allclose(np.asarray(reward), 1 / 7, rtol=1e-6)
    done = np.asarray(info["trial_episode_done"])
    full = done & (np.asarray(info["trial_episode_return"]) > 0.99)
    assert full.any(), "episodes that last 7 steps return 1"


def test_normalize_maps_bounds_to_the_unit_range():
    env = MetaEnv(("MountainCar-v0", "CartPole-v1"))
    (center, half), (c2, h2) = env._obs_scales
    np.testing.assert_allclose(center, [-0.3, 0.0], rtol=1e-6)  # [-1.2, 0.6], [-0.07, 0.07]
    np.testing.assert_allclose(half, [0.9, 0.07], rtol=1e-6)
    np.testing.assert_allclose(c2, 0.0)
    np.testing.assert_allclose(h2, [4.8, 1.0, 24 * np.pi / 180, 1.0], rtol=1e-6)
    raw = MetaEnv(("MountainCar-v0",), normalize=False)._obs_scales[0]
    assert (raw[0] == 0.0).all() and (raw[1] == 1.0).all()


@pytest.mark.parametrize("projection", ["gaussian", "orthogonal"])
def test_projection_columns(projection):
    env = MetaEnv(("Pendulum-v1", "Acrobot-v1"), obs_size=8, projection=projection)
    params = env.default_params
    for seed in range(6):
        _, state = env.reset(jax.random.PRNGKey(seed), params)
        w = np.asarray(state.obs_proj, np.float64)
        d = env.obs_dims[int(state.task)]
        assert w.shape == (8, 6) and not w[:, d:].any()
        if projection == "orthogonal":
            np.testing.assert_allclose(w[:, :d].T @ w[:, :d], np.eye(d), atol=1e-5)


def test_discrete_actions_are_permuted():
    env = MetaEnv(("CartPole-v1", "Acrobot-v1"))
    params = env.default_params
    assert env.action_space(params).n == 3
    _, state = env.reset(jax.random.PRNGKey(3), params)
    perm = np.asarray(state.act_perm)
    assert sorted(perm) == [0, 1, 2]
    for i, n in enumerate((2, 3)):
        for a in range(3):
            assert int(env._task_action(i, jnp.int32(a), state)) == perm[a] % n
    # CartPole is deterministic: the meta step equals the base step with the mapped action.
    cart = MetaEnv(("CartPole-v1",))
    _, state = cart.reset(jax.random.PRNGKey(0), cart.default_params)
    base_env = cart.envs[0]
    for a in (0, 1):
        _, new, *_ = cart.step_env(jax.random.PRNGKey(1), state, a, cart.default_params)
        mapped = int(np.asarray(state.act_perm)[a])
        _, ref, *_ = base_env.step_env(
            jax.random.PRNGKey(1), state.base[0], mapped, cart.base_params[0]
        )
        np.testing.assert_allclose(float(new.base[0].x_dot), float(ref.x_dot), rtol=1e-6)


def test_permute_actions_false_passes_actions_through():
    env = MetaEnv(("CartPole-v1", "Acrobot-v1"), permute_actions=False)
    for k in range(4):
        _, state = env.reset(jax.random.PRNGKey(k), env.default_params)
        np.testing.assert_array_equal(np.asarray(state.act_perm), [0, 1, 2])
        assert [int(env._task_action(0, jnp.int32(a), state)) for a in range(3)] == [0, 1, 0]


def test_mixed_task_set_shapes_and_bad_actions_stay_finite():
    env, params = ssmrl.envs.make("MetaControl")
    held_env, held_params = ssmrl.envs.make("MetaControlHeldOut")
    assert env.observation_space(params).shape == held_env.observation_space(held_params).shape
    assert env.action_space(params).shape == held_env.action_space(held_params).shape == (3,)

    def wild(key, obs):
        return jnp.array([jnp.nan, 1e6, -1e6])[jax.random.permutation(key, 3)]

    obs, states, reward, *_ = rollout(env, params, wild, steps=30)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert len(set(np.asarray(states.task).ravel())) > 1


@pytest.mark.parametrize("repeat_start", [True, False])
def test_repeat_start_restarts_every_episode_from_the_trial_start(repeat_start):
    env = MetaEnv(
        ("CartPole-v1", "Acrobot-v1"),
        episode_steps=5,
        episodes_per_trial=3,
        repeat_start=repeat_start,
    )
    params = env.default_params
    obs, states, _, terminated, truncated, info = rollout(
        env, params, random_actions(env, params), steps=30
    )
    trial_end = np.asarray(terminated | truncated)
    episode_start = np.asarray(obs[..., env.obs_size]) > 0.5
    for b in range(B):
        starts = np.flatnonzero(episode_start[:, b])
        trial_starts = {0, *(np.flatnonzero(trial_end[:, b]) + 1)}
        first = None
        for t in starts:
            if t in trial_starts:
                first = obs[t, b]
                continue
            same = np.allclose(obs[t, b], first)
            assert same == repeat_start, (b, t)


def test_projected_cartpole_is_the_papers_layout():
    env, params = ssmrl.envs.make("ProjectedCartPole")
    assert env.tasks == ("PositionOnlyCartPoleEasy",) and env.repeat_start
    assert not env.permute_actions
    assert params.episodes_per_trial == 16 and params.base[0].max_steps_in_episode == 200
    assert env.observation_space(params).shape == (5,) and env.action_space(params).n == 2
    _, state = env.reset(jax.random.PRNGKey(0), params)
    w = np.asarray(state.obs_proj, np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-5)


def test_seed_pool_fixes_the_projections():
    env = MetaEnv(("CartPole-v1",))
    pool = env.params_for(4, seed_pool_start=100, seed_pool_size=1)
    other = env.params_for(4, seed_pool_start=200, seed_pool_size=1)
    a = [env.reset(jax.random.PRNGKey(k), pool)[1].obs_proj for k in range(3)]
    b = env.reset(jax.random.PRNGKey(0), other)[1].obs_proj
    assert all(np.array_equal(a[0], x) for x in a) and not np.allclose(a[0], b)


def test_trial_end_follows_the_last_episode():
    env = MetaEnv(("CartPole-v1",), episode_steps=100, episodes_per_trial=2)
    params = env.default_params

    def push(key, obs):  # one fixed action: the pole falls within ~10 steps
        return jnp.int32(0)

    _, _, _, terminated, truncated, _ = rollout(env, params, push, steps=40, batch=2)
    assert np.asarray(terminated).any() and not np.asarray(truncated).any()
    short = MetaEnv(("CartPole-v1",), episode_steps=3, episodes_per_trial=2)
    _, _, _, terminated, truncated, _ = rollout(
        short, short.default_params, push, steps=12, batch=2
    )
    # Trials that end by the last episode's time limit are terminal too: never truncated.
    np.testing.assert_array_equal(np.asarray(terminated)[:, 0], np.arange(1, 13) % 6 == 0)
    assert not np.asarray(truncated).any()


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="CartPole-v1"):
        MetaEnv(("CartPol-v1",))
    with pytest.raises(ValueError, match="distinct"):
        MetaEnv(("CartPole-v1", "CartPole-v1"))
    with pytest.raises(ValueError, match="flat"):
        MetaEnv(("Breakout-MinAtar",))
    with pytest.raises(ValueError, match="projection"):
        MetaEnv(("CartPole-v1",), projection="sparse")
    with pytest.raises(ValueError, match="obs_size"):
        MetaEnv(("CartPole-v1",), obs_size=0)
    with pytest.raises(ValueError, match="episode_steps"):
        MetaEnv(("CartPole-v1",), episode_steps=0)
