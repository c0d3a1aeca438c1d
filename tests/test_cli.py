"""The ssmrl command: help, one-line config errors with exit status 2, train -> eval -> resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ssmrl import cli, configfile, driver, experiment
from ssmrl.agents import ppo

TINY = [
    "--env", "CartPole-v1",
    "--core.features", "8", "--core.num-layers", "1", "--core.state-size", "4",
    "--num-envs", "4", "--num-steps", "16", "--update-epochs", "1", "--num-minibatches", "2",
    "--head-width", "8", "--total-timesteps", "256",
    "--seeds", "2", "--chunk", "2", "--checkpoint-every", "2", "--fast-compile",
]  # fmt: skip


def _snapshot(path):
    return sorted((p.name, p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir())


def test_help_lists_commands_and_flags(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {c} " in out for c in ("train", "eval", "imagine", "envs"))
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {agent} " in out for agent in ("ppo", "dreamer", "worldmodel"))
    assert cli.main(["train", "ppo", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--env", "--core.name", "--seeds", "--run-dir", "--resume"):
        assert flag in out
    assert cli.main(["envs"]) == 0
    assert "RepeatPreviousEasy" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    "yaml,flags,message",
    [
        (
            "core:\n  width: 8\n",
            [],
            "c.yaml: unknown key core.width; allowed: blocks, clip_eigs, conj_sym, discretization,",
        ),
        ("num_envs: many\n", [], "c.yaml: num_envs: expected int, got 'many' (str)"),
        ("optim:\n  anneal_lr: 1\n", [], "optim.anneal_lr: expected bool, got 1 (int)"),
        ("", ["--num-envs", "6"], "num_minibatches=4 must divide num_envs=6"),
        ("env: RepeatPreviousEsay\n", [], "env: unknown environment 'RepeatPreviousEsay'"),
        (
            "",
            ["--core", "s4"],
            "core.name: unknown core 's4'; allowed: gru, lru, lstm, mlp, s5, transformer",
        ),
        ("core:\n  name: mamba\n", [], "core.name: unknown core 'mamba'; allowed:"),
        (
            "core:\n  name: gru\n  state_size: 64\n",
            [],
            "core.state_size; allowed: chrono_steps, features, name,",
        ),
        ("agent: dreamer\n", [], "agent: the settings are for 'dreamer', not 'ppo'"),
    ],
)
def test_config_errors_exit_2_with_one_line_before_anything_is_written(
    tmp_path, capsys, yaml, flags, message
):
    (tmp_path / "c.yaml").write_text(yaml)
    run_dir = tmp_path / "run"
    args = ["train", "ppo", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run_dir)]
    assert cli.main(args + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssmrl: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not run_dir.exists()


def test_bad_flags_exit_2(tmp_path, capsys):
    assert cli.main(["train", "ppo", "--num-envs", "many", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--num-envs" in capsys.readouterr().err
    assert cli.main(["train", "dqn"]) == 2
    assert "unknown agent 'dqn'; allowed: ppo" in capsys.readouterr().err
    assert cli.main(["fly"]) == 2
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_existing_run_dir_is_left_untouched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    before = _snapshot(run_dir)
    assert cli.main(["train", "ppo", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and f"--resume {run_dir}" in err
    assert _snapshot(run_dir) == before


def test_resume_keeps_the_saved_settings(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = experiment.Settings(agent="ppo", hparams=ppo.Config(), run=driver.RunConfig(seeds=2))
    configfile.write_yaml(saved, run_dir / "config.yaml")
    before = _snapshot(run_dir)
    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--num-envs", "32"]) == 2
    assert "cannot change num_envs" in capsys.readouterr().err
    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--seeds", "3"]) == 2
    assert "cannot change seeds" in capsys.readouterr().err
    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert cli.main(["train", "ppo", "--resume", str(tmp_path / "nowhere")]) == 2
    assert _snapshot(run_dir) == before


def test_resume_may_lengthen_a_run_unless_its_learning_rate_anneals(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    hp = ppo.Config()
    saved = experiment.Settings(agent="ppo", hparams=hp, run=driver.RunConfig())
    assert experiment.extendable(saved) == ("total_timesteps",)
    longer = str(2 * hp.total_timesteps)
    configfile.write_yaml(saved, run_dir / "config.yaml")
    parsed, _, resuming = cli._parse_train(
        "ppo", ["--resume", str(run_dir), "--total-timesteps", longer]
    )
    assert resuming and parsed.hparams.total_timesteps == int(longer)
    shorter = str(hp.total_timesteps // 2)
    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--total-timesteps", shorter]) == 2
    assert "total_timesteps may only grow" in capsys.readouterr().err

    annealed = replace(hp, optim=replace(hp.optim, anneal_lr=True))
    configfile.write_yaml(replace(saved, hparams=annealed), run_dir / "config.yaml")
    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--total-timesteps", longer]) == 2
    err = capsys.readouterr().err
    assert "cannot change total_timesteps" in err and "anneals" in err


def test_failures_in_training_give_non_zero_exit(tmp_path, capsys, monkeypatch):
    def nan_run(*args, **kwargs):
        raise driver.NonFiniteError("total_loss is nan at update 3 (seed 0)")

    monkeypatch.setattr(driver, "train", nan_run)
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(tmp_path / "a")]) == 1
    assert "total_loss is nan at update 3" in capsys.readouterr().err

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "train", ctrl_c)
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(tmp_path / "b")]) == 130


def test_train_then_eval_then_resume_a_finished_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "ppo", *TINY, "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "MMER " in out and f"learning curve: {run_dir / 'learning_curve.png'}" in out
    for name in ("config.yaml", "metrics.jsonl", "learning_curve.png", "checkpoints"):
        assert (run_dir / name).exists(), name
    saved = configfile.read_yaml(run_dir / "config.yaml")
    assert saved["agent"] == "ppo" and saved["env"] == "CartPole-v1" and saved["seeds"] == 2
    assert saved["core"]["features"] == 8 and "run_dir" not in saved

    assert cli.main(["eval", str(run_dir), "--episodes", "3", "--greedy"]) == 0
    out = capsys.readouterr().out
    assert "update 4, 2 seed(s), greedy actions\n3 episodes per seed" in out
    assert "mean return " in out and "±" in out and "training MMER " in out

    assert cli.main(["train", "ppo", "--resume", str(run_dir), "--chunk", "1"]) == 0
    assert "MMER " in capsys.readouterr().out

    # Scripts reuse a finished run only with the same settings. A run saved before a
    # setting existed (here: without next_episode_discount) still counts as the same
    # when the code's default for it is unchanged.
    saved_path = run_dir / "config.yaml"
    data = configfile.read_yaml(saved_path)
    del data["next_episode_discount"]
    saved_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = experiment.load_settings("ppo", saved_path)
    _, summary = experiment.train(settings, run_dir, resume=True, same_settings=True)
    assert summary.state is not None
    other = experiment.load_settings("ppo", saved_path, {"seeds": 3, "gamma": 0.5})
    with pytest.raises(configfile.ConfigError, match=r"other settings \(gamma, seeds\)"):
        experiment.train(other, run_dir, resume=True, same_settings=True)


@pytest.mark.parametrize(
    "preset", sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml")), ids=str
)
def test_every_preset_is_valid(preset, tmp_path):
    agent = configfile.read_yaml(preset)["agent"]
    parsed, _, _ = cli._parse_train(agent, ["--config", str(preset), "--run-dir", str(tmp_path)])
    parsed.hparams.validate()
    assert experiment.load_settings(agent, preset).hparams == parsed.hparams


def test_the_cpu_preset_is_the_code_default():
    preset = Path(__file__).parents[1] / "configs" / "ppo_cpu.yaml"
    assert experiment.load_settings("ppo", preset).hparams == ppo.Config()
    changes = {"seeds": 3, "total_timesteps": 8192, "chunk": None, "core": {"name": "gru"}}
    changed = experiment.load_settings("ppo", preset, changes)
    assert changed.run.seeds == 3 and changed.hparams.total_timesteps == 8192
    assert changed.hparams.core.name == "gru"
    assert changed.run.chunk == experiment.load_settings("ppo", preset).run.chunk
    with pytest.raises(configfile.ConfigError, match="seeds: expected int"):
        experiment.load_settings("ppo", preset, {"seeds": "many"})
    with pytest.raises(configfile.ConfigError, match="num_minibatches"):
        experiment.load_settings("ppo", preset, {"num_minibatches": 7})


def test_every_s5_option_is_reachable_from_flags_and_yaml(tmp_path):
    flags = [
        "--core.clip-eigs", "--core.discretization", "bilinear", "--core.no-conj-sym",
        "--core.no-prenorm", "--core.mixing", "full_glu", "--core.blocks", "2",
        "--core.input-decay", "--core.dt-min", "0.01", "--core.scan", "sequential",
    ]  # fmt: skip
    parsed, _, _ = cli._parse_train("ppo", [*flags, "--run-dir", str(tmp_path / "a")])
    want = dict(
        clip_eigs=True, discretization="bilinear", conj_sym=False, prenorm=False,
        mixing="full_glu", blocks=2, input_decay=True, dt_min=0.01, scan="sequential",
    )  # fmt: skip
    assert {k: getattr(parsed.hparams.core, k) for k in want} == want
    preset = tmp_path / "s5.yaml"
    preset.write_text(yaml.safe_dump({"core": {"name": "s5", **want}}))
    assert experiment.load_settings("ppo", preset).hparams.core == parsed.hparams.core
    gru, _, _ = cli._parse_train("ppo", ["--core", "gru", "--run-dir", str(tmp_path / "b")])
    assert type(gru.hparams.core).__name__ == "GRUOptions"
    assert gru.hparams.core.features == ppo.Config().core.features  # shared options carry
