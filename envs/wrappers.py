"""Gymnax-compatible wrappers: episode statistics, previous action/reward, flattening.

Every wrapper takes an environment with the gymnax 1.0 API and exposes the same
API: ``reset(key, params) -> (obs, state)``, ``step(key, state, action, params)
-> (obs, state, reward, terminated, truncated, info)``, ``observation_space``,
``action_space``, ``name``, ``num_actions`` and ``default_params``. Any other
attribute is looked up on the wrapped environment.

The wrapped environment's ``step`` does the auto-reset, so the observation
returned together with ``terminated | truncated`` is the first observation of
the next episode and ``info["final_observation"]`` is the last observation of the
episode that ended. Wrappers that change observations apply the same change to
``info["final_observation"]``; every other ``info`` entry is passed through.

Wrappers compose, e.g. ``EpisodeStatistics(PreviousActionReward(FlattenObservation(env)))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces


class Wrapper:
    """Base class: forwards the gymnax API (and any other attribute) to ``env``.

    Only ``reset`` and ``step`` are wrapped: ``step_env``/``reset_env`` looked up
    through a wrapper are the wrapped environment's own, without the wrapper's effect.
    """

    def __init__(self, env: Any):
        self._env = env

    def __getattr__(self, name: str) -> Any:
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    @property
    def unwrapped(self) -> Any:
        """The innermost (unwrapped) environment."""
        env = self._env
        while isinstance(env, Wrapper):
            env = env._env
        return env

    @property
    def name(self) -> str:
        return self._env.name

    @property
    def num_actions(self) -> int:
        return self._env.num_actions

    @property
    def default_params(self) -> Any:
        return self._env.default_params

    def observation_space(self, params: Any) -> Any:
        return self._env.observation_space(params)

    def action_space(self, params: Any) -> Any:
        return self._env.action_space(params)

    def reset(self, key: jax.Array, params: Any = None) -> tuple[Any, Any]:
        return self._env.reset(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None) -> tuple:
        return self._env.step(key, state, action, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._env!r})"


@struct.dataclass
class EpisodeStatisticsState:
    """State of `EpisodeStatistics`: the inner state and the running episode totals."""

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class EpisodeStatistics(Wrapper):
    """Reports the return and length of every episode when it finishes.

    Adds to ``info`` at every step:

    - ``"returned_episode"`` (bool): an episode ended at this step
      (``terminated | truncated``).
    - ``"episode_return"`` (float32): that episode's undiscounted return, 0.0 when
      no episode ended at this step.
    - ``"episode_length"`` (int32): that episode's number of steps, 0 when no
      episode ended at this step.

    The mean episode return over a batch is therefore
    ``sum(episode_return) / sum(returned_episode)``. The state is an
    `EpisodeStatisticsState` holding the wrapped state in ``env_state``.
    """

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any = None) -> tuple[Any, EpisodeStatisticsState]:
        obs, env_state = self._env.reset(key, params)
        state = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=jnp.zeros((), jnp.float32),
            episode_length=jnp.zeros((), jnp.int32),
        )
        return obs, state

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self, key: jax.Array, state: EpisodeStatisticsState, action: Any, params: Any = None
    ) -> tuple:
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + jnp.asarray(reward, jnp.float32)
        episode_length = state.episode_length + 1
        info = {
            **info,
            "returned_episode": done,
            "episode_return": jnp.where(done, episode_return, 0.0),
            "episode_length": jnp.where(done, episode_length, 0),
        }
        state = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
        )
        return obs, state, reward, terminated, truncated, info


def _bounds(low: Any, high: Any, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Flat float32 bound vectors of a Box with bounds `low`/`high` and `shape`."""
    low = jnp.broadcast_to(jnp.asarray(low, jnp.float32), shape).reshape(-1)
    high = jnp.broadcast_to(jnp.asarray(high, jnp.float32), shape).reshape(-1)
    return low, high


class PreviousActionReward(Wrapper):
    """Appends the previous action, the previous reward and an is-first flag to the observation.

    The wrapped environment must have a 1-D ``Box`` observation space (wrap image
    or pytree observations in `FlattenObservation` first). Observations become
    float32 vectors of length ``d + a + 2``::

        [ obs (d) | previous action (a) | previous reward (1) | is_first (1) ]

    - previous action: for ``Discrete(n)`` a one-hot of length ``a = n`` of the
      action clipped to ``[0, n - 1]``; for ``Box`` the action clipped to the
      action space bounds and flattened (``a = prod(shape)``).
    - previous reward: the reward received for that action.
    - is_first: 1.0 on the first observation of an episode (from ``reset``, and
      the observation returned by an auto-resetting ``step``), where the previous
      action and reward entries are all 0.0; otherwise 0.0.

    ``info["final_observation"]`` (the last observation of the finished episode)
    carries the action and reward of the final step and is_first = 0.0. The state
    is the wrapped environment's state, unchanged.
    """

    def __init__(self, env: Any):
        super().__init__(env)
        params = env.default_params
        obs_space = env.observation_space(params)
        if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(
                f"PreviousActionReward needs a 1-D Box observation space, got {obs_space!r}; "
                "wrap the environment in FlattenObservation first"
            )
        self._action_size(env.action_space(params))

    @staticmethod
    def _action_size(space: Any) -> int:
        if isinstance(space, spaces.Discrete):
            return int(space.n)
        if isinstance(space, spaces.Box):
            return int(np.prod(space.shape))
        raise ValueError(
            f"PreviousActionReward needs a Discrete or Box action space, got {space!r}"
        )

    def _encode_action(self, action: Any, params: Any) -> jax.Array:
        space = self._env.action_space(params)
        if isinstance(space, spaces.Discrete):
            index = jnp.clip(jnp.reshape(jnp.asarray(action), ()).astype(jnp.int32), 0, space.n - 1)
            return jax.nn.one_hot(index, space.n, dtype=jnp.float32)
        low, high = _bounds(space.low, space.high, space.shape)
        action = jnp.broadcast_to(jnp.asarray(action, jnp.float32), space.shape).reshape(-1)
        return jnp.clip(action, low, high)

    def _first_extra(self, params: Any) -> jax.Array:
        size = self._action_size(self._env.action_space(params))
        return jnp.zeros(size + 2, jnp.float32).at[-1].set(1.0)

    def observation_space(self, params: Any) -> spaces.Box:
        inner = self._env.observation_space(params)
        action_space = self._env.action_space(params)
        obs_low, obs_high = _bounds(inner.low, inner.high, inner.shape)
        if isinstance(action_space, spaces.Discrete):
            act_low = jnp.zeros(action_space.n, jnp.float32)
            act_high = jnp.ones(action_space.n, jnp.float32)
        else:
            act_low, act_high = _bounds(action_space.low, action_space.high, action_space.shape)
        low = jnp.concatenate([obs_low, act_low, jnp.array([-jnp.inf, 0.0], jnp.float32)])
        high = jnp.concatenate([obs_high, act_high, jnp.array([jnp.inf, 1.0], jnp.float32)])
        return spaces.Box(low=low, high=high, shape=low.shape, dtype=jnp.float32)

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, Any]:
        params = self._env.default_params if params is None else params
        obs, state = self._env.reset(key, params)
        obs = jnp.concatenate([jnp.asarray(obs, jnp.float32), self._first_extra(params)])
        return obs, state

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None) -> tuple:
        params = self._env.default_params if params is None else params
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        extra = jnp.concatenate(
            [
                self._encode_action(action, params),
                jnp.reshape(jnp.asarray(reward, jnp.float32), (1,)),
                jnp.zeros(1, jnp.float32),
            ]
        )
        next_extra = jnp.where(done, self._first_extra(params), extra)
        obs = jnp.concatenate([jnp.asarray(obs, jnp.float32), next_extra])
        final = jnp.concatenate([jnp.asarray(info["final_observation"], jnp.float32), extra])
        info = {**info, "final_observation": final}
        return obs, state, reward, terminated, truncated, info


def _flatten(space: Any, obs: Any) -> list[jax.Array]:
    """Flat float32 pieces of `obs`, walking `space` (Dict in key order, Tuple in order)."""
    if isinstance(space, spaces.Box | spaces.Discrete):
        return [jnp.asarray(obs, jnp.float32).reshape(-1)]
    if isinstance(space, spaces.Dict):
        pieces = []
        for key, sub in space.spaces.items():
            value = obs[key] if isinstance(obs, Mapping) else getattr(obs, key)
            pieces += _flatten(sub, value)
        return pieces
    if isinstance(space, spaces.Tuple):
        return [
            piece
            for sub, value in zip(space.spaces, obs, strict=True)
            for piece in _flatten(sub, value)
        ]
    raise TypeError(f"FlattenObservation cannot flatten observation space {space!r}")


def _space_bounds(space: Any) -> list[tuple[jax.Array, jax.Array]]:
    """Flat float32 (low, high) pieces of `space`, in the order `_flatten` uses."""
    if isinstance(space, spaces.Box):
        return [_bounds(space.low, space.high, tuple(space.shape))]
    if isinstance(space, spaces.Discrete):
        return [(jnp.zeros(1, jnp.float32), jnp.full(1, space.n - 1, jnp.float32))]
    if isinstance(space, spaces.Dict):
        return [b for sub in space.spaces.values() for b in _space_bounds(sub)]
    if isinstance(space, spaces.Tuple):
        return [b for sub in space.spaces for b in _space_bounds(sub)]
    raise TypeError(f"FlattenObservation cannot flatten observation space {space!r}")


class FlattenObservation(Wrapper):
    """Flattens any observation into one float32 vector.

    The layout follows the observation space: a ``Box`` leaf contributes its
    values in row-major (C) order, a ``Discrete`` leaf one value (its index, not
    one-hot), a ``Dict`` its entries in the order of ``space.spaces``, a ``Tuple``
    its entries in order. ``observation_space`` is a ``Box`` of the total size
    whose bounds are the flattened bounds of the leaves (``[0, n - 1]`` for a
    ``Discrete`` leaf). ``info["final_observation"]`` is flattened the same way.
    """

    def _flat(self, obs: Any, params: Any) -> jax.Array:
        return jnp.concatenate(_flatten(self._env.observation_space(params), obs))

    def observation_space(self, params: Any) -> spaces.Box:
        pieces = _space_bounds(self._env.observation_space(params))
        low = jnp.concatenate([lo for lo, _ in pieces])
        high = jnp.concatenate([hi for _, hi in pieces])
        return spaces.Box(low=low, high=high, shape=low.shape, dtype=jnp.float32)

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, Any]:
        params = self._env.default_params if params is None else params
        obs, state = self._env.reset(key, params)
        return self._flat(obs, params), state

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None) -> tuple:
        params = self._env.default_params if params is None else params
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        info = {**info, "final_observation": self._flat(info["final_observation"], params)}
        return self._flat(obs, params), state, reward, terminated, truncated, info


WRAPPERS: dict[str, type[Wrapper]] = {
    "flatten": FlattenObservation,
    "previous_action_reward": PreviousActionReward,
    "episode_statistics": EpisodeStatistics,
}
"""Wrapper names an agent may ask for (its ``WRAPPERS``), applied innermost first."""


def wrap(env: Any, names: tuple[str, ...] | list[str]) -> Any:
    """``env`` inside the named wrappers, the first name innermost; unknown names raise."""
    for name in names:
        if name not in WRAPPERS:
            raise ValueError(f"unknown wrapper {name!r}; allowed: {', '.join(WRAPPERS)}")
        env = WRAPPERS[name](env)
    return env
