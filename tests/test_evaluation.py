"""Tests for ssmrl.evaluation: episode and trial returns against plain loops, curve summaries."""

from __future__ import annotations

import json

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cli, evaluation
from ssmrl.agent import Agent
from ssmrl.envs.meta import MetaEnv


def policy(act):
    """An agent made of ``act`` alone, with a float counter ``[E]`` as its memory."""
    return Agent(None, None, act, lambda rows: jnp.zeros(rows), None, 0, 0, ())


def push_left(params, carry, obs, reset, key, greedy):
    """A policy that ignores everything and always takes action 0; counts its calls."""
    return carry + 1, jnp.zeros(obs.shape[0], jnp.int32)


def test_episode_returns_match_a_plain_loop():
    env, params = gymnax.make("CartPole-v1")
    rows, seeds = 5, 2
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    run = evaluation.episode_returns(policy(push_left), env, params, rows, fast_compile=True)
    returns, finished = (np.asarray(x) for x in run(jnp.zeros(seeds), keys))
    assert finished.all()
    for s in range(seeds):
        _, key_reset = jax.random.split(keys[s])
        for e, k in enumerate(jax.random.split(key_reset, rows)):
            _, state = env.reset(k, params)
            total, done = 0.0, False
            while not done:  # CartPole is deterministic; the step key does not matter
                _, state, reward, terminated, _ = env.step_env(k, state, 0, params)
                total += float(reward)
                done = bool(terminated) or bool(env.is_truncated(state, params))
            assert returns[s, e] == total  # rewards after the episode ended are not added
    assert 5 <= returns.min() and returns.max() < 20


def test_trial_returns_index_every_episode():
    env = MetaEnv(("CartPole-v1",), episode_steps=5, episodes_per_trial=3)
    params = env.params_for(4)  # evaluated out to more episodes than trained
    run = evaluation.trial_returns(policy(push_left), env, params, 2, fast_compile=True)
    returns, finished = (
        np.asarray(x) for x in run(jnp.zeros(1), jax.random.split(jax.random.PRNGKey(1), 1))
    )
    assert returns.shape == finished.shape == (1, 2, 4)
    assert finished.all()
    # CartPole pays 1/5 per step and cannot fall within 5 steps: every episode returns 1.
    np.testing.assert_allclose(returns, 1.0, rtol=1e-6)


def push_by_first_input(params, carry, obs, reset, key, greedy):
    """Action 1 where the first projected observation is positive: depends on the projection."""
    return carry, (obs[:, 0] > 0).astype(jnp.int32)


def test_adaptation_changes_the_trial_length_and_keeps_the_seed_pool():
    env = MetaEnv(("CartPole-v1",), episode_steps=30, episodes_per_trial=2)
    pooled = env.params_for(2, seed_pool_start=7, seed_pool_size=1)
    keys = jax.random.split(jax.random.PRNGKey(3), 1)
    got = evaluation.adaptation(policy(push_by_first_input), env, pooled, 4, 3, jnp.zeros(1), keys)
    assert got.returns.shape == got.finished.shape == (1, 4, 3) and got.finished.all()
    np.testing.assert_allclose(got.curve.mean, got.returns.mean((0, 1)), rtol=1e-6)
    same = env.params_for(3, seed_pool_start=7, seed_pool_size=1)
    run = evaluation.trial_returns(policy(push_by_first_input), env, same, 4)
    np.testing.assert_array_equal(got.returns, np.asarray(run(jnp.zeros(1), keys)[0]))
    fresh = evaluation.trial_returns(policy(push_by_first_input), env, env.params_for(3), 4)
    assert (got.returns != np.asarray(fresh(jnp.zeros(1), keys)[0])).any()  # the pool mattered


def test_summarize_leaves_out_unfinished_episodes():
    returns = np.array([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])
    finished = np.array([[True, True, False], [True, False, False]])
    curve = evaluation.summarize(returns, finished)
    np.testing.assert_allclose(curve.mean[:2], [2.0, 2.0])
    np.testing.assert_allclose(curve.std[:2], [1.0, 0.0])
    assert np.isnan(curve.mean[2]) and list(curve.count) == [2, 1, 0]


def test_window_difference_pairs_episodes_within_each_trial():
    # Three trials of four episodes; the last trial did not finish episode 4.
    returns = np.array([[0.0, 2.0, 1.0, 3.0], [10.0, 10.0, 14.0, 12.0], [5.0, 5.0, 9.0, 0.0]])
    finished = np.ones_like(returns, bool)
    finished[2, 3] = False
    diff = evaluation.window_difference(returns, finished, slice(0, 2), slice(2, 4))
    # Per trial: (1 + 3) / 2 - (0 + 2) / 2 = 1 and (14 + 12) / 2 - 10 = 3; trial 3 left out.
    assert diff.trials == 2
    np.testing.assert_allclose(diff.mean, 2.0)
    np.testing.assert_allclose(diff.stderr, np.std([1.0, 3.0], ddof=1) / np.sqrt(2))
    # Leading axes (seeds, trials) are flattened.
    split = evaluation.window_difference(
        returns.reshape(1, 3, 4), finished.reshape(1, 3, 4), slice(0, 2), slice(2, 4)
    )
    assert split == diff
    none = evaluation.window_difference(returns, ~finished, slice(0, 2), slice(2, 4))
    assert none.trials == 0 and np.isnan(none.mean)
    with pytest.raises(ValueError, match="empty window"):
        evaluation.window_difference(returns, finished, slice(0, 2), slice(4, 8))


def test_transitions_count_success_after_success_and_after_failure():
    # Solved = return >= 1. Trial 1: S F S S; trial 2: F F S F; trial 3: S S ? S.
    returns = np.array([[1.0, 0.2, 1.0, 1.0], [0.5, 0.1, 1.0, 0.3], [1.0, 1.0, 0.0, 1.0]])
    finished = np.ones_like(returns, bool)
    finished[2, 2] = False
    t = evaluation.transitions(returns, finished, 1.0, slice(1, 4))
    # Pairs (k-1, k) with both finished: trial 1 SF FS SS, trial 2 FF FS SF, trial 3 SS.
    # After a success: SF SS SF SS -> 2 of 4; after a failure: FS FF FS -> 2 of 3.
    assert t.pairs == 7
    np.testing.assert_allclose([t.after_solved, t.after_failed], [0.5, 2 / 3])
    np.testing.assert_allclose(t.solved, 4 / 7)
    np.testing.assert_allclose(t.mixing, 0.5 - 2 / 3)
    late = evaluation.transitions(returns, finished, 1.0, slice(3, 4))  # SS, SF only
    assert late.pairs == 2 and late.after_solved == 0.5 and np.isnan(late.after_failed)
    with pytest.raises(ValueError, match="start after episode 0"):
        evaluation.transitions(returns, finished, 1.0, slice(0, 2))


def test_eval_of_a_meta_run_writes_the_adaptation_curve(tmp_path, capsys):
    run_dir = tmp_path / "meta"
    tiny = [
        "--env", "ProjectedCartPole",
        "--core.features", "8", "--core.num-layers", "1", "--core.state-size", "4",
        "--num-envs", "4", "--num-steps", "16", "--update-epochs", "1", "--num-minibatches", "2",
        "--head-width", "8", "--total-timesteps", "128", "--fast-compile",
    ]  # fmt: skip
    assert cli.main(["train", "ppo", *tiny, "--run-dir", str(run_dir)]) == 0
    args = ["eval", str(run_dir), "--episodes", "2", "--trial-episodes", "3"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "trials of 3 episodes" in out and (run_dir / "adaptation.png").is_file()
    data = json.loads((run_dir / "adaptation.json").read_text())
    assert len(data) == 2 and "ProjectedCartPoleHeldOut (held out)" in data
    for curve in data.values():
        assert len(curve["mean"]) == 3 and all(0 < m <= 1 for m in curve["mean"])
    assert cli.main([*args, "--held-out", "MetaControlHeldOut"]) == 2  # other spaces
    assert cli.main([*args, "--held-out", "CartPole-v1"]) == 2  # not a meta environment
    assert cli.main(["eval", str(run_dir), "--trial-episodes", "0"]) == 2
