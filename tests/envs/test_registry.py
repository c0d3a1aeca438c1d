"""Tests for ssmrl.envs.make / names and a generic contract check of every POPGym task."""

from __future__ import annotations

import dataclasses

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import ssmrl.envs
from ssmrl.envs import aliases, make, names

POPGYM_NAMES = names(include_gymnax=False)
# Meta sets over MuJoCo Playground (optional extra ssmrl[dmc]) are checked in test_dmc.py.
BUILT_NAMES = [n for n in POPGYM_NAMES if not n.startswith("MetaDMC")]
ALIASES = aliases()
NUM_ENVS, NUM_STEPS = 8, 6
# These rollouts are tiny, so XLA's backend optimisation costs far more than it saves.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def test_names():
    all_names = names()
    assert all_names[: len(POPGYM_NAMES)] == POPGYM_NAMES == sorted(POPGYM_NAMES)
    assert {"CartPole-v1", "Breakout-MinAtar"} <= set(all_names)
    assert not set(POPGYM_NAMES) & set(gymnax.registered_envs)
    assert len(set(all_names)) == len(all_names)
    assert not set(ALIASES) & set(all_names), "an alias shadows a canonical name"
    assert set(ALIASES.values()) <= set(POPGYM_NAMES), "an alias points at no task"
    assert ssmrl.envs.make is make


def test_every_alias_builds_its_task():
    # The older JAX port's names for the families it had, as users still type them.
    for old in ("StatelessCartPoleHard", "NoisyStatelessPendulumEasy", "MinesweeperEasy"):
        assert old in ALIASES
    assert ALIASES["MultiArmedBanditMedium"] == "MultiarmedBanditMedium"
    for old, new in ALIASES.items():
        (env, params), (ref_env, ref_params) = make(old), make(new)
        assert type(env) is type(ref_env) and params == ref_params, old
    aliases()["StatelessCartPoleHard"] = "changed"
    assert aliases()["StatelessCartPoleHard"] == "PositionOnlyCartPoleHard"


def test_make_gymnax_id():
    env, params = make("CartPole-v1")
    ref_env, ref_params = gymnax.make("CartPole-v1")
    assert type(env) is type(ref_env) and params == ref_params
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == (4,)


def test_make_unknown_name_suggests():
    with pytest.raises(ValueError, match="CartPole-v1"):
        make("CartPol-v1")
    with pytest.raises(ValueError, match="unknown environment 'NoSuchThing'"):
        make("NoSuchThing")


def test_make_unknown_override_names_fields():
    with pytest.raises(ValueError, match=r"bogus.*allowed.*max_steps_in_episode"):
        make("CartPole-v1", bogus=1)


def test_make_override_applies():
    env, params = make("CartPole-v1", max_steps_in_episode=5, gravity=9.0)
    assert params.max_steps_in_episode == 5 and params.gravity == 9.0
    assert gymnax.make("CartPole-v1")[1].max_steps_in_episode == 500
    _, state = env.reset(jax.random.key(0), params)
    truncated = []
    for _ in range(5):
        _, state, _, terminated, trunc, _ = env.step(jax.random.key(1), state, 0, params)
        truncated.append(bool(trunc) and not bool(terminated))
    assert truncated == [False] * 4 + [True]


def test_task_factory_builds_a_fresh_env_with_params_replaced():
    from ssmrl.envs.popgym import task
    from ssmrl.envs.popgym.cartpole import CartPole, CartPoleParams
    from ssmrl.envs.popgym.repeat_first import RepeatFirst

    build = task(CartPole, visible="velocity", params={"max_steps_in_episode": 7})
    (env, params), (again, _) = build(), build()
    assert env is not again and env.visible == "velocity"
    assert params == CartPoleParams(max_steps_in_episode=7, noise_std=0.0)
    env, params = task(RepeatFirst, num_decks=2)()
    assert env.num_decks == 2 and params == env.default_params


def _numeric_field(params):
    """Name and a changed value of the first numeric scalar field of `params`, or None."""
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, bool) or np.ndim(value) != 0:
            continue
        try:
            return field.name, value + 1
        except TypeError:
            continue
    return None


@pytest.mark.parametrize("name", BUILT_NAMES)
def test_popgym_make_overrides(name):
    env, params = make(name)
    with pytest.raises(ValueError, match="allowed"):
        make(name, not_a_param_field=1)
    found = _numeric_field(params)
    if found is not None:
        field, value = found
        _, new = make(name, **{field: value})
        assert np.asarray(getattr(new, field)) == np.asarray(value)
        assert np.asarray(getattr(make(name)[1], field)) == np.asarray(getattr(params, field))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_resolves(alias):
    env, params = make(alias)
    ref_env, ref_params = make(ALIASES[alias])
    assert type(env) is type(ref_env)
    np.testing.assert_equal(vars(env), vars(ref_env))
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_array_equal(a, b)


def _rollout(env, params):
    """Vmapped reset, then NUM_STEPS vmapped random steps in a scan (to be jitted)."""

    def one(key):
        key_reset, key = jax.random.split(key)
        obs0, state = env.reset(key_reset, params)

        def body(state, key):
            key_act, key_step = jax.random.split(key)
            action = env.action_space(params).sample(key_act)
            obs, state, reward, terminated, truncated, info = env.step(
                key_step, state, action, params
            )
            return state, (obs, reward, terminated, truncated, info["final_observation"])

        return obs0, jax.lax.scan(body, state, jax.random.split(key, NUM_STEPS))[1]

    return jax.vmap(one)


def _check_contract(name, env, params, outputs):
    obs_space = env.observation_space(params)
    assert isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1, name
    assert jnp.dtype(obs_space.dtype) == jnp.float32, name
    assert isinstance(env.action_space(params), spaces.Discrete | spaces.Box), name
    (dim,) = obs_space.shape
    low = np.broadcast_to(np.asarray(obs_space.low, np.float32), (dim,))
    high = np.broadcast_to(np.asarray(obs_space.high, np.float32), (dim,))

    obs0, (obs, reward, terminated, truncated, final_obs) = outputs
    assert obs0.shape == (NUM_ENVS, dim) and obs0.dtype == jnp.float32, name
    assert obs.shape == final_obs.shape == (NUM_ENVS, NUM_STEPS, dim), name
    assert obs.dtype == final_obs.dtype == jnp.float32, name
    assert reward.shape == terminated.shape == truncated.shape == (NUM_ENVS, NUM_STEPS), name
    assert terminated.dtype == truncated.dtype == jnp.bool_, name
    assert np.isfinite(np.asarray(reward)).all(), f"{name}: non-finite reward"
    for o in (obs0, obs, final_obs):
        o = np.asarray(o)
        assert np.isfinite(o).all(), f"{name}: non-finite observation"
        assert (o >= low).all() and (o <= high).all(), f"{name}: obs outside its declared Box"


@pytest.mark.parametrize("name", BUILT_NAMES)
def test_popgym_task_contract(name):
    """Reset and step under jit + vmap: flat float32 obs of the declared shape, in its
    bounds, finite rewards, bool flags, final observations of the same shape."""
    env, params = make(name)
    run = jax.jit(_rollout(env, params), compiler_options=FAST_COMPILE)
    outputs = run(jax.random.split(jax.random.key(0), NUM_ENVS))
    _check_contract(name, env, params, outputs)
