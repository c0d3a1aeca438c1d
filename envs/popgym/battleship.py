"""POPGym Battleship: sink hidden ships by firing at cells, seeing only hit or miss.

Ships of the given sizes are placed on a square board, each horizontally or
vertically, never overlapping. Each step the agent fires at one cell
(``action = row * board_size + col``) and observes whether it was a new hit
(one-hot of ``[miss, hit]``). A new hit pays ``1 / sum(ship_sizes)``; a miss or a
repeated shot pays ``-1 / (board_size**2 - sum(ship_sizes))``. The episode
terminates when every ship cell has been hit and is truncated after
``board_size**2`` shots. The observation does not contain the cell that was
shot, so the agent needs the previous action to solve the task. Returns lie in
``[-n / (n - sum(ship_sizes)), 1]`` with ``n = board_size**2``: as in the
reference, a run of misses can go below -1.

Differences from the reference (popgym 1.0.7 ``Battleship``):

- The action is one ``Discrete(board_size**2)`` index instead of
  ``MultiDiscrete([board_size, board_size])``; out-of-range indices are clipped
  to the nearest valid cell.
- The observation is the one-hot encoding of the reference's ``Discrete(2)``.
- Ships are placed without rejection sampling: each ship is drawn uniformly from
  the segments that fit on the board without touching cells of ships already
  placed. The reference's rejection loop draws from exactly this distribution
  (every segment of length >= 2 is reached from two of its start/direction draws).
  The uniform choice among ``k`` segments takes a random 32-bit word modulo ``k``
  (relative bias below ``k / 2**32``).
- The reward scales use ``board_size**2`` (the reference's episode length);
  ``params.max_steps_in_episode`` changes only the time limit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task


@struct.dataclass
class BattleshipState(environment.EnvState):
    board: jax.Array  # (n, n) bool, True where a ship lies
    guesses: jax.Array  # (n, n) bool, True where the agent has fired
    hits: jax.Array  # int32, number of distinct ship cells hit
    time: int


@struct.dataclass
class BattleshipParams(environment.EnvParams):
    max_steps_in_episode: int = 100


def place_ships(key: jax.Array, board_size: int, ship_sizes: tuple[int, ...]) -> jax.Array:
    """Random non-overlapping ship layout, shape ``(board_size, board_size)`` bool.

    Ships are placed in order; each one is uniform over the horizontal and
    vertical segments of its length that lie on the board and avoid earlier ships.
    """
    n, longest = board_size, max(ship_sizes)
    rows = jnp.arange(n)[:, None]
    cols = jnp.arange(n)[None, :]
    words = jax.random.bits(key, (len(ship_sizes),))

    def place(board, ship):
        size, word = ship
        # Cells past the board count as occupied, so segments must fit.
        padded = jnp.pad(board, ((0, longest - 1), (0, longest - 1)), constant_values=True)
        within = jnp.arange(longest) < size
        across = jnp.stack([padded[:n, k : k + n] & within[k] for k in range(longest)]).any(0)
        down = jnp.stack([padded[k : k + n, :n] & within[k] for k in range(longest)]).any(0)
        free = ~jnp.stack([across, down]).reshape(2 * n, n)
        # A uniform free segment: the (word % count)-th one, up to a relative
        # bias below count / 2**32. It is found row by row, as cumulative sums
        # over short axes are much cheaper than one over the whole board.
        per_row = free.sum(1, dtype=jnp.uint32)
        rank = word % jnp.maximum(per_row.sum(), 1)
        row_end = jnp.cumsum(per_row)
        row = jnp.sum(row_end <= rank)
        col = jnp.sum(jnp.cumsum(free[row], dtype=jnp.uint32) <= rank - row_end[row] + per_row[row])
        choice = row * n + col
        vertical, r, c = choice // (n * n), (choice // n) % n, choice % n
        ship = jnp.where(
            vertical,
            (cols == c) & (rows >= r) & (rows < r + size),
            (rows == r) & (cols >= c) & (cols < c + size),
        )
        return board | ship, None

    sizes = jnp.array(ship_sizes)
    board, _ = jax.lax.scan(place, jnp.zeros((n, n), bool), (sizes, words))
    return board


class Battleship(environment.Environment[BattleshipState, BattleshipParams]):
    """Battleship on a hidden ``board_size`` x ``board_size`` board.

    Args:
        board_size: width and height of the board in cells.
        ship_sizes: lengths of the ships to place.

    Actions are cast to int32 and clipped to ``[0, board_size**2 - 1]``.
    """

    def __init__(self, board_size: int = 10, ship_sizes: tuple[int, ...] = (2, 3, 3, 4)):
        super().__init__()
        self.board_size = board_size
        self.ship_sizes = tuple(ship_sizes)
        self.needed_hits = sum(self.ship_sizes)
        self.hit_reward = 1.0 / self.needed_hits
        self.miss_reward = -1.0 / (board_size**2 - self.needed_hits)

    @property
    def default_params(self) -> BattleshipParams:
        return BattleshipParams(max_steps_in_episode=self.board_size**2)

    def reset_from_board(self, board: jax.Array) -> tuple[jax.Array, BattleshipState]:
        """Start an episode on a given ship layout (``(n, n)``, nonzero = ship)."""
        board = jnp.asarray(board).astype(bool)
        state = BattleshipState(
            board=board,
            guesses=jnp.zeros_like(board),
            hits=jnp.zeros((), jnp.int32),
            time=0,
        )
        return self._obs(jnp.zeros((), bool)), state

    def reset_env(
        self, key: jax.Array, params: BattleshipParams
    ) -> tuple[jax.Array, BattleshipState]:
        return self.reset_from_board(place_ships(key, self.board_size, self.ship_sizes))

    def step_env(
        self,
        key: jax.Array,
        state: BattleshipState,
        action: int | jax.Array,
        params: BattleshipParams,
    ) -> tuple[jax.Array, BattleshipState, jax.Array, jax.Array, dict[Any, Any]]:
        n = self.board_size
        cell = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, n * n - 1)
        r, c = cell // n, cell % n
        hit = state.board[r, c] & ~state.guesses[r, c]
        hits = state.hits + hit.astype(jnp.int32)
        state = state.replace(
            guesses=state.guesses | ((jnp.arange(n)[:, None] == r) & (jnp.arange(n) == c)),
            hits=hits,
            time=state.time + 1,
        )
        reward = jnp.where(hit, self.hit_reward, self.miss_reward).astype(jnp.float32)
        terminated = hits >= self.needed_hits
        return self._obs(hit), state, reward, terminated, {}

    def _obs(self, hit: jax.Array) -> jax.Array:
        return jax.nn.one_hot(hit.astype(jnp.int32), 2, dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return self.board_size**2

    def action_space(self, params: BattleshipParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.board_size**2)

    def observation_space(self, params: BattleshipParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)


TASKS = {
    "BattleshipEasy": task(Battleship, board_size=8),
    "BattleshipMedium": task(Battleship, board_size=10),
    "BattleshipHard": task(Battleship, board_size=12),
}
ALIASES: dict[str, str] = {}
