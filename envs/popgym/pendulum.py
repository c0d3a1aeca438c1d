"""POPGym Pendulum tasks: swing up and hold a pendulum seeing only its angle.

The physics are gymnasium's ``PendulumEnv``: ``theta_ddot = 15 sin(theta) + 3 u``
(g = 10, m = l = 1, ``theta = 0`` upright), torque ``u`` in ``[-2, 2]``
(``Box((1,))``), explicit steps of 0.05 s with the angular velocity clipped to
``[-8, 8]``, starting from ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``.
The cost ``angle^2 + 0.1 theta_dot^2 + 0.001 u^2`` (angle wrapped to
``[-pi, pi)``, taken before the step) lies in ``[0, 16.2736044]``; the reward
maps it linearly onto ``[-1, 1]`` (cost 0 -> 1, maximal cost -> -1) and divides
by ``params.max_steps_in_episode`` (200/150/100 for Easy/Medium/Hard, 200 for
the noisy tasks), so every return lies in [-1, 1]. Episodes never terminate;
they are truncated after ``max_steps_in_episode`` steps.

The observation is ``[cos(theta), sin(theta)]`` (no angular velocity), plus
Gaussian noise of standard deviation ``params.noise_std`` (0 for
``PositionOnlyPendulum``, 0.1/0.2/0.3 for ``NoisyPositionOnlyPendulum``),
clipped to ``[-1, 1]``.

Differences from the reference (popgym 1.0.7 ``PositionOnlyPendulum``,
``NoisyPositionOnlyPendulum`` on gymnasium's ``PendulumEnv``):

- The state is integrated in float32 (the reference uses float64) and the
  angle is kept wrapped to ``[-pi, pi)``; the reference lets it grow without
  bound, which changes nothing observable since only its sine, cosine and
  wrapped value are used.
- NaN torques become 0 before clipping to ``[-2, 2]`` (the reference would
  propagate NaN into its state).
- The noise is drawn from JAX's generator, not numpy's.
- ``step`` is gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) with every
  draw taken from random words of the step's key (`ssmrl.envs.popgym.rng`)
  instead of from split keys: the step's noise from block 0, the reset's
  initial state from block 1 and its noise from block 2 (``reset`` uses blocks
  0 and 1). Where ``params.noise_std`` is 0 no noise is drawn. The
  distributions are unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.rng import normal, uniform, words

GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
# Half the width of the cost range [0, pi^2 + 0.1 * 8^2 + 0.001 * 2^2].
HALF_COST_RANGE = 16.2736044 / 2


@struct.dataclass
class PendulumState(environment.EnvState):
    theta: jax.Array
    theta_dot: jax.Array
    time: int


@struct.dataclass
class PendulumParams(environment.EnvParams):
    max_steps_in_episode: int = 200
    noise_std: float = 0.0


def wrap_angle(theta: jax.Array) -> jax.Array:
    """``theta`` mapped to ``[-pi, pi)``."""
    return (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi


class Pendulum(AutoReset[PendulumState, PendulumParams]):
    """Torque-limited pendulum swing-up observed through ``[cos, sin]`` of its angle.

    The action is a torque of shape ``(1,)`` (a scalar is accepted too); NaN
    becomes 0 and the torque is clipped to ``[-2, 2]``.
    """

    @property
    def default_params(self) -> PendulumParams:
        return PendulumParams()

    def reset_env(self, key: jax.Array, params: PendulumParams) -> tuple[jax.Array, PendulumState]:
        return self._start(key, 0, params)

    def next_episode(
        self, key: jax.Array, state: PendulumState, done: jax.Array, params: PendulumParams
    ) -> tuple[PendulumState, tuple[jax.Array, PendulumState]]:
        # step_env's noise comes from block 0 of the key's words.
        return state, self._start(key, 1, params)

    def _start(
        self, key: jax.Array, block: int, params: PendulumParams
    ) -> tuple[jax.Array, PendulumState]:
        """A reset from the words of ``block`` (the state) and ``block + 1`` (the noise)."""
        word_theta, word_dot = words(key, 2, block)
        theta = uniform(word_theta, -jnp.pi, jnp.pi)
        theta_dot = uniform(word_dot, -1.0, 1.0)
        state = PendulumState(theta=theta, theta_dot=theta_dot, time=0)
        return self._obs(key, block + 1, theta, params), state

    def step_env(
        self,
        key: jax.Array,
        state: PendulumState,
        action: float | jax.Array,
        params: PendulumParams,
    ) -> tuple[jax.Array, PendulumState, jax.Array, jax.Array, dict[Any, Any]]:
        torque = jnp.reshape(jnp.asarray(action, jnp.float32), (-1,))[0]
        torque = jnp.clip(jnp.nan_to_num(torque), -MAX_TORQUE, MAX_TORQUE)
        cost = wrap_angle(state.theta) ** 2 + 0.1 * state.theta_dot**2 + 0.001 * torque**2
        theta_ddot = (
            3 * GRAVITY / (2 * LENGTH) * jnp.sin(state.theta) + 3.0 / (MASS * LENGTH**2) * torque
        )
        theta_dot = jnp.clip(state.theta_dot + theta_ddot * DT, -MAX_SPEED, MAX_SPEED)
        theta = wrap_angle(state.theta + theta_dot * DT)
        reward = (1.0 - cost / HALF_COST_RANGE) / params.max_steps_in_episode
        state = PendulumState(theta=theta, theta_dot=theta_dot, time=state.time + 1)
        terminated = jnp.zeros((), bool)
        return self._obs(key, 0, theta, params), state, reward.astype(jnp.float32), terminated, {}

    def _obs(
        self, key: jax.Array, block: int, theta: jax.Array, params: PendulumParams
    ) -> jax.Array:
        """``[cos, sin]`` of ``theta`` plus noise from the words of ``block``, clipped."""

        def add_noise(obs: jax.Array) -> jax.Array:
            return obs + params.noise_std * jnp.stack([normal(w) for w in words(key, 2, block)])

        obs = jnp.stack([jnp.cos(theta), jnp.sin(theta)])
        # Unless params are batched, the noiseless tasks skip the draw at run time.
        obs = jax.lax.cond(params.noise_std == 0, lambda obs: obs, add_noise, obs)
        return jnp.clip(obs, -1.0, 1.0).astype(jnp.float32)

    @property
    def name(self) -> str:
        return "PositionOnlyPendulum"

    @property
    def num_actions(self) -> int:
        return 1

    def action_space(self, params: PendulumParams | None = None) -> spaces.Box:
        return spaces.Box(-MAX_TORQUE, MAX_TORQUE, (1,), jnp.float32)

    def observation_space(self, params: PendulumParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)


TASKS = {
    name: task(Pendulum, params={"max_steps_in_episode": steps, "noise_std": noise_std})
    for name, steps, noise_std in (
        ("PositionOnlyPendulumEasy", 200, 0.0),
        ("PositionOnlyPendulumMedium", 150, 0.0),
        ("PositionOnlyPendulumHard", 100, 0.0),
        ("NoisyPositionOnlyPendulumEasy", 200, 0.1),
        ("NoisyPositionOnlyPendulumMedium", 200, 0.2),
        ("NoisyPositionOnlyPendulumHard", 200, 0.3),
    )
}
ALIASES = {
    f"{old}{level}": f"{new}{level}"
    for old, new in (
        ("StatelessPendulum", "PositionOnlyPendulum"),
        ("NoisyStatelessPendulum", "NoisyPositionOnlyPendulum"),
    )
    for level in ("Easy", "Medium", "Hard")
}
