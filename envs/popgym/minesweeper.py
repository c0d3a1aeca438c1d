"""POPGym MineSweeper: clear a hidden minefield, seeing only the clicked cell's count.

Mines lie hidden on a ``rows`` x ``cols`` board. Each step the agent clicks one
cell (``action = row * cols + col``) and observes the number of mines in the 3x3
block centred on that cell (the cell itself included), one-hot encoded over
``min(num_mines + 1, 10)`` values. Clearing a new free cell pays ``1 / L`` with
``L = rows * cols - num_mines``; clicking a cleared cell again pays
``-0.5 / (L - 2)``; clicking a mine pays ``-0.5 - 1 / L`` and terminates the
episode. The episode also terminates once every free cell is cleared, and is
truncated after ``L`` clicks. The reset observation is the count 0.

Differences from the reference (popgym 1.0.7 ``MineSweeper``):

- The action is one ``Discrete(rows * cols)`` index instead of
  ``MultiDiscrete([rows, cols])``; out-of-range indices are clipped to the
  nearest valid cell.
- The observation is the one-hot encoding of the reference's ``Discrete``.
- The reward scales use ``L`` (the reference's episode length);
  ``params.max_steps_in_episode`` changes only the time limit.
- Mines are placed by Floyd's algorithm (`sample_mines`), each choice a random
  32-bit word modulo the number of options (relative bias below
  ``rows * cols / 2**32``), so that the reset gymnax draws every step is cheap.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task


def sample_mines(key: jax.Array, num_cells: int, num_mines: int) -> jax.Array:
    """A uniform random ``num_mines``-subset of ``num_cells`` cells as a ``(num_cells,)`` mask.

    Floyd's algorithm: for ``j = num_cells - num_mines, ..., num_cells - 1`` draw ``t``
    uniform in ``[0, j]`` and add ``t`` to the set, or ``j`` if ``t`` is already in
    it; every subset has probability ``1 / C(num_cells, num_mines)``. ``t`` is a
    random 32-bit word modulo ``j + 1`` (relative bias below ``num_cells / 2**32``).
    The set is kept as the bits of a few 32-bit words, so each draw costs a few
    operations instead of a pass over the board.
    """
    words = jax.random.bits(key, (num_mines,))
    lanes = jnp.arange(-(-num_cells // 32), dtype=jnp.uint32)
    chosen = jnp.zeros(lanes.shape, jnp.uint32)
    for i in range(num_mines):
        j = num_cells - num_mines + i
        t = words[i] % jnp.uint32(j + 1)
        taken = (jnp.sum(jnp.where(lanes == t // 32, chosen, 0)) >> (t % 32)) & 1
        cell = jnp.where(taken == 1, jnp.uint32(j), t)
        chosen = chosen | jnp.where(lanes == cell // 32, jnp.uint32(1) << (cell % 32), 0)
    cells = np.arange(num_cells)
    return ((chosen[cells // 32] >> (cells % 32).astype(np.uint32)) & 1).astype(bool)


@struct.dataclass
class MineSweeperState(environment.EnvState):
    mines: jax.Array  # (rows, cols) bool
    cleared: jax.Array  # (rows, cols) bool, free cells the agent has clicked
    exploded: jax.Array  # bool, the last click hit a mine
    time: int


@struct.dataclass
class MineSweeperParams(environment.EnvParams):
    max_steps_in_episode: int = 14


class MineSweeper(environment.Environment[MineSweeperState, MineSweeperParams]):
    """MineSweeper with the board hidden.

    Args:
        dims: ``(rows, cols)`` of the board.
        num_mines: number of mines, placed uniformly without replacement.

    Actions are cast to int32 and clipped to ``[0, rows * cols - 1]``.
    """

    def __init__(self, dims: tuple[int, int] = (4, 4), num_mines: int = 2):
        super().__init__()
        self.dims = tuple(dims)
        self.num_mines = num_mines
        self.num_cells = self.dims[0] * self.dims[1]
        self.num_obs = min(num_mines + 1, 10)
        length = self.num_cells - num_mines
        self.clear_reward = 1.0 / length
        self.mine_reward = -0.5 - self.clear_reward
        self.repeat_reward = -0.5 / (length - 2)

    @property
    def default_params(self) -> MineSweeperParams:
        return MineSweeperParams(max_steps_in_episode=self.num_cells - self.num_mines)

    def reset_from_mines(self, mines: jax.Array) -> tuple[jax.Array, MineSweeperState]:
        """Start an episode on a given minefield (``(rows, cols)``, nonzero = mine)."""
        mines = jnp.asarray(mines).astype(bool)
        state = MineSweeperState(
            mines=mines,
            cleared=jnp.zeros_like(mines),
            exploded=jnp.zeros((), bool),
            time=0,
        )
        return self._obs(jnp.zeros((), jnp.int32)), state

    def reset_env(
        self, key: jax.Array, params: MineSweeperParams
    ) -> tuple[jax.Array, MineSweeperState]:
        mines = sample_mines(key, self.num_cells, self.num_mines)
        return self.reset_from_mines(mines.reshape(self.dims))

    def step_env(
        self,
        key: jax.Array,
        state: MineSweeperState,
        action: int | jax.Array,
        params: MineSweeperParams,
    ) -> tuple[jax.Array, MineSweeperState, jax.Array, jax.Array, dict[Any, Any]]:
        cell = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, self.num_cells - 1)
        r, c = cell // self.dims[1], cell % self.dims[1]
        mine = state.mines[r, c]
        repeat = state.cleared[r, c]
        reward = jnp.where(
            mine, self.mine_reward, jnp.where(repeat, self.repeat_reward, self.clear_reward)
        ).astype(jnp.float32)
        rows = jnp.arange(self.dims[0])[:, None]
        cols = jnp.arange(self.dims[1])[None, :]
        block = (jnp.abs(rows - r) <= 1) & (jnp.abs(cols - c) <= 1)
        count = jnp.sum(state.mines & block, dtype=jnp.int32)
        state = state.replace(
            cleared=state.cleared | ((rows == r) & (cols == c) & ~mine),
            exploded=mine,
            time=state.time + 1,
        )
        return self._obs(count), state, reward, self.is_terminated(state, params), {}

    def is_terminated(self, state: MineSweeperState, params: MineSweeperParams) -> jax.Array:
        return state.exploded | jnp.all(state.cleared | state.mines)

    def is_truncated(self, state: MineSweeperState, params: MineSweeperParams) -> jax.Array:
        # As in the reference, a terminal step is never also truncated.
        over_time = state.time >= params.max_steps_in_episode
        return over_time & ~self.is_terminated(state, params)

    def _obs(self, count: jax.Array) -> jax.Array:
        return jax.nn.one_hot(count, self.num_obs, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return self.num_cells

    def action_space(self, params: MineSweeperParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_cells)

    def observation_space(self, params: MineSweeperParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_obs,), jnp.float32)


TASKS = {
    "MineSweeperEasy": task(MineSweeper, dims=(4, 4), num_mines=2),
    "MineSweeperMedium": task(MineSweeper, dims=(6, 6), num_mines=6),
    "MineSweeperHard": task(MineSweeper, dims=(8, 8), num_mines=10),
}
ALIASES = {
    "MinesweeperEasy": "MineSweeperEasy",
    "MinesweeperMedium": "MineSweeperMedium",
    "MinesweeperHard": "MineSweeperHard",
}
