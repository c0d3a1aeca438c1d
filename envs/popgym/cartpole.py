"""POPGym CartPole tasks: balance a pole while seeing only half of the cart-pole state.

The physics are the classic cart-pole (Barto, Sutton & Anderson; gymnasium's
``CartPoleEnv``): a 1 kg cart with a 0.1 kg, 1 m pole, pushed left or right
with 10 N (``Discrete(2)``: 0 = left, 1 = right), explicit Euler steps of
0.02 s, starting from a state drawn uniformly from ``(-0.05, 0.05)^4``. An
episode terminates when ``|x| > 2.4`` or ``|theta| > 12°``, and is truncated
after ``params.max_steps_in_episode`` steps (200/400/600 for Easy/Medium/Hard,
200 for the noisy tasks). Every step, the terminating one included, pays
``1 / max_steps_in_episode``, so balancing to the end returns 1.

One class serves all three POPGym families:

- ``PositionOnlyCartPole``: ``visible="position"``, the observation is ``[x, theta]``.
- ``VelocityOnlyCartPole``: ``visible="velocity"``, the observation is
  ``[x_dot, theta_dot]`` after each step; the reset observation is ``[x, theta]``,
  as in the reference.
- ``NoisyPositionOnlyCartPole``: ``visible="position"`` with Gaussian noise of
  standard deviation ``params.noise_std`` (0.1/0.2/0.3) added to every
  observation, then clipped to the observation space ``[-4.8, 4.8] x [-24°, 24°]``.

Differences from the reference (popgym 1.0.7 ``PositionOnlyCartPole``,
``VelocityOnlyCartPole``, ``NoisyPositionOnlyCartPole`` on gymnasium's ``CartPoleEnv``):

- The state is integrated in float32 (the reference integrates in float64 and
  returns float32 observations); trajectories agree to float32 rounding.
- The reference pays -1 for steps taken after termination; episodes here
  auto-reset at termination, so that reward never occurs.
- The noise is drawn from JAX's generator, not numpy's.
- Actions outside ``{0, 1}`` are clipped into it (the reference rejects them).
- ``step`` is gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) with every
  draw taken from random words of the step's key (`ssmrl.envs.popgym.rng`)
  instead of from the halves of split keys: the step's noise from block 0, the
  reset's initial state from block 1 and its noise from block 2 (``reset`` uses
  blocks 0 and 1). Where ``params.noise_std`` is 0 no noise is drawn. The
  distributions are unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.rng import normal, uniform, words

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
FORCE = 10.0
TAU = 0.02
X_THRESHOLD = 2.4
THETA_THRESHOLD = 12 * 2 * math.pi / 360
RESET_BOUND = 0.05

# Which state entries (x, x_dot, theta, theta_dot) each variant observes after a step.
_VISIBLE = {"position": (0, 2), "velocity": (1, 3)}


@struct.dataclass
class CartPoleState(environment.EnvState):
    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: int


@struct.dataclass
class CartPoleParams(environment.EnvParams):
    max_steps_in_episode: int = 200
    noise_std: float = 0.0


class CartPole(AutoReset[CartPoleState, CartPoleParams]):
    """Cart-pole balancing that shows either positions or velocities.

    Args:
        visible: ``"position"`` (show ``[x, theta]``) or ``"velocity"``
            (show ``[x_dot, theta_dot]``; the reset observation is ``[x, theta]``).

    Actions are cast to int32 and clipped to ``[0, 1]``.
    """

    def __init__(self, visible: str = "position"):
        super().__init__()
        if visible not in _VISIBLE:
            raise ValueError(f"visible must be one of {sorted(_VISIBLE)}, got {visible!r}")
        self.visible = visible
        if visible == "position":
            self.obs_high = np.array([2 * X_THRESHOLD, 2 * THETA_THRESHOLD], np.float32)
        else:
            self.obs_high = np.full((2,), np.inf, np.float32)

    @property
    def default_params(self) -> CartPoleParams:
        return CartPoleParams()

    def reset_env(self, key: jax.Array, params: CartPoleParams) -> tuple[jax.Array, CartPoleState]:
        return self._start(key, 0, params)

    def next_episode(
        self, key: jax.Array, state: CartPoleState, done: jax.Array, params: CartPoleParams
    ) -> tuple[CartPoleState, tuple[jax.Array, CartPoleState]]:
        # step_env's noise comes from block 0 of the key's words.
        return state, self._start(key, 1, params)

    def _start(
        self, key: jax.Array, block: int, params: CartPoleParams
    ) -> tuple[jax.Array, CartPoleState]:
        """A reset from the words of ``block`` (the state) and ``block + 1`` (the noise)."""
        x, x_dot, theta, theta_dot = (
            uniform(word, -RESET_BOUND, RESET_BOUND) for word in words(key, 4, block)
        )
        state = CartPoleState(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=0)
        return self._noisy(key, block + 1, jnp.stack([x, theta]), params), state

    def step_env(
        self,
        key: jax.Array,
        state: CartPoleState,
        action: int | jax.Array,
        params: CartPoleParams,
    ) -> tuple[jax.Array, CartPoleState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, 1)
        force = jnp.where(action == 1, FORCE, -FORCE)
        cos, sin = jnp.cos(state.theta), jnp.sin(state.theta)
        temp = (force + POLE_MASS_LENGTH * state.theta_dot**2 * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (
            HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS)
        )
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
        state = CartPoleState(
            x=state.x + TAU * state.x_dot,
            x_dot=state.x_dot + TAU * x_acc,
            theta=state.theta + TAU * state.theta_dot,
            theta_dot=state.theta_dot + TAU * theta_acc,
            time=state.time + 1,
        )
        terminated = (jnp.abs(state.x) > X_THRESHOLD) | (jnp.abs(state.theta) > THETA_THRESHOLD)
        reward = jnp.asarray(1.0 / params.max_steps_in_episode, jnp.float32)
        full = (state.x, state.x_dot, state.theta, state.theta_dot)
        obs = jnp.stack([full[i] for i in _VISIBLE[self.visible]])
        return self._noisy(key, 0, obs, params), state, reward, terminated, {}

    def _noisy(
        self, key: jax.Array, block: int, obs: jax.Array, params: CartPoleParams
    ) -> jax.Array:
        """``obs`` plus noise from the words of ``block``, clipped to the observation space."""

        def add_noise(obs: jax.Array) -> jax.Array:
            return obs + params.noise_std * jnp.stack([normal(w) for w in words(key, 2, block)])

        # Unless params are batched, the noiseless tasks skip the draw at run time.
        obs = jax.lax.cond(params.noise_std == 0, lambda obs: obs, add_noise, obs)
        return jnp.clip(obs, -self.obs_high, self.obs_high).astype(jnp.float32)

    @property
    def name(self) -> str:
        return f"{self.visible.capitalize()}OnlyCartPole"

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: CartPoleParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: CartPoleParams | None = None) -> spaces.Box:
        return spaces.Box(-self.obs_high, self.obs_high, (2,), jnp.float32)


TASKS = {
    name: task(
        CartPole, visible=visible, params={"max_steps_in_episode": steps, "noise_std": noise_std}
    )
    for name, visible, steps, noise_std in (
        ("PositionOnlyCartPoleEasy", "position", 200, 0.0),
        ("PositionOnlyCartPoleMedium", "position", 400, 0.0),
        ("PositionOnlyCartPoleHard", "position", 600, 0.0),
        ("VelocityOnlyCartPoleEasy", "velocity", 200, 0.0),
        ("VelocityOnlyCartPoleMedium", "velocity", 400, 0.0),
        ("VelocityOnlyCartPoleHard", "velocity", 600, 0.0),
        ("NoisyPositionOnlyCartPoleEasy", "position", 200, 0.1),
        ("NoisyPositionOnlyCartPoleMedium", "position", 200, 0.2),
        ("NoisyPositionOnlyCartPoleHard", "position", 200, 0.3),
    )
}
ALIASES = {
    f"{old}{level}": f"{new}{level}"
    for old, new in (
        ("StatelessCartPole", "PositionOnlyCartPole"),
        ("NoisyStatelessCartPole", "NoisyPositionOnlyCartPole"),
    )
    for level in ("Easy", "Medium", "Hard")
}
