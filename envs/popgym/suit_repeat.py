"""What POPGym RepeatFirst and RepeatPrevious share: name a suit from a dealt stream.

Both tasks deal ``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) one
card per step, observe the one-hot suit (4 values) of the newest card (the reset
observation being the first card), take a suit as the action (``Discrete(4)``,
cast to int32 and clipped to ``[0, 3]``), terminate after ``N - 1`` steps and
truncate earlier episodes at ``params.max_steps_in_episode`` (default ``N - 1``).

`SuitRepeat` implements all of that. A task subclasses it with its state (a
`SuitRepeatState` plus what it remembers) and params (a `SuitRepeatParams`) and
supplies two methods: ``_start`` builds the reset state from the first suit, and
``_answer`` pays the named suit and updates what the state remembers. Each
reset and step deals exactly one card with `ssmrl.envs.popgym.cards.draw` from
the key it is given, so subclasses deal the same cards for the same keys.

Differences from the reference (popgym 1.0.7 ``RepeatFirst`` and ``RepeatPrevious``):

- The observation is the one-hot encoding of the reference's ``Discrete(4)``.
- Cards are drawn from the remaining suit counts as they are dealt (see
  ``ssmrl.envs.popgym.cards``): the same distribution as dealing a shuffled deck.
- ``params.max_steps_in_episode`` (default ``N - 1``) truncates episodes that
  it cuts short; at the natural end the episode terminates and is not
  truncated, as in the reference.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, draw, full_counts

NUM_SUITS = NUM_VALUES["suits"]


@struct.dataclass
class SuitRepeatState(environment.EnvState):
    remaining: jax.Array  # (4,) int32, cards of each suit still in the deck
    time: int


@struct.dataclass
class SuitRepeatParams(environment.EnvParams):
    max_steps_in_episode: int = 51


S = TypeVar("S", bound=SuitRepeatState)
P = TypeVar("P", bound=SuitRepeatParams)


class SuitRepeat(environment.Environment[S, P]):
    """Deal suits and pay the suit the agent names; subclasses say which suit pays.

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.

    Subclasses set ``params_type`` and ``reward_scale`` and implement ``_start``
    and ``_answer``.
    """

    params_type: type[P]
    reward_scale: float

    def __init__(self, num_decks: int = 1):
        super().__init__()
        self.num_decks = num_decks
        self.episode_length = DECK_SIZE * num_decks - 1

    def _start(self, first: jax.Array, remaining: jax.Array) -> S:
        """The reset state after dealing suit ``first``, ``remaining`` cards left."""
        raise NotImplementedError

    def _answer(
        self, state: S, action: jax.Array, card: jax.Array, time: jax.Array
    ) -> tuple[jax.Array, S]:
        """Reward for naming suit ``action`` at step ``time`` (1-based), and ``state``
        updated to remember ``card``, the suit dealt at this step."""
        raise NotImplementedError

    @property
    def default_params(self) -> P:
        return self.params_type(max_steps_in_episode=self.episode_length)

    def reset_env(self, key: jax.Array, params: P) -> tuple[jax.Array, S]:
        first, remaining = draw(key, full_counts(self.num_decks, "suits"))
        return self._obs(first), self._start(first, remaining)

    def step_env(
        self, key: jax.Array, state: S, action: int | jax.Array, params: P
    ) -> tuple[jax.Array, S, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, NUM_SUITS - 1)
        time = state.time + 1
        card, remaining = draw(key, state.remaining)
        reward, state = self._answer(state, action, card, time)
        state = state.replace(remaining=remaining, time=time)
        terminated = time >= self.episode_length
        return self._obs(card), state, reward.astype(jnp.float32), terminated, {}

    def is_truncated(self, state: S, params: P) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, suit: jax.Array) -> jax.Array:
        return jax.nn.one_hot(suit, NUM_SUITS, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return NUM_SUITS

    def action_space(self, params: P | None = None) -> spaces.Discrete:
        return spaces.Discrete(NUM_SUITS)

    def observation_space(self, params: P | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (NUM_SUITS,), jnp.float32)
