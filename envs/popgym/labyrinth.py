"""POPGym LabyrinthEscape and LabyrinthExplore: move through a random maze.

Both tasks share one maze, movement and observation model. A maze of
``maze_dims // 2`` rooms is generated with the hunt-and-kill algorithm (random
hunting, as mazelib's ``HuntAndKill``) on a ``(maze_dims[0] + 1, maze_dims[1] + 1)``
grid of wall and free squares, and two openings are cut into opposite sides of
the outer wall, at room rows/columns: the start, where the agent begins, and the
goal. Actions are left, right, up, down (``Discrete(4)``); moves into walls or off
the grid leave the agent in place. The observation is the 3x3 block of grid
squares around the agent (free 0, wall 1, start 2, goal 3, hidden 4; each one-hot
over 5 values, row-major) followed by the one-hot of the last action (4 =
"none", at reset): 50 floats. As in the reference, when the agent stands in the
top or left outer wall the block is not centred: it starts at the agent's row or
column and is filled with walls at the far side.

- ``LabyrinthEscape``: every step pays ``-1 / max_steps_in_episode``; reaching the
  goal pays ``+1`` more and terminates.
- ``LabyrinthExplore``: the goal opening stays closed. Stepping onto a square
  not visited before pays ``1 / (number of free squares)`` (the start excluded,
  so exploring everything sums to 1); any other step pays
  ``-1 / max_steps_in_episode``. Visiting every reachable square terminates.

Episodes are truncated after ``max_steps_in_episode - 1`` steps (1023 by
default), as in the reference.

Differences from the reference (popgym 1.0.7 ``LabyrinthEscape`` /
``LabyrinthExplore``):

- The observation is the one-hot encoding of the reference's ``MultiDiscrete``.
- Actions outside ``[0, 3]`` are clipped after casting to int32 (the reference
  raises on them).
- Maze generation runs in JAX. It follows the same random process as mazelib's
  ``HuntAndKill`` with random hunting: hunting repeatedly picks uniform random
  rooms and walks from the first visited room with an unvisited neighbour, which
  is the same as picking uniformly among such rooms, as done here directly.
  mazelib stops hunting after a fixed number of tries and can in principle leave
  rooms unvisited (walled in); this never happens here (we measured 0 in 6000
  mazelib mazes of the three sizes). Uniform choices among ``k`` options take a
  random 32-bit word modulo ``k`` (relative bias below ``k / 2**32``).
- ``step`` overrides gymnax's auto-reset (`ssmrl.envs.popgym.autoreset`) so
  that a maze is not generated every step: each state carries the next
  episode's maze, drawn when the episode starts and carved a few passages per
  step (the rest at the reset if the episode ends sooner). Mazes have the same
  distribution; which maze follows is fixed by the reset key instead of by the
  key of the step that ends the episode. ``reset`` generates its maze whole.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.bits import bit_at, pick_bit, unpack_rows, with_bit
from ssmrl.envs.popgym.rng import words

FREE, WALL, START, GOAL, HIDDEN = 0, 1, 2, 3, 4
NUM_CELL_TYPES = 5
NUM_MOVES = 4
NO_ACTION = 4
# (row, col) offsets of the actions left, right, up, down.
MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], np.int32)


@struct.dataclass
class MazeBuilder:
    """A hunt-and-kill maze of ``rows x cols`` rooms being carved.

    Room masks are packed by rows (``ssmrl.envs.popgym.bits``): bit ``c`` of
    entry ``r`` is room ``(r, c)``. ``choices`` holds the random choices made
    before carving: the first room, the side of the start opening, the start and
    goal positions. Each carved passage takes two more (`carve_maze`'s ``words``).
    """

    choices: jax.Array  # (4,) uint32
    visited: jax.Array  # (rows,) uint32
    room: jax.Array  # (2,) int32, row and column of the walk's current room
    right: jax.Array  # (rows,) uint32, passage to the right neighbour
    down: jax.Array  # (rows,) uint32, passage to the lower neighbour
    carved: jax.Array  # int32, passages carved so far; rooms - 1 when finished


def start_maze(key: jax.Array, rows: int, cols: int) -> MazeBuilder:
    """A maze with its first choices drawn and nothing carved yet."""
    return _maze_from_choices(jax.random.bits(key, (4,)), rows, cols)


def _maze_from_choices(choices: jax.Array, rows: int, cols: int) -> MazeBuilder:
    first = (choices[0] % (rows * cols)).astype(jnp.int32)
    room = jnp.stack([first // cols, first % cols])
    none = jnp.zeros(rows, jnp.uint32)
    return MazeBuilder(choices, with_bit(none, *room), room, none, none, jnp.int32(0))


def carve_maze(maze: MazeBuilder, words: jax.Array, rows: int, cols: int) -> MazeBuilder:
    """Carve one passage (a no-op once the maze is finished).

    The walk moves to a uniform unvisited neighbour; when it is stuck it first
    resumes from a uniform visited room that has an unvisited neighbour.
    ``words`` (2 random uint32) choose the room to hunt from and the direction.
    """
    unvisited = ~maze.visited & jnp.uint32((1 << cols) - 1)
    # Rooms with an unvisited neighbour to the left, right, up, down.
    free = jnp.stack(
        [
            unvisited << 1,
            unvisited >> 1,
            jnp.pad(unvisited[:-1], (1, 0)),
            jnp.pad(unvisited[1:], (0, 1)),
        ]
    ) & jnp.uint32((1 << cols) - 1)
    can_walk = maze.visited & (free[0] | free[1] | free[2] | free[3])
    stuck = ~bit_at(can_walk, *maze.room)
    room = jnp.where(stuck, jnp.stack(pick_bit(can_walk, words[0], cols)), maze.room)
    options = jax.vmap(bit_at, in_axes=(0, None, None))(free, *room)
    count = jnp.maximum(options.sum(dtype=jnp.uint32), 1)
    direction = jnp.argmax(jnp.cumsum(options) > words[1] % count)
    nxt = room + jnp.asarray(MOVES)[direction]
    passage = jnp.minimum(room, nxt)
    carved = maze.replace(
        visited=with_bit(maze.visited, *nxt),
        room=nxt,
        right=jnp.where(direction < 2, with_bit(maze.right, *passage), maze.right),
        down=jnp.where(direction >= 2, with_bit(maze.down, *passage), maze.down),
        carved=maze.carved + 1,
    )
    busy = maze.carved < rows * cols - 1
    return jax.tree.map(lambda new, old: jnp.where(busy, new, old), carved, maze)


def maze_layout(maze: MazeBuilder, rows: int, cols: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Walls, start and goal of a finished maze.

    ``walls`` is a ``(2 * rows + 1, 2 * cols + 1)`` bool grid (True for walls; room
    ``(r, c)`` sits at ``(2r + 1, 2c + 1)``; the border is wall). ``start`` and
    ``goal`` (``(row, col)`` int32) lie in the border: the start on a uniform side
    (north, south, west, east), the goal on the opposite side, each at a uniform
    room row or column. The openings are not cut into ``walls``.
    """
    # Room rows alternate room (free) and the wall to its right; the rows
    # between alternate the wall below a room and a corner (always wall).
    wall = jnp.ones((rows, cols), bool)
    room_rows = jnp.stack([~wall, ~unpack_rows(maze.right, cols)], -1).reshape(rows, 2 * cols)
    down_rows = jnp.stack([~unpack_rows(maze.down, cols), wall], -1).reshape(rows, 2 * cols)
    inner = jnp.stack([room_rows, down_rows], 1).reshape(2 * rows, 2 * cols)
    walls = jnp.pad(inner, ((1, 0), (1, 0)), constant_values=True)
    side = maze.choices[1] % 4
    across = 2 * (maze.choices[2:4] % cols).astype(jnp.int32) + 1
    along = 2 * (maze.choices[2:4] % rows).astype(jnp.int32) + 1
    north = jnp.stack([jnp.array([0, 2 * rows]), across], axis=1)
    west = jnp.stack([along, jnp.array([0, 2 * cols])], axis=1)
    start, goal = jnp.stack([north, north[::-1], west, west[::-1]])[side].astype(jnp.int32)
    return walls, start, goal


def finish_maze(maze: MazeBuilder, key: jax.Array, rows: int, cols: int) -> MazeBuilder:
    """Carve every remaining passage, with random words drawn from ``key``."""
    remaining = rows * cols - 1
    words = jax.random.bits(key, (remaining, 2))
    return jax.lax.fori_loop(0, remaining, lambda i, m: carve_maze(m, words[i], rows, cols), maze)


def generate_maze(key: jax.Array, rows: int, cols: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random perfect maze by hunt-and-kill with random hunting: ``maze_layout``'s
    ``(walls, start, goal)``."""
    key_start, key_carve = jax.random.split(key)
    maze = finish_maze(start_maze(key_start, rows, cols), key_carve, rows, cols)
    return maze_layout(maze, rows, cols)


@struct.dataclass
class LabyrinthState(environment.EnvState):
    grid: jax.Array  # (H, W) int8 of FREE / WALL / START / GOAL
    position: jax.Array  # (2,) int32 row, col
    explored: jax.Array  # (H, W) bool, squares the agent has stood on
    num_free: jax.Array  # int32, FREE squares in the grid
    unexplored: jax.Array  # int32, non-wall squares not yet visited
    next_maze: MazeBuilder  # the next episode's maze, carved a little each step
    time: int


@struct.dataclass
class LabyrinthParams(environment.EnvParams):
    max_steps_in_episode: int = 1024


class _Labyrinth(AutoReset[LabyrinthState, LabyrinthParams]):
    """Maze, movement and observation shared by the labyrinth tasks.

    Args:
        maze_dims: even ``(height, width)`` as in POPGym; the grid has
            ``maze_dims // 2`` rooms per side and shape ``maze_dims + 1``.

    Actions are cast to int32 and clipped to ``[0, 3]``.
    """

    open_goal: bool
    carve_per_step: int

    def __init__(self, maze_dims: tuple[int, int] = (10, 10)):
        super().__init__()
        if maze_dims[0] % 2 or maze_dims[1] % 2:
            raise ValueError(f"maze_dims must be even, got {maze_dims}")
        self.rooms = (maze_dims[0] // 2, maze_dims[1] // 2)
        self.shape = (maze_dims[0] + 1, maze_dims[1] + 1)

    @property
    def default_params(self) -> LabyrinthParams:
        return LabyrinthParams()

    def reset_from_maze(
        self, key: jax.Array, walls: jax.Array, start: jax.Array, goal: jax.Array
    ) -> tuple[jax.Array, LabyrinthState]:
        """Start an episode in a given maze (``walls`` nonzero = wall) at ``start``.

        ``key`` draws the maze of the episode after this one.
        """
        return self._reset(walls, start, goal, start_maze(key, *self.rooms))

    def reset_env(
        self, key: jax.Array, params: LabyrinthParams
    ) -> tuple[jax.Array, LabyrinthState]:
        key_maze, key_next = jax.random.split(key)
        return self._reset(*generate_maze(key_maze, *self.rooms), start_maze(key_next, *self.rooms))

    def _reset(
        self, walls: jax.Array, start: jax.Array, goal: jax.Array, next_maze: MazeBuilder
    ) -> tuple[jax.Array, LabyrinthState]:
        grid = jnp.asarray(walls).astype(jnp.int8)
        start = jnp.asarray(start, jnp.int32)
        goal = jnp.asarray(goal, jnp.int32)
        at_start = self._square(start)
        grid = jnp.where(at_start, START, grid)
        if self.open_goal:
            grid = jnp.where(self._square(goal), GOAL, grid)
        explored = at_start
        state = LabyrinthState(
            grid=grid,
            position=start,
            explored=explored,
            num_free=jnp.sum(grid == FREE, dtype=jnp.int32),
            unexplored=jnp.sum(grid != WALL, dtype=jnp.int32) - 1,
            next_maze=next_maze,
            time=0,
        )
        return self._obs(state, NO_ACTION), state

    def next_episode(
        self, key: jax.Array, state: LabyrinthState, done: jax.Array, params: LabyrinthParams
    ) -> tuple[LabyrinthState, tuple[jax.Array, LabyrinthState]]:
        """Carve a few passages of the next maze, enough to finish it before any
        episode can end; where one ends sooner (a short time limit), carve the rest."""
        rows, cols = self.rooms
        # step_env draws nothing. Block 0 of the key's words: the first choices of
        # the maze after the next one (four), then two per passage carved this
        # step; block 1 + k: passage k carved at the end.
        w = words(key, 4 + 2 * self.carve_per_step)
        maze = state.next_maze
        for i in range(self.carve_per_step):
            maze = carve_maze(maze, jnp.stack(w[4 + 2 * i : 6 + 2 * i]), rows, cols)

        def unfinished(maze):
            return done & (maze.carved < rows * cols - 1)

        def carve(maze):
            return carve_maze(maze, jnp.stack(words(key, 2, block=1 + maze.carved)), rows, cols)

        maze = jax.lax.while_loop(unfinished, carve, maze)
        after = _maze_from_choices(jnp.stack(w[:4]), rows, cols)
        return state.replace(next_maze=maze), self._reset(*maze_layout(maze, rows, cols), after)

    def _move(
        self, state: LabyrinthState, action: jax.Array
    ) -> tuple[LabyrinthState, jax.Array, jax.Array]:
        """Apply a clipped move; returns the new state, the action and whether the
        square reached was not visited before."""
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, NUM_MOVES - 1)
        target = state.position + jnp.asarray(MOVES)[action]
        target = jnp.clip(target, 0, jnp.array(self.shape) - 1)
        blocked = state.grid[target[0], target[1]] == WALL
        position = jnp.where(blocked, state.position, target)
        new = ~state.explored[position[0], position[1]]
        state = state.replace(
            position=position,
            explored=state.explored | self._square(position),
            unexplored=state.unexplored - new.astype(jnp.int32),
            time=state.time + 1,
        )
        return state, action, new

    def _square(self, position: jax.Array) -> jax.Array:
        """Grid mask of one square (a comparison, cheaper than a scatter under vmap)."""
        rows = jnp.arange(self.shape[0])[:, None] == position[0]
        return rows & (jnp.arange(self.shape[1])[None, :] == position[1])

    def _obs(self, state: LabyrinthState, action: jax.Array | int) -> jax.Array:
        y, x = state.position[0], state.position[1]
        top, left = jnp.maximum(y - 1, 0), jnp.maximum(x - 1, 0)
        bottom = jnp.minimum(y + 1, self.shape[0] - 1)
        right = jnp.minimum(x + 1, self.shape[1] - 1)
        padded = jnp.pad(state.grid, ((0, 2), (0, 2)), constant_values=WALL)
        view = jax.lax.dynamic_slice(padded, (top, left), (3, 3))
        k = jnp.arange(3)
        inside = ((top + k <= bottom)[:, None]) & ((left + k <= right)[None, :])
        view = jnp.where(inside, view, WALL).astype(jnp.int32)
        return jnp.concatenate(
            [
                jax.nn.one_hot(view.reshape(9), NUM_CELL_TYPES, dtype=jnp.float32).reshape(-1),
                jax.nn.one_hot(action, NO_ACTION + 1, dtype=jnp.float32),
            ]
        )

    def is_truncated(self, state: LabyrinthState, params: LabyrinthParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode - 1

    @property
    def num_actions(self) -> int:
        return NUM_MOVES

    def action_space(self, params: LabyrinthParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(NUM_MOVES)

    def observation_space(self, params: LabyrinthParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (9 * NUM_CELL_TYPES + NO_ACTION + 1,), jnp.float32)


class LabyrinthEscape(_Labyrinth):
    """Find the goal opening in the outer wall of a random maze."""

    open_goal = True

    @property
    def carve_per_step(self) -> int:
        # The goal is on the side opposite the start: at least 2 * rooms steps away.
        return -(-(self.rooms[0] * self.rooms[1] - 1) // (2 * min(self.rooms)))

    def step_env(
        self,
        key: jax.Array,
        state: LabyrinthState,
        action: int | jax.Array,
        params: LabyrinthParams,
    ) -> tuple[jax.Array, LabyrinthState, jax.Array, jax.Array, dict[Any, Any]]:
        state, action, _ = self._move(state, action)
        at_goal = state.grid[state.position[0], state.position[1]] == GOAL
        reward = -1.0 / params.max_steps_in_episode + at_goal.astype(jnp.float32)
        return self._obs(state, action), state, reward, at_goal, {}


class LabyrinthExplore(_Labyrinth):
    """Visit every square of a random maze."""

    open_goal = False
    # Visiting every square takes more steps than the maze has passages.
    carve_per_step = 1

    def step_env(
        self,
        key: jax.Array,
        state: LabyrinthState,
        action: int | jax.Array,
        params: LabyrinthParams,
    ) -> tuple[jax.Array, LabyrinthState, jax.Array, jax.Array, dict[Any, Any]]:
        state, action, new = self._move(state, action)
        reward = jnp.where(new, 1.0 / state.num_free, -1.0 / params.max_steps_in_episode).astype(
            jnp.float32
        )
        return self._obs(state, action), state, reward, state.unexplored == 0, {}


TASKS = {
    f"{cls.__name__}{level}": task(cls, maze_dims=(size, size))
    for cls in (LabyrinthEscape, LabyrinthExplore)
    for level, size in (("Easy", 10), ("Medium", 14), ("Hard", 18))
}
ALIASES: dict[str, str] = {}
