"""Several devices: the env batch split over a mesh gives the one-device result (a
subprocess with 4 forced host devices), and the placement's rules and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import PartitionSpec

from ssmrl import cli, scale
from ssmrl.agent import Agent
from ssmrl.agents.ppo import RunnerState

ROOT = Path(__file__).resolve().parents[1]


def test_four_devices_train_as_one(tmp_path):
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.multidevice", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert result["ppo_obs_shard"][1] == 2  # 8 envs over 4 devices
    # Float rounding apart, 4 devices train what 1 does; two more updates move the
    # parameters by far more than that.
    assert result["ppo_step"] > 1e-3
    assert result["ppo_gap"] < 1e-5 and result["dreamer_gap"] < 1e-5
    assert result["dreamer_replay_gap"] < 1e-5
    # A 4-device checkpoint continues on 1 device, and restores there.
    assert result["ppo_resumed_gap"] < 1e-5 and result["restored_update"] == 4
    assert "num_envs=6 does not divide over devices=4" in result["odd"]


def _agent(num_envs=8, env_fields=("obs", "carry")) -> Agent:
    return Agent(None, None, None, None, None, 1, 1, (), num_envs=num_envs, env_fields=env_fields)


def test_placement_splits_the_env_fields_only():
    state = RunnerState(
        train_state={"w": jax.ShapeDtypeStruct((2, 8, 3), "float32")},  # not an env field
        env_state=None,
        obs=jax.ShapeDtypeStruct((2, 8, 5), "float32"),
        reset=None,
        carry=(jax.ShapeDtypeStruct((2, 8, 4), "float32"), jax.ShapeDtypeStruct((2,), "int32")),
        key=jax.ShapeDtypeStruct((2, 2), "uint32"),
    )
    shardings, whole = scale.Placement.of(_agent(), 1).shardings(state)
    assert shardings.obs.spec == PartitionSpec(None, scale.AXIS)
    assert shardings.carry[0].spec == PartitionSpec(None, scale.AXIS)
    assert shardings.carry[1].spec == PartitionSpec() == whole.spec
    assert shardings.train_state["w"].spec == PartitionSpec()
    assert shardings.key.spec == PartitionSpec()
    with pytest.raises(ValueError, match="not fields"):
        scale.Placement.of(_agent(env_fields=("envs",)), 1).shardings(state)


def test_placement_refusals():
    with pytest.raises(ValueError, match="num_envs=6 does not divide over devices=4"):
        scale.Placement.of(_agent(num_envs=6), 4)
    with pytest.raises(ValueError, match="no env batch to split"):
        scale.Placement.of(_agent(env_fields=()), 2)
    assert scale.device_count(0) == jax.device_count()
    with pytest.raises(ValueError, match="device"):
        scale.device_count(jax.device_count() + 1)


def test_cli_refuses_more_devices_than_visible(tmp_path, capsys):
    many = str(jax.device_count() + 1)
    assert cli.main(["train", "ppo", "--devices", many, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"devices={many} but only" in err
    assert not (tmp_path / "r").exists()
