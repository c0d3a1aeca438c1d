"""Dreamer: jitted updates on discrete and continuous envs, vmapped seeds, whole episodes in
the replay, and training, evaluation and a bit-identical resume through the CLI."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cli, cores, driver, envs, experiment
from ssmrl.agents import dreamer
from ssmrl.cores import S5Options
from ssmrl.replay import ReplayConfig
from ssmrl.xla import compiler_options
from tests.resume import assert_same, interrupted_then_resumed

TINY = dreamer.Config(
    env="CartPole-v1",
    core=S5Options(features=8, num_layers=1, state_size=4),
    latents=4,
    classes=4,
    hidden=16,
    depth=1,
    replay=ReplayConfig(capacity=64, sequence_length=8, batch_size=4, train_ratio=8.0),
    num_envs=2,
    num_steps=8,
    horizon=3,
    reward_scale=2.0,
    total_timesteps=2 * 8 * 3,
)
GRAD_STEPS = 4  # per update: train_ratio 8 x 16 env steps / (4 x 8 replayed steps)
FAST = compiler_options(True)
# TINY on CartPole, 4 updates, 2 seeds, for the CLI: flags and the same settings as YAML keys.
# fmt: off
FLAGS = [
    "--env", "CartPole-v1", "--core", "s5",
    "--core.features", "8", "--core.num-layers", "1", "--core.state-size", "4",
    "--latents", "4", "--classes", "4", "--hidden", "16", "--depth", "1",
    "--replay.capacity", "64", "--replay.sequence-length", "8", "--replay.batch-size", "4",
    "--replay.train-ratio", "8", "--num-envs", "2", "--num-steps", "8", "--horizon", "3",
    "--total-timesteps", "64", "--seeds", "2", "--chunk", "1", "--fast-compile",
]
# fmt: on
SETTINGS = {
    "env": "CartPole-v1",
    "core": {"name": "s5", "features": 8, "num_layers": 1, "state_size": 4},
    "latents": 4,
    "classes": 4,
    "hidden": 16,
    "depth": 1,
    "replay": {"capacity": 64, "sequence_length": 8, "batch_size": 4, "train_ratio": 8.0},
    "num_envs": 2,
    "num_steps": 8,
    "horizon": 3,
    "total_timesteps": 64,
    "seeds": 2,
    "chunk": 1,
    "fast_compile": True,
}  # fmt: skip
_BUILT: dict = {}
_build = experiment.build


def _one_build(settings: experiment.Settings) -> experiment.Built:
    """`experiment.build`, once per agent and hyperparameters: runs of the same settings
    share one agent, so the driver compiles its chunk once for all of them."""
    key = (settings.agent, settings.hparams)
    if key not in _BUILT:
        _BUILT[key] = _build(settings)
    return _BUILT[key]


def _agent(name: str, cfg: dreamer.Config = TINY):
    env, params = envs.make_for_agent(name, dreamer.WRAPPERS)
    if name == "Pendulum-v1":
        params = params.replace(max_steps_in_episode=3)  # truncated: 3 steps, 4 observations
    return dreamer.make_agent(cfg, env, params)


@cache
def _cartpole():
    """`SETTINGS`' 4 updates of 2 vmapped seeds, compiled as the driver does (one update per
    chunk): (initial state, final state, metrics per update)."""
    agent = _one_build(experiment.load_settings("dreamer", overrides=SETTINGS)).agent
    init, run_chunk = driver.compiled(agent.init, agent.update, agent.num_updates, 1, True)
    start = init(driver.seed_keys(0, 2))
    state, metrics = start, []
    for done in range(agent.num_updates):
        state, m = run_chunk(state, jnp.int32(done))
        metrics.append(jax.tree.map(lambda x: x[0], jax.device_get(m)))
    return start, state, metrics


@cache
def _pendulum():
    """One seed, not vmapped, one update: (initial state, state, metrics)."""
    agent = _agent("Pendulum-v1")
    start = jax.jit(agent.init, compiler_options=FAST)(jax.random.PRNGKey(1))
    state, metrics = jax.jit(agent.update, compiler_options=FAST)(start)
    return start, state, jax.device_get(metrics)


def _assert_trained(start, state, metrics):
    for name, value in metrics._asdict().items():
        if name != "mean_return":
            assert np.isfinite(value).all(), name
    assert (metrics.train_steps == GRAD_STEPS).all()
    for part in ("wm", "actor", "critic"):
        before = jax.tree.leaves(getattr(start.learner, part).params)
        after = jax.tree.leaves(getattr(state.learner, part).params)
        assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), part


def test_one_update_discrete_with_two_vmapped_seeds():
    start, state, metrics = _cartpole()
    _assert_trained(start, state, metrics[0])
    assert metrics[0].wm_total.shape == (2,)
    kernel = jax.tree.leaves(state.learner.actor.params)[-1]
    assert not np.array_equal(kernel[0], kernel[1]), "the seeds trained alike"


def test_one_update_continuous():
    start, state, metrics = _pendulum()
    _assert_trained(start, state, metrics)
    assert metrics.episodes == 4 and np.isfinite(metrics.mean_return)


def test_replay_holds_whole_truncated_episodes():
    _, state, metrics = _pendulum()
    rows = state.replay.buffer.experience.step  # leaves [E, capacity, ...]
    first = np.asarray(rows.is_first[:, :8])
    np.testing.assert_array_equal(first, np.tile([1, 0, 0, 0], (2, 2)).astype(bool))
    np.testing.assert_array_equal(rows.cont[:, :8], 1.0)  # time limits are not terminal
    reward = np.asarray(rows.reward[:, :8])
    assert (reward[first] == 0).all() and (reward[~first] < 0).all()
    # The replay holds rewards times reward_scale (2); logged returns are the env's.
    np.testing.assert_allclose(reward.sum() / 4, 2.0 * metrics.mean_return, rtol=1e-5)
    assert (np.asarray(rows.prev_action)[:, 1:8][~first[:, 1:]] != 0).all()


def test_replay_holds_whole_terminated_episodes():
    _, state, metrics = _cartpole()
    rows = state.replay.buffer.experience.step  # leaves [S, E, capacity, ...]
    first, cont = np.asarray(rows.is_first[..., :32]), np.asarray(rows.cont[..., :32])
    reward = np.asarray(rows.reward[..., :32])
    assert first[..., 0].all() and (cont == 0).any(), "no episode terminated"
    # The row after a terminal observation starts the next episode, and only those do.
    np.testing.assert_array_equal(first[..., 1:], cont[..., :-1] == 0)
    np.testing.assert_array_equal(reward, np.where(first, 0.0, 1.0))
    ended = sum(int(m.episodes.sum()) for m in metrics)
    assert ended == int((cont == 0).sum() + np.asarray(state.envs.last).sum())
    one_hot = np.asarray(rows.prev_action[..., :32, :])[~first]
    np.testing.assert_array_equal(one_hot.sum(-1), 1.0)


def test_terminal_cont_is_a_probability_over_the_replayed_terminals():
    _, _, metrics = _cartpole()
    terminals = np.concatenate([np.asarray(m.terminals).ravel() for m in metrics])
    cont = np.concatenate([np.asarray(m.terminal_cont).ravel() for m in metrics])
    steps = np.concatenate([np.asarray(m.train_steps).ravel() for m in metrics])
    assert (terminals > 0).any(), "no replayed batch held a terminal row"
    assert ((cont >= 0) & (cont <= 1)).all() and (cont[terminals == 0] == 0).all()
    assert (terminals[steps == 0] == 0).all()  # nothing replayed, nothing counted


@pytest.mark.parametrize("core", ["gru", "mlp"])
def test_other_cores_trace(core):
    cfg = replace(TINY, core=cores.convert(TINY.core, core))
    agent = _agent("CartPole-v1", cfg)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
    new_state, metrics = jax.eval_shape(agent.update, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert metrics.wm_total.shape == ()


@pytest.mark.parametrize("name,updates", [("cartpole", 781), ("repeat_previous", 782)])
def test_config_files_load(name, updates):
    path = Path(__file__).parents[2] / "configs" / "dreamer" / f"{name}.yaml"
    settings = experiment.load_settings("dreamer", path)
    assert settings.agent == "dreamer" and settings.hparams.num_updates == updates


@pytest.mark.parametrize(
    "change,message",
    [
        ({"total_timesteps": 50}, "nearest: 48 or 64"),
        ({"gamma": float("nan")}, "gamma must lie in (0, 1]"),
        ({"return_low": 95.0}, "return_low and return_high"),
        ({"horizon": 0}, "horizon must be a whole number >= 1"),
        ({"latents": 0}, "latents must be >= 1"),
        ({"reward_scale": 0.0}, "reward_scale must lie in (0, 1e+06]"),
    ],
)
def test_validate_names_the_setting(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        replace(TINY, **change).validate()


def test_cli_trains_evaluates_and_resumes_bit_identically(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(experiment, "build", _one_build)
    whole = tmp_path / "whole"
    assert cli.main(["train", "dreamer", *FLAGS, "--run-dir", str(whole)]) == 0
    assert cli.main(["eval", str(whole), "--episodes", "2"]) == 0
    assert "mean return" in capsys.readouterr().out
    finished = experiment.restore(whole)
    assert finished.update == 4
    assert_same(finished.state, _cartpole()[1])  # the CLI trains what the tests train

    settings = experiment.read_run_settings(whole)
    resumed = interrupted_then_resumed(settings, tmp_path / "part", stop_at=2)
    assert resumed.updates == 4
    assert_same(resumed.state, finished.state)
