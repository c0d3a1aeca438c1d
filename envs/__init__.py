"""Environments for ssmrl: the POPGym suite in JAX, meta-RL tasks, wrappers, and a registry.

Every environment follows the gymnax 1.0 API::

    env, env_params = ssmrl.envs.make("RepeatPreviousEasy")
    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)

An agent's environment is the named one inside the wrappers the agent asks for::

    env, env_params = ssmrl.envs.make_for_agent("RepeatPreviousEasy", ppo.WRAPPERS)
"""

from __future__ import annotations

from typing import Any

from ssmrl.envs.meta import HELD_OUT, MetaParams
from ssmrl.envs.registry import aliases, make, names
from ssmrl.envs.wrappers import wrap

__all__ = ["aliases", "held_out", "is_meta", "make", "make_for_agent", "names"]


def make_for_agent(name: str, wrappers: tuple[str, ...] | list[str]) -> tuple[Any, Any]:
    """``(env, env_params)``: `make(name)` inside ``wrappers`` (names of
    `ssmrl.envs.wrappers.WRAPPERS`, innermost first); raises ValueError for unknown names."""
    env, env_params = make(name)
    return wrap(env, wrappers), env_params


def is_meta(env_params: Any) -> bool:
    """True when the environment's episodes are meta-RL trials of several episodes."""
    return isinstance(env_params, MetaParams)


def held_out(name: str) -> str | None:
    """The held-out counterpart of a meta environment (same spaces), or None."""
    return HELD_OUT.get(name)
