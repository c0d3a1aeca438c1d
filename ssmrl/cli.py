"""The ``ssmrl`` command: train an agent, evaluate a run, list environments.

This module (with the scripts) is where agents and environments are wired together.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, NamedTuple, TypeVar

import tyro

from ssmrl import configfile
from ssmrl.configfile import CLI_ONLY, ConfigError, fail
from ssmrl.driver import CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, RunConfig


class AgentSpec(NamedTuple):
    """An agent the CLI can train: its module (with ``Config`` and ``make_agent``)."""

    module: str
    summary: str


AGENTS = {"ppo": AgentSpec("ssmrl.agents.ppo", "recurrent PPO; policy and value share a core")}

HELP = f"""\
usage: ssmrl COMMAND [ARGS]

Reinforcement learning with state-space-model memory.

commands:
  train AGENT [FLAGS]   train an agent ({", ".join(AGENTS)}); `ssmrl train ppo --help`: its flags
  eval RUN_DIR [FLAGS]  run episodes with a run's newest checkpoint; `ssmrl eval --help`
  envs                  list the environment names

examples:
  ssmrl train ppo --env RepeatPreviousEasy --core s5 --seeds 4
  ssmrl train ppo --config configs/ppo_cpu.yaml --optim.lr 1e-4
  ssmrl train ppo --resume runs/ppo-RepeatPreviousEasy-s5-20250101-120000
  ssmrl eval runs/ppo-RepeatPreviousEasy-s5-20250101-120000 --episodes 64 --greedy
"""

TRAIN_DESCRIPTION = (
    "Train {agent} ({summary}), `seeds` seeds at once. Settings: code defaults < "
    "--config YAML file < flags; `--core NAME` is short for `--core.name NAME`. The run "
    "directory receives config.yaml, metrics.jsonl, checkpoints/ and learning_curve.png."
)

C = TypeVar("C")


@dataclass(frozen=True)
class TrainArgs(Generic[C]):
    """Everything `ssmrl train AGENT` takes; YAML files hold all but the CLI-only fields."""

    agent: tyro.conf.Suppress[str]
    hparams: Annotated[C, tyro.conf.arg(name="")]
    run: Annotated[RunConfig, tyro.conf.arg(name="")]
    config: Path | None = field(default=None, metadata=CLI_ONLY)
    """YAML file of settings; flags override it"""
    run_dir: Path | None = field(default=None, metadata=CLI_ONLY)
    """where the run is written (default: runs/AGENT-ENV-CORE-TIME); must be new or empty"""
    resume: Path | None = field(default=None, metadata=CLI_ONLY)
    """continue this run directory from its newest checkpoint, with its saved settings"""


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


RESUMABLE = ("chunk", "checkpoint_every", "keep_checkpoints", "tensorboard", "fast_compile")
"""Run settings that may change when a run is resumed (they do not change what is trained)."""


def make_env(name: str) -> tuple[Any, Any]:
    """The named environment wrapped as the agents expect, and its params."""
    from ssmrl.envs import make
    from ssmrl.envs.wrappers import EpisodeStatistics, FlattenObservation, PreviousActionReward

    env, env_params = make(name)
    return EpisodeStatistics(PreviousActionReward(FlattenObservation(env))), env_params


def load_settings(agent: str, path: str | Path, **changes: Any) -> TrainArgs:
    """The settings of a YAML preset over the code defaults, then ``changes`` (YAML keys,
    e.g. ``seeds=2``; None values are skipped); raises `ConfigError`."""
    module = _agent_module(agent)
    cls = TrainArgs[module.Config]
    base = TrainArgs(agent=agent, hparams=module.Config(), run=RunConfig())
    settings = configfile.from_dict(cls, configfile.read_yaml(path), base=base, source=f"{path}: ")
    changes = {k: v for k, v in changes.items() if v is not None}
    return configfile.from_dict(cls, changes, base=settings)


def _agent_module(name: str) -> Any:
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; allowed: {', '.join(AGENTS)}")
    return importlib.import_module(AGENTS[name].module)


def _check_env(args: TrainArgs) -> None:
    from ssmrl import envs

    name = getattr(args.hparams, "env", None)
    if name is None:
        return
    try:
        envs.make(name)  # unknown names and missing optional extras raise here, in one line
    except ValueError as e:
        raise ConfigError(f"env: {e}") from None


def _check_core(args: TrainArgs) -> None:
    from ssmrl import cores

    core = getattr(args.hparams, "core", None)
    name = getattr(core, "name", None)
    if name is None:
        return
    if name not in cores.names():
        allowed = ", ".join(cores.names())
        raise ConfigError(f"core.name: unknown core {name!r}; allowed: {allowed}")
    try:
        core.build()
    except ValueError as e:
        raise ConfigError(f"core: {e}") from None


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


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _is_nonempty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _default_run_dir(agent: str, hparams: Any) -> Path:
    parts = [
        agent,
        str(getattr(hparams, "env", "")),
        str(getattr(getattr(hparams, "core", None), "name", "")),
    ]
    stem = "-".join(p.replace("/", "_") for p in parts if p) + time.strftime("-%Y%m%d-%H%M%S")
    path, n = Path("runs") / stem, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stem}-{n}"
    return path


def _parse_train(name: str, args: Sequence[str]) -> tuple[Any, TrainArgs, Path, bool]:
    """``(agent module, settings, run dir, resuming)``, or a `ConfigError`; touches no file."""
    module = _agent_module(name)
    cls = TrainArgs[module.Config]
    args = _short_flags(args)
    config_path, _ = configfile.pop_option(args, "--config")
    resume, _ = configfile.pop_option(args, "--resume")
    default = TrainArgs(
        agent=name,
        hparams=module.Config(),
        run=RunConfig(),
        config=Path(config_path) if config_path else None,
    )
    saved = None
    if resume is not None:
        if config_path is not None:
            raise ConfigError(
                "--resume uses the settings saved in the run directory; drop --config"
            )
        saved_path = Path(resume) / CONFIG_FILE
        if not saved_path.is_file():
            raise ConfigError(f"--resume {resume}: no {CONFIG_FILE} there; not a run directory")
        saved = configfile.from_dict(
            cls, configfile.read_yaml(saved_path), base=default, source=f"{saved_path}: "
        )

    def check_agent(a: TrainArgs) -> None:
        if a.agent != name:
            raise ConfigError(f"agent: the settings are for {a.agent!r}, not {name!r}")

    parsed = configfile.load(
        cls,
        args,
        default=default,
        yaml_path=Path(resume) / CONFIG_FILE if resume is not None else None,
        prog=f"ssmrl train {name}",
        description=TRAIN_DESCRIPTION.format(agent=name, summary=AGENTS[name].summary),
        checks=[check_agent, _check_env, _check_core],
    )
    if saved is not None:
        before, after = _flat(configfile.to_dict(saved)), _flat(configfile.to_dict(parsed))
        changed = [k for k in after if after[k] != before.get(k) and k not in RESUMABLE]
        if changed:
            raise ConfigError(
                f"--resume continues {resume} with its saved settings; cannot change "
                f"{', '.join(changed)} (only {', '.join(RESUMABLE)} may change)"
            )
        if parsed.run_dir is not None and parsed.run_dir.resolve() != Path(resume).resolve():
            raise ConfigError("--run-dir and --resume name different directories; drop --run-dir")
        return module, parsed, Path(resume), True
    run_dir = parsed.run_dir or _default_run_dir(name, parsed.hparams)
    if _is_nonempty(run_dir):
        raise ConfigError(
            f"run directory {run_dir} exists and is not empty; choose another --run-dir, "
            f"or continue that run with --resume {run_dir}"
        )
    return module, parsed, run_dir, False


def train(args: Sequence[str]) -> int:
    """``ssmrl train AGENT [FLAGS]``."""
    if not args or args[0] in ("-h", "--help"):
        print("usage: ssmrl train AGENT [FLAGS]   (`ssmrl train AGENT --help` lists the flags)")
        print("\nagents:")
        for name, spec in AGENTS.items():
            print(f"  {name:8s}{spec.summary}")
        return 0 if args else 2
    name, args = args[0], list(args[1:])
    try:
        module, parsed, run_dir, resuming = _parse_train(name, args)
    except ConfigError as e:
        fail(str(e))

    from ssmrl import driver

    print(f"run directory: {run_dir}")
    try:
        _, summary = train_settings(
            parsed,
            run_dir,
            resume=resuming,
            resume_command=f"ssmrl train {name} --resume {run_dir}",
        )
    except driver.NonFiniteError as e:
        print(f"ssmrl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    seeds = parsed.run.seeds
    print(
        f"MMER {summary.mmer:.4f} (max over updates of the mean episodic return, "
        f"mean over {seeds} seed{'s' if seeds > 1 else ''})"
    )
    print(f"learning curve: {summary.plot}")
    print(f"evaluate with: ssmrl eval {run_dir}")
    return 0


def train_settings(
    settings: TrainArgs,
    run_dir: Path,
    resume: bool,
    resume_command: str | None = None,
    same_settings: bool = False,
) -> tuple[Any, Any]:
    """Build the env and agent ``settings`` name and train them into ``run_dir``.

    Returns ``(agent, driver.Summary)``. With ``same_settings``, a run directory whose
    saved settings differ from ``settings`` raises `ConfigError` (scripts that reuse
    finished runs must not mix two runs).
    """
    from ssmrl import driver

    saved = run_dir / CONFIG_FILE
    # Read back over the code defaults, so that a setting added since the run was saved
    # (at its default) does not make the run look different.
    if same_settings and saved.is_file():
        before = _flat(configfile.to_dict(load_settings(settings.agent, saved)))
        now = _flat(configfile.to_dict(settings))
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                "choose another directory"
            )
    cfg = settings.hparams
    env, env_params = make_env(cfg.env)
    agent = _agent_module(settings.agent).make_agent(cfg, env, env_params)
    summary = driver.train(
        agent.init,
        agent.update,
        num_updates=agent.num_updates,
        steps_per_update=cfg.steps_per_update,
        run_dir=run_dir,
        run=settings.run,
        config=configfile.to_dict(settings),
        resume=resume,
        resume_command=resume_command,
    )
    return agent, summary


def run_mmer(run_dir: Path) -> float:
    """The MMER of a run, from its metrics file (NaN without one)."""
    from ssmrl.metrics import mmer, read_metrics, returns_matrix

    records = read_metrics(run_dir / METRICS_FILE)
    return mmer(returns_matrix(records)[1]) if records else math.nan


def evaluate(args: Sequence[str]) -> int:
    """``ssmrl eval RUN_DIR [FLAGS]``."""
    ev = tyro.cli(EvalArgs, args=list(args), prog="ssmrl eval")
    run_dir = ev.run_dir
    try:
        if ev.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {ev.episodes}")
        if ev.trial_episodes is not None and ev.trial_episodes < 1:
            raise ConfigError(f"trial_episodes must be >= 1, got {ev.trial_episodes}")
        saved_path = run_dir / CONFIG_FILE
        if not saved_path.is_file():
            raise ConfigError(f"{run_dir}: no {CONFIG_FILE}; not a run directory")
        data = configfile.read_yaml(saved_path)
        name = data.get("agent")
        module = _agent_module(name)
        cls = TrainArgs[module.Config]
        default = TrainArgs(agent=name, hparams=module.Config(), run=RunConfig())
        parsed = configfile.from_dict(cls, data, base=default, source=f"{saved_path}: ")
        if not (run_dir / CHECKPOINT_DIR).is_dir():
            raise ConfigError(f"{run_dir}: no checkpoints to evaluate")
    except ConfigError as e:
        fail(str(e))

    import jax
    import numpy as np

    from ssmrl import evaluation
    from ssmrl.checkpoint import Checkpointer
    from ssmrl.driver import seed_keys

    cfg = parsed.hparams
    env, env_params = make_env(cfg.env)
    agent = module.make_agent(cfg, env, env_params)
    template = jax.eval_shape(jax.vmap(agent.init), seed_keys(parsed.run.seed, parsed.run.seeds))
    with Checkpointer(run_dir / CHECKPOINT_DIR, create=False) as ckpt:
        if ckpt.latest is None:
            fail(f"{run_dir}: no checkpoints to evaluate")
        runner, update = ckpt.restore(template)
    keys = seed_keys(ev.seed, parsed.run.seeds)
    carry0 = cfg.core.build().initialize_carry(ev.episodes)
    params = runner.train_state.params
    actions = "greedy" if ev.greedy else "sampled"
    print(f"{run_dir}: update {update}, {parsed.run.seeds} seed(s), {actions} actions")
    if hasattr(env_params, "episodes_per_trial"):
        return _evaluate_trials(ev, cfg, agent, carry0, params, keys, env, env_params)
    rollout = evaluation.episode_returns(
        agent.act, carry0, env, env_params, ev.episodes, ev.greedy, parsed.run.fast_compile
    )
    returns, finished = (np.asarray(x) for x in rollout(params, keys))
    returns = returns[finished]
    print(f"{ev.episodes} episodes per seed")
    if not finished.all():
        print(f"({(~finished).sum()} episodes did not finish and are left out)")
    if returns.size:
        print(f"mean return {returns.mean():.4f} ± {returns.std():.4f}")
    print(f"training MMER {run_mmer(run_dir):.4f}")
    return 0


def _spaces(env: Any, params: Any) -> tuple:
    space = env.action_space(params)
    return env.observation_space(params).shape, type(space), getattr(space, "n", space.shape)


def _evaluate_trials(ev, cfg, agent, carry0, params, keys, env, env_params) -> int:
    """Return per episode index within a trial, on the training and held-out tasks."""
    import numpy as np

    from ssmrl import evaluation
    from ssmrl.envs.meta import HELD_OUT

    k = ev.trial_episodes or env_params.episodes_per_trial
    envs = {f"{cfg.env} (training tasks)": (env, env_params)}
    held_out = ev.held_out or HELD_OUT.get(cfg.env)
    if held_out is not None:
        try:
            envs[f"{held_out} (held out)"] = make_env(held_out)
        except ValueError as e:
            fail(f"--held-out: {e}")
    curves = {}
    for name, (e, p) in envs.items():
        if not hasattr(p, "episodes_per_trial"):
            fail(f"--held-out {held_out} is not a meta environment")
        if _spaces(e, p) != _spaces(env, env_params):
            fail(f"--held-out {held_out}: its spaces differ from those the agent was trained on")
        result = evaluation.adaptation(
            agent.act, carry0, e, p, ev.episodes, k, params, keys, ev.greedy
        )
        curves[name] = result.curve
    print(f"{ev.episodes} trials of {k} episodes per seed; mean return by episode in the trial:")
    names = list(curves)
    print("episode  " + "  ".join(f"{n:>32s}" for n in names))
    for i in range(k):
        cells = [f"{curves[n].mean[i]:>24.4f} ± {curves[n].std[i]:.3f}" for n in names]
        print(f"{i + 1:7d}  " + "  ".join(cells))
    plot = evaluation.save_curves(curves, ev.run_dir / "adaptation.png", cfg.env)
    print(f"adaptation curve: {plot} (and {plot.with_suffix('.json').name})")
    if np.isnan(curves[names[0]].mean).any():
        print("(some episode indices never finished within the step limit)")
    return 0


def list_envs(args: Sequence[str]) -> int:
    """``ssmrl envs``: every environment name."""
    from ssmrl.envs import names

    if args:
        fail("`ssmrl envs` takes no arguments")
    print("\n".join(names()))
    return 0


COMMANDS = {"train": train, "eval": evaluate, "envs": list_envs}


def _main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP, end="")
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
