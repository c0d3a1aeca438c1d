"""Driver: resumed runs equal uninterrupted ones bit for bit; NaN stops; checkpoints are exact."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces
from rich.console import Console

from ssmrl import driver
from ssmrl.agent import Agent
from ssmrl.agents import ppo
from ssmrl.checkpoint import Checkpointer
from ssmrl.cores import S5Options
from ssmrl.envs.wrappers import EpisodeStatistics
from ssmrl.metrics import read_metrics


@struct.dataclass
class FlipState(environment.EnvState):
    bit: jax.Array


@struct.dataclass
class FlipParams(environment.EnvParams):
    max_steps_in_episode: int = 3


class FlipEnv(environment.Environment):
    """Shows a random bit first, then blanks; reward 1 for naming the bit. Three steps."""

    @property
    def default_params(self):
        return FlipParams()

    def reset_env(self, key, params):
        bit = jax.random.bernoulli(key).astype(jnp.int32)
        return jnp.array([bit, 1 - bit], jnp.float32), FlipState(time=0, bit=bit)

    def step_env(self, key, state, action, params):
        reward = (action == state.bit).astype(jnp.float32)
        state = state.replace(time=state.time + 1)
        return jnp.zeros(2, jnp.float32), state, reward, jnp.array(False), {}

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)

    def action_space(self, params):
        return spaces.Discrete(2)


CFG = ppo.Config(
    core=S5Options(features=8, num_layers=1, state_size=4),
    total_timesteps=4 * 8 * 4,
    num_envs=4,
    num_steps=8,
    update_epochs=1,
    num_minibatches=2,
    head_width=8,
)
RUN = driver.RunConfig(seeds=2, chunk=2, checkpoint_every=2, fast_compile=True)


@cache
def _agent():
    env = EpisodeStatistics(FlipEnv())
    return ppo.make_agent(CFG, env, env.default_params)


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _train(run_dir, agent=None, run=RUN, **kwargs):
    agent = agent or _agent()
    kwargs.setdefault("console", _console())
    return driver.train(agent, run_dir=run_dir, run=run, **kwargs)


def _kept(ckpt):
    """Update counters of the checkpoints on disk, oldest first."""
    return sorted(int(p.name) for p in ckpt.directory.iterdir() if p.name.isdigit())


def _assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), "leaves differ"


def _without_wall_time(path):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(path)]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = _train(tmp_path / "whole", config={"agent": "ppo"})
    assert whole.updates == 4 and whole.env_steps == 4 * CFG.steps_per_update
    assert (tmp_path / "whole" / "config.yaml").read_text() == "agent: ppo\n"
    assert whole.plot == tmp_path / "whole" / "learning_curve.png" and whole.plot.exists()
    records = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert [r["env_steps"] for r in records] == [32, 64, 96, 128]
    assert all(len(r["mean_return_per_seed"]) == 2 for r in records)
    assert all(len(r["episodes_per_seed"]) == 2 for r in records)
    assert {"total_loss", "policy_loss", "value_loss", "entropy"} <= set(records[0])
    assert 0.0 <= whole.mmer <= 3.0
    # the S5 carry is complex64 and must survive the checkpoint exactly
    assert any(x.dtype == jnp.complex64 for x in jax.tree.leaves(whole.state.carry))

    def ctrl_c(update, runner):
        if update == 2:
            raise KeyboardInterrupt

    console = _console()
    with pytest.raises(KeyboardInterrupt):
        _train(
            tmp_path / "cut",
            run=replace(RUN, checkpoint_every=0),  # only Ctrl-C saves update 2
            on_chunk=ctrl_c,
            console=console,
            resume_command="RESUME-ME",
        )
    assert "Interrupted: saved update 2 of 4" in console.file.getvalue()
    assert "RESUME-ME" in console.file.getvalue()
    with Checkpointer(tmp_path / "cut" / "checkpoints") as ckpt:
        assert _kept(ckpt) == [2]

    resumed = _train(tmp_path / "cut", resume=True)
    _assert_trees_equal(resumed.state, whole.state)
    assert resumed.mmer == whole.mmer
    assert _without_wall_time(tmp_path / "cut" / "metrics.jsonl") == _without_wall_time(
        tmp_path / "whole" / "metrics.jsonl"
    )

    with Checkpointer(tmp_path / "whole" / "checkpoints") as ckpt:
        assert _kept(ckpt) == [2, 4]
        state, update = ckpt.restore(jax.eval_shape(lambda: whole.state))
    assert update == 4
    _assert_trees_equal(state, whole.state)

    again = _train(tmp_path / "whole", resume=True)  # nothing left to do
    assert again.updates == 4
    _assert_trees_equal(again.state, whole.state)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        _train(tmp_path / "whole")


class FakeMetrics(NamedTuple):
    mean_return: jax.Array
    total_loss: jax.Array


def _fake_agent(bad_seed_key, nan_at, num_updates):
    """Counts updates; seed ``bad_seed_key``'s loss is NaN from update ``nan_at`` on."""

    def init(key):
        return {"count": jnp.zeros((), jnp.int32), "bad": jnp.all(key == bad_seed_key)}

    def update(runner):
        count = runner["count"] + 1
        loss = jnp.where(runner["bad"] & (count >= nan_at), jnp.nan, count.astype(jnp.float32))
        ret = jnp.where(count % 2 == 0, 0.1 * count, jnp.nan)  # no episode ends on odd updates
        return {**runner, "count": count}, FakeMetrics(ret, loss)

    return Agent(init, update, None, None, None, num_updates, 5, ())


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = driver.RunConfig(seeds=2, chunk=2, checkpoint_every=2)
    agent = _fake_agent(driver.seed_keys(0, 2)[1], nan_at=6, num_updates=10)

    def go(**kwargs):
        return driver.train(agent, run_dir=tmp_path, run=run, console=_console(), **kwargs)

    with pytest.raises(driver.NonFiniteError) as info:
        go()
    message = str(info.value)
    assert "total_loss is nan at update 6 (seed 1)" in message
    assert "last good checkpoint is update 4" in message
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert _kept(ckpt) == [2, 4]
        state, update_count = ckpt.restore(
            jax.eval_shape(jax.vmap(agent.init), driver.seed_keys(0, 2))
        )
    assert update_count == 4 and np.asarray(state["count"]).tolist() == [4, 4]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert json.loads(lines[5])["total_loss"] is None

    with pytest.raises(driver.NonFiniteError, match="update 6"):
        go(resume=True)  # restarts from update 4; the log is not duplicated
    assert [r["update"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_last_chunk_may_be_short_and_mmer_ignores_updates_without_episodes(tmp_path):
    agent = _fake_agent(jnp.zeros(2, jnp.uint32), nan_at=10**6, num_updates=7)
    run = driver.RunConfig(seeds=3, chunk=4, checkpoint_every=0)
    summary = driver.train(agent, run_dir=tmp_path, run=run, console=_console())
    assert np.asarray(summary.state["count"]).tolist() == [7, 7, 7]
    assert summary.env_steps == 35 and summary.mmer == pytest.approx(0.6)
    assert summary.final == pytest.approx(0.6) and summary.headline == "mean_return"
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert _kept(ckpt) == [7]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["update"] for r in records] == list(range(1, 8))
    assert records[0]["mean_return"] is None and records[1]["mean_return"] == pytest.approx(0.2)


def test_an_agent_names_another_headline_metric(tmp_path):
    base = _fake_agent(jnp.zeros(2, jnp.uint32), nan_at=10**6, num_updates=3)
    agent = base._replace(headline="total_loss")
    run = driver.RunConfig(seeds=2, chunk=2, checkpoint_every=0)
    summary = driver.train(agent, run_dir=tmp_path, run=run, console=_console())
    assert summary.headline == "total_loss" and summary.final == 3.0
    assert np.isnan(summary.mmer)  # no episodic returns to take the MMER of
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["total_loss_per_seed"] for r in records] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert "mean_return_per_seed" not in records[0] and summary.plot.is_file()


class Pieces(NamedTuple):
    carry: jax.Array
    key: jax.Array
    raw_key: jax.Array
    flags: jax.Array
    nested: dict


def test_checkpoint_round_trips_complex_keys_and_structure(tmp_path):
    k1, k2 = jax.random.split(jax.random.key(7))
    carry = jax.random.normal(k1, (3, 5)) + 1j * jax.random.normal(k2, (3, 5))
    state = Pieces(
        carry=carry.astype(jnp.complex64),
        key=jax.random.key(3),
        raw_key=jax.random.PRNGKey(4),
        flags=jnp.array([True, False]),
        nested={
            "step": jnp.int32(9),
            "x": jnp.linspace(0, 1, 7, dtype=jnp.float32),
            "empty": jnp.zeros((4, 0), jnp.float32),  # the MLP core's carry
        },
    )
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        ckpt.save(1, jax.tree.map(jnp.zeros_like, state))
        ckpt.save(5, state)
    with Checkpointer(tmp_path, create=False) as ckpt:  # a fresh manager, as after a restart
        assert ckpt.latest == 5
        restored, update = ckpt.restore(jax.eval_shape(lambda: state))
        older, _ = ckpt.restore(state, update=1)
    assert update == 5 and isinstance(restored, Pieces)
    assert restored.carry.dtype == jnp.complex64
    assert restored.nested["empty"].shape == (4, 0)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    _assert_trees_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
    _assert_trees_equal(restored._replace(key=None), state._replace(key=None))
    assert not np.asarray(older.carry).any()
    with pytest.raises(FileNotFoundError):
        Checkpointer(tmp_path / "missing", create=False)


def test_run_config_validation():
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        driver.RunConfig(chunk=0).validate()
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        driver.RunConfig(checkpoint_every=-1).validate()


def test_a_setting_added_after_a_checkpoint_does_not_block_its_restore():
    check = driver.same_settings_as({"gamma": 0.9, "core": {"name": "s5", "new": 1}}, Path("r"))
    check(4, {"config": {"gamma": 0.9, "core": {"name": "s5"}}})  # "core.new" came later
    with pytest.raises(driver.RunError, match=r"\(gamma\)"):
        check(4, {"config": {"gamma": 0.5, "core": {"name": "s5"}}})
    with pytest.raises(driver.RunError, match="core.old"):
        check(4, {"config": {"gamma": 0.9, "core": {"name": "s5", "old": 2}}})
