"""Name -> environment registry covering the POPGym tasks and every gymnax id."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from typing import Any

import gymnax

import ssmrl.envs.popgym as _popgym_pkg
from ssmrl.envs import dmc, rooms

Factory = Callable[[], tuple[Any, Any]]


@cache
def _tables() -> tuple[dict[str, Factory], dict[str, str]]:
    tasks: dict[str, Factory] = {}
    aliases: dict[str, str] = {}
    for info in pkgutil.iter_modules(_popgym_pkg.__path__):
        module = importlib.import_module(f"{_popgym_pkg.__name__}.{info.name}")
        tasks.update(getattr(module, "TASKS", {}))
        aliases.update(getattr(module, "ALIASES", {}))
    from ssmrl.envs import meta  # imports this module, so not at the top

    tasks.update(meta.TASKS)
    tasks.update(rooms.TASKS)
    return tasks, aliases


def names(include_gymnax: bool = True) -> list[str]:
    """All names `make` accepts (aliases excluded): POPGym, meta and rooms tasks, then gymnax."""
    tasks, _ = _tables()
    out = sorted(tasks)
    if include_gymnax:
        out += [n for n in gymnax.registered_envs if n not in tasks]
    return out


def aliases() -> dict[str, str]:
    """Older names `make` also accepts (``"StatelessCartPoleHard"``) -> POPGym names."""
    return dict(sorted(_tables()[1].items()))


def make(name: str, **param_overrides: Any) -> tuple[Any, Any]:
    """Build an environment and its default parameters by name.

    Args:
        name: a POPGym task (``"RepeatPreviousHard"``), an older alias
            (``"StatelessCartPoleHard"``), any gymnax id (``"CartPole-v1"``) or a
            DM Control task of MuJoCo Playground (``"dmc/CartpoleSwingup"``, optional:
            see `ssmrl.envs.dmc`).
        **param_overrides: fields of the env's params dataclass to replace.

    Returns:
        ``(env, env_params)``.

    Raises:
        ValueError: unknown name (with the closest names) or unknown param field;
            ``ssmrl.envs.dmc.MissingDependencyError`` (also an ImportError) for a
            ``dmc/`` name without MuJoCo Playground installed.
    """
    tasks, aliases = _tables()
    canonical = aliases.get(name, name)
    if canonical.startswith(dmc.PREFIX):
        env, params = dmc.make(canonical)  # imports the optional mujoco_playground
    elif canonical in tasks:
        env, params = tasks[canonical]()
    elif canonical in gymnax.registered_envs:
        env, params = gymnax.make(canonical)
    else:
        candidates = names() + sorted(aliases)
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown environment {name!r}{hint} (ssmrl.envs.names() lists all {len(candidates)})"
        )
    if param_overrides:
        fields = {f.name for f in dataclasses.fields(params)}
        unknown = sorted(set(param_overrides) - fields)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for {canonical}; allowed: {sorted(fields)}"
            )
        params = params.replace(**param_overrides)
    return env, params
