"""POPGym MultiarmedBandit: find and exploit the best of ``num_arms`` Bernoulli arms.

Each episode draws a payout probability per arm uniformly from ``[0, 1)``.
Pulling an arm (``Discrete(num_arms)``) pays ``+1 / L`` with that arm's
probability and ``-1 / L`` otherwise, where ``L = params.max_steps_in_episode``;
the observation is the one-hot outcome (``[1, 0]`` lost, ``[0, 1]`` won; the
reset observation is ``[1, 0]``). Episodes never terminate and are truncated
after ``L`` pulls, so returns lie in [-1, 1] and always pulling arm ``a`` has
expected return ``2 p_a - 1``. Tasks: Easy 10 arms / 200 pulls, Medium 20 / 400,
Hard 30 / 600. The observation does not say which arm was pulled; as in POPGym,
pair it with the previous action (``ssmrl.envs.wrappers``).

Differences from the reference (popgym 1.0.7 ``MultiarmedBandit``):

- The observation is the one-hot encoding of the reference's ``Discrete(2)``.
- The reference's ``info["bandits"]`` (the hidden probabilities) is not
  returned; they are in ``state.probs``.
- Random numbers come from JAX's generator, not numpy's.
- Actions are clipped to ``[0, num_arms - 1]`` (the reference indexes its
  probabilities with the action, so it raises for ``action >= num_arms`` and
  wraps negative actions around).
- ``step`` overrides gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) so
  that ``num_arms`` probabilities are not drawn every step: each state carries
  the next episode's probabilities, drawn one per step (the rest at the reset if
  the episode ends sooner). They have the same distribution; which probabilities
  follow is fixed by the steps of the episode before instead of by the key of
  the step that ends it. A step's pull and probability come from one key
  (`ssmrl.envs.popgym.rng`) instead of the two halves of a split key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.rng import uniform, words


@struct.dataclass
class MultiarmedBanditState(environment.EnvState):
    probs: jax.Array  # (num_arms,) float32, payout probability of each arm
    next_probs: jax.Array  # (num_arms,) float32, the next episode's, being drawn
    drawn: jax.Array  # int32, entries of next_probs drawn so far
    time: int


@struct.dataclass
class MultiarmedBanditParams(environment.EnvParams):
    max_steps_in_episode: int = 200


class MultiarmedBandit(AutoReset[MultiarmedBanditState, MultiarmedBanditParams]):
    """Episodic Bernoulli bandit with arm probabilities drawn at each reset.

    Args:
        num_arms: number of arms.

    Actions are cast to int32 and clipped to ``[0, num_arms - 1]``.
    """

    def __init__(self, num_arms: int = 10):
        super().__init__()
        if num_arms < 1:
            raise ValueError(f"num_arms must be positive, got {num_arms}")
        self.num_arms = num_arms

    @property
    def default_params(self) -> MultiarmedBanditParams:
        return MultiarmedBanditParams()

    def reset_env(
        self, key: jax.Array, params: MultiarmedBanditParams
    ) -> tuple[jax.Array, MultiarmedBanditState]:
        return self._start(jax.random.uniform(key, (self.num_arms,), jnp.float32))

    def _start(self, probs: jax.Array) -> tuple[jax.Array, MultiarmedBanditState]:
        state = MultiarmedBanditState(
            probs=probs, next_probs=jnp.zeros_like(probs), drawn=jnp.zeros((), jnp.int32), time=0
        )
        return self._obs(jnp.zeros((), bool)), state

    def _draw_next(self, state: MultiarmedBanditState, word: jax.Array) -> MultiarmedBanditState:
        """Draw the next missing entry of ``state.next_probs`` from a random uint32
        ``word`` (a no-op once all are)."""
        arm = jnp.arange(self.num_arms) == state.drawn
        return state.replace(
            next_probs=jnp.where(arm, uniform(word), state.next_probs),
            drawn=jnp.minimum(state.drawn + 1, self.num_arms),
        )

    def next_episode(
        self,
        key: jax.Array,
        state: MultiarmedBanditState,
        done: jax.Array,
        params: MultiarmedBanditParams,
    ) -> tuple[MultiarmedBanditState, tuple[jax.Array, MultiarmedBanditState]]:
        """Draw one probability of the next episode; where the episode ends before
        all are drawn (a short time limit), draw the rest."""
        # step_env uses the first word of block 0, this step's probability the
        # second; block k (>= 1 drawn) a probability drawn at the end.
        state = self._draw_next(state, words(key, 2)[1])

        def unfinished(state):
            return done & (state.drawn < self.num_arms)

        def draw(state):
            return self._draw_next(state, words(key, 1, block=state.drawn)[0])

        state = jax.lax.while_loop(unfinished, draw, state)
        return state, self._start(state.next_probs)

    def step_env(
        self,
        key: jax.Array,
        state: MultiarmedBanditState,
        action: int | jax.Array,
        params: MultiarmedBanditParams,
    ) -> tuple[jax.Array, MultiarmedBanditState, jax.Array, jax.Array, dict[Any, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, self.num_arms - 1)
        prob = jnp.sum(jnp.where(jnp.arange(self.num_arms) == action, state.probs, 0.0))
        won = uniform(words(key, 1)[0]) < prob
        reward = jnp.where(won, 1.0, -1.0) / params.max_steps_in_episode
        state = state.replace(time=state.time + 1)
        terminated = jnp.zeros((), bool)
        return self._obs(won), state, reward.astype(jnp.float32), terminated, {}

    def _obs(self, won: jax.Array) -> jax.Array:
        return jnp.stack([~won, won]).astype(jnp.float32)

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def action_space(self, params: MultiarmedBanditParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms)

    def observation_space(self, params: MultiarmedBanditParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)


TASKS = {
    f"MultiarmedBandit{level}": task(
        MultiarmedBandit, num_arms=num_arms, params={"max_steps_in_episode": max_steps}
    )
    for level, num_arms, max_steps in (("Easy", 10, 200), ("Medium", 20, 400), ("Hard", 30, 600))
}
ALIASES = {
    f"MultiArmedBandit{level}": f"MultiarmedBandit{level}" for level in ("Easy", "Medium", "Hard")
}
