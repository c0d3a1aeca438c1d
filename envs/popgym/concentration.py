"""POPGym Concentration: find matching pairs among face-down cards.

``num_decks`` shuffled decks (``N = 52 * num_decks`` cards) lie face down in a
row; two cards match when they share the value of ``deck_type`` (colour or rank,
``V`` distinct values). Each step the agent flips one card (``Discrete(N)``);
flips come in pairs. The observation is, for every position, the one-hot of its
value if the card is matched or in the current pair, else of the face-down
symbol ``V`` (``N * (V + 1)`` floats); after the second flip of a pair both
cards are shown once, then turned back unless they matched.

Rewards, with ``L = ceil(2N - N / (2N - 1))`` (the episode length):

- a matching pair (two different positions) pays ``1 / (N / 2)`` and stays face up;
- a pair that does not match (or the same position twice) pays ``-2 / L``;
- flipping a matched card pays ``-1 / L`` for each card of the pair so far (the
  pair is abandoned);
- the first flip of a pair otherwise pays 0.

Matching every card terminates the episode; it is truncated after ``L`` steps
(both can happen on the same step). Returns lie in [-1, 1]; knowing the layout,
flipping the pairs in turn earns 1 in ``N`` steps.

Differences from the reference (popgym 1.0.7 ``Concentration``):

- The observation is the one-hot encoding of the reference's
  ``MultiDiscrete([V + 1] * N)``, position by position.
- A position's value is drawn from the values not yet placed when it is first
  flipped (see ``ssmrl.envs.popgym.cards``); the layout seen is distributed as
  for a shuffled deck. ``reset_from_cards`` starts from a full layout instead.
- ``params.max_steps_in_episode`` (default ``L``) sets the time limit; the
  reward scales always use ``L``.
- ``step`` is gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`; the reset
  draws nothing) with the card dealt at a first flip chosen by the first random
  word of the step's key (`ssmrl.envs.popgym.rng`) instead of by a word of the
  first half of the split key: the same distribution, fewer random draws.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, card_values, deal, full_counts
from ssmrl.envs.popgym.rng import words


@struct.dataclass
class ConcentrationState(environment.EnvState):
    values: jax.Array  # (N,) int8, value at each position, -1 until first flipped
    remaining: jax.Array  # (V,) int32, values of each kind not yet placed
    face_up: jax.Array  # (N,) bool, matched cards
    first: jax.Array  # int32, position of the pair's first card, -1 if none
    time: int


@struct.dataclass
class ConcentrationParams(environment.EnvParams):
    max_steps_in_episode: int = 104


class Concentration(AutoReset[ConcentrationState, ConcentrationParams]):
    """The memory game: flip cards two at a time to find matching pairs.

    Args:
        num_decks: number of 52-card decks on the table.
        deck_type: what makes a pair match: "colors" or "ranks".

    Actions are cast to int32 and clipped to ``[0, N - 1]``.
    """

    def __init__(self, num_decks: int = 1, deck_type: str = "ranks"):
        super().__init__()
        if deck_type not in ("colors", "ranks"):
            raise ValueError(f"deck_type must be 'colors' or 'ranks', got {deck_type!r}")
        self.num_decks = num_decks
        self.deck_type = deck_type
        self.num_cards = n = DECK_SIZE * num_decks
        self.num_values = NUM_VALUES[deck_type]
        self.episode_length = math.ceil(2 * n - n / (2 * n - 1))
        self.success_reward = 1.0 / (n // 2)
        self.failure_reward = -1.0 / self.episode_length

    @property
    def default_params(self) -> ConcentrationParams:
        return ConcentrationParams(max_steps_in_episode=self.episode_length)

    def reset_from_cards(self, cards: jax.Array) -> tuple[jax.Array, ConcentrationState]:
        """Start an episode with card ids ``cards`` (shape ``(N,)``) at positions ``0..N-1``."""
        values = card_values(cards, self.deck_type).astype(jnp.int8)
        return self._start(values, jnp.zeros((self.num_values,), jnp.int32))

    def reset_env(
        self, key: jax.Array, params: ConcentrationParams
    ) -> tuple[jax.Array, ConcentrationState]:
        values = jnp.full((self.num_cards,), -1, jnp.int8)
        return self._start(values, full_counts(self.num_decks, self.deck_type))

    def _start(
        self, values: jax.Array, remaining: jax.Array
    ) -> tuple[jax.Array, ConcentrationState]:
        state = ConcentrationState(
            values=values,
            remaining=remaining,
            face_up=jnp.zeros((self.num_cards,), bool),
            first=jnp.full((), -1, jnp.int32),
            time=0,
        )
        return self._obs(values, state.face_up), state

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: ConcentrationState,
        action: int | jax.Array,
        params: ConcentrationParams | None = None,
    ) -> tuple[jax.Array, ConcentrationState, jax.Array, jax.Array, jax.Array, dict[Any, Any]]:
        """`AutoReset.step` (the same results for the same keys), building the
        large observation once instead of twice and selecting."""
        if params is None:
            params = self.default_params
        state_step, visible, reward, terminated = self._transition(key, state, action)
        truncated = self.is_truncated(state_step, params)
        done = terminated | truncated
        state_step, (_, state_reset) = self.next_episode(key, state_step, done, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_reset, state_step)
        info = {
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": self._obs(state_step.values, visible),
        }
        obs = self._obs(state.values, visible & ~done)
        return obs, state, reward, terminated, truncated, info

    def next_episode(
        self,
        key: jax.Array,
        state: ConcentrationState,
        done: jax.Array,
        params: ConcentrationParams,
    ) -> tuple[ConcentrationState, tuple[jax.Array, ConcentrationState]]:
        return state, self.reset_env(key, params)

    def step_env(
        self,
        key: jax.Array,
        state: ConcentrationState,
        action: int | jax.Array,
        params: ConcentrationParams,
    ) -> tuple[jax.Array, ConcentrationState, jax.Array, jax.Array, dict[Any, Any]]:
        state, visible, reward, terminated = self._transition(key, state, action)
        return self._obs(state.values, visible), state, reward, terminated, {}

    def _transition(
        self, key: jax.Array, state: ConcentrationState, action: int | jax.Array
    ) -> tuple[ConcentrationState, jax.Array, jax.Array, jax.Array]:
        """The next state, the positions shown, the reward and termination."""
        flip = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, self.num_cards - 1)
        positions = jnp.arange(self.num_cards)
        at_flip = positions == flip
        at_first = positions == state.first  # no position when there is no first card
        # Reading one position as a masked sum is cheaper than a gather under vmap.
        old = jnp.sum(jnp.where(at_flip, state.values, 0), dtype=jnp.int32)
        hidden = old < 0
        drawn, remaining = deal(words(key, 1)[0], state.remaining)
        value = jnp.where(hidden, drawn, old)
        values = jnp.where(at_flip, value.astype(jnp.int8), state.values)
        remaining = jnp.where(hidden, remaining, state.remaining)

        has_first = state.first >= 0
        in_pair = at_flip | at_first

        already_up = jnp.any(state.face_up & in_pair)
        first_value = jnp.sum(jnp.where(at_first, values, 0), dtype=jnp.int32)
        match = has_first & ~already_up & (first_value == value) & (state.first != flip)
        pair_reward = jnp.where(match, self.success_reward, 2 * self.failure_reward)
        reward = jnp.where(has_first, pair_reward, 0.0)
        reward = jnp.where(already_up, self.failure_reward * (1 + has_first), reward)
        face_up = state.face_up | (match & in_pair)
        state = ConcentrationState(
            values=values,
            remaining=remaining,
            face_up=face_up,
            first=jnp.where(has_first | already_up, -1, flip),
            time=state.time + 1,
        )
        terminated = match & face_up.all()
        return state, state.face_up | in_pair, reward.astype(jnp.float32), terminated

    def _obs(self, values: jax.Array, visible: jax.Array) -> jax.Array:
        width = self.num_values + 1
        shown = jnp.where(visible, values.astype(jnp.int32), self.num_values)
        if width <= 8:
            return jax.nn.one_hot(shown, width, dtype=jnp.float32).reshape(-1)
        # For ranks, writing the N ones into zeros is cheaper on CPU than comparing
        # all N * (V + 1) entries, whose short inner dimension does not vectorise.
        hot = jnp.arange(self.num_cards) * width + shown
        return (
            jnp.zeros((self.num_cards * width,), jnp.float32)
            .at[hot]
            .set(1.0, indices_are_sorted=True, unique_indices=True, mode="promise_in_bounds")
        )

    @property
    def num_actions(self) -> int:
        return self.num_cards

    def action_space(self, params: ConcentrationParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_cards)

    def observation_space(self, params: ConcentrationParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_cards * (self.num_values + 1),), jnp.float32)


TASKS = {
    "ConcentrationEasy": task(Concentration, num_decks=1, deck_type="colors"),
    "ConcentrationMedium": task(Concentration, num_decks=2, deck_type="colors"),
    "ConcentrationHard": task(Concentration, num_decks=1, deck_type="ranks"),
}
ALIASES: dict[str, str] = {}
