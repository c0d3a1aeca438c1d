"""Nothing a run wrote is lost, and every bad input is one line with exit status 2.

Resume without checkpoints, damaged or edited checkpoints, out-of-range settings,
sizes that fit no memory, files in the way of a run directory, bad flags, totals that
are not whole updates, and commands printed for pasting into a shell.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest
import yaml

from ssmrl import cli, configfile, driver, experiment
from ssmrl.agent import Agent
from ssmrl.checkpoint import Checkpointer

TINY = [
    "--env", "CartPole-v1", "--core", "mlp", "--core.features", "8", "--core.num-layers", "1",
    "--num-envs", "4", "--num-steps", "16", "--update-epochs", "1", "--num-minibatches", "2",
    "--head-width", "8", "--total-timesteps", "256",
    "--chunk", "2", "--checkpoint-every", "2", "--fast-compile",
]  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ssmrl: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 4-update run with checkpoints at updates 2 and 4; copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(run_dir)]) == 0
    return run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_resume_without_checkpoints_refuses_and_keeps_every_file(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 2
    assert "nothing to resume from" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    (run_dir / "checkpoints").mkdir()  # empty: the same
    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 2
    assert "nothing to resume from" in _one_error_line(capsys)


def _damage(checkpoint: Path) -> None:
    for data in (checkpoint / "state").rglob("d/*"):
        if data.is_file():
            with open(data, "r+b") as f:
                f.truncate(10)


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    _damage(run_dir / "checkpoints" / "4")
    assert cli.main(["eval", str(run_dir), "--episodes", "2"]) == 0
    captured = capsys.readouterr()
    assert "update 2, 1 seed(s)" in captured.out
    assert captured.err.count("\n") == 1 and "checkpoints/4 is unreadable" in captured.err

    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "resuming from the older checkpoint 2" in err
    assert (run_dir / "unreadable-checkpoints" / "4").is_dir(), "kept aside, not deleted"
    assert experiment.restore(run_dir).update == 4  # trained again from update 2


def test_no_readable_checkpoint_is_one_line_for_resume_and_eval(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    for checkpoint in (run_dir / "checkpoints").iterdir():
        _damage(checkpoint)
    assert cli.main(["eval", str(run_dir)]) == 2
    assert "is unreadable" in _one_error_line(capsys)
    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 2
    assert "is unreadable" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "key,value,flag",
    [("core.features", 32, "core.features"), ("optim.lr", 0.5, "optim.lr")],
)
def test_an_edited_config_yaml_is_refused(finished_run, tmp_path, capsys, key, value, flag):
    run_dir = _copy(finished_run, tmp_path)
    data = configfile.read_yaml(run_dir / "config.yaml")
    section, name = key.split(".")
    data[section][name] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 2
    err = _one_error_line(capsys)
    assert f"saved with other settings than config.yaml now holds ({flag})" in err
    assert cli.main(["eval", str(run_dir)]) == 2
    assert flag in _one_error_line(capsys)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--optim.lr", "1e30"], "lr must be finite and in (0, 1]"),
        (["--optim.lr", "nan"], "lr must be finite"),
        (["--optim.adam-eps", "0"], "adam_eps must be finite"),
        (["--ent-coef", "inf"], "ent_coef must lie in [0, 1]"),
        (["--vf-coef", "-1"], "vf_coef must lie in (0,"),
        (["--total-timesteps", "2100"], "nearest: 2048 or 4096"),
        (["--num-env", "8"], "perhaps you meant --num-envs INT"),
        (["--num-envs", "abc"], "Error parsing --num-envs"),
    ],
)
def test_bad_values_and_flags_are_one_line(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    base = ["train", "ppo", "--num-envs", "32", "--num-steps", "64", "--run-dir", str(run_dir)]
    assert cli.main(base + flags) == 2
    assert message in _one_error_line(capsys)
    assert not run_dir.exists()


def test_a_saved_nan_is_reported_as_invalid_not_as_changed(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    data = configfile.read_yaml(run_dir / "config.yaml")
    data["optim"]["lr"] = math.nan
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    assert cli.main(["train", "ppo", "--resume", str(run_dir)]) == 2
    err = _one_error_line(capsys)
    assert "lr must be finite" in err and "cannot change" not in err
    assert configfile.changed({"lr": math.nan}, {"lr": math.nan}) == []
    assert configfile.changed({"lr": math.nan}, {"lr": 0.1}) == ["lr"]


def test_a_run_too_large_for_memory_stops_before_compiling(tmp_path, capsys):
    run_dir = tmp_path / "huge"
    flags = ["--num-envs", "1000000", "--num-steps", "16", "--total-timesteps", "16000000"]
    assert cli.main(["train", "ppo", *flags, "--run-dir", str(run_dir)]) == 2
    err = _one_error_line(capsys)
    assert "GiB" in err and "use fewer envs, steps or seeds" in err
    assert not run_dir.exists()


def _nan_agent(num_updates: int) -> Agent:
    def update(state):
        return state + 1, {"mean_return": jnp.nan, "loss": jnp.where(state >= 0, jnp.nan, 0.0)}

    return Agent(lambda key: jnp.zeros((), jnp.int32), update, None, None, None, 4, 1, ())


def test_a_run_that_fails_before_its_first_checkpoint_removes_what_it_wrote(tmp_path):
    run = driver.RunConfig(chunk=1, checkpoint_every=100)
    for run_dir in (tmp_path / "new", tmp_path / "empty"):
        if run_dir.name == "empty":
            run_dir.mkdir()
        with pytest.raises(driver.NonFiniteError):
            driver.train(_nan_agent(4), run_dir=run_dir, run=run, config={"a": 1})
        assert not run_dir.exists() if run_dir.name == "new" else not any(run_dir.iterdir())


def test_files_in_the_way_of_a_run_directory_are_named(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("not a directory")
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(blocker / "sub")]) == 2
    assert f"{blocker} is a file" in _one_error_line(capsys)
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(blocker)]) == 2
    assert "is a file" in _one_error_line(capsys)
    with pytest.raises(driver.RunError, match="is a file"):
        driver.train(_nan_agent(4), run_dir=blocker / "sub")


def test_printed_commands_are_shell_quoted_and_usage_goes_to_stderr(tmp_path, capsys):
    run_dir = tmp_path / "my run"
    assert (
        cli.main(["train", "ppo", *TINY, "--total-timesteps", "64", "--run-dir", str(run_dir)]) == 0
    )
    assert f"evaluate with: ssmrl eval '{run_dir}'" in capsys.readouterr().out
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(run_dir)]) == 2
    assert f"--resume '{run_dir}'" in _one_error_line(capsys)
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: ssmrl COMMAND" in captured.err
    assert cli.main(["train"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: ssmrl train AGENT" in captured.err


def test_checkpoints_record_their_settings(finished_run):
    with Checkpointer(finished_run / "checkpoints", create=False) as ckpt:
        meta = ckpt.meta(ckpt.latest)
    assert meta["update"] == 4
    assert meta["config"] == configfile.read_yaml(finished_run / "config.yaml")
