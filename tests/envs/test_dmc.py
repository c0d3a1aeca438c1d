"""Tests for ssmrl.envs.dmc: MuJoCo Playground's DM Control tasks behind the gymnax API.

Playground is an optional extra: without it only the error tests run.
"""

from __future__ import annotations

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cli
from ssmrl.envs import dmc, make
from ssmrl.envs.meta import MetaEnv

HAVE_PLAYGROUND = importlib.util.find_spec("mujoco_playground") is not None
FAST_COMPILE = {"xla_backend_optimization_level": 0}
B, T, EPISODE = 3, 7, 3


def rollout(env, params, key, steps=T, batch=B):
    """``(obs [T+1, B, obs], times [T+1, B], rewards, terminated, truncated [T, B], info)``;
    actions are uniform in [-2, 2], beyond the action space."""

    def run(key):
        key, key_reset = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(key_reset, batch), params)
        size = env.action_space(params).shape

        def body(carry, key):
            obs, state = carry
            key_act, key_step = jax.random.split(key)
            action = jax.random.uniform(key_act, (batch, *size), minval=-2.0, maxval=2.0)
            out = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(key_step, batch), state, action, params
            )
            obs, state, reward, terminated, truncated, info = out
            return (obs, state), (obs, state.time, reward, terminated, truncated, info)

        _, (all_obs, times, *rest) = jax.lax.scan(body, (obs, state), jax.random.split(key, steps))
        all_obs = jnp.concatenate([obs[None], all_obs])
        times = jnp.concatenate([jnp.broadcast_to(state.time, (1, batch)), times])
        return all_obs, times, *rest

    return jax.jit(run, compiler_options=FAST_COMPILE)(key)


@pytest.fixture(scope="module")
def cartpole():
    pytest.importorskip("mujoco_playground")
    return make("dmc/CartpoleSwingup", max_steps_in_episode=EPISODE)


def test_spaces_and_names(cartpole):
    env, params = cartpole
    assert isinstance(env, dmc.DMCEnv) and env.name == "dmc/CartpoleSwingup"
    assert params.max_steps_in_episode == EPISODE
    assert dmc.DMCParams().max_steps_in_episode == 1000
    obs_space, act_space = env.observation_space(params), env.action_space(params)
    assert obs_space.shape == (5,) and obs_space.dtype == jnp.float32
    assert act_space.shape == (1,) and env.num_actions == 1
    assert float(act_space.low) == -1.0 and float(act_space.high) == 1.0
    assert set(dmc.PAPER_TRAIN_TASKS + dmc.PAPER_HELD_OUT_TASKS) <= set(dmc.names())


def test_rollout_is_finite_and_truncates(cartpole):
    env, params = cartpole
    obs, times, reward, terminated, truncated, info = rollout(env, params, jax.random.key(0))
    assert obs.shape == (T + 1, B, 5) and obs.dtype == jnp.float32
    assert info["final_observation"].shape == (T, B, 5)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert ((np.asarray(reward) >= 0) & (np.asarray(reward) <= 1)).all()
    assert not np.asarray(terminated).any()
    expected = (np.arange(1, T + 1) % EPISODE == 0)[:, None]
    np.testing.assert_array_equal(np.asarray(truncated), np.broadcast_to(expected, (T, B)))
    np.testing.assert_array_equal(np.asarray(times)[:, 0], np.arange(T + 1) % EPISODE)
    # Different keys start different episodes.
    assert not np.allclose(obs[0, 0], obs[0, 1])


def test_meta_env_over_dmc_tasks():
    pytest.importorskip("mujoco_playground")
    tasks = ("dmc/CartpoleSwingup", "dmc/PointMass")
    env = MetaEnv(tasks, obs_size=6, episode_steps=2, episodes_per_trial=2)
    params = env.default_params
    assert env.action_space(params).shape == (2,)
    obs, _, reward, terminated, truncated, info = rollout(env, params, jax.random.PRNGKey(1))
    assert obs.shape == (T + 1, B, 7)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    # Trials of 2 episodes of 2 steps end by truncation every 4 steps.
    expected = (np.arange(1, T + 1) % 4 == 0)[:, None]
    np.testing.assert_array_equal(np.asarray(truncated), np.broadcast_to(expected, (T, B)))
    assert not np.asarray(terminated).any()
    np.testing.assert_array_equal(
        np.asarray(info["trial_episode_done"]),
        np.broadcast_to((np.arange(1, T + 1) % 2 == 0)[:, None], (T, B)),
    )


def test_bad_name_is_a_clear_error():
    with pytest.raises(ValueError) as raised:
        make("dmc/Nope")
    message = str(raised.value)
    if HAVE_PLAYGROUND:
        assert "unknown environment 'dmc/Nope'" in message
        assert "dmc/CartpoleSwingup" in message and "dmc/FingerSpin" in message
    else:
        assert isinstance(raised.value, ImportError)
        assert "pip install 'ssmrl[dmc]'" in message


def test_missing_install_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import fails as if absent
    with pytest.raises(dmc.MissingDependencyError, match=r"pip install 'ssmrl\[dmc\]'"):
        make("dmc/CartpoleSwingup")
    with pytest.raises(dmc.MissingDependencyError):
        make("MetaDMC")
    run_dir = tmp_path / "run"
    assert cli.main(["train", "ppo", "--env", "MetaDMC", "--run-dir", str(run_dir)]) == 2
    assert "ssmrl[dmc]" in capsys.readouterr().err and not run_dir.exists()
    with pytest.raises(ImportError):
        dmc.names()


def test_paper_meta_sets_share_spaces():
    pytest.importorskip("mujoco_playground")
    env, params = make("MetaDMC")
    held, held_params = make("MetaDMCHeldOut")
    assert env.tasks == dmc.PAPER_TRAIN_TASKS and held.tasks == dmc.PAPER_HELD_OUT_TASKS
    assert env.observation_space(params).shape == held.observation_space(held_params).shape
    assert env.action_space(params).shape == held.action_space(held_params).shape == (2,)
    # DM Control pays at most 1 per step: an episode returns at most 1 after scaling.
    assert all(s == pytest.approx(1 / 1000) for s in env.scales + held.scales)
