"""POPGym HigherLower: guess whether the next card's rank is higher or lower.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are dealt one card
per step; the observation is the one-hot rank (13 values, ace lowest) of the
newest card. Before each card the agent guesses (``Discrete(2)``: 0 = higher,
1 = lower) how its rank compares with the current card's; a right guess pays
``+1 / N``, a wrong one ``-1 / N`` and equal ranks pay 0. The episode terminates
after ``N - 1`` steps. Guesses do not change the cards, so counting the ranks
seen so far and guessing the likelier side is the optimal policy; no policy
reaches 1 (ties pay 0 and the next card is uncertain).

Differences from the reference (popgym 1.0.7 ``HigherLower``):

- The observation is the one-hot encoding of the reference's ``Discrete(13)``.
- Cards are drawn from the remaining rank counts as they are dealt (see
  ``ssmrl.envs.popgym.cards``): the same distribution as dealing a shuffled deck.
- There is no reset ``info`` (the reference's carries the card as text).
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

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, draw, full_counts

NUM_RANKS = NUM_VALUES["ranks"]


@struct.dataclass
class HigherLowerState(environment.EnvState):
    remaining: jax.Array  # (13,) int32, cards of each rank still in the deck
    rank: jax.Array  # int32, rank of the newest card
    time: int


@struct.dataclass
class HigherLowerParams(environment.EnvParams):
    max_steps_in_episode: int = 51


class HigherLower(environment.Environment[HigherLowerState, HigherLowerParams]):
    """Guess whether the next card ranks higher (action 0) or lower (action 1).

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.

    Actions are cast to int32 and clipped to ``[0, 1]``.
    """

    def __init__(self, num_decks: int = 1):
        super().__init__()
        self.num_decks = num_decks
        num_cards = DECK_SIZE * num_decks
        self.episode_length = num_cards - 1
        self.reward_scale = 1.0 / num_cards

    @property
    def default_params(self) -> HigherLowerParams:
        return HigherLowerParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: HigherLowerParams
    ) -> tuple[jax.Array, HigherLowerState]:
        rank, remaining = draw(key, full_counts(self.num_decks, "ranks"))
        return self._obs(rank), HigherLowerState(remaining=remaining, rank=rank, time=0)

    def step_env(
        self,
        key: jax.Array,
        state: HigherLowerState,
        action: int | jax.Array,
        params: HigherLowerParams,
    ) -> tuple[jax.Array, HigherLowerState, jax.Array, jax.Array, dict[Any, Any]]:
        guess_higher = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, 1) == 0
        rank, remaining = draw(key, state.remaining)
        correct = (rank > state.rank) == guess_higher
        reward = jnp.where(correct, self.reward_scale, -self.reward_scale)
        reward = jnp.where(rank == state.rank, 0.0, reward).astype(jnp.float32)
        state = HigherLowerState(remaining=remaining, rank=rank, time=state.time + 1)
        return self._obs(rank), state, reward, state.time >= self.episode_length, {}

    def is_truncated(self, state: HigherLowerState, params: HigherLowerParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, rank: jax.Array) -> jax.Array:
        return jax.nn.one_hot(rank, NUM_RANKS, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: HigherLowerParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: HigherLowerParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (NUM_RANKS,), jnp.float32)


TASKS = {
    "HigherLowerEasy": task(HigherLower, num_decks=1),
    "HigherLowerMedium": task(HigherLower, num_decks=2),
    "HigherLowerHard": task(HigherLower, num_decks=3),
}
ALIASES: dict[str, str] = {}
