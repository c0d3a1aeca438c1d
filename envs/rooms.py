"""Memory rooms: a scripted tour of coloured rooms, then a revisit that only memory predicts.

These tasks measure how far a world model can imagine. A scripted policy tours every
room during a *context* phase; the *query* phase revisits them, so its observations
can be predicted only by remembering the context.

**World.** ``rows x cols`` rooms of 5x5 floor cells, walls one cell thick (the border
too), and a door cell in the middle of every wall between two neighbouring rooms.
Room ``(r, c)`` (index ``r * cols + c``) has its floor at grid rows ``6r+1 .. 6r+5`` and
columns ``6c+1 .. 6c+5``; the grid is ``(6 rows + 1) x (6 cols + 1)`` cells. A cell
belongs to room ``(min(row // 6, rows - 1), min(col // 6, cols - 1))``, so a door
belongs to the room right of it or below it.

**Colours.** Every room has the same shape, so rooms differ only by colours, drawn at
each reset from ``NUM_COLOURS = 8``: per room a wall, a floor and an object colour
(three distinct colours) and the object's floor cell (uniform over the 25). Different
rooms may share colours.

**Observation** (72 float32): the 3x3 cells around the agent, row-major, the agent's
cell in the middle, each one-hot over the 8 colours. A floor or door cell shows the
floor colour of its room (the object's colour on the object's cell); a wall cell shows
the wall colour of the room the agent is in. (Through a door the agent can see a
neighbour's floor, which may have the colour of its own room's walls.)

**Actions** ``Discrete(5)``: stay, up, down, left, right (clipped to ``[0, 4]``); a
move into a wall leaves the agent in place. Every episode starts on room 0's top-left
floor cell.

**Episodes.** Observation ``t`` is the one after ``t`` steps (the reset's is 0). The
first ``context_steps = C`` steps make the context phase, the next ``query_steps = Q``
the query phase: observations ``0 .. C`` are context (``info["phase"] = 0``),
``C+1 .. C+Q`` query (1). Step ``C + Q`` *terminates* the episode (nothing is
truncated: the fixed length is part of the task), so an episode has ``C + Q + 1``
observations, the last one gymnax's ``info["final_observation"]``.

**Tour.** `RoomsEnv.path` (``L`` cells, ``tour_steps = L - 1``) visits the rooms in
snake order (left to right along the first row of rooms, right to left along the
next, ...) and sweeps each room boustrophedon (row by row or column by column,
alternating direction), starting from the corner nearest to where it comes in,
reached on a shortest path through the door. Consecutive cells of the path are
neighbours. *Bouncing* along a stretch of the path walks to its end, back to its
start, and so on. The scripted policy (`RoomsEnv.scripted_action`) steps towards the
next cell of the task's walk (one cell per step, ``cell(t)`` at observation ``t``):

- *recall*: the context bounces along the whole path from its start; the query walks
  the context backwards, ``cell(t) = cell(|2C - t|)``.
- *teleport*: the context as recall; query step ``C + 1`` (its action: stay) puts the
  agent on a random path cell ``j``, a floor cell of a room other than the one it is in
  at ``t = C`` and visited in the context; then it bounces along the path from ``j``.
- *distract*: along the path to the start of the last room's sweep, then bouncing
  within that sweep, in both phases.

With ``C >= tour_steps`` (true for every default) the context visits every floor cell.
The teleport's observation (``C + 1``) is random; a frame in the middle of a room can
look like many cells, and the next frames and actions tell them apart.

**Reward.** 0 for recall and teleport (observation-prediction benchmarks). Distract:
the *cue* is room 0's object colour, seen only while sweeping room 0 at the start;
the last step (``C + Q``) pays ``cue / (NUM_COLOURS - 1)`` in [0, 1], every other
step 0. The last room never shows room 0's cells, so predicting that reward takes
remembering the cue across the whole episode.

| task               | rooms | grid  | tour_steps | C   | Q   | observations |
|--------------------|-------|-------|------------|-----|-----|--------------|
| ``TwoRoomsRecall``   | 1x2   | 7x13  | 54         | 128 | 128 | 257          |
| ``FourRoomsRecall``  | 2x2   | 13x13 | 118        | 128 | 128 | 257          |
| ``TenRoomsRecall``   | 2x5   | 13x31 | 298        | 320 | 320 | 641          |
| ``TwoRoomsTeleport`` | 1x2   | 7x13  | 54         | 128 | 128 | 257          |
| ``TwoRoomsDistract`` | 1x2   | 7x13  | 54         | 128 | 128 | 257          |
"""

from __future__ import annotations

import collections
import dataclasses
from functools import cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.popgym import task

NUM_COLOURS = 8
ROOM = 5  # floor cells along a room's side
PITCH = ROOM + 1  # a room and one wall
WINDOW = 3  # the observed square of cells around the agent
OBS_SIZE = WINDOW * WINDOW * NUM_COLOURS
STAY, UP, DOWN, LEFT, RIGHT = range(5)
# (row, col) offsets of the actions stay, up, down, left, right.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)
WALKS = ("recall", "teleport", "distract")


@struct.dataclass
class RoomsParams:
    """Phase lengths in steps; static (Python ints), since they set the episode's shape."""

    context_steps: int = struct.field(pytree_node=False, default=128)
    query_steps: int = struct.field(pytree_node=False, default=128)

    @property
    def max_steps_in_episode(self) -> int:
        return self.context_steps + self.query_steps


@struct.dataclass
class RoomsState(environment.EnvState):
    position: jax.Array  # [2] int32, the agent's grid (row, col)
    wall_colour: jax.Array  # [rooms] int32
    floor_colour: jax.Array  # [rooms] int32
    object_colour: jax.Array  # [rooms] int32
    object_cell: jax.Array  # [rooms, 2] int32 grid (row, col) of each room's object
    cell_colour: jax.Array  # [H, W] int32, floor colours with the objects drawn in
    teleport: jax.Array  # int32 path index the teleport goes to (0 for other walks)
    time: int


def _bounce(x: Any, span: int) -> Any:
    """Step ``x >= 0`` of a walk from 0 to ``span`` and back, repeated (ints or arrays)."""
    return span - abs(x % (2 * span) - span)


def _geometry(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wall, door, owner)`` grids ``[H, W]``: wall and door cells, and each cell's room."""
    i, j = np.indices((PITCH * rows + 1, PITCH * cols + 1))
    wall = (i % PITCH == 0) | (j % PITCH == 0)
    middle = PITCH // 2
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:
                wall[PITCH * r + middle, PITCH * (c + 1)] = False
            if r + 1 < rows:
                wall[PITCH * (r + 1), PITCH * c + middle] = False
    door = ~wall & ((i % PITCH == 0) | (j % PITCH == 0))
    owner = np.minimum(i // PITCH, rows - 1) * cols + np.minimum(j // PITCH, cols - 1)
    return wall, door, owner


def _shortest_path(free: np.ndarray, start: tuple, goal: tuple) -> list[tuple]:
    """The cells after ``start`` up to ``goal`` on a shortest path through ``free`` cells."""
    parent = {start: start}
    queue = collections.deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for dr, dc in MOVES[1:]:
            nxt = (cell[0] + int(dr), cell[1] + int(dc))
            if free[nxt] and nxt not in parent:
                parent[nxt] = cell
                queue.append(nxt)
    path = []
    while goal != start:
        path.append(goal)
        goal = parent[goal]
    return path[::-1]


def _sweeps(top: int, left: int) -> list[list[tuple]]:
    """A room's 8 boustrophedon orders: by rows or by columns, from each corner."""
    by_rows = [(r, c if r % 2 == 0 else ROOM - 1 - c) for r in range(ROOM) for c in range(ROOM)]
    flip = lambda x, flipped: ROOM - 1 - x if flipped else x
    return [
        [(top + flip(r, fr), left + flip(c, fc)) for r, c in order]
        for order in (by_rows, [(c, r) for r, c in by_rows])
        for fr in (False, True)
        for fc in (False, True)
    ]


def _tour(rows: int, cols: int, free: np.ndarray) -> tuple[np.ndarray, int]:
    """The tour's cells ``[L, 2]`` and the path index where the last room's sweep starts."""
    snake = [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    path = [(1, 1)]
    sweep_start = 0
    for r, c in snake:
        legs = [
            (_shortest_path(free, path[-1], s[0]), s) for s in _sweeps(PITCH * r + 1, PITCH * c + 1)
        ]
        leg, sweep = min(legs, key=lambda pair: len(pair[0]))
        path += leg
        sweep_start = len(path) - 1
        path += sweep[1:]
    return np.array(path, np.int32), sweep_start


class RoomsEnv(environment.Environment[RoomsState, RoomsParams]):
    """Coloured rooms toured by a scripted policy (see the module docstring).

    Args:
        rows, cols: the layout of rooms.
        walk: ``"recall"``, ``"teleport"`` or ``"distract"`` (the table above).
        context_steps, query_steps: the default params' phase lengths.
    """

    def __init__(
        self,
        rows: int = 1,
        cols: int = 2,
        walk: str = "recall",
        context_steps: int = 128,
        query_steps: int = 128,
    ):
        super().__init__()
        if walk not in WALKS:
            raise ValueError(f"walk must be one of {WALKS}, got {walk!r}")
        if rows < 1 or cols < 1 or rows * cols < 2:
            raise ValueError(f"need at least two rooms, got {rows}x{cols}")
        self.rows, self.cols, self.walk = rows, cols, walk
        self.num_rooms = rows * cols
        self.context_steps, self.query_steps = context_steps, query_steps
        self.wall, self.door, self.owner = _geometry(rows, cols)
        self.path, self.last_sweep = _tour(rows, cols, ~self.wall)
        self.tour_steps = len(self.path) - 1
        self.path_room = self.owner[self.path[:, 0], self.path[:, 1]]
        self.path_door = self.door[self.path[:, 0], self.path[:, 1]]
        rooms = np.arange(self.num_rooms)
        self.origin = np.stack([rooms // cols, rooms % cols], 1).astype(np.int32) * PITCH + 1

    @property
    def name(self) -> str:
        return f"Rooms{self.rows}x{self.cols}-{self.walk}"

    @property
    def num_actions(self) -> int:
        return len(MOVES)

    @property
    def default_params(self) -> RoomsParams:
        return RoomsParams(context_steps=self.context_steps, query_steps=self.query_steps)

    def observation_space(self, params: RoomsParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (OBS_SIZE,), jnp.float32)

    def action_space(self, params: RoomsParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(len(MOVES))

    cell_classes = NUM_COLOURS
    """observations are one-hot cells of this many classes (the imagination tool's accuracy)"""

    @property
    def has_reward(self) -> bool:
        """Whether the task pays rewards worth predicting (only the distract walk does)."""
        return self.walk == "distract"

    def scripted_episodes(self, key: jax.Array, params: RoomsParams, episodes: int) -> RoomsData:
        """`rollout` of the scripted policy: whole episodes, time-major, each ending in its
        terminal observation (what the offline world-model trainer and ``ssmrl imagine`` read)."""
        return rollout(self, params, episodes, key)

    def seen_in_context(self, data: RoomsData, context: int) -> jax.Array:
        """`seen_in_context` of ``data`` when observations ``0 .. context - 1`` were the
        context: ``[T, N, 9]`` bool."""
        return seen_in_context(data.position, context - 1)

    def teleport_cells(self, params: RoomsParams) -> np.ndarray:
        """``[L]`` bool: the path cells a teleport may go to (see the module docstring)."""
        seen = np.arange(len(self.path)) <= min(params.context_steps, self.tour_steps)
        room = self.path_room[_bounce(params.context_steps, self.tour_steps)]
        allowed = seen & ~self.path_door & (self.path_room != room)
        return allowed if allowed.any() else np.arange(len(self.path)) == 0

    def walk_index(self, t: jax.Array, teleport: jax.Array, params: RoomsParams) -> jax.Array:
        """The path index of the walk's cell at observation ``t`` (int32 scalars)."""
        c, last = params.context_steps, self.tour_steps
        if self.walk == "distract":
            start = self.last_sweep
            return jnp.where(t < start, t, start + _bounce(t - start, last - start))
        if self.walk == "recall":
            return _bounce(jnp.where(t <= c, t, jnp.abs(2 * c - t)), last)
        return jnp.where(t <= c, _bounce(t, last), _bounce(teleport + t - c - 1, last))

    def scripted_action(self, state: RoomsState, params: RoomsParams) -> jax.Array:
        """The scripted policy: a step towards the walk's next cell (int32 action).

        From any cell it moves towards that cell (rows first), so it follows the walk
        exactly when every earlier action was scripted. The teleport step's action is stay.
        """
        target = jnp.asarray(self.path)[self.walk_index(state.time + 1, state.teleport, params)]
        dr, dc = target[0] - state.position[0], target[1] - state.position[1]
        action = jnp.select([dr < 0, dr > 0, dc < 0, dc > 0], [UP, DOWN, LEFT, RIGHT], STAY)
        if self.walk == "teleport":
            action = jnp.where(state.time == params.context_steps, STAY, action)
        return action.astype(jnp.int32)

    def reset_env(self, key: jax.Array, params: RoomsParams) -> tuple[jax.Array, RoomsState]:
        if params.context_steps < 1 or params.query_steps < 1:
            raise ValueError(f"context_steps and query_steps must be >= 1, got {params}")
        n = self.num_rooms
        key, key_colour = jax.random.split(key)
        key, key_object = jax.random.split(key)
        key, key_teleport = jax.random.split(key)
        colours = jax.vmap(lambda k: jax.random.permutation(k, NUM_COLOURS)[:3])(
            jax.random.split(key_colour, n)
        ).astype(jnp.int32)
        wall_colour, floor_colour, object_colour = colours[:, 0], colours[:, 1], colours[:, 2]
        cell = jax.random.randint(key_object, (n,), 0, ROOM * ROOM)
        object_cell = jnp.asarray(self.origin) + jnp.stack([cell // ROOM, cell % ROOM], 1)
        cell_colour = floor_colour[jnp.asarray(self.owner)]
        cell_colour = cell_colour.at[object_cell[:, 0], object_cell[:, 1]].set(object_colour)
        teleport = jnp.int32(0)
        if self.walk == "teleport":
            allowed = jnp.asarray(self.teleport_cells(params))
            teleport = jax.random.choice(key_teleport, len(self.path), p=allowed / allowed.sum())
        state = RoomsState(
            position=jnp.asarray(self.path[0]),
            wall_colour=wall_colour,
            floor_colour=floor_colour,
            object_colour=object_colour,
            object_cell=object_cell.astype(jnp.int32),
            cell_colour=cell_colour,
            teleport=teleport.astype(jnp.int32),
            time=0,
        )
        return self.get_obs(state), state

    def step_env(
        self, key: jax.Array, state: RoomsState, action: jax.Array, params: RoomsParams
    ) -> tuple[jax.Array, RoomsState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, len(MOVES) - 1)
        target = state.position + jnp.asarray(MOVES)[action]
        blocked = jnp.asarray(self.wall)[target[0], target[1]]
        position = jnp.where(blocked, state.position, target)
        if self.walk == "teleport":
            jump = jnp.asarray(self.path)[state.teleport]
            position = jnp.where(state.time == params.context_steps, jump, position)
        time = jnp.asarray(state.time + 1, jnp.int32)
        state = state.replace(position=position, time=time)
        done = time >= params.max_steps_in_episode
        reward = jnp.float32(0.0)
        if self.walk == "distract":
            cue = state.object_colour[0].astype(jnp.float32) / (NUM_COLOURS - 1)
            reward = jnp.where(done, cue, reward)
        info = {"phase": (time > params.context_steps).astype(jnp.int32)}
        return self.get_obs(state), state, reward, done, info

    def get_obs(self, state: RoomsState, params: Any = None, key: Any = None) -> jax.Array:
        """``[72]`` float32: the one-hot colours of the 3x3 cells around the agent."""
        corner = (state.position[0] - 1, state.position[1] - 1)
        floor = jax.lax.dynamic_slice(state.cell_colour, corner, (WINDOW, WINDOW))
        wall = jax.lax.dynamic_slice(jnp.asarray(self.wall), corner, (WINDOW, WINDOW))
        room = jnp.asarray(self.owner)[state.position[0], state.position[1]]
        colour = jnp.where(wall, state.wall_colour[room], floor)
        return jax.nn.one_hot(colour.reshape(-1), NUM_COLOURS, dtype=jnp.float32).reshape(-1)

    def is_terminated(self, state: RoomsState, params: RoomsParams) -> jax.Array:
        return jnp.asarray(state.time >= params.max_steps_in_episode)

    def is_truncated(self, state: RoomsState, params: RoomsParams) -> jax.Array:
        return jnp.bool_(False)


class RoomsData(NamedTuple):
    """Scripted episodes, time-major: ``T = C + Q + 1`` rows (one per observation, the
    final one included) by ``N`` episodes.

    | field    | shape      | dtype   | meaning                                             |
    |----------|------------|---------|-----------------------------------------------------|
    | obs      | [T, N, 72] | float32 | observation t                                       |
    | action   | [T, N]     | int32   | the action taken after obs t (0 in the last row)    |
    | reward   | [T, N]     | float32 | the reward that came with obs t (0 at t = 0)        |
    | is_first | [T, N]     | bool    | t = 0                                               |
    | phase    | [T, N]     | int32   | 0 context (t <= C), 1 query (t > C)                 |
    | position | [T, N, 2]  | int32   | the agent's grid (row, col) at obs t                |
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    is_first: jax.Array
    phase: jax.Array
    position: jax.Array


def rollout(env: RoomsEnv, params: RoomsParams, episodes: int, key: jax.Array) -> RoomsData:
    """`RoomsData` of ``episodes`` scripted episodes, one reset key each split from ``key``."""
    keys = jax.random.split(key, episodes)
    obs, state = jax.vmap(env.reset_env, (0, None))(keys, params)
    step = jax.vmap(env.step_env, (0, 0, 0, None))
    act = jax.vmap(env.scripted_action, (0, None))

    def row(obs, state, reward, action):
        phase = (state.time > params.context_steps).astype(jnp.int32)
        return obs, action, reward, state.time == 0, phase, state.position

    def body(carry, _):
        obs, state, reward = carry
        action = act(state, params)
        out = row(obs, state, reward, action)
        obs, state, reward, _, _ = step(keys, state, action, params)  # it draws nothing
        return (obs, state, reward), out

    zeros = jnp.zeros(episodes, jnp.float32)
    (obs, state, reward), rows = jax.lax.scan(
        body, (obs, state, zeros), length=params.max_steps_in_episode
    )
    last = row(obs, state, reward, jnp.zeros(episodes, jnp.int32))
    return RoomsData(*jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), rows, last))


def seen_in_context(position: jax.Array, context_steps: int) -> jax.Array:
    """Which cells of each observation's window were inside a window of the context.

    A window cell counts as seen at step ``t`` if its grid cell lay in the 3x3 window of
    some context observation ``0 .. C``. (A wall cell shows the wall colour of the room
    the agent stands in, so a wall seen from the other room may look different.)

    | arg      | shape          | meaning                                  |
    |----------|----------------|------------------------------------------|
    | position | [T, N, 2] int  | the agent's grid cell per observation    |
    | result   | [T, N, 9] bool | per window cell (row-major, as the obs)  |
    """
    offsets = jnp.stack(jnp.meshgrid(jnp.arange(-1, 2), jnp.arange(-1, 2), indexing="ij"), -1)
    cells = position[:, :, None, :] + offsets.reshape(1, 1, WINDOW * WINDOW, 2)  # [T, N, 9, 2]

    def one_episode(cells):  # [T, 9, 2]
        context = cells[: context_steps + 1].reshape(-1, 1, 2)  # [C' * 9, 1, 2]
        return jnp.any(jnp.all(cells.reshape(1, -1, 2) == context, -1), 0).reshape(cells.shape[:2])

    return jax.vmap(one_episode, 1, 1)(cells)


def dataset(name: str, episodes: int, key: jax.Array, **param_overrides: Any) -> RoomsData:
    """Roll out the scripted policy of task ``name`` in ``episodes`` episodes.

    Args:
        name: a task of `TASKS` (``"TwoRoomsRecall"``, ...).
        episodes: the number ``N`` of episodes.
        key: PRNG key; the same key gives the same arrays.
        **param_overrides: `RoomsParams` fields (``context_steps``, ``query_steps``).

    Returns:
        `RoomsData`, leaves ``[T, N, ...]`` with ``T = context_steps + query_steps + 1``.
    """
    if name not in TASKS:
        raise ValueError(f"unknown rooms task {name!r}; one of {sorted(TASKS)}")
    params = TASKS[name]()[1]
    fields = {f.name for f in dataclasses.fields(params)}
    unknown = sorted(set(param_overrides) - fields)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {name}; allowed: {sorted(fields)}")
    return _compiled(name, params.replace(**param_overrides), episodes)(key)


@cache
def _compiled(name: str, params: RoomsParams, episodes: int) -> Any:
    env, _ = TASKS[name]()
    return jax.jit(partial(rollout, env, params, episodes))


TASKS = {
    "TwoRoomsRecall": task(RoomsEnv, rows=1, cols=2),
    "FourRoomsRecall": task(RoomsEnv, rows=2, cols=2),
    "TenRoomsRecall": task(RoomsEnv, rows=2, cols=5, context_steps=320, query_steps=320),
    "TwoRoomsTeleport": task(RoomsEnv, rows=1, cols=2, walk="teleport"),
    "TwoRoomsDistract": task(RoomsEnv, rows=1, cols=2, walk="distract"),
}
