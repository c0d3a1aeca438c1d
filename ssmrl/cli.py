"""The ``ssmrl`` command: train an agent, evaluate a run, measure imagination, list envs.

It only parses and prints: settings, building, training and evaluation are
`ssmrl.experiment`'s.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tyro

from ssmrl import configfile, cores, experiment
from ssmrl.configfile import ConfigError, fail
from ssmrl.experiment import AGENTS

HELP = f"""\
usage: ssmrl COMMAND [ARGS]

Reinforcement learning with state-space-model memory.

commands:
  train AGENT [FLAGS]      train an agent ({", ".join(AGENTS)}); `ssmrl train ppo --help`: its flags
  eval RUN_DIR [FLAGS]     run episodes with a run's newest checkpoint; `ssmrl eval --help`
  imagine RUN_DIR [FLAGS]  how far a run's world model imagines; `ssmrl imagine --help`
  envs                     list the environment names

examples:
  ssmrl train ppo --env RepeatPreviousEasy --core s5 --seeds 4
  ssmrl train ppo --config configs/ppo_cpu.yaml --optim.lr 1e-4
  ssmrl train ppo --resume runs/ppo-RepeatPreviousEasy-s5-20250101-120000
  ssmrl eval runs/ppo-RepeatPreviousEasy-s5-20250101-120000 --episodes 64 --greedy
  ssmrl train worldmodel --env TwoRoomsRecall --core gru --run-dir runs/wm-gru
  ssmrl imagine runs/wm-gru --context 128 --horizons 1 8 32 128
"""

TRAIN_DESCRIPTION = (
    "Train {agent} ({summary}), `seeds` seeds at once. Settings: code defaults < "
    "--config YAML file < flags. `--core NAME` (or --core.name) picks the memory core "
    "({cores}); the core options listed are the chosen core's: `--core gru --help` lists "
    "the GRU's. The run directory receives config.yaml, metrics.jsonl, checkpoints/ and "
    "learning_curve.png. `--devices N` splits the env batch over N devices (0: all). A "
    "run over several hosts starts one process per host with --coordinator HOST:PORT "
    "--num-processes N --process-id I (or none of them under SLURM or Open MPI)."
)


@dataclass(frozen=True)
class EvalArgs:
    """Run episodes with the newest checkpoint of a training run and report their returns."""

    run_dir: tyro.conf.Positional[Path]
    """a run directory written by `ssmrl train`"""
    episodes: int = 32
    """episodes (trials, for meta environments) per seed, run in parallel"""
    greedy: bool = False
    """take the most likely action instead of sampling"""
    seed: int = 0
    """seed of the evaluation episodes"""
    trial_episodes: int | None = None
    """meta environments: episodes per trial (default: as in training)"""
    held_out: str | None = None
    """meta environments: also evaluate on this env (default: the training env's held-out set)"""


def _short_flags(args: Sequence[str]) -> list[str]:
    """``--core NAME`` -> ``--core.name NAME``."""
    out = []
    for arg in args:
        if arg == "--core":
            arg = "--core.name"
        elif arg.startswith("--core="):
            arg = "--core.name=" + arg[len("--core=") :]
        out.append(arg)
    return out


def _parse_train(name: str, args: Sequence[str]) -> tuple[experiment.Settings, Path, bool]:
    """``(settings, run dir, resuming)``, or a `ConfigError`; touches no file.

    The base settings (code defaults < ``--config`` YAML, or the saved ones with
    ``--resume``) switch to ``--core NAME`` first, so that tyro parses that core's options.
    """
    args = _short_flags(args)
    config_path, args = configfile.pop_option(args, "--config")
    core_name, args = configfile.pop_option(args, "--core.name")
    resume, _ = configfile.pop_option(args, "--resume")
    default = experiment.default_settings(name, config=Path(config_path) if config_path else None)
    saved = None
    if resume is not None:
        if config_path is not None:
            raise ConfigError(
                "--resume uses the settings saved in the run directory; drop --config"
            )
        saved = default = experiment.read_run_settings(Path(resume))
    elif config_path is not None:
        data = configfile.read_yaml(config_path)
        default = experiment.apply(default, data, source=f"{config_path}: ")
    if core_name is not None:
        default = experiment.with_core(default, core_name)

    parsed = configfile.load(
        experiment.settings_class(default),
        args,
        default=default,
        prog=f"ssmrl train {name}",
        description=TRAIN_DESCRIPTION.format(
            agent=name, summary=AGENTS[name].summary, cores=", ".join(cores.names())
        ),
        checks=[experiment.check_env],
    )
    if saved is not None:
        experiment.check_resume(saved, parsed, Path(resume))
        if parsed.run_dir is not None and parsed.run_dir.resolve() != Path(resume).resolve():
            raise ConfigError("--run-dir and --resume name different directories; drop --run-dir")
        return parsed, Path(resume), True
    import jax

    if jax.process_count() > 1 and parsed.run_dir is None:
        raise ConfigError("a run over several processes needs --run-dir, on a disk all can see")
    run_dir = parsed.run_dir or experiment.default_run_dir(parsed)
    if run_dir.exists() and not run_dir.is_dir():  # a file further up: the driver says so
        raise ConfigError(f"--run-dir {run_dir} is a file; name a new or empty directory")
    # Other processes may find it already made by process 0, which checks for them all.
    if jax.process_index() == 0 and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} exists and is not empty; choose another --run-dir, "
            f"or continue that run with --resume {shlex.quote(str(run_dir))}"
        )
    return parsed, run_dir, False


def train(args: Sequence[str]) -> int:
    """``ssmrl train AGENT [FLAGS]``."""
    if not args or args[0] in ("-h", "--help"):
        out = sys.stdout if args else sys.stderr  # usage after a bad invocation: stderr
        print(
            "usage: ssmrl train AGENT [FLAGS]   (`ssmrl train AGENT --help` lists the flags)",
            file=out,
        )
        print("\nagents:", file=out)
        for name, spec in AGENTS.items():
            print(f"  {name:12s}{spec.summary}", file=out)
        return 0 if args else 2
    name, args = args[0], list(args[1:])
    try:
        from ssmrl import scale

        try:  # before anything touches a device (importing gymnax does)
            args, cluster = scale.split_cluster_flags(args)
            scale.initialize(**cluster)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        experiment.agent_module(name)
        parsed, run_dir, resuming = _parse_train(name, args)
    except ConfigError as e:
        fail(str(e))

    import jax

    from ssmrl import driver

    primary = jax.process_index() == 0  # of a multi-process run, only process 0 reports
    if primary:
        print(f"run directory: {run_dir}")
    try:
        _, summary = experiment.train(
            parsed,
            run_dir,
            resume=resuming,
            resume_command=f"ssmrl train {name} --resume {shlex.quote(str(run_dir))}",
        )
    except ConfigError as e:  # the run directory, its checkpoints or the run's size
        fail(str(e))
    except driver.NonFiniteError as e:
        print(f"ssmrl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not primary:
        return 0
    seeds = parsed.run.seeds
    over = f"mean over {seeds} seed{'s' if seeds > 1 else ''}"
    if summary.headline == "mean_return":
        print(f"MMER {summary.mmer:.4f} (max over updates of the mean episodic return, {over})")
    else:
        print(f"final {summary.headline} {summary.final:.4f} ({over})")
    print(f"learning curve: {summary.plot}")
    command = "eval" if summary.headline == "mean_return" else "imagine"
    print(f"evaluate with: ssmrl {command} {shlex.quote(str(run_dir))}")
    return 0


def evaluate(args: Sequence[str]) -> int:
    """``ssmrl eval RUN_DIR [FLAGS]``."""
    try:
        ev = configfile.tyro_cli(EvalArgs, args=list(args), prog="ssmrl eval")
        if ev.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {ev.episodes}")
        if ev.trial_episodes is not None and ev.trial_episodes < 1:
            raise ConfigError(f"trial_episodes must be >= 1, got {ev.trial_episodes}")
        run = experiment.restore(ev.run_dir)
        if run.built.agent.act is None:
            raise ConfigError(
                f"{ev.run_dir}: a {run.settings.agent} run has no policy to run episodes "
                f"with; measure its imagination with: ssmrl imagine {shlex.quote(str(ev.run_dir))}"
            )
    except ConfigError as e:
        fail(str(e))

    from ssmrl import envs

    for line in run.skipped:
        print(f"ssmrl: warning: {line}; evaluating an older checkpoint", file=sys.stderr)
    seeds = run.settings.run.seeds
    actions = "greedy" if ev.greedy else "sampled"
    print(f"{ev.run_dir}: update {run.update}, {seeds} seed(s), {actions} actions")
    if envs.is_meta(run.built.env_params):
        return _evaluate_trials(ev, run)
    returns, finished = experiment.episode_returns(run, ev.episodes, ev.greedy, ev.seed)
    returns = returns[finished]
    print(f"{ev.episodes} episodes per seed")
    if not finished.all():
        print(f"({(~finished).sum()} episodes did not finish and are left out)")
    if returns.size:
        print(f"mean return {returns.mean():.4f} ± {returns.std():.4f}")
    print(f"training MMER {experiment.run_mmer(ev.run_dir):.4f}")
    return 0


def _evaluate_trials(ev: EvalArgs, run: experiment.Trained) -> int:
    """Return per episode index within a trial, on the training and held-out tasks."""
    import numpy as np

    from ssmrl import envs, evaluation

    env_name = run.settings.hparams.env
    k = ev.trial_episodes or run.built.env_params.episodes_per_trial
    sets = {f"{env_name} (training tasks)": None}
    held_out = ev.held_out or envs.held_out(env_name)
    if held_out is not None:
        try:
            experiment.check_held_out(run, held_out)
        except ConfigError as e:
            fail(f"--held-out: {e}")
        sets[f"{held_out} (held out)"] = held_out
    curves = {
        label: experiment.adaptation(
            run, name, ev.episodes, k, greedy=ev.greedy, seed=ev.seed
        ).curve
        for label, name in sets.items()
    }
    print(f"{ev.episodes} trials of {k} episodes per seed; mean return by episode in the trial:")
    names = list(curves)
    print("episode  " + "  ".join(f"{n:>32s}" for n in names))
    for i in range(k):
        cells = [f"{curves[n].mean[i]:>24.4f} ± {curves[n].std[i]:.3f}" for n in names]
        print(f"{i + 1:7d}  " + "  ".join(cells))
    plot = evaluation.save_curves(curves, ev.run_dir / "adaptation.png", env_name)
    print(f"adaptation curve: {plot} (and {plot.with_suffix('.json').name})")
    if np.isnan(curves[names[0]].mean).any():
        print("(some episode indices never finished within the step limit)")
    return 0


@dataclass(frozen=True)
class ImagineArgs:
    """Measure how far a run's world model imagines: observe `context` steps of fresh scripted
    episodes, imagine open-loop with the true actions, and score each horizon beside the
    copy-last-frame and per-cell marginal baselines. Writes imagination.json and
    imagination.png into the run directory."""

    run_dir: tyro.conf.Positional[Path]
    """a run directory of `ssmrl train worldmodel` or `ssmrl train dreamer`"""
    context: int = 128
    """observations fed through the posterior before imagining"""
    horizons: tuple[int, ...] = (1, 8, 16, 32, 64, 128)
    """imagination steps to report"""
    episodes: int = 256
    """fresh scripted episodes to measure on"""
    seed: int = 12345
    """seed of those episodes"""


def imagine(args: Sequence[str]) -> int:
    """``ssmrl imagine RUN_DIR [FLAGS]``."""
    try:
        im = configfile.tyro_cli(ImagineArgs, args=list(args), prog="ssmrl imagine")
        run = experiment.restore(im.run_dir)
        result = experiment.imagine(run, im.context, im.horizons, im.episodes, im.seed)
    except ConfigError as e:
        fail(str(e))
    for line in run.skipped:
        print(f"ssmrl: warning: {line}; measuring an older checkpoint", file=sys.stderr)
    print(
        f"{im.run_dir}: update {run.update}, {result['seeds']} seed(s); context "
        f"{im.context}, {im.episodes} episodes of {result['env']}"
    )
    model, copy, flat = result["model"], result["copy_last"], result["marginal"]
    reward = any(v is not None for v in model["reward_accuracy"])
    head = "horizon   accuracy   seen  unseen       MSE   copy-last  marginal"
    print(head + ("   reward acc" if reward else ""))

    def cell(v: float | None, width: int, digits: int = 3) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"

    for i, h in enumerate(result["horizons"]):
        cells = [
            cell(model["accuracy"][i], 9),
            cell(model["accuracy_seen"][i], 6),
            cell(model["accuracy_unseen"][i], 7),
            cell(model["mse"][i], 9, 4),
            cell(copy["accuracy"][i], 11),
            cell(flat["accuracy"][i], 9),
        ]
        if reward:
            cells.append(cell(model["reward_accuracy"][i], 12))
        print(f"{h:7d}  " + " ".join(cells))
    print(
        f"imagination: {result['imagination_steps_per_s']:,.0f} steps/s "
        f"(compiled in {result['compile_s']:.1f} s)"
    )
    path, png = experiment.save_imagination(im.run_dir, result)
    print(f"wrote {path} and {png}")
    return 0


def list_envs(args: Sequence[str]) -> int:
    """``ssmrl envs``: every environment name."""
    from ssmrl.envs import names

    if args:
        fail("`ssmrl envs` takes no arguments")
    print("\n".join(names()))
    return 0


COMMANDS = {"train": train, "eval": evaluate, "imagine": imagine, "envs": list_envs}


def _main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        fail(f"unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)} (see ssmrl --help)")
    return command(list(argv[1:]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssmrl`` command; returns the exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
