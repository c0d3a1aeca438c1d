"""gymnax's auto-reset step, with the task saying how its next episode starts.

gymnax's `Environment.step` splits its key, runs `step_env` on one half and
`reset_env` on the other, and keeps the reset state where the episode ended.
Under `vmap` both run for every environment at every step, so for cheap tasks
the key split and the reset's draws cost more than the step itself, and for
tasks with a costly layout (ships, arm probabilities, a maze) a whole layout is
built per step. `AutoReset.step` keeps gymnax's outputs (observation, state,
reward, ``terminated``, ``truncated``, and ``info`` with ``terminated``,
``truncated`` and ``final_observation``) but asks the task, through
`next_episode`, for the reset: a task may build it from random words of the
step's key that `step_env` leaves unused (`ssmrl.envs.popgym.rng`), or carry
the next episode's layout in its state, build it a piece per step and finish
it only where an episode ends early.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Generic, TypeVar

import jax
from gymnax.environments import environment

S = TypeVar("S", bound=environment.EnvState)
P = TypeVar("P", bound=environment.EnvParams)


class AutoReset(environment.Environment[S, P], Generic[S, P]):
    """A gymnax environment whose auto-reset comes from `next_episode`.

    `step_env` and `next_episode` get the same key; `next_episode` must draw
    only randomness independent of what `step_env` draws from it.
    """

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: S,
        action: int | float | jax.Array,
        params: P | None = None,
    ) -> tuple[jax.Array, S, jax.Array, jax.Array, jax.Array, dict[Any, Any]]:
        """One step with auto-reset: where the episode ends, the observation and
        state are `next_episode`'s reset; ``info["final_observation"]`` is the
        observation the step itself produced."""
        if params is None:
            params = self.default_params
        obs_step, state_step, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = self.is_truncated(state_step, params)
        done = terminated | truncated
        state_step, (obs_reset, state_reset) = self.next_episode(key, state_step, done, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_reset, state_step)
        obs = jax.lax.select(done, obs_reset, obs_step)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_step,
        }
        return obs, state, reward, terminated, truncated, info

    def next_episode(
        self, key: jax.Array, state: S, done: jax.Array, params: P
    ) -> tuple[S, tuple[jax.Array, S]]:
        """``(state, (obs, reset_state))``: the stepped ``state`` with any carried
        layout advanced, and the start of the next episode, used where ``done``
        (a layout carried in ``state`` must be complete there)."""
        raise NotImplementedError
