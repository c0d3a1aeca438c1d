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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.cards import DECK_SIZE, NUM_VALUES, draw, full_counts


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


class CountRecall(environment.Environment[CountRecallState, CountRecallParams]):
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
        num_cards = DECK_SIZE * num_decks
        self.max_count = num_cards // self.num_values
        self.episode_length = num_cards - 1
        self.reward_scale = 1.0 / self.episode_length

    @property
    def default_params(self) -> CountRecallParams:
        return CountRecallParams(max_steps_in_episode=self.episode_length)

    def reset_env(
        self, key: jax.Array, params: CountRecallParams
    ) -> tuple[jax.Array, CountRecallState]:
        full = full_counts(self.num_decks, self.deck_type)
        key_value, key_query = jax.random.split(key)
        value, values_left = draw(key_value, full)
        query, queries_left = draw(key_query, full)
        state = CountRecallState(
            values_left=values_left,
            queries_left=queries_left,
            counts=jnp.zeros_like(full).at[value].set(1),
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
        correct = action == state.counts[state.query]
        reward = jnp.where(correct, self.reward_scale, -self.reward_scale).astype(jnp.float32)
        key_value, key_query = jax.random.split(key)
        value, values_left = draw(key_value, state.values_left)
        query, queries_left = draw(key_query, state.queries_left)
        state = CountRecallState(
            values_left=values_left,
            queries_left=queries_left,
            counts=state.counts.at[value].add(1),
            query=query,
            time=state.time + 1,
        )
        return self._obs(value, query), state, reward, state.time >= self.episode_length, {}

    def is_truncated(self, state: CountRecallState, params: CountRecallParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & (state.time < self.episode_length)

    def _obs(self, value: jax.Array, query: jax.Array) -> jax.Array:
        both = jax.nn.one_hot(jnp.stack([value, query]), self.num_values, dtype=jnp.float32)
        return both.reshape(-1)

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
