"""Wiring: settings -> environment + agent -> train, resume, evaluate.

The command line (`ssmrl.cli`) and the scripts both call this module; it is the one
place that imports agent modules and environments together.

```python
settings = experiment.load_settings("ppo", "configs/ppo_cpu.yaml", {"seeds": 2})
trained, summary = experiment.train(settings, Path("runs/demo"))
run = experiment.restore(Path("runs/demo"))    # a Trained from the newest checkpoint
returns, finished = experiment.episode_returns(run, episodes=32)
```
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, NamedTuple, TypeVar

import tyro

from ssmrl import configfile
from ssmrl.agent import Agent
from ssmrl.configfile import CLI_ONLY, ConfigError
from ssmrl.driver import CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, RESUMABLE, RunConfig


class AgentSpec(NamedTuple):
    """An agent that can be trained: its module (``Config``, ``WRAPPERS``, ``make_agent``)."""

    module: str
    summary: str


AGENTS = {
    "ppo": AgentSpec("ssmrl.agents.ppo", "recurrent PPO; policy and value share a core"),
    "dreamer": AgentSpec("ssmrl.agents.dreamer", "DreamerV3-style world model on any core"),
    "worldmodel": AgentSpec(
        "ssmrl.agents.worldmodel", "world model alone, on a task's scripted episodes"
    ),
}

C = TypeVar("C")


@dataclass(frozen=True)
class Settings(Generic[C]):
    """Everything a training run takes; YAML files hold all but the CLI-only fields."""

    agent: tyro.conf.Suppress[str]
    hparams: Annotated[C, tyro.conf.arg(name="")]
    run: Annotated[RunConfig, tyro.conf.arg(name="")]
    config: Path | None = field(default=None, metadata=CLI_ONLY)
    """YAML file of settings; flags override it"""
    run_dir: Path | None = field(default=None, metadata=CLI_ONLY)
    """where the run is written (default: runs/AGENT-ENV-CORE-TIME); must be new or empty"""
    resume: Path | None = field(default=None, metadata=CLI_ONLY)
    """continue this run directory from its newest checkpoint, with its saved settings"""


def agent_module(name: str) -> Any:
    """The module of agent ``name``; `ConfigError` naming the agents for an unknown one."""
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; allowed: {', '.join(AGENTS)}")
    return importlib.import_module(AGENTS[name].module)


def settings_class(settings: Settings) -> Any:
    """The `Settings` type that ``settings`` fill: the agent's ``Config``, parametrised by
    the options class of its memory core when it has one (``ppo.Config[GRUOptions]``),
    so that flags and YAML keys are that core's options."""
    config = agent_module(settings.agent).Config
    if getattr(config, "__parameters__", ()):
        config = config[type(settings.hparams.core)]
    return Settings[config]


def default_settings(agent: str, **cli_only: Any) -> Settings:
    """The code defaults of ``agent``'s settings."""
    return Settings(agent=agent, hparams=agent_module(agent).Config(), run=RunConfig(), **cli_only)


def with_core(settings: Settings, name: str, source: str = "") -> Settings:
    """``settings`` with memory core ``name``: its options class, keeping the values of the
    options it shares with the current core (`ssmrl.cores.convert`)."""
    from ssmrl import cores

    hp = settings.hparams
    if not hasattr(hp, "core"):
        raise ConfigError(f"{source}core: agent {settings.agent!r} has no memory core")
    if name not in cores.names():
        allowed = ", ".join(cores.names())
        raise ConfigError(f"{source}core.name: unknown core {name!r}; allowed: {allowed}")
    return dataclasses.replace(
        settings, hparams=dataclasses.replace(hp, core=cores.convert(hp.core, name))
    )


def apply(settings: Settings, data: Mapping[str, Any], source: str = "") -> Settings:
    """``settings`` with a mapping of YAML keys applied, checked strictly (`ConfigError`).

    ``core: {name: NAME, ...}`` first switches to that core (`with_core`), so the other
    ``core`` keys must be options of NAME.
    """
    if isinstance(data, Mapping) and data.get("agent", settings.agent) != settings.agent:
        raise ConfigError(
            f"{source}agent: the settings are for {data['agent']!r}, not {settings.agent!r}"
        )
    core = data.get("core") if isinstance(data, Mapping) else None
    if isinstance(core, Mapping) and "name" in core:
        if not isinstance(core["name"], str):
            raise ConfigError(f"{source}core.name: expected str, got {core['name']!r}")
        settings = with_core(settings, core["name"], source)
    return configfile.from_dict(settings_class(settings), data, base=settings, source=source)


def load_settings(
    agent: str, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Code defaults < the YAML file ``path`` < ``overrides`` (nested YAML keys, e.g.
    ``{"seeds": 2, "core": {"name": "gru"}}``; None values are skipped), validated.

    Raises `ConfigError` (one line naming the key) for any bad key, type or value.
    """
    settings = default_settings(agent)
    if path is not None:
        settings = apply(settings, configfile.read_yaml(path), source=f"{path}: ")
    settings = apply(settings, {k: v for k, v in (overrides or {}).items() if v is not None})
    check(settings)
    return settings


def read_run_settings(run_dir: Path) -> Settings:
    """The settings saved in a run directory (over the code defaults), unvalidated."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {CONFIG_FILE} there; not a run directory")
    data = configfile.read_yaml(path)
    name = data.get("agent")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: agent: expected one of {', '.join(AGENTS)}, got {name!r}")
    return apply(default_settings(name), data, source=f"{path}: ")


def check_env(settings: Settings) -> None:
    """`ConfigError` for an unknown env name, a missing optional extra, or an env the
    agent cannot train on (its module's ``check_env``)."""
    from ssmrl import envs

    module = agent_module(settings.agent)
    try:
        env, env_params = envs.make_for_agent(settings.hparams.env, module.WRAPPERS)
        if hasattr(module, "check_env"):
            module.check_env(env, env_params)
    except ValueError as e:
        raise ConfigError(f"env: {e}") from None


def check(settings: Settings) -> None:
    """Every check of a run's settings: the env, then each nested ``validate()`` (the
    core's options included)."""
    check_env(settings)
    configfile.validate(settings)


def changed_keys(before: Settings, after: Settings) -> list[str]:
    """The dotted YAML keys whose values differ, sorted (equal NaNs are equal)."""
    return configfile.changed(configfile.to_dict(before), configfile.to_dict(after))


def extendable(settings: Settings) -> tuple[str, ...]:
    """The keys besides `RESUMABLE` that may change on resume: the agent's run length
    (its module's ``RUN_LENGTH``), unless a learning rate anneals over it. Training up to
    the saved length then goes as it went, so a finished run can be trained further."""
    key = getattr(agent_module(settings.agent), "RUN_LENGTH", None)
    flat = configfile.flat(configfile.to_dict(settings))
    anneals = any(v is True for k, v in flat.items() if k.split(".")[-1] == "anneal_lr")
    return () if key is None or anneals else (key,)


def _changes(saved: Settings, settings: Settings) -> list[str]:
    """The changed keys that a resume may not change; `ConfigError` for a shorter run."""
    grow = extendable(saved)
    for key in grow:
        before, after = getattr(saved.hparams, key), getattr(settings.hparams, key)
        if after < before:
            raise ConfigError(f"{key} may only grow when a run is continued ({before} saved)")
    return [k for k in changed_keys(saved, settings) if k not in RESUMABLE + grow]


def check_resume(saved: Settings, settings: Settings, run_dir: Path) -> None:
    """`ConfigError` unless ``settings`` differ from the saved ones in `RESUMABLE` keys
    and a longer run (`extendable`) only."""
    changed = _changes(saved, settings)
    if changed:
        allowed = ", ".join(RESUMABLE + extendable(saved))
        length = getattr(agent_module(saved.agent), "RUN_LENGTH", None)
        why = (
            f"; {length} cannot change: a learning rate anneals over it (anneal_lr)"
            if length in changed
            else ""
        )
        raise ConfigError(
            f"--resume continues {run_dir} with its saved settings; cannot change "
            f"{', '.join(changed)} (only {allowed} may change){why}"
        )


def default_run_dir(settings: Settings) -> Path:
    """``runs/AGENT-ENV-CORE-TIME`` (with a counter if it exists)."""
    hp = settings.hparams
    parts = [settings.agent, str(hp.env), str(getattr(getattr(hp, "core", None), "name", ""))]
    stem = "-".join(p.replace("/", "_") for p in parts if p) + time.strftime("-%Y%m%d-%H%M%S")
    path, n = Path("runs") / stem, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stem}-{n}"
    return path


class Built(NamedTuple):
    """An agent on its environment."""

    agent: Agent
    env: Any
    env_params: Any


def build(settings: Settings) -> Built:
    """The environment (inside the agent's wrappers) and the agent ``settings`` name."""
    from ssmrl import envs

    module = agent_module(settings.agent)
    env, env_params = envs.make_for_agent(settings.hparams.env, module.WRAPPERS)
    return Built(module.make_agent(settings.hparams, env, env_params), env, env_params)


def train(
    settings: Settings,
    run_dir: Path,
    resume: bool = False,
    resume_command: str | None = None,
    same_settings: bool = False,
) -> tuple[Trained, Any]:
    """Build the agent ``settings`` name and train it into ``run_dir``.

    Returns ``(trained, driver.Summary)``. With ``same_settings``, a run directory whose
    saved settings differ from ``settings`` raises `ConfigError` (scripts that reuse
    finished runs must not mix two runs); a longer run (`extendable`) continues it.
    """
    from ssmrl import driver

    # Read back over the code defaults, so that a setting added since the run was saved
    # (at its default) does not make the run look different.
    if same_settings and (run_dir / CONFIG_FILE).is_file():
        changed = _changes(read_run_settings(run_dir), settings)
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                "choose another directory"
            )
    built = build(settings)
    summary = driver.train(
        built.agent,
        run_dir=run_dir,
        run=settings.run,
        config=configfile.to_dict(settings),
        resume=resume,
        resume_command=resume_command,
        may_differ=extendable(settings),
    )
    return Trained(settings, built, summary.state, summary.updates), summary


class Trained(NamedTuple):
    """An agent with its state: after training, or from a run's newest readable checkpoint."""

    settings: Settings
    built: Built
    state: Any  # the agent's state, leading axis = seeds
    update: int  # updates done
    skipped: tuple[str, ...] = ()  # one line per newer checkpoint that could not be read

    @property
    def params(self) -> Any:
        """Policy parameters, leading axis = seeds."""
        import jax

        return jax.vmap(self.built.agent.policy_params)(self.state)


def restore(run_dir: Path) -> Trained:
    """The settings, agent and newest readable checkpoint of a run directory.

    `ConfigError` (one line) when there is no checkpoint, none can be read, or the
    checkpoint was saved with other settings than the run's config.yaml now holds.
    """
    import jax

    from ssmrl.checkpoint import Checkpointer, CheckpointError
    from ssmrl.driver import same_settings_as, seed_keys

    settings = read_run_settings(run_dir)
    check(settings)
    if not (run_dir / CHECKPOINT_DIR).is_dir():
        raise ConfigError(f"{run_dir}: no checkpoints to evaluate")
    built = build(settings)
    keys = seed_keys(settings.run.seed, settings.run.seeds)
    template = jax.eval_shape(jax.vmap(built.agent.init), keys)
    with Checkpointer(run_dir / CHECKPOINT_DIR, create=False) as ckpt:
        if ckpt.latest is None:
            raise ConfigError(f"{run_dir}: no checkpoints to evaluate")
        try:
            same = same_settings_as(configfile.to_dict(settings), run_dir, extendable(settings))
            state, update, skipped = ckpt.restore_newest(template, same)
        except CheckpointError as e:
            raise ConfigError(str(e)) from None
    return Trained(settings, built, state, update, tuple(skipped))


def episode_returns(run: Trained, episodes: int, greedy: bool = False, seed: int = 0):
    """``(returns [S, E], finished [S, E])`` of ``episodes`` (E) episodes per seed."""
    import numpy as np

    from ssmrl import evaluation
    from ssmrl.driver import seed_keys

    b = run.built
    rollout = evaluation.episode_returns(
        b.agent, b.env, b.env_params, episodes, greedy, run.settings.run.fast_compile
    )
    keys = seed_keys(seed, run.settings.run.seeds)
    return tuple(np.asarray(x) for x in rollout(run.params, keys))


def adaptation(
    run: Trained, env_name: str | None, trials: int, episodes_per_trial: int, **kwargs: Any
):
    """`evaluation.adaptation` of a restored run on ``env_name`` (default: its own env),
    wrapped as the agent wants; kwargs: ``greedy``, ``seed``."""
    from ssmrl import envs, evaluation
    from ssmrl.driver import seed_keys

    b = run.built
    env, env_params = (
        (b.env, b.env_params)
        if env_name is None
        else envs.make_for_agent(env_name, b.agent.wrappers)
    )
    keys = seed_keys(kwargs.pop("seed", 12345), run.settings.run.seeds)
    return evaluation.adaptation(
        b.agent, env, env_params, trials, episodes_per_trial, run.params, keys, **kwargs
    )


def run_mmer(run_dir: Path) -> float:
    """The MMER of a run, from its metrics file (NaN without one)."""
    from ssmrl.metrics import mmer, read_metrics, returns_matrix

    records = read_metrics(run_dir / METRICS_FILE)
    return mmer(returns_matrix(records)[1]) if records else math.nan


def check_held_out(run: Trained, name: str) -> None:
    """`ConfigError` unless ``name`` is a meta environment with the spaces ``run`` trained on."""
    from ssmrl import envs

    try:
        env, env_params = envs.make_for_agent(name, run.built.agent.wrappers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not envs.is_meta(env_params):
        raise ConfigError(f"{name} is not a meta environment")

    def spaces(e: Any, p: Any) -> tuple:
        space = e.action_space(p)
        return e.observation_space(p).shape, type(space), getattr(space, "n", space.shape)

    if spaces(env, env_params) != spaces(run.built.env, run.built.env_params):
        raise ConfigError(f"{name}: its spaces differ from those the agent was trained on")


IMAGINATION_FILE = "imagination.json"


def imagine(
    run: Trained, context: int, horizons: tuple[int, ...], episodes: int = 256, seed: int = 12345
) -> dict[str, Any]:
    """`ssmrl.imagination.measure` on a restored run's world model (any agent that has one)
    with ``episodes`` fresh scripted episodes of its env; `ConfigError` (one line) for a
    run without a world model, an env without scripted episodes, or a context and
    horizons that do not fit in an episode. Returns `imagination.summarise`'s data with
    the run's details added."""
    import jax

    from ssmrl import envs, imagination

    view = run.built.agent.world_model
    if view is None:
        raise ConfigError(f"a {run.settings.agent} run has no world model to imagine with")
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if context < 1 or not horizons or min(horizons) < 1:
        raise ConfigError(f"context and horizons must be >= 1, got {context} and {list(horizons)}")
    name = run.settings.hparams.env
    env, env_params = envs.make(name)
    try:
        imagination.check_scripted(env)
    except ValueError as e:
        raise ConfigError(f"env: {e}") from None
    data = env.scripted_episodes(jax.random.PRNGKey(seed), env_params, episodes)
    rows, longest = data.obs.shape[0], max(horizons)
    if context + longest > rows:
        raise ConfigError(
            f"context {context} + horizon {longest} exceeds the {rows} observations of a "
            f"{name} episode (at this context, horizons up to {max(rows - context, 0)})"
        )
    seq = imagination.episode_inputs(
        data.obs, data.action, data.reward, data.is_first, view.action_size
    )
    params = jax.vmap(view.params)(run.state)
    measured = imagination.measure(
        view.model,
        params,
        seq,
        context,
        tuple(sorted(set(horizons))),
        env.cell_classes,
        env.seen_in_context(data, context),
        env.has_reward,
    )
    hp = run.settings.hparams
    return {
        "agent": run.settings.agent,
        "env": name,
        "core": getattr(getattr(hp, "core", None), "name", None),
        "update": run.update,
        "seeds": run.settings.run.seeds,
        "context": context,
        "episodes": episodes,
        "seed": seed,
        **imagination.summarise(measured),
    }


def save_imagination(run_dir: Path, result: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `imagine`'s ``result`` into ``run_dir`` as `IMAGINATION_FILE` and its plot
    beside it (``imagination.png``); returns both paths."""
    import json

    from ssmrl import imagination

    path = run_dir / IMAGINATION_FILE
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    title = f"{result['env']}, {result['core']}: context {result['context']}"
    return path, imagination.plot(result, path.with_suffix(".png"), title)
