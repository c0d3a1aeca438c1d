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
- ``step`` overrides gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) so
  that a whole layout is not placed every step: each state carries the next
  episode's layout, built by one proposed ship per step, kept if it fits (the
  reference's rejection sampling spread over the steps); ships still missing
  when the episode ends are placed then, each uniform over the segments that
  fit. Layouts have the same distribution; which layout follows is fixed by the
  steps of the episode before instead of by the key of the step that ends it.
  ``reset`` places all ships.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.bits import bit_at, pack_rows, pick_bit, with_bit
from ssmrl.envs.popgym.rng import words


@struct.dataclass
class BattleshipState(environment.EnvState):
    board: jax.Array  # (n,) uint32, bit c of row r set where a ship lies at (r, c)
    guesses: jax.Array  # (n,) uint32, bits set where the agent has fired
    hits: jax.Array  # int32, number of distinct ship cells hit
    next_board: jax.Array  # (n,) uint32, the next episode's layout, being placed
    placed: jax.Array  # int32, ships of next_board placed so far
    time: int


@struct.dataclass
class BattleshipParams(environment.EnvParams):
    max_steps_in_episode: int = 100


def place_ship(rows: jax.Array, size: jax.Array, word: jax.Array, longest: int) -> jax.Array:
    """Add a ship of ``size`` (at most ``longest``) cells to the packed board ``rows``.

    The ship is uniform over the horizontal and vertical segments that lie on the
    board and avoid the ships already there: the ``(word % count)``-th of them,
    up to a relative bias below ``count / 2**32``.
    """
    n = rows.shape[0]
    full = jnp.uint32((1 << n) - 1)
    size = jnp.asarray(size, jnp.uint32)
    # A segment starting at bit c of row r is blocked if a ship covers one of
    # its cells: bits c .. c + size - 1 of row r (horizontal) or bit c of rows
    # r .. r + size - 1 (vertical).
    across, down = rows, rows
    for k in range(1, longest):
        longer = k < size
        across = across | jnp.where(longer, rows >> k, 0)
        down = down | jnp.where(longer, jnp.pad(rows[k:], (0, k)), 0)
    fits_across = full >> (size - 1)  # start columns 0 .. n - size
    fits_down = jnp.arange(n, dtype=jnp.uint32) <= n - size
    free = jnp.concatenate([~across & fits_across, jnp.where(fits_down, ~down & full, 0)])
    line, col = pick_bit(free, word, n)
    row = (line % n).astype(jnp.uint32)
    col = col.astype(jnp.uint32)
    r = jnp.arange(n, dtype=jnp.uint32)
    horizontal = jnp.where(r == row, ((jnp.uint32(1) << size) - 1) << col, 0)
    vertical = jnp.where((r >= row) & (r < row + size), jnp.uint32(1) << col, 0)
    return rows | jnp.where(line < n, horizontal, vertical)


def propose_ship(rows: jax.Array, size: jax.Array, word: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(rows, fits)``: ``rows`` with one proposed ship of ``size`` cells added if it fits.

    The proposal is a start cell, ``(word >> 1) % n**2``, and a direction, across
    when bit 0 of ``word`` is clear and down when set; it fits when it lies on the
    board and avoids the ships already there. Every segment that fits is one
    proposal (a single cell is two), so a proposal that is retried until it fits
    gives the same ship as `place_ship`: uniform over the segments that fit.
    """
    n = rows.shape[0]
    size = jnp.asarray(size, jnp.uint32)
    cell = (word >> 1) % jnp.uint32(n * n)
    row, col = cell // n, cell % n
    down = (word & 1) == 1
    r = jnp.arange(n, dtype=jnp.uint32)
    across = jnp.where(r == row, ((jnp.uint32(1) << size) - 1) << col, 0)
    vertical = jnp.where((r >= row) & (r < row + size), jnp.uint32(1) << col, 0)
    ship = jnp.where(down, vertical, across)
    fits = (jnp.where(down, row, col) + size <= n) & jnp.all((rows & ship) == 0)
    return rows | jnp.where(fits, ship, 0), fits


def place_ships(key: jax.Array, board_size: int, ship_sizes: tuple[int, ...]) -> jax.Array:
    """Random non-overlapping ship layout, packed by rows (``ssmrl.envs.popgym.bits``).

    Ships are placed in order, each uniform over the horizontal and vertical
    segments of its length that lie on the board and avoid earlier ships.
    """
    words = jax.random.bits(key, (len(ship_sizes),))
    rows = jnp.zeros(board_size, jnp.uint32)
    for size, word in zip(ship_sizes, words, strict=True):
        rows = place_ship(rows, size, word, max(ship_sizes))
    return rows


class Battleship(AutoReset[BattleshipState, BattleshipParams]):
    """Battleship on a hidden ``board_size`` x ``board_size`` board.

    Args:
        board_size: width and height of the board in cells, at most 32.
        ship_sizes: lengths of the ships to place.

    Actions are cast to int32 and clipped to ``[0, board_size**2 - 1]``. Boards
    are kept as one 32-bit word per row (``ssmrl.envs.popgym.bits``).
    """

    def __init__(self, board_size: int = 10, ship_sizes: tuple[int, ...] = (2, 3, 3, 4)):
        super().__init__()
        if not 1 <= board_size <= 32:
            raise ValueError(f"board_size must be in [1, 32], got {board_size}")
        if not ship_sizes or min(ship_sizes) < 1 or max(ship_sizes) > board_size:
            raise ValueError(f"ship sizes must be in [1, board_size], got {ship_sizes}")
        self.board_size = board_size
        self.ship_sizes = tuple(ship_sizes)
        self.needed_hits = sum(self.ship_sizes)
        self.hit_reward = 1.0 / self.needed_hits
        self.miss_reward = -1.0 / (board_size**2 - self.needed_hits)

    @property
    def default_params(self) -> BattleshipParams:
        return BattleshipParams(max_steps_in_episode=self.board_size**2)

    def reset_from_board(self, board: jax.Array) -> tuple[jax.Array, BattleshipState]:
        """Start an episode on a given ship layout (``(n, n)``, nonzero = ship).

        The next episode's layout is placed during this one.
        """
        return self._start(pack_rows(jnp.asarray(board).astype(bool)))

    def reset_env(
        self, key: jax.Array, params: BattleshipParams
    ) -> tuple[jax.Array, BattleshipState]:
        return self._start(place_ships(key, self.board_size, self.ship_sizes))

    def _start(self, board: jax.Array) -> tuple[jax.Array, BattleshipState]:
        empty = jnp.zeros(self.board_size, jnp.uint32)
        zero = jnp.zeros((), jnp.int32)
        state = BattleshipState(
            board=board, guesses=empty, hits=zero, next_board=empty, placed=zero, time=0
        )
        return self._obs(jnp.zeros((), bool)), state

    def _ship_size(self, placed: jax.Array) -> jax.Array:
        sizes = jnp.asarray(self.ship_sizes)
        return jnp.sum(jnp.where(jnp.arange(len(self.ship_sizes)) == placed, sizes, 0))

    def next_episode(
        self, key: jax.Array, state: BattleshipState, done: jax.Array, params: BattleshipParams
    ) -> tuple[BattleshipState, tuple[jax.Array, BattleshipState]]:
        """Propose one ship of the next layout (kept if it fits); where the episode
        ends before all are placed, place the rest with `place_ship`."""
        # step_env draws nothing: block 0 of the key's words is this step's
        # proposal, block 1 + k the ship placed at the end with k already placed.
        count, longest = len(self.ship_sizes), max(self.ship_sizes)
        board, fits = propose_ship(
            state.next_board, self._ship_size(state.placed), words(key, 1)[0]
        )
        busy = state.placed < count
        state = state.replace(
            next_board=jnp.where(busy, board, state.next_board),
            placed=state.placed + (busy & fits).astype(jnp.int32),
        )

        def unfinished(state):
            return done & (state.placed < count)

        def place(state):
            word = words(key, 1, block=1 + state.placed)[0]
            board = place_ship(state.next_board, self._ship_size(state.placed), word, longest)
            return state.replace(next_board=board, placed=state.placed + 1)

        state = jax.lax.while_loop(unfinished, place, state)
        return state, self._start(state.next_board)

    def step_env(
        self,
        key: jax.Array,
        state: BattleshipState,
        action: int | jax.Array,
        params: BattleshipParams,
    ) -> tuple[jax.Array, BattleshipState, jax.Array, jax.Array, dict[Any, Any]]:
        n = self.board_size
        cell = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, n * n - 1)
        row, col = cell // n, cell % n
        hit = bit_at(state.board & ~state.guesses, row, col)
        hits = state.hits + hit.astype(jnp.int32)
        state = state.replace(
            guesses=with_bit(state.guesses, row, col),
            hits=hits,
            time=state.time + 1,
        )
        reward = jnp.where(hit, self.hit_reward, self.miss_reward).astype(jnp.float32)
        terminated = hits >= self.needed_hits
        return self._obs(hit), state, reward, terminated, {}

    def _obs(self, hit: jax.Array) -> jax.Array:
        return jnp.stack([~hit, hit]).astype(jnp.float32)

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
