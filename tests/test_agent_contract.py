"""A second, non-PPO agent defined here goes through the same driver, CLI, checkpoints,
resume and evaluation as PPO: the agent contract (`ssmrl.agent.Agent`) is all they use.

The agent is a softmax policy over actions that ignores observations, with one
preference per action learned from the mean reward each action earned (a bandit
learner, on RepeatPreviousEasy, where the reward depends on the action); its memory
is a step counter per env, so carries are real.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cli, configfile, experiment
from ssmrl.agent import Agent

WRAPPERS = ("flatten", "episode_statistics")


@dataclass(frozen=True)
class Config:
    """Settings of the bandit learner (an agent module's ``Config``)."""

    env: str = "RepeatPreviousEasy"
    num_envs: int = 4
    num_steps: int = 8
    total_timesteps: int = 4 * 8 * 6
    lr: float = 0.5

    def validate(self) -> None:
        if self.num_envs < 1 or self.num_steps < 1:
            raise ValueError("num_envs and num_steps must be >= 1")


class State(NamedTuple):
    preferences: jax.Array  # [A]
    env_state: Any
    obs: jax.Array
    key: jax.Array


class Metrics(NamedTuple):
    mean_return: jax.Array
    entropy: jax.Array


def make_agent(cfg: Config, env: Any, env_params: Any) -> Agent:
    n = int(env.action_space(env_params).n)
    steps_per_update = cfg.num_envs * cfg.num_steps

    def act(params, carry, obs, reset, key, greedy=False):
        logits = jnp.broadcast_to(params, (obs.shape[0], n))
        action = (jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)).astype(
            jnp.int32
        )
        return jnp.where(reset, 1, carry + 1), action

    def init(key):
        key, key_env = jax.random.split(key)
        keys = jax.random.split(key_env, cfg.num_envs)
        obs, env_state = jax.vmap(env.reset, (0, None))(keys, env_params)
        return State(jnp.zeros(n), env_state, obs, key)

    def update(state: State):
        def step(s: State, _):
            key, key_act, key_env = jax.random.split(s.key, 3)
            reset = jnp.zeros(cfg.num_envs, bool)
            _, action = act(s.preferences, jnp.zeros(cfg.num_envs), s.obs, reset, key_act)
            keys = jax.random.split(key_env, cfg.num_envs)
            obs, env_state, reward, _, _, info = jax.vmap(env.step, (0, 0, 0, None))(
                keys, s.env_state, action, env_params
            )
            s = State(s.preferences, env_state, obs, key)
            return s, (action, reward, info["returned_episode"], info["episode_return"])

        state, (actions, rewards, ended, returns) = jax.lax.scan(step, state, None, cfg.num_steps)
        hit = jax.nn.one_hot(actions, n)
        mean_reward = (hit * rewards[..., None]).sum((0, 1)) / jnp.maximum(hit.sum((0, 1)), 1)
        preferences = state.preferences + cfg.lr * (mean_reward - mean_reward.mean())
        probs = jax.nn.softmax(preferences)
        episodes = ended.sum()
        metrics = Metrics(
            mean_return=returns.sum() / jnp.where(episodes > 0, episodes, jnp.nan),
            entropy=-(probs * jnp.log(probs)).sum(),
        )
        return state._replace(preferences=preferences), metrics

    return Agent(
        init=init,
        update=update,
        act=act,
        initial_carry=lambda rows: jnp.zeros(rows, jnp.int32),
        policy_params=lambda state: state.preferences,
        num_updates=cfg.total_timesteps // steps_per_update,
        steps_per_update=steps_per_update,
        wrappers=WRAPPERS,
    )


@pytest.fixture
def bandit_agent(monkeypatch):
    """Registers this module as the agent ``bandit`` for the CLI and `ssmrl.experiment`."""
    spec = experiment.AgentSpec(__name__, "a bandit learner defined in the tests")
    monkeypatch.setitem(experiment.AGENTS, "bandit", spec)
    assert sys.modules[__name__].make_agent is make_agent


def test_a_second_agent_trains_resumes_and_evaluates_through_the_cli(
    bandit_agent, tmp_path, capsys
):
    run_dir = tmp_path / "bandit"
    assert cli.main(["train", "bandit", "--run-dir", str(run_dir), "--chunk", "2"]) == 0
    assert "MMER " in capsys.readouterr().out
    saved = configfile.read_yaml(run_dir / "config.yaml")
    assert saved["agent"] == "bandit" and saved["lr"] == 0.5 and "core" not in saved

    run = experiment.restore(run_dir)
    assert run.update == 6 and run.params.shape == (1, 4)  # [seeds, actions]
    assert np.abs(np.asarray(run.params)).sum() > 0, "the preferences were learned"

    # Resume a finished run with a longer log interval: nothing changes, nothing is lost.
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert cli.main(["train", "bandit", "--resume", str(run_dir), "--chunk", "3"]) == 0
    assert (run_dir / "metrics.jsonl").read_text().splitlines() == lines
    assert cli.main(["train", "bandit", "--resume", str(run_dir), "--lr", "0.1"]) == 2
    assert "cannot change lr" in capsys.readouterr().err

    assert cli.main(["eval", str(run_dir), "--episodes", "3", "--greedy"]) == 0
    out = capsys.readouterr().out
    assert "update 6, 1 seed(s), greedy actions" in out and "mean return" in out
    returns, finished = experiment.episode_returns(run, episodes=3, greedy=True)
    assert returns.shape == finished.shape == (1, 3) and finished.all()
    # One fixed suit is right about a quarter of the time: returns near -0.5 in [-1, 1].
    assert -1 <= returns.min() and returns.max() < 0.5


def test_an_interrupted_second_agent_resumes_to_the_same_state(bandit_agent, tmp_path):
    whole, _ = experiment.train(experiment.load_settings("bandit"), tmp_path / "whole")
    settings = experiment.load_settings("bandit", overrides={"checkpoint_every": 2, "chunk": 2})
    part = tmp_path / "part"
    built = experiment.build(settings)

    from ssmrl import driver

    def stop_after_four(done, runner):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        driver.train(built.agent, run_dir=part, run=settings.run, on_chunk=stop_after_four)
    resumed, _ = experiment.train(settings, part, resume=True)
    assert resumed.update == whole.update == 6
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(whole.params))
