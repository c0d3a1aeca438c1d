"""The offline world-model trainer and `ssmrl imagine`: training on scripted episodes
through the CLI, a bit-identical resume, imagination reports, and one-line refusals."""

from __future__ import annotations

import json
from functools import cache

import jax
import numpy as np
import pytest

from ssmrl import cli, driver, envs, experiment
from ssmrl.agents import dreamer, worldmodel
from ssmrl.cores import GRUOptions, S5Options
from ssmrl.replay import ReplayConfig
from tests.resume import assert_same, interrupted_then_resumed

# A tiny S5 world model on TwoRoomsRecall (episodes of 257 observations).
# fmt: off
FLAGS = [
    "--env", "TwoRoomsRecall", "--core", "s5",
    "--core.features", "8", "--core.num-layers", "1", "--core.state-size", "4",
    "--latents", "4", "--classes", "4", "--hidden", "16", "--depth", "1",
    "--batch-size", "2", "--updates", "4", "--seeds", "2", "--chunk", "1", "--fast-compile",
]
# fmt: on
TINY = worldmodel.Config(
    core=GRUOptions(features=8, num_layers=1),
    latents=4,
    classes=4,
    hidden=16,
    depth=1,
    batch_size=2,
    updates=3,
)  # fmt: skip


@cache
def _rooms():
    return envs.make_for_agent("TwoRoomsRecall", worldmodel.WRAPPERS)


def test_one_update_is_finite_and_reads_fresh_episodes():
    env, env_params = _rooms()
    agent = worldmodel.make_agent(TINY, env, env_params)
    assert agent.act is None and agent.headline == "wm_total"
    assert agent.steps_per_update == 2 * 257 and agent.num_updates == 3
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    after, metrics = jax.jit(agent.update)(state)
    assert all(np.isfinite(v) for v in metrics)
    assert float(metrics.wm_total) == pytest.approx(sum(float(x) for x in metrics[1:]), rel=1e-5)
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), state.wm.params, after.wm.params)
    # The reward head's zero-initialised output layer passes no gradient back at first.
    del moved["params"]["reward_net"]
    assert all(jax.tree.leaves(moved))
    assert not np.array_equal(after.key, state.key)  # the next update draws new episodes
    view = agent.world_model
    assert view.action_size == 5 and view.params(after) is after.wm.params


def test_the_trainer_refuses_an_env_without_scripted_episodes(capsys):
    assert cli.main(["train", "worldmodel", "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no scripted episodes" in err
    assert cli.main(["train", "worldmodel", "--env", "TwoRoomRecall"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "TwoRoomsRecall" in err


def test_cli_trains_resumes_bit_identically_and_imagines(tmp_path, capsys):
    whole = tmp_path / "whole"
    assert cli.main(["train", "worldmodel", *FLAGS, "--run-dir", str(whole)]) == 0
    out = capsys.readouterr().out
    assert "final wm_total" in out and f"ssmrl imagine {whole}" in out
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert len(records[0]["wm_total_per_seed"]) == 2 and "mean_return" not in records[0]
    assert (whole / "learning_curve.png").is_file()
    finished = experiment.restore(whole)

    settings = experiment.read_run_settings(whole)
    resumed = interrupted_then_resumed(settings, tmp_path / "part", stop_at=2)
    assert resumed.updates == 4
    assert_same(resumed.state, finished.state)

    # A finished 2-update run trained on to 4 updates is the 4-update run.
    short = tmp_path / "short"
    two = [*FLAGS[: FLAGS.index("--updates")], "--updates", "2", *FLAGS[FLAGS.index("--seeds") :]]
    assert cli.main(["train", "worldmodel", *two, "--run-dir", str(short)]) == 0
    assert cli.main(["train", "worldmodel", "--resume", str(short), "--updates", "4"]) == 0
    assert_same(experiment.restore(short).state, finished.state)
    assert experiment.read_run_settings(short).hparams.updates == 4
    assert cli.main(["train", "worldmodel", "--resume", str(short), "--updates", "3"]) == 2
    assert "updates may only grow" in capsys.readouterr().err

    # No policy: `ssmrl eval` points to `ssmrl imagine`.
    assert cli.main(["eval", str(whole)]) == 2
    assert "ssmrl imagine" in capsys.readouterr().err

    args = ["imagine", str(whole), "--context", "128", "--horizons", "1", "8", "64"]
    assert cli.main([*args, "--episodes", "4"]) == 0
    out = capsys.readouterr().out
    assert "copy-last" in out and "steps/s" in out
    result = json.loads((whole / "imagination.json").read_text())
    assert result["horizons"] == [1, 8, 64] and result["seeds"] == 2
    assert len(result["model_per_seed"]) == 2 and result["update"] == 4
    for name in ("model", "copy_last", "marginal"):
        assert all(0.0 <= a <= 1.0 for a in result[name]["accuracy"])
    assert all(v is None for v in result["model"]["reward_accuracy"])  # recall pays nothing
    assert (whole / "imagination.png").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run, shared by the refusal tests."""
    run_dir = tmp_path_factory.mktemp("wm") / "run"
    flags = [*FLAGS[: FLAGS.index("--updates")], "--updates", "1", "--fast-compile"]
    assert cli.main(["train", "worldmodel", *flags, "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--context", "200", "--horizons", "64"], "horizons up to 57"),
        (["--context", "0"], "must be >= 1"),
        (["--episodes", "0"], "episodes must be >= 1"),
    ],
)
def test_imagine_refuses_bad_settings_in_one_line(trained, capsys, flags, message):
    assert cli.main(["imagine", str(trained), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_imagine_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["imagine", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_imagine_reads_a_dreamer_world_model():
    env, env_params = envs.make_for_agent("TwoRoomsRecall", dreamer.WRAPPERS)
    cfg = dreamer.Config(
        env="TwoRoomsRecall",
        core=S5Options(features=8, num_layers=1, state_size=4),
        latents=4, classes=4, hidden=16, depth=1,
        replay=ReplayConfig(capacity=64, sequence_length=8, batch_size=4, train_ratio=8.0),
        num_envs=2, num_steps=8, horizon=3, total_timesteps=16,
    )  # fmt: skip
    agent = dreamer.make_agent(cfg, env, env_params)
    settings = experiment.Settings(
        agent="dreamer", hparams=cfg, run=driver.RunConfig(seeds=1, fast_compile=True)
    )
    state = jax.vmap(agent.init)(driver.seed_keys(0, 1))
    run = experiment.Trained(settings, experiment.Built(agent, env, env_params), state, 0)
    result = experiment.imagine(run, context=16, horizons=(1, 4), episodes=3)
    assert result["agent"] == "dreamer" and result["horizons"] == [1, 4]
    assert len(result["model"]["accuracy"]) == 2
