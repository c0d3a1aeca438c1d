"""POPGym RepeatPrevious: name the suit of the card dealt ``k - 1`` steps before the newest.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are dealt one card
per step; the observation is the one-hot suit (4 values) of the newest card, the
reset observation being the first card. At step ``j`` (1-based) the agent has
seen cards ``1 .. j`` and names a suit (``Discrete(4)``); from step ``k`` on it
earns ``+1 / (N - k)`` if that is the suit of card ``j - k + 1`` and
``-1 / (N - k)`` otherwise (steps before ``k`` pay 0). The episode terminates
after ``N - 1`` steps, so returns lie in [-1, 1] and answering the observation
from ``k - 1`` steps back earns 1.

Differences from the reference (popgym 1.0.7 ``RepeatPrevious``):

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
class RepeatPreviousState(environment.EnvState):
    remaining: jax.Array  # (4,) int32, cards of each suit still in the deck
    recent: jax.Array  # (k,) int8, suit of card i (0-based) in slot i % k
    time: int


@struct.dataclass
class RepeatPreviousParams(environment.EnvParams):
    max_steps_in_episode: int = 51


class RepeatPrevious(environment.Environment[RepeatPreviousState, RepeatPreviousParams]):
    """Name the suit of the card ``k - 1`` cards before the newest one.

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.
        k: how far back the named card lies (``k = 1``: the newest card).

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    def __init__(self, num_decks: int = 1, k: int = 4):
        super().__init__()
        if not 1 <= k < DECK_SIZE * num_decks:
            raise ValueError(f"k must lie in [1, {DECK_SIZE * num_decks - 1}], got {k}")
        self.num_decks = num_decks
        self.k = k
        num_cards = DECK_SIZE * num_decks
        self.episode_length = num_cards - 1
        self.reward_scale = 1.0 / (num_cards - k)

    @property
    def default_params(self) -> RepeatPreviousParams:
        return RepeatPreviousParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: RepeatPreviousParams
    ) -> tuple[jax.Array, RepeatPreviousState]:
        first, remaining = draw(key, full_counts(self.num_decks, "suits"))
        recent = jnp.zeros((self.k,), jnp.int8).at[0].set(first.astype(jnp.int8))
        state = RepeatPreviousState(remaining=remaining, recent=recent, time=0)
        return self._obs(first), state

    def step_env(
        self,
        key: jax.Array,
        state: RepeatPreviousState,
        action: int | jax.Array,
        params: RepeatPreviousParams,
    ) -> tuple[jax.Array, RepeatPreviousState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, NUM_SUITS - 1)
        time = state.time + 1
        # Card time - k sits in the slot the new card (number `time`) is about to fill.
        slot = time % self.k
        correct = action == state.recent[slot]
        reward = jnp.where(correct, self.reward_scale, -self.reward_scale)
        reward = jnp.where(time >= self.k, reward, 0.0).astype(jnp.float32)
        card, remaining = draw(key, state.remaining)
        state = RepeatPreviousState(
            remaining=remaining,
            recent=state.recent.at[slot].set(card.astype(jnp.int8)),
            time=time,
        )
        return self._obs(card), state, reward, time >= self.episode_length, {}

    def is_truncated(self, state: RepeatPreviousState, params: RepeatPreviousParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, suit: jax.Array) -> jax.Array:
        return jax.nn.one_hot(suit, NUM_SUITS, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return NUM_SUITS

    def action_space(self, params: RepeatPreviousParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(NUM_SUITS)

    def observation_space(self, params: RepeatPreviousParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (NUM_SUITS,), jnp.float32)


def _task(num_decks: int, k: int):
    def make() -> tuple[RepeatPrevious, RepeatPreviousParams]:
        env = RepeatPrevious(num_decks=num_decks, k=k)
        return env, env.default_params

    return make


TASKS = {
    "RepeatPreviousEasy": _task(1, 4),
    "RepeatPreviousMedium": _task(2, 32),
    "RepeatPreviousHard": _task(3, 64),
}
ALIASES: dict[str, str] = {}
