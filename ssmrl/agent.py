"""The agent contract: what the driver, evaluation, CLI and scripts know of any agent.

An agent module (``ssmrl.agents.ppo``, ...) exposes ``Config`` (a frozen dataclass with
an ``env`` name and ``validate()``), ``WRAPPERS`` (the env wrappers it wants, names for
`ssmrl.envs.make_for_agent`) and ``make_agent(cfg, env, env_params) -> Agent``. Every
function in the `Agent` is pure and works on ONE seed; the driver vmaps over seeds.

| field              | call, or value                                   |
|--------------------|--------------------------------------------------|
| ``init``           | ``init(key) -> state``                           |
| ``update``         | ``update(state) -> (state, metrics)``            |
| ``act``            | ``act(params, carry, obs, reset, key, greedy)``  |
|                    | ``-> (carry, action)``                           |
| ``initial_carry``  | ``initial_carry(E) -> carry`` (memory of E envs) |
| ``policy_params``  | ``policy_params(state) -> params`` (for ``act``) |
| ``num_updates``    | int: updates in the whole run                    |
| ``steps_per_update`` | int: env steps per update                      |
| ``wrappers``       | the wrapper names its env was built with         |
| ``memory_bytes``   | int: rough device memory one update needs beyond |
|                    | the state (rollouts, activations), one seed      |
| ``headline``       | the metric the driver plots and shows            |
| ``world_model``    | `WorldModelView` of an agent that has one, else None |
| ``num_envs``       | int: envs per seed stepped in parallel (0: none) |
| ``env_fields``     | the state's fields whose leaves are per env, the |
|                    | env axis first: split over devices (`ssmrl.scale`) |

| array    | shape (one seed) |
|----------|------------------|
| state, params, carry | any pytrees of arrays |
| metrics  | a NamedTuple of scalars `[]` |
| obs      | ``[E, O]``       |
| reset    | ``[E]`` bool     |
| action   | ``[E]`` (discrete) or ``[E, A]`` |

``metrics`` holds scalars and includes ``headline``, by default ``mean_return``: the mean
return of the episodes that ended during the update (NaN if none). An agent without a
policy (the offline world-model trainer) names another headline (a loss) and has
``act = None``; ``ssmrl eval`` refuses it. ``reset[e]`` True means ``obs[e]`` starts a
new episode (the memory is cleared before it is read); ``greedy`` (a Python bool) picks
the most likely action instead of sampling. The driver refuses a run whose state plus
``memory_bytes`` per seed clearly exceeds the device's memory, before compiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class WorldModelView(NamedTuple):
    """How tools reach an agent's world model (`ssmrl.worldmodel.WorldModel`):
    ``params(state)`` gives its parameters from one seed's state, ``action_size`` is the
    width ``A`` of the actions it reads (one-hot for discrete actions)."""

    model: Any
    params: Callable[[Any], Any]
    action_size: int


class Agent(NamedTuple):
    """One agent on one environment, as pure functions of one seed (see the module table)."""

    init: Callable[[Any], Any]
    update: Callable[[Any], tuple[Any, Any]]
    act: Callable[..., tuple[Any, Any]] | None
    initial_carry: Callable[[int], Any] | None
    policy_params: Callable[[Any], Any] | None
    num_updates: int
    steps_per_update: int
    wrappers: tuple[str, ...]
    memory_bytes: int = 0
    headline: str = "mean_return"
    world_model: WorldModelView | None = None
    num_envs: int = 0
    env_fields: tuple[str, ...] = ()
