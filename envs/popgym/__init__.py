"""The POPGym suite as gymnax 1.0 environments.

Each module in this package implements one task family and exposes two dicts
that the registry (`ssmrl.envs.registry`) collects:

- ``TASKS``: POPGym name (e.g. ``"RepeatPreviousEasy"``) -> zero-argument factory
  returning ``(env, env_params)``, built with `task` below.
- ``ALIASES``: older name (e.g. ``"StatelessCartPoleEasy"``) -> POPGym name.

`task` lives here rather than in the registry so that imports go one way: the
registry imports this package and (lazily) its modules, and the modules import
only their package, never the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

E = TypeVar("E")


def task(
    env_cls: Callable[..., E], /, params: Mapping[str, Any] | None = None, **env_kwargs: Any
) -> Callable[[], tuple[E, Any]]:
    """A ``TASKS`` factory: each call builds ``env_cls(**env_kwargs)`` and its params.

    The params are the new env's ``default_params`` with the fields in ``params``
    replaced, e.g. ``task(CartPole, visible="position", params={"max_steps_in_episode":
    400})``.
    """

    def make() -> tuple[E, Any]:
        env = env_cls(**env_kwargs)
        env_params = env.default_params  # type: ignore[attr-defined]
        return env, env_params.replace(**params) if params else env_params

    return make
