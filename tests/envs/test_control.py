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
from ssmrl.envs.popgym.cartpole import CartPoleState
from ssmrl.envs.popgym.pendulum import PendulumState, wrap_angle
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


def max_steps(name):
    return reference(name).max_episode_length


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def step_batch(env, keys, states, actions, params):
    """One vmapped ``env.step`` (params batched too) -> obs before auto-reset, reward, flags."""

    def one(key, state, action, params):
        _, _, reward, terminated, truncated, info = env.step(key, state, action, params)
        return info["final_observation"], reward, terminated, truncated

    return jax.vmap(one)(keys, states, actions, params)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def reset_batch(env, keys, params):
    return jax.vmap(env.reset)(keys, params)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), compiler_options=FAST_COMPILE)
def rollouts(env, policy, num_steps, states, keys, params):
    """Return, length and last flags of the first episode of each rollout.

    ``states``/``keys`` have shape ``(tasks, episodes, ...)``, ``params`` ``(tasks, ...)``;
    ``policy(key, state, params) -> action``. Episodes must end within ``num_steps``.
    """

    def one(state, key, params):
        def body(carry, key):
            state, ret, length, alive, flags = carry
            key_act, key_step = jax.random.split(key)
            action = policy(key_act, state, params)
            _, state, reward, terminated, truncated, _ = env.step(key_step, state, action, params)
            ret = ret + jnp.where(alive, reward, 0.0)
            length = length + alive
            flags = jnp.where(alive, jnp.stack([terminated, truncated]), flags)
            alive = alive & ~(terminated | truncated)
            return (state, ret, length, alive, flags), None

        init = (
            state,
            jnp.zeros(()),
            jnp.zeros((), jnp.int32),
            jnp.ones((), bool),
            jnp.zeros(2, bool),
        )
        (_, ret, length, alive, flags), _ = jax.lax.scan(
            body, init, jax.random.split(key, num_steps)
        )
        return ret, length, alive, flags

    per_task = jax.vmap(one, in_axes=(0, 0, None))
    return jax.vmap(per_task)(states, keys, params)


def run_episodes(env, policy, params, episodes, seed=0, num_steps=None):
    """``rollouts`` from fresh resets -> returns, lengths, final flags, initial states."""
    num_tasks = len(params.max_steps_in_episode)
    # The same keys for every task: same initial states, same noise and policy draws.
    reset_keys, run_keys = jax.random.split(jax.random.key(seed), (2, 1, episodes))
    run_keys = jnp.repeat(run_keys, num_tasks, 0)
    reset_params = jax.tree.map(lambda x: jnp.repeat(x, episodes, 0), params)
    _, states = reset_batch(env, jnp.tile(reset_keys.reshape(-1), num_tasks), reset_params)
    states = jax.tree.map(lambda x: x.reshape(num_tasks, episodes, *x.shape[1:]), states)
    num_steps = num_steps or int(params.max_steps_in_episode.max())
    out = rollouts(env, policy, num_steps, states, run_keys, params)
    ret, length, alive, flags = map(np.asarray, out)
    assert not alive.any(), "an episode did not end"
    return ret, length, flags, jax.tree.map(np.asarray, states)


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


def random_policy(key, state, params):
    return jax.random.randint(key, (), 0, 2)


def random_torque(key, state, params):
    return jax.random.uniform(key, (1,), minval=-2.0, maxval=2.0)


def balance(key, state, params):
    """Bang-bang LQR-style cart-pole controller reading the true state."""
    s = 1.0 * state.x + 1.6 * state.x_dot + 18.0 * state.theta + 2.8 * state.theta_dot
    return (s > 0).astype(jnp.int32)


def balance_np(state):
    return int(np.dot([1.0, 1.6, 18.0, 2.8], state) > 0)


def swing_up(key, state, params):
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


def _cartpole_cases(observe, rng, n):
    """Reference outputs for `n` random (state, step count, action) triples."""
    name = f"{observe.capitalize()}OnlyCartPoleHard"
    ref = reference(name)
    high = np.array([2.4, 3.0, 0.2094, 3.0])
    states = rng.uniform(-high, high, (n, 4)).astype(np.float32)
    times = rng.choice([0, 5, 597, 598, 599], n)
    actions = rng.integers(0, 2, n)
    obs, rewards, flags = [], [], []
    for state, t, action in zip(states, times, actions, strict=True):
        ref.state, ref.num_steps, ref.steps_beyond_terminated = state.astype(np.float64), t, None
        o, r, term, trunc, _ = ref.step(int(action))
        obs.append(o), rewards.append(r), flags.append((term, trunc))
    return states, times, actions, (np.array(obs), np.array(rewards), np.array(flags))


@pytest.mark.parametrize("observe", ["position", "velocity"])
def test_cartpole_steps_match_reference(observe):
    """Random states over the whole non-terminal box, step counts near the limit."""
    rng = np.random.default_rng(0)
    n = 400
    states, times, actions, (ref_obs, ref_rewards, ref_flags) = _cartpole_cases(observe, rng, n)
    env, params = task(f"{observe.capitalize()}OnlyCartPoleHard")
    ours = cart_state(states, times)
    batch = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], n, 0), params)
    keys = jax.random.split(jax.random.key(0), n)
    obs, rewards, terminated, truncated = map(
        np.asarray, step_batch(env, keys, ours, jnp.asarray(actions), batch)
    )
    np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)
    np.testing.assert_array_equal(terminated, ref_flags[:, 0])
    np.testing.assert_array_equal(truncated, ref_flags[:, 1])
    assert 0.05 < terminated.mean() < 0.5 and truncated.sum() == (times == 599).sum() > 0
    assert (terminated & truncated).any()


@pytest.mark.parametrize("observe", ["position", "velocity"])
def test_cartpole_reset_matches_reference(observe):
    """Reset states are uniform on (-0.05, 0.05)^4; both variants show [x, theta] at reset."""
    name = f"{observe.capitalize()}OnlyCartPoleEasy"
    ref = reference(name)
    ref_obs, _ = ref.reset(seed=3)
    np.testing.assert_array_equal(ref_obs, ref.state[[0, 2]].astype(np.float32))
    env, params = stacked([name])
    obs, state = reset_batch(
        env,
        jax.random.split(jax.random.key(0), 4000),
        jax.tree.map(lambda x: jnp.repeat(x, 4000, 0), params),
    )
    full = np.stack([state.x, state.x_dot, state.theta, state.theta_dot], 1)
    np.testing.assert_array_equal(obs, full[:, [0, 2]])
    assert np.abs(full).max() <= 0.05 and np.abs(full).max() > 0.0499
    np.testing.assert_allclose(full.mean(0), 0.0, atol=0.003)
    np.testing.assert_allclose(full.var(0), 0.1**2 / 12, rtol=0.08)


@pytest.mark.parametrize("family", sorted(CARTPOLE))
def test_cartpole_balancing_returns_one(family):
    """A full-state controller balances to the time limit in every task: return 1, no
    fall; the reference scores the same from our initial states."""
    env, params = stacked(CARTPOLE[family])
    ret, length, flags, starts = run_episodes(env, balance, params, episodes=64)
    np.testing.assert_allclose(ret, 1.0, atol=1e-5)
    assert (length == np.asarray(params.max_steps_in_episode)[:, None]).all()
    assert not flags[..., 0].any() and flags[..., 1].all()

    ref = reference(CARTPOLE[family][-1])
    ref.reset(seed=0)
    ref.state = np.array([getattr(starts, f)[-1, 0] for f in ("x", "x_dot", "theta", "theta_dot")])
    total, done = 0.0, False
    while not done:
        _, reward, terminated, done, _ = ref.step(balance_np(ref.state))
        total += reward
    assert not terminated and total == pytest.approx(1.0)


@pytest.mark.parametrize("family", sorted(CARTPOLE))
def test_cartpole_random_returns_match_reference(family):
    env, params = stacked(CARTPOLE[family])
    # Random episodes last about 22 steps; none comes near 200.
    ours, *_ = run_episodes(env, random_policy, params, episodes=500, seed=1, num_steps=200)
    for i, name in enumerate(CARTPOLE[family]):
        assert_means_match(ours[i], reference_random_returns(name, 300))


def _noisy_obs_samples(env, params, state, n, key):
    batch = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], n, 0), params)
    states = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], n, 0), state)
    keys = jax.random.split(key, n)
    actions = jnp.zeros((n,) + env.action_space(params).shape, env.action_space(params).dtype)
    return np.asarray(step_batch(env, keys, states, actions, batch)[0])


def _assert_same_distribution(ours, ref):
    """Same per-component mean, std and clipping fraction within sampling error."""
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
    state = np.array([2.3, 0.0, 0.2, 0.0], np.float32)  # near the clip bound of the angle
    ref_obs = []
    for _ in range(1000):
        ref.state, ref.num_steps, ref.steps_beyond_terminated = state.astype(np.float64), 0, None
        ref_obs.append(ref.step(0)[0])
    ours = _noisy_obs_samples(env, params, cart_state(state, 0), 2000, jax.random.key(1))
    _assert_same_distribution(ours, np.array(ref_obs))


def _pendulum_cases(rng, n):
    """Reference outputs for random states (angles unwrapped by multiples of 2 pi)."""
    ref = reference("PositionOnlyPendulumHard")
    theta = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
    theta_dot = rng.uniform(-8, 8, n).astype(np.float32)
    times = rng.choice([0, 7, 98, 99], n)
    torques = rng.uniform(-3, 3, n).astype(np.float32)
    turns = rng.integers(-3, 4, n)
    obs, rewards, flags = [], [], []
    for th, dot, t, u, k in zip(theta, theta_dot, times, torques, turns, strict=True):
        ref.state, ref.num_steps = np.array([th + 2 * np.pi * k, dot], np.float64), t
        o, r, term, trunc, _ = ref.step(np.array([u], np.float32))
        obs.append(o), rewards.append(r), flags.append((term, trunc))
    return (
        pendulum_state(theta, theta_dot, times),
        torques,
        (np.array(obs), np.array(rewards), np.array(flags)),
    )


def test_pendulum_steps_match_reference():
    rng = np.random.default_rng(0)
    n = 400
    states, torques, (ref_obs, ref_rewards, ref_flags) = _pendulum_cases(rng, n)
    env, params = task("PositionOnlyPendulumHard")
    batch = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], n, 0), params)
    keys = jax.random.split(jax.random.key(0), n)
    ours = jax.tree.map(jnp.asarray, states)
    obs, rewards, terminated, truncated = map(
        np.asarray, step_batch(env, keys, ours, jnp.asarray(torques)[:, None], batch)
    )
    np.testing.assert_allclose(obs, ref_obs, atol=2e-6)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-5, atol=1e-8)
    assert not terminated.any() and not ref_flags[:, 0].any()
    np.testing.assert_array_equal(truncated, ref_flags[:, 1])
    assert truncated.sum() == (states.time == 99).sum() > 0


def test_pendulum_reset_matches_reference():
    env, params = stacked(["PositionOnlyPendulumEasy"])
    n = 4000
    obs, state = reset_batch(
        env,
        jax.random.split(jax.random.key(0), n),
        jax.tree.map(lambda x: jnp.repeat(x, n, 0), params),
    )
    np.testing.assert_allclose(
        obs, np.stack([np.cos(state.theta), np.sin(state.theta)], 1), atol=1e-6
    )
    for values, bound in ((state.theta, np.pi), (state.theta_dot, 1.0)):
        values = np.asarray(values)
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.998 * bound
        assert abs(values.mean()) < 0.05 * bound
        assert values.var() == pytest.approx(bound**2 / 3, rel=0.08)


def test_pendulum_swing_up_matches_reference_and_is_near_optimal():
    """An energy swing-up + PD controller scores the same as in the reference and is
    close to the best known Pendulum returns (about -140 per 200 steps, 0.914 here);
    observation noise changes neither dynamics nor rewards."""
    names = [*PENDULUM["PositionOnlyPendulum"], *PENDULUM["NoisyPositionOnlyPendulum"]]
    env, params = stacked(names)
    ret, length, flags, starts = run_episodes(env, swing_up, params, episodes=64)
    assert (length == np.asarray(params.max_steps_in_episode)[:, None]).all()
    assert not flags[..., 0].any() and flags[..., 1].all()
    assert ret[0].mean() > 0.9 and ret[1].mean() > 0.86 and ret[2].mean() > 0.8
    np.testing.assert_array_equal(ret[3:], np.broadcast_to(ret[0], ret[3:].shape))

    for i, name in enumerate(PENDULUM["PositionOnlyPendulum"]):
        ref = reference(name)
        for j in range(6):
            ref.reset(seed=j)
            ref.state = np.array([starts.theta[i, j], starts.theta_dot[i, j]], np.float64)
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
    ours = _noisy_obs_samples(env, params, pendulum_state(*state, 0), 2000, jax.random.key(2))
    _assert_same_distribution(ours, np.array(ref_obs))


@pytest.mark.parametrize("family", sorted(PENDULUM))
def test_pendulum_random_returns_match_reference(family):
    env, params = stacked(PENDULUM[family])
    ours, *_ = run_episodes(env, random_torque, params, episodes=500, seed=1)
    for i, name in enumerate(PENDULUM[family]):
        assert_means_match(ours[i], reference_random_returns(name, 30))


def test_out_of_range_actions_are_clipped():
    env, params = stacked(["PositionOnlyCartPoleEasy"] * 4)
    state = cart_state(jnp.full((4, 4), 0.01), jnp.zeros(4))
    keys = jax.random.split(jax.random.key(0), 4)
    obs, reward, _, _ = step_batch(env, keys, state, jnp.array([-5, 0, 1, 7]), params)
    np.testing.assert_array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(obs[3], obs[2])
    assert np.isfinite(reward).all()

    torques = jnp.array([[jnp.nan], [0.0], [jnp.inf], [2.0], [-jnp.inf], [-2.0], [-7.0]])
    env, params = stacked(["PositionOnlyPendulumEasy"] * len(torques))
    half = jnp.full(len(torques), 0.5)
    state = pendulum_state(half, half, jnp.zeros(len(torques)))
    keys = jax.random.split(jax.random.key(0), len(torques))
    obs, reward, _, _ = map(np.asarray, step_batch(env, keys, state, torques, params))
    assert np.isfinite(obs).all() and np.isfinite(reward).all() and (np.abs(obs) <= 1).all()
    np.testing.assert_array_equal(obs[[0, 2, 4, 6]], obs[[1, 3, 5, 5]])
    np.testing.assert_array_equal(reward[[0, 2, 4, 6]], reward[[1, 3, 5, 5]])
