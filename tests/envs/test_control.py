"""The POPGym CartPole and Pendulum tasks against the reference popgym package.

PositionOnlyCartPole, VelocityOnlyCartPole, NoisyPositionOnlyCartPole,
PositionOnlyPendulum and NoisyPositionOnlyPendulum, each at Easy/Medium/Hard.
Exact conformance copies a physical state (and step count) into both the
reference's gymnasium env and ours, steps both with the same action and
compares observations, rewards and flags. Tasks sharing an env configuration
share one env instance so that each jitted function compiles once for all of
them, with the difficulty's params batched.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import popgym.envs
import pytest

from ssmrl.envs import make
from ssmrl.envs.popgym.cartpole import CartPole, CartPoleState
from ssmrl.envs.popgym.pendulum import Pendulum, PendulumState, wrap_angle
from tests.envs.reference import assert_means_match, reference_random_returns

LEVELS = ("Easy", "Medium", "Hard")
CARTPOLE = {
    family: [family + level for level in LEVELS]
    for family in ("PositionOnlyCartPole", "VelocityOnlyCartPole", "NoisyPositionOnlyCartPole")
}
PENDULUM = {
    family: [family + level for level in LEVELS]
    for family in ("PositionOnlyPendulum", "NoisyPositionOnlyPendulum")
}
ALL_TASKS = [n for group in (CARTPOLE, PENDULUM) for names in group.values() for n in names]
FAST_COMPILE = {"xla_backend_optimization_level": 0}
BATCH = 1024
# Episodes per task of each rollout (all rollouts of one env share one compile).
EPISODES = {CartPole: 256, Pendulum: 512}
_SHARED_ENVS: dict = {}


def task(name):
    """``make(name)`` with one shared env instance per env configuration."""
    env, params = make(name)
    config = (type(env), getattr(env, "visible", None))
    return _SHARED_ENVS.setdefault(config, env), params


def stacked(names):
    """The shared env of `names` and their params stacked along a leading axis."""
    envs, params = zip(*(task(n) for n in names), strict=True)
    assert all(e is envs[0] for e in envs)
    return envs[0], jax.tree.map(lambda *xs: jnp.asarray(xs), *params)


def reference(name):
    ref = getattr(popgym.envs, name)()
    ref.reset(seed=0)
    return ref


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _step_batch(env, keys, states, actions, params):
    def one(key, state, action, params):
        _, _, reward, terminated, truncated, info = env.step(key, state, action, params)
        return info["final_observation"], reward, terminated, truncated

    return jax.vmap(one)(keys, states, actions, params)


def step_many(env, states, actions, params, seed=0):
    """``env.step`` of each (state, action) under one task's params -> numpy (obs before
    auto-reset, reward, terminated, truncated). Pads to BATCH envs: one compile per env."""
    n = len(actions)

    def pad(x):
        return np.resize(np.asarray(x), (BATCH, *np.shape(x)[1:]))

    batch_params = jax.tree.map(lambda x: np.full((BATCH, *np.shape(x)), x), params)
    keys = jax.random.split(jax.random.key(seed), BATCH)
    out = _step_batch(env, keys, jax.tree.map(pad, states), pad(actions), batch_params)
    return [np.asarray(o)[:n] for o in out]


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _rollouts(env, keys, params, scripted):
    def one(key, params):
        key_reset, key_run = jax.random.split(key)
        obs0, state0 = env.reset(key_reset, params)

        def cond(carry):
            _, _, length, flags = carry
            return ~flags.any() & (length < 10_000)

        # Under vmap the loop runs until every episode has ended; ended ones stay frozen.
        def body(carry):
            state, ret, length, flags = carry
            key_act, key_step = jax.random.split(jax.random.fold_in(key_run, length))
            action = policy(env, key_act, state, scripted)
            _, state, reward, terminated, truncated, _ = env.step(key_step, state, action, params)
            return state, ret + reward, length + 1, jnp.stack([terminated, truncated])

        init = (state0, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.zeros(2, bool))
        _, ret, length, flags = jax.lax.while_loop(cond, body, init)
        return obs0, state0, ret, length, flags

    # Every task gets the same keys: same initial states, noise and policy draws.
    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))(keys, params)


def run_episodes(env, params, scripted, seed=0):
    """The first episode after a reset, EPISODES[env] times for each task in stacked
    ``params``, under the scripted or the uniformly random policy -> numpy (reset obs,
    reset state, return, length, (terminated, truncated) at the end), each shaped
    ``(tasks, episodes, ...)``."""
    keys = jax.random.split(jax.random.key(seed), EPISODES[type(env)])
    out = jax.tree.map(np.asarray, _rollouts(env, keys, params, scripted))
    assert out[-1].any(-1).all(), "an episode did not end"
    return out


@functools.cache
def random_runs(family):
    """Uniformly random episodes of the three tasks of `family` (run once, shared)."""
    env, params = stacked(CARTPOLE.get(family) or PENDULUM[family])
    return run_episodes(env, params, scripted=False, seed=1)


def policy(env, key, state, scripted):
    """The scripted controller of `env`'s family if `scripted`, else a uniform action."""
    if isinstance(env, CartPole):
        return jnp.where(scripted, balance(state), jax.random.randint(key, (), 0, 2))
    return jnp.where(
        scripted, swing_up(state), jax.random.uniform(key, (1,), minval=-2.0, maxval=2.0)
    )


def cart_state(values, time):
    """CartPoleState from ``values[..., :4] = (x, x_dot, theta, theta_dot)``."""
    values = jnp.asarray(values, jnp.float32)
    x, x_dot, theta, theta_dot = (values[..., i] for i in range(4))
    return CartPoleState(
        x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=jnp.asarray(time, jnp.int32)
    )


def pendulum_state(theta, theta_dot, time):
    return PendulumState(
        theta=jnp.asarray(theta, jnp.float32),
        theta_dot=jnp.asarray(theta_dot, jnp.float32),
        time=jnp.asarray(time, jnp.int32),
    )


def balance(state):
    """Bang-bang LQR-style cart-pole controller reading the true state."""
    s = 1.0 * state.x + 1.6 * state.x_dot + 18.0 * state.theta + 2.8 * state.theta_dot
    return (s > 0).astype(jnp.int32)


def balance_np(state):
    return int(np.dot([1.0, 1.6, 18.0, 2.8], state) > 0)


def swing_up(state):
    """Energy-pumping swing-up, PD balancing near the top; reads the true state."""
    theta, theta_dot = wrap_angle(state.theta), state.theta_dot
    energy = 0.5 * theta_dot**2 + 15.0 * (jnp.cos(theta) - 1.0)  # 0 at rest upright
    pump = -0.5 * energy * theta_dot
    hold = -(12.0 * theta + 3.0 * theta_dot)
    return jnp.clip(jnp.where(jnp.abs(theta) < 0.8, hold, pump), -2.0, 2.0)[None]


def swing_up_np(theta, theta_dot):
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    energy = 0.5 * theta_dot**2 + 15.0 * (np.cos(theta) - 1.0)
    u = -(12.0 * theta + 3.0 * theta_dot) if abs(theta) < 0.8 else -0.5 * energy * theta_dot
    return np.clip(np.array([u], np.float32), -2.0, 2.0)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_spaces_lengths_and_noise_match_reference(name):
    env, params = task(name)
    ref = reference(name)
    assert params.max_steps_in_episode == ref.max_episode_length
    assert params.noise_std == np.unique(getattr(ref, "noise_sigma", 0.0)).item()
    obs_space = env.observation_space(params)
    assert obs_space.shape == ref.observation_space.shape == (2,)
    np.testing.assert_array_equal(obs_space.low, ref.observation_space.low)
    np.testing.assert_array_equal(obs_space.high, ref.observation_space.high)
    if "CartPole" in name:
        assert env.action_space(params).n == ref.action_space.n == env.num_actions == 2
    else:
        act = env.action_space(params)
        assert act.shape == ref.action_space.shape == (1,)
        assert (act.low, act.high) == (ref.action_space.low[0], ref.action_space.high[0])
    alias = name.replace("PositionOnly", "Stateless")
    if alias != name:
        alias_env, alias_params = make(alias)
        assert type(alias_env) is type(env) and alias_params == params


def _cartpole_cases(visible, rng, n):
    """Reference outputs for `n` random (state, step count, action) triples."""
    ref = reference(f"{visible.capitalize()}OnlyCartPoleHard")
    high = np.array([2.4, 3.0, 0.2094, 3.0])
    states = rng.uniform(-high, high, (n, 4)).astype(np.float32)
    times = rng.choice([0, 5, 597, 598, 599], n)
    actions = rng.integers(0, 2, n)
    obs, rewards, flags = [], [], []
    for state, t, action in zip(states, times, actions, strict=True):
        ref.state, ref.num_steps, ref.steps_beyond_terminated = state.astype(np.float64), t, None
        o, r, term, trunc, _ = ref.step(int(action))
        obs.append(o), rewards.append(r), flags.append((term, trunc))
    return cart_state(states, times), actions, (np.array(obs), np.array(rewards), np.array(flags))


@pytest.mark.parametrize("visible", ["position", "velocity"])
def test_cartpole_steps_match_reference(visible):
    """Random states over the whole non-terminal box, step counts near the limit."""
    states, actions, (ref_obs, ref_rewards, ref_flags) = _cartpole_cases(
        visible, np.random.default_rng(0), 1000
    )
    env, params = task(f"{visible.capitalize()}OnlyCartPoleHard")
    obs, rewards, terminated, truncated = step_many(env, states, actions, params)
    np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)
    np.testing.assert_array_equal(terminated, ref_flags[:, 0])
    np.testing.assert_array_equal(truncated, ref_flags[:, 1])
    assert 0.05 < terminated.mean() < 0.5 and truncated.sum() == (states.time == 599).sum() > 0
    assert (terminated & truncated).any()


@pytest.mark.parametrize("family", ["PositionOnlyCartPole", "VelocityOnlyCartPole"])
def test_cartpole_reset_matches_reference(family):
    """Reset states are uniform on (-0.05, 0.05)^4; both variants show [x, theta] at reset."""
    ref = reference(family + "Easy")
    ref_obs, _ = ref.reset(seed=3)
    np.testing.assert_array_equal(ref_obs, ref.state[[0, 2]].astype(np.float32))
    obs, state, *_ = random_runs(family)
    np.testing.assert_array_equal(obs, np.stack([state.x, state.theta], -1))
    values = np.stack([state.x, state.x_dot, state.theta, state.theta_dot])[:, 0].ravel()
    assert np.abs(values).max() <= 0.05 and np.abs(values).max() > 0.0495
    assert abs(values.mean()) < 0.004 and values.var() == pytest.approx(0.1**2 / 12, rel=0.12)
    assert (state.time == 0).all()


@pytest.mark.parametrize("family", sorted(CARTPOLE))
def test_cartpole_balancing_returns_one(family):
    """A full-state controller balances to the time limit in every task: return 1, no
    fall; the reference scores the same from our initial state."""
    env, params = stacked(CARTPOLE[family])
    _, start, ret, length, flags = run_episodes(env, params, scripted=True)
    np.testing.assert_allclose(ret, 1.0, atol=1e-5)
    assert (length == np.asarray(params.max_steps_in_episode)[:, None]).all()
    assert not flags[..., 0].any() and flags[..., 1].all()

    ref = reference(CARTPOLE[family][-1])
    ref.state = np.array([f[-1, 0] for f in (start.x, start.x_dot, start.theta, start.theta_dot)])
    total, done = 0.0, False
    while not done:
        _, reward, terminated, done, _ = ref.step(balance_np(ref.state))
        total += reward
    assert not terminated and total == pytest.approx(1.0)


@pytest.mark.parametrize("family", sorted(CARTPOLE))
def test_cartpole_random_returns_match_reference(family):
    returns = random_runs(family)[2]
    for ours, name in zip(returns, CARTPOLE[family], strict=True):
        assert_means_match(ours, reference_random_returns(name, 300))


def _assert_same_distribution(ours, ref):
    """Same per-component mean, std and clipping fractions within sampling error."""
    for o, r in zip(ours.T, ref.T, strict=True):
        assert_means_match(o, r, z=4.5)
        assert o.std() == pytest.approx(r.std(), rel=0.12)
        for bound in (o.min(), o.max()):
            assert abs((o == bound).mean() - (r == bound).mean()) < 0.05


@pytest.mark.parametrize("name", CARTPOLE["NoisyPositionOnlyCartPole"])
def test_cartpole_noise_matches_reference(name):
    """From one state, noisy observations after a step are distributed as the reference's."""
    env, params = task(name)
    ref = reference(name)
    state = np.array([2.3, 0.0, 0.2, 0.0], np.float32)  # the angle is near its clip bound
    ref_obs = []
    for _ in range(1000):
        ref.state, ref.num_steps, ref.steps_beyond_terminated = state.astype(np.float64), 0, None
        ref_obs.append(ref.step(0)[0])
    states = cart_state(np.tile(state, (1000, 1)), np.zeros(1000))
    ours = step_many(env, states, np.zeros(1000, np.int32), params, seed=1)[0]
    _assert_same_distribution(ours, np.array(ref_obs))


def _pendulum_cases(rng, n):
    """Reference outputs for random states (its angles unwrapped by multiples of 2 pi)."""
    ref = reference("PositionOnlyPendulumHard")
    theta = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
    theta_dot = rng.uniform(-8, 8, n).astype(np.float32)
    times = rng.choice([0, 7, 98, 99], n)
    torques = rng.uniform(-3, 3, (n, 1)).astype(np.float32)
    turns = rng.integers(-3, 4, n)
    obs, rewards, flags = [], [], []
    for th, dot, t, u, k in zip(theta, theta_dot, times, torques, turns, strict=True):
        ref.state, ref.num_steps = np.array([th + 2 * np.pi * k, dot], np.float64), t
        o, r, term, trunc, _ = ref.step(u)
        obs.append(o), rewards.append(r), flags.append((term, trunc))
    states = pendulum_state(theta, theta_dot, times)
    return states, torques, (np.array(obs), np.array(rewards), np.array(flags))


def test_pendulum_steps_match_reference():
    states, torques, (ref_obs, ref_rewards, ref_flags) = _pendulum_cases(
        np.random.default_rng(0), 1000
    )
    env, params = task("PositionOnlyPendulumHard")
    obs, rewards, terminated, truncated = step_many(env, states, torques, params)
    np.testing.assert_allclose(obs, ref_obs, atol=2e-6)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-5, atol=1e-8)
    assert not terminated.any() and not ref_flags[:, 0].any()
    np.testing.assert_array_equal(truncated, ref_flags[:, 1])
    assert truncated.sum() == (states.time == 99).sum() > 0


def test_pendulum_reset_matches_reference():
    """theta ~ U(-pi, pi), theta_dot ~ U(-1, 1); the reset observation is [cos, sin]."""
    obs, state, *_ = random_runs("PositionOnlyPendulum")
    cos_sin = np.stack([np.cos(state.theta), np.sin(state.theta)], -1)
    np.testing.assert_allclose(obs, cos_sin, atol=1e-6)
    for values, bound in ((state.theta[0], np.pi), (state.theta_dot[0], 1.0)):
        assert -bound <= values.min() < -0.97 * bound and 0.97 * bound < values.max() <= bound
        assert abs(values.mean()) < 0.12 * bound
        assert values.var() == pytest.approx(bound**2 / 3, rel=0.16)
    assert (state.time == 0).all()


def test_pendulum_swing_up_matches_reference_and_is_near_optimal():
    """An energy swing-up + PD controller scores as in the reference and close to the best
    known Pendulum returns (about -140 per 200 steps: 0.914 here); observation noise
    changes neither dynamics nor rewards."""
    names = [*PENDULUM["PositionOnlyPendulum"], *PENDULUM["NoisyPositionOnlyPendulum"]]
    env, params = stacked(names)
    _, start, ret, length, flags = run_episodes(env, params, scripted=True)
    assert (length == np.asarray(params.max_steps_in_episode)[:, None]).all()
    assert not flags[..., 0].any() and flags[..., 1].all()
    assert ret[0].mean() > 0.9 and ret[1].mean() > 0.86 and ret[2].mean() > 0.8
    np.testing.assert_array_equal(ret[3:], np.broadcast_to(ret[0], ret[3:].shape))

    for i, name in enumerate(PENDULUM["PositionOnlyPendulum"]):
        ref = reference(name)
        for j in range(6):
            ref.reset(seed=j)
            ref.state = np.array([start.theta[i, j], start.theta_dot[i, j]], np.float64)
            total, done = 0.0, False
            while not done:
                _, reward, _, done, _ = ref.step(swing_up_np(*ref.state))
                total += reward
            assert total == pytest.approx(ret[i, j], abs=2e-3), (name, j)


def test_pendulum_noise_matches_reference():
    name = "NoisyPositionOnlyPendulumHard"
    env, params = task(name)
    ref = reference(name)
    state = np.array([0.3, 0.0], np.float32)  # cos near 1: much clipping at the upper bound
    ref_obs = []
    for _ in range(1000):
        ref.state, ref.num_steps = state.astype(np.float64), 0
        ref_obs.append(ref.step(np.zeros(1, np.float32))[0])
    states = pendulum_state(np.full(1000, state[0]), np.full(1000, state[1]), np.zeros(1000))
    ours = step_many(env, states, np.zeros((1000, 1), np.float32), params, seed=2)[0]
    _assert_same_distribution(ours, np.array(ref_obs))


@pytest.mark.parametrize("family", sorted(PENDULUM))
def test_pendulum_random_returns_match_reference(family):
    returns = random_runs(family)[2]
    for ours, name in zip(returns, PENDULUM[family], strict=True):
        assert_means_match(ours, reference_random_returns(name, 30))


def test_out_of_range_actions_are_clipped():
    env, params = task("PositionOnlyCartPoleEasy")
    states = cart_state(np.full((4, 4), 0.01), np.zeros(4))
    obs, reward, _, _ = step_many(env, states, np.array([-5, 0, 1, 7]), params)
    np.testing.assert_array_equal(obs[[0, 3]], obs[[1, 2]])
    assert np.isfinite(obs).all() and np.isfinite(reward).all()

    env, params = task("PositionOnlyPendulumEasy")
    torques = np.array([[np.nan], [0], [np.inf], [2], [-np.inf], [-2], [-7]], np.float32)
    states = pendulum_state(np.full(7, 0.5), np.full(7, 0.5), np.zeros(7))
    obs, reward, _, _ = step_many(env, states, torques, params)
    assert np.isfinite(obs).all() and np.isfinite(reward).all() and (np.abs(obs) <= 1).all()
    np.testing.assert_array_equal(obs[[0, 2, 4, 6]], obs[[1, 3, 5, 5]])
    np.testing.assert_array_equal(reward[[0, 2, 4, 6]], reward[[1, 3, 5, 5]])
