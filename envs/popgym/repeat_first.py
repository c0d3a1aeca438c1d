"""POPGym RepeatFirst: keep naming the suit of the first card dealt.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are dealt one card
per step; the observation is the one-hot suit (4 values) of the newest card, the
reset observation being the first card. At every step the agent names a suit
(``Discrete(4)``) and earns ``+1 / (N - 1)`` if it is the first card's suit,
``-1 / (N - 1)`` otherwise. The episode terminates after ``N - 1`` steps (the
deck is empty), so returns lie in [-1, 1] and always answering the first
observation earns 1.

Differences from the reference (popgym 1.0.7 ``RepeatFirst``):

- The observation is the one-hot encoding of the reference's ``Discrete(4)``.
- Cards are drawn from the remaining suit counts as they are dealt (see
  ``ssmrl.envs.popgym.cards``): the same distribution as dealing a shuffled deck.
- ``params.max_steps_in_episode`` (default ``N - 1``) truncates episodes that
  it cuts short; at the natural end the episode terminates and is not
  truncated, as in the reference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, draw, full_counts

NUM_SUITS = NUM_VALUES["suits"]


@struct.dataclass
class RepeatFirstState(environment.EnvState):
    remaining: jax.Array  # (4,) int32, cards of each suit still in the deck
    first: jax.Array  # int32, suit of the first card
    time: int


@struct.dataclass
class RepeatFirstParams(environment.EnvParams):
    max_steps_in_episode: int = 51


class RepeatFirst(environment.Environment[RepeatFirstState, RepeatFirstParams]):
    """Name the first card's suit at every step.

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    def __init__(self, num_decks: int = 1):
        super().__init__()
        self.num_decks = num_decks
        self.episode_length = DECK_SIZE * num_decks - 1
        self.reward_scale = 1.0 / self.episode_length

    @property
    def default_params(self) -> RepeatFirstParams:
        return RepeatFirstParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: RepeatFirstParams
    ) -> tuple[jax.Array, RepeatFirstState]:
        first, remaining = draw(key, full_counts(self.num_decks, "suits"))
        return self._obs(first), RepeatFirstState(remaining=remaining, first=first, time=0)

    def step_env(
        self,
        key: jax.Array,
        state: RepeatFirstState,
        action: int | jax.Array,
        params: RepeatFirstParams,
    ) -> tuple[jax.Array, RepeatFirstState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, NUM_SUITS - 1)
        reward = jnp.where(action == state.first, self.reward_scale, -self.reward_scale)
        card, remaining = draw(key, state.remaining)
        state = state.replace(remaining=remaining, time=state.time + 1)
        terminated = state.time >= self.episode_length
        return self._obs(card), state, reward.astype(jnp.float32), terminated, {}

    def is_truncated(self, state: RepeatFirstState, params: RepeatFirstParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, suit: jax.Array) -> jax.Array:
        return jax.nn.one_hot(suit, NUM_SUITS, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return NUM_SUITS

    def action_space(self, params: RepeatFirstParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(NUM_SUITS)

    def observation_space(self, params: RepeatFirstParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (NUM_SUITS,), jnp.float32)


def _task(num_decks: int):
    def make() -> tuple[RepeatFirst, RepeatFirstParams]:
        env = RepeatFirst(num_decks=num_decks)
        return env, env.default_params

    return make


TASKS = {
    "RepeatFirstEasy": _task(1),
    "RepeatFirstMedium": _task(8),
    "RepeatFirstHard": _task(16),
}
ALIASES: dict[str, str] = {}
