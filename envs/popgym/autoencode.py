"""POPGym Autoencode: watch a whole deck being dealt, then recite its suits backwards.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are shown one card
per step. The observation is ``[one-hot watching flag (2), one-hot suit (4)]``:
while cards remain to be shown the flag is 1 (index 1 hot) and the suit is the
newest card's; the observation that shows the last card has flag 0. Then the
agent names the suits in reverse dealing order, the last card first; each of
those ``N`` steps pays ``+1 / N`` for the right suit and ``-1 / N`` otherwise and
observes flag 0 with suit 0. Actions while watching are ignored and pay 0. The
episode terminates after ``2N - 1`` steps, so returns lie in [-1, 1] and
reciting the observed suits backwards earns 1.

Differences from the reference (popgym 1.0.7 ``Autoencode``):

- The observation is the one-hot encoding of the reference's
  ``Tuple(Discrete(2), Discrete(4))``.
- Cards are drawn from the remaining suit counts as they are dealt (see
  ``ssmrl.envs.popgym.cards``): the same distribution as dealing a shuffled deck.
- ``params.max_steps_in_episode`` (default ``2N - 1``) truncates episodes that
  it cuts short; at the natural end the episode terminates and is not
  truncated, as in the reference.
- ``step`` is gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) with the
  step's card and the reset's first card dealt by the two random words of one
  hash of the step's key (`ssmrl.envs.popgym.rng`) instead of from the two
  halves of a split key: the same distributions, fewer random draws.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, deal, full_counts
from ssmrl.envs.popgym.rng import words

NUM_SUITS = NUM_VALUES["suits"]


@struct.dataclass
class AutoencodeState(environment.EnvState):
    remaining: jax.Array  # (4,) int32, cards of each suit not yet shown
    suits: jax.Array  # (N,) int8, suits of the shown cards in dealing order
    time: int


@struct.dataclass
class AutoencodeParams(environment.EnvParams):
    max_steps_in_episode: int = 103


class Autoencode(AutoReset[AutoencodeState, AutoencodeParams]):
    """Memorise a dealt sequence of suits and recite it backwards.

    Args:
        num_decks: number of 52-card decks shown; sets the episode length.

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    def __init__(self, num_decks: int = 1):
        super().__init__()
        self.num_decks = num_decks
        self.num_cards = DECK_SIZE * num_decks
        self.episode_length = 2 * self.num_cards - 1
        self.reward_scale = 1.0 / self.num_cards

    @property
    def default_params(self) -> AutoencodeParams:
        return AutoencodeParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: AutoencodeParams
    ) -> tuple[jax.Array, AutoencodeState]:
        return self._start(words(key, 1)[0])

    def next_episode(
        self, key: jax.Array, state: AutoencodeState, done: jax.Array, params: AutoencodeParams
    ) -> tuple[AutoencodeState, tuple[jax.Array, AutoencodeState]]:
        # step_env deals with the first word of the key's first hash, the reset the second.
        return state, self._start(words(key, 2)[1])

    def _start(self, word: jax.Array) -> tuple[jax.Array, AutoencodeState]:
        first, remaining = deal(word, full_counts(self.num_decks, "suits"), self.num_cards)
        suits = jnp.zeros((self.num_cards,), jnp.int8).at[0].set(first.astype(jnp.int8))
        state = AutoencodeState(remaining=remaining, suits=suits, time=0)
        return self._obs(self.num_cards > 1, first), state

    def step_env(
        self,
        key: jax.Array,
        state: AutoencodeState,
        action: int | jax.Array,
        params: AutoencodeParams,
    ) -> tuple[jax.Array, AutoencodeState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, NUM_SUITS - 1)
        n = self.num_cards
        time = state.time + 1
        watching = time < n
        # While watching, deal card number `time`; the draw is discarded afterwards.
        card, remaining = deal(words(key, 2)[0], state.remaining, n - time)
        slot = jnp.minimum(time, n - 1)
        dealt = jnp.where(watching, card.astype(jnp.int8), state.suits[slot])
        suits = state.suits.at[slot].set(dealt)
        # Reciting: step `time` asks for card 2n - 1 - time.
        asked = suits[jnp.clip(2 * n - 1 - time, 0, n - 1)]
        reward = jnp.where(action == asked, self.reward_scale, -self.reward_scale)
        reward = jnp.where(watching, 0.0, reward).astype(jnp.float32)
        state = AutoencodeState(
            remaining=jnp.where(watching, remaining, state.remaining), suits=suits, time=time
        )
        obs = self._obs(time < n - 1, jnp.where(watching, card, 0))
        return obs, state, reward, time >= self.episode_length, {}

    def is_truncated(self, state: AutoencodeState, params: AutoencodeParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, showing: jax.Array | bool, suit: jax.Array) -> jax.Array:
        flag = jax.nn.one_hot(jnp.asarray(showing).astype(jnp.int32), 2, dtype=jnp.float32)
        return jnp.concatenate([flag, jax.nn.one_hot(suit, NUM_SUITS, dtype=jnp.float32)])

    @property
    def num_actions(self) -> int:
        return NUM_SUITS

    def action_space(self, params: AutoencodeParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(NUM_SUITS)

    def observation_space(self, params: AutoencodeParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2 + NUM_SUITS,), jnp.float32)


TASKS = {
    "AutoencodeEasy": task(Autoencode, num_decks=1),
    "AutoencodeMedium": task(Autoencode, num_decks=2),
    "AutoencodeHard": task(Autoencode, num_decks=3),
}
ALIASES: dict[str, str] = {}
