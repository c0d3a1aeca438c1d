"""POPGym RepeatFirst: keep naming the suit of the first card dealt.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) are dealt one card
per step; the observation is the one-hot suit (4 values) of the newest card, the
reset observation being the first card. At every step the agent names a suit
(``Discrete(4)``) and earns ``+1 / (N - 1)`` if it is the first card's suit,
``-1 / (N - 1)`` otherwise. The episode terminates after ``N - 1`` steps (the
deck is empty), so returns lie in [-1, 1] and always answering the first
observation earns 1.

The dealing, spaces and episode ends are those of
`ssmrl.envs.popgym.suit_repeat.SuitRepeat`, shared with RepeatPrevious, and so are the
differences from the reference (popgym 1.0.7 ``RepeatFirst``) listed there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.suit_repeat import SuitRepeat, SuitRepeatParams, SuitRepeatState


@struct.dataclass
class RepeatFirstState(SuitRepeatState):
    first: jax.Array  # int32, suit of the first card


@struct.dataclass
class RepeatFirstParams(SuitRepeatParams):
    pass


class RepeatFirst(SuitRepeat[RepeatFirstState, RepeatFirstParams]):
    """Name the first card's suit at every step.

    Args:
        num_decks: number of 52-card decks dealt; sets the episode length.

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    params_type = RepeatFirstParams

    def __init__(self, num_decks: int = 1):
        super().__init__(num_decks)
        self.reward_scale = 1.0 / self.episode_length

    def _start(self, first: jax.Array, remaining: jax.Array) -> RepeatFirstState:
        return RepeatFirstState(remaining=remaining, first=first, time=0)

    def _answer(
        self, state: RepeatFirstState, action: jax.Array, card: jax.Array, time: jax.Array
    ) -> tuple[jax.Array, RepeatFirstState]:
        return jnp.where(action == state.first, self.reward_scale, -self.reward_scale), state


TASKS = {
    "RepeatFirstEasy": task(RepeatFirst, num_decks=1),
    "RepeatFirstMedium": task(RepeatFirst, num_decks=8),
    "RepeatFirstHard": task(RepeatFirst, num_decks=16),
}
ALIASES: dict[str, str] = {}
