"""POPGym CountRecall: say how often the queried card value has been dealt so far.

Two independently shuffled decks of ``num_decks`` decks each (``N = 52 *
num_decks`` cards) are dealt in step, one card from each per step: a value card
and a query card, both reduced to one attribute (colour, suit or rank, ``V``
distinct values). The observation is ``[one-hot value card (V), one-hot query
card (V)]``. At each step the agent answers with a count (``Discrete(N / V +
1)``) and earns ``+1 / (N - 1)`` if it equals the number of value cards dealt so
far (the one just shown included) that match the query card shown with them,
``-1 / (N - 1)`` otherwise; then the next pair is dealt. The episode terminates
after ``N - 1`` steps, so returns lie in [-1, 1] and counting the observed
value cards earns 1.

Differences from the reference (popgym 1.0.7 ``CountRecall``):

- The observation is the one-hot encoding of the reference's
  ``MultiDiscrete([V, V])``.
- Cards are drawn from the remaining value counts as they are dealt (see
  ``ssmrl.envs.popgym.cards``): the same distribution as dealing shuffled decks.
- ``info`` does not carry the reference's running ``counts``.
- The reference's ``error_clamp`` argument has no effect there and does not
  exist here.
- ``params.max_steps_in_episode`` (default ``N - 1``) truncates episodes that
  it cuts short; at the natural end the episode terminates and is not
  truncated, as in the reference.
- ``step`` is gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) with the step's
  and the reset's cards dealt from one key by `ssmrl.envs.popgym.rng` instead of
  from the two halves of a split key: the same distributions, fewer random draws.
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


@struct.dataclass
class CountRecallState(environment.EnvState):
    values_left: jax.Array  # (V,) int32, value-deck cards of each value not dealt
    queries_left: jax.Array  # (V,) int32, query-deck cards of each value not dealt
    counts: jax.Array  # (V,) int32, value cards of each value dealt so far
    query: jax.Array  # int32, the query shown in the latest observation
    time: int


@struct.dataclass
class CountRecallParams(environment.EnvParams):
    max_steps_in_episode: int = 51


class CountRecall(AutoReset[CountRecallState, CountRecallParams]):
    """Count how often each card value has been dealt.

    Args:
        num_decks: number of 52-card decks in each of the two decks.
        deck_type: the card attribute that is counted: "colors", "suits" or "ranks".

    Actions are cast to int32 and clipped to ``[0, N / V]``.
    """

    def __init__(self, num_decks: int = 1, deck_type: str = "colors"):
        super().__init__()
        if deck_type not in NUM_VALUES:
            raise ValueError(f"deck_type must be one of {sorted(NUM_VALUES)}, got {deck_type!r}")
        self.num_decks = num_decks
        self.deck_type = deck_type
        self.num_values = NUM_VALUES[deck_type]
        self.num_cards = num_cards = DECK_SIZE * num_decks
        self.max_count = num_cards // self.num_values
        self.episode_length = num_cards - 1
        self.reward_scale = 1.0 / self.episode_length

    @property
    def default_params(self) -> CountRecallParams:
        return CountRecallParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: CountRecallParams
    ) -> tuple[jax.Array, CountRecallState]:
        return self._start(*words(key, 2))

    def next_episode(
        self, key: jax.Array, state: CountRecallState, done: jax.Array, params: CountRecallParams
    ) -> tuple[CountRecallState, tuple[jax.Array, CountRecallState]]:
        # step_env deals from block 0 of the key's words.
        return state, self._start(*words(key, 2, block=1))

    def _start(
        self, value_word: jax.Array, query_word: jax.Array
    ) -> tuple[jax.Array, CountRecallState]:
        full = full_counts(self.num_decks, self.deck_type)
        value, values_left = deal(value_word, full, self.num_cards)
        query, queries_left = deal(query_word, full, self.num_cards)
        state = CountRecallState(
            values_left=values_left,
            queries_left=queries_left,
            counts=self._one(value),
            query=query,
            time=0,
        )
        return self._obs(value, query), state

    def step_env(
        self,
        key: jax.Array,
        state: CountRecallState,
        action: int | jax.Array,
        params: CountRecallParams,
    ) -> tuple[jax.Array, CountRecallState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, self.max_count)
        count = jnp.sum(jnp.where(self._one(state.query), state.counts, 0))
        reward = jnp.where(action == count, self.reward_scale, -self.reward_scale)
        value_word, query_word = words(key, 2)
        # Each deck has dealt one card at the reset and one per step.
        left = jnp.asarray(self.num_cards - 1 - state.time, jnp.int32)
        value, values_left = deal(value_word, state.values_left, left)
        query, queries_left = deal(query_word, state.queries_left, left)
        state = CountRecallState(
            values_left=values_left,
            queries_left=queries_left,
            counts=state.counts + self._one(value),
            query=query,
            time=state.time + 1,
        )
        terminated = state.time >= self.episode_length
        return self._obs(value, query), state, reward.astype(jnp.float32), terminated, {}

    def is_truncated(self, state: CountRecallState, params: CountRecallParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _one(self, value: jax.Array) -> jax.Array:
        """``(V,)`` int32 one-hot of ``value``; a compare is cheaper than a scatter or
        a gather under vmap."""
        return (jnp.arange(self.num_values) == value).astype(jnp.int32)

    def _obs(self, value: jax.Array, query: jax.Array) -> jax.Array:
        return jnp.concatenate([self._one(value), self._one(query)]).astype(jnp.float32)

    @property
    def num_actions(self) -> int:
        return self.max_count + 1

    def action_space(self, params: CountRecallParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.max_count + 1)

    def observation_space(self, params: CountRecallParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2 * self.num_values,), jnp.float32)


TASKS = {
    "CountRecallEasy": task(CountRecall, num_decks=1, deck_type="colors"),
    "CountRecallMedium": task(CountRecall, num_decks=2, deck_type="suits"),
    "CountRecallHard": task(CountRecall, num_decks=4, deck_type="ranks"),
}
ALIASES: dict[str, str] = {}
