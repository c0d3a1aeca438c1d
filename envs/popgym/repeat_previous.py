"""POPGym RepeatPrevious: name the suit of the card dealt ``k - 1`` steps before the newest.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are dealt one card
per step; the observation is the one-hot suit (4 values) of the newest card, the
reset observation being the first card. At step ``j`` (1-based) the agent has
seen cards ``1 .. j`` and names a suit (``Discrete(4)``); from step ``k`` on it
earns ``+1 / (N - k)`` if that is the suit of card ``j - k + 1`` and
``-1 / (N - k)`` otherwise (steps before ``k`` pay 0). The episode terminates
after ``N - 1`` steps, so returns lie in [-1, 1] and answering the observation
from ``k - 1`` steps back earns 1.

The dealing, spaces and episode ends are those of
`ssmrl.envs.popgym.suit_repeat.SuitRepeat`, shared with RepeatFirst, and so are the
differences from the reference (popgym 1.0.7 ``RepeatPrevious``) listed there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.cards import DECK_SIZE
from ssmrl.envs.popgym.suit_repeat import SuitRepeat, SuitRepeatParams, SuitRepeatState


@struct.dataclass
class RepeatPreviousState(SuitRepeatState):
    recent: jax.Array  # (k,) int8, suit of card i (0-based) in slot i % k


@struct.dataclass
class RepeatPreviousParams(SuitRepeatParams):
    pass


class RepeatPrevious(SuitRepeat[RepeatPreviousState, RepeatPreviousParams]):
    """Name the suit of the card ``k - 1`` cards before the newest one.

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.
        k: how far back the named card lies (``k = 1``: the newest card).

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    params_type = RepeatPreviousParams

    def __init__(self, num_decks: int = 1, k: int = 4):
        if not 1 <= k < DECK_SIZE * num_decks:
            raise ValueError(f"k must lie in [1, {DECK_SIZE * num_decks - 1}], got {k}")
        super().__init__(num_decks)
        self.k = k
        self.reward_scale = 1.0 / (DECK_SIZE * num_decks - k)

    def _start(self, first: jax.Array, remaining: jax.Array) -> RepeatPreviousState:
        recent = jnp.zeros((self.k,), jnp.int8).at[0].set(first.astype(jnp.int8))
        return RepeatPreviousState(remaining=remaining, recent=recent, time=0)

    def _answer(
        self, state: RepeatPreviousState, action: jax.Array, card: jax.Array, time: jax.Array
    ) -> tuple[jax.Array, RepeatPreviousState]:
        # Card time - k sits in the slot the new card (number `time`) is about to fill.
        slot = time % self.k
        reward = jnp.where(action == state.recent[slot], self.reward_scale, -self.reward_scale)
        reward = jnp.where(time >= self.k, reward, 0.0)
        return reward, state.replace(recent=state.recent.at[slot].set(card.astype(jnp.int8)))


TASKS = {
    "RepeatPreviousEasy": task(RepeatPrevious, num_decks=1, k=4),
    "RepeatPreviousMedium": task(RepeatPrevious, num_decks=2, k=32),
    "RepeatPreviousHard": task(RepeatPrevious, num_decks=3, k=64),
}
ALIASES: dict[str, str] = {}
