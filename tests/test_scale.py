"""Several devices: the env batch split over a mesh gives the one-device result (a
subprocess with 4 forced host devices), and the placement's rules and refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from ssmrl import cli, experiment, scale
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


# The PPO run of tests/multidevice.py, as flags.
# fmt: off
PPO_FLAGS = [
    "--env", "CartPole-v1", "--core.features", "8", "--core.num-layers", "1",
    "--core.state-size", "4", "--num-envs", "8", "--num-steps", "8", "--update-epochs", "1",
    "--num-minibatches", "2", "--head-width", "8", "--total-timesteps", "128", "--seeds", "2",
    "--chunk", "1", "--checkpoint-every", "1", "--fast-compile",
]
# fmt: on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one(tmp_path):
    """Two processes of 2 devices each on this machine: one run over 4 devices, written
    by process 0, equal (float rounding apart) to the run on one device."""
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run_dir, port = tmp_path / "two", _free_port()
    code = "import sys; from ssmrl.cli import main; sys.exit(main(sys.argv[1:]))"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "train",
                "ppo",
                *PPO_FLAGS,
                "--devices",
                "4",
                "--run-dir",
                str(run_dir),
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "MMER" in outs[0][0] and "MMER" not in outs[1][0]  # only process 0 reports
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2]  # written once
    one = tmp_path / "one"
    assert cli.main(["train", "ppo", *PPO_FLAGS, "--devices", "1", "--run-dir", str(one)]) == 0
    two_state, one_state = experiment.restore(run_dir).state, experiment.restore(one).state
    for a, b in zip(jax.tree.leaves(two_state), jax.tree.leaves(one_state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


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


def test_cluster_flags_are_taken_out_and_checked(capsys):
    rest, found = scale.split_cluster_flags(
        ["--env", "CartPole-v1", "--coordinator", "h:1", "--num-processes=2", "--process-id", "1"]
    )
    assert rest == ["--env", "CartPole-v1"]
    assert found == {"coordinator": "h:1", "num_processes": 2, "process_id": 1}
    with pytest.raises(ValueError, match="whole number"):
        scale.split_cluster_flags(["--process-id", "one"])
    with pytest.raises(ValueError, match="needs a value"):
        scale.split_cluster_flags(["--coordinator"])
    # Some of the three but not all: one line, exit 2, before any device is touched.
    assert cli.main(["train", "ppo", "--coordinator", "h:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--num-processes" in err
    assert cli.main(["train", "ppo", "--num-processes", "2", "--process-id", "2",
                     "--coordinator", "h:1"]) == 2  # fmt: skip
    assert "process-id must lie in [0, num-processes)" in capsys.readouterr().err
