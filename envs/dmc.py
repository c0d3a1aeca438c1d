"""The DeepMind Control suite of MuJoCo Playground as gymnax environments (optional).

``ssmrl.envs.make("dmc/CartpoleSwingup")`` wraps one task of Playground's
``dm_control_suite`` (every name in its ``ALL_ENVS``, prefixed with ``dmc/``)
in the gymnax 1.0 API, so it vectorises and compiles with the rest of a
training loop and works inside ``ssmrl.envs.meta.MetaEnv``. Install with
``pip install 'ssmrl[dmc]'`` (MuJoCo Playground, MuJoCo and MJX); ``import
ssmrl.envs`` does not need it, only building a ``dmc/`` task does.

- **Physics**: MJX with ``impl="jax"`` (pure JAX, any backend). Playground's
  default, ``"warp"``, needs its own kernels and prints solver warnings on CPU.
- **Observation**: Playground's state vector, ``Box(-m, m, (n,), float32)`` with ``m``
  float32's largest value (no bound, written as gymnax's CartPole writes it).
- **Action**: ``Box(-1, 1, (n,), float32)``; actions are clipped to it and NaN
  becomes 0.
- **Reward**: Playground's, in ``[0, 1]`` per step, so an episode of 1000 steps
  returns up to 1000. ``MetaEnv`` scales ``dmc/`` rewards by one over the episode
  length by default, so that an episode returns at most 1.
- **Episodes**: ``terminated`` is Playground's ``done``, which for these tasks only
  flags a diverged simulation (NaN in ``qpos`` or ``qvel``); the reward and
  observation of such a step are set to 0. Episodes are truncated after
  ``params.max_steps_in_episode`` steps (default 1000, DMC's episode length).

Speed on a 2-core CPU shared with other work, 64 environments vmapped and stepped
100 times with gymnax's auto-reset in one jitted ``lax.scan``: CartpoleSwingup
about 390,000 steps/s (compiled in 9 s), FingerSpin about 17,000 steps/s
(compiled in 30 s). The auto-reset computes a reset every step: Playground's own
step alone runs about 1.5x (CartpoleSwingup) and 1.3x (FingerSpin) faster.

The S5 in-context RL paper's DMC tasks (dm_control name -> ssmrl name), in
`PAPER_TRAIN_TASKS` and `PAPER_HELD_OUT_TASKS`:

- train: ball_in_cup_catch -> ``dmc/BallInCup``, cartpole_swingup ->
  ``dmc/CartpoleSwingup``, finger_spin -> ``dmc/FingerSpin``, finger_turn_hard ->
  ``dmc/FingerTurnHard``, point_mass_easy -> ``dmc/PointMass`` (fixed actuator
  gains, as in DMC's easy), reacher_easy -> ``dmc/ReacherEasy``.
- held out: cartpole_balance -> ``dmc/CartpoleBalance``, finger_turn_easy ->
  ``dmc/FingerTurnEasy``, pendulum_swingup -> ``dmc/PendulumSwingup``,
  reacher_hard -> ``dmc/ReacherHard``; point_mass_hard has no counterpart
  (Playground's PointMass never randomises its gains).

Playground's tasks follow dm_control's but differ in details (integrators,
time steps; see each Playground module's docstring).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

PREFIX = "dmc/"
INSTALL = "pip install 'ssmrl[dmc]'"
PAPER_TRAIN_TASKS = (
    "dmc/BallInCup",
    "dmc/CartpoleSwingup",
    "dmc/FingerSpin",
    "dmc/FingerTurnHard",
    "dmc/PointMass",
    "dmc/ReacherEasy",
)
PAPER_HELD_OUT_TASKS = (
    "dmc/CartpoleBalance",
    "dmc/FingerTurnEasy",
    "dmc/PendulumSwingup",
    "dmc/ReacherHard",
)
"""The paper's held-out tasks that Playground has (not point_mass_hard)."""


class MissingDependencyError(ImportError, ValueError):
    """MuJoCo Playground is not installed.

    Also a ValueError, so callers that report bad environment names in one line
    (the CLI) report this the same way.
    """


@struct.dataclass
class DMCState(environment.EnvState):
    playground: Any  # Playground's State: MJX data, obs, reward, done, metrics, info
    time: int


@struct.dataclass
class DMCParams(environment.EnvParams):
    max_steps_in_episode: int = 1000


class DMCEnv(environment.Environment[DMCState, DMCParams]):
    """One Playground DM Control task with the gymnax API.

    ==============  ==================  =================================
    observation     ``[obs_size]``      float32
    action          ``[action_size]``   clipped to [-1, 1]
    reward, flags   ``[]``              float32, bool
    ==============  ==================  =================================

    Args:
        name: the ssmrl name, ``"dmc/<Playground name>"``.
        playground_env: the loaded Playground environment (``MjxEnv``).
    """

    def __init__(self, name: str, playground_env: Any):
        super().__init__()
        self._name, self.playground_env = name, playground_env
        size = playground_env.observation_size
        if not isinstance(size, int):
            raise ValueError(f"{name}: observations must be one vector, got {size}")
        self.obs_size, self.action_size = size, playground_env.action_size

    @property
    def default_params(self) -> DMCParams:
        return DMCParams()

    def reset_env(self, key: jax.Array, params: DMCParams) -> tuple[jax.Array, DMCState]:
        inner = self.playground_env.reset(key)
        return self._obs(inner.obs), DMCState(playground=inner, time=0)

    def step_env(
        self, key: jax.Array, state: DMCState, action: jax.Array, params: DMCParams
    ) -> tuple[jax.Array, DMCState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.asarray(action, jnp.float32).reshape(self.action_size)
        action = jnp.clip(jnp.nan_to_num(action, nan=0.0), -1.0, 1.0)
        inner = self.playground_env.step(state.playground, action)
        reward = _finite(jnp.asarray(inner.reward, jnp.float32).reshape(()))
        terminated = jnp.asarray(inner.done).reshape(()) > 0
        state = DMCState(playground=inner, time=state.time + 1)
        return self._obs(inner.obs), state, reward, terminated, {}

    def _obs(self, obs: jax.Array) -> jax.Array:
        return _finite(jnp.asarray(obs, jnp.float32).reshape(self.obs_size))

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return self.action_size

    def action_space(self, params: DMCParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.action_size,), jnp.float32)

    def observation_space(self, params: DMCParams | None = None) -> spaces.Box:
        high = jnp.finfo(jnp.float32).max
        return spaces.Box(-high, high, (self.obs_size,), jnp.float32)


def _finite(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _suite() -> Any:
    try:
        from mujoco_playground import dm_control_suite
    except ImportError as e:
        raise MissingDependencyError(
            f"the dmc/ environments need MuJoCo Playground: {INSTALL} ({e})"
        ) from e
    return dm_control_suite


def names() -> list[str]:
    """Every ``"dmc/<Name>"`` that `make` accepts (needs MuJoCo Playground)."""
    return sorted(PREFIX + n for n in _suite().ALL_ENVS)


def make(name: str) -> tuple[DMCEnv, DMCParams]:
    """Build ``"dmc/<Name>"`` and its default params.

    Raises:
        MissingDependencyError: MuJoCo Playground is not installed.
        ValueError: not a Playground DM Control task (the message lists them).
    """
    suite = _suite()
    task = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or task not in suite.ALL_ENVS:
        raise ValueError(f"unknown environment {name!r}; dmc/ names: {', '.join(names())}")
    env = suite.load(task, config_overrides={"impl": "jax"})
    return DMCEnv(name, env), DMCParams()
