"""Tests for ssmrl.envs.rooms: geometry, colours, observations, scripted walks, datasets."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl.envs import make, names, rooms
from ssmrl.envs.rooms import DOWN, LEFT, NUM_COLOURS, RIGHT, STAY, UP, RoomsState

CENTRE = slice(4 * NUM_COLOURS, 5 * NUM_COLOURS)  # the agent's own cell in the observation
# These rollouts are tiny, so XLA's backend optimisation costs far more than it saves.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@cache
def _data(name: str, episodes: int = 4, seed: int = 0, **overrides) -> rooms.RoomsData:
    return jax.tree.map(
        np.asarray, rooms.dataset(name, episodes, jax.random.key(seed), **overrides)
    )


def _room(position: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Room index of grid cells ``[..., 2]``, from the layout's definition."""
    row, col = position[..., 0] // 6, position[..., 1] // 6
    return np.minimum(row, rows - 1) * cols + np.minimum(col, cols - 1)


def _reference_obs(state: RoomsState, position, rows: int, cols: int) -> np.ndarray:
    """The observation at ``position``, written out cell by cell from the docstring's rules."""
    wall_c, floor_c = np.asarray(state.wall_colour), np.asarray(state.floor_colour)
    object_c, object_cell = np.asarray(state.object_colour), np.asarray(state.object_cell)
    doors = {(6 * r + 3, 6 * (c + 1)) for r in range(rows) for c in range(cols - 1)}
    doors |= {(6 * (r + 1), 6 * c + 3) for r in range(rows - 1) for c in range(cols)}

    def owner(i, j):
        return min(i // 6, rows - 1) * cols + min(j // 6, cols - 1)

    here = owner(*position)
    obs = []
    for i in range(position[0] - 1, position[0] + 2):
        for j in range(position[1] - 1, position[1] + 2):
            if (i % 6 == 0 or j % 6 == 0) and (i, j) not in doors:
                colour = wall_c[here]
            elif any((i, j) == tuple(cell) for cell in object_cell):
                colour = object_c[owner(i, j)]
            else:
                colour = floor_c[owner(i, j)]
            obs.append(np.eye(NUM_COLOURS, dtype=np.float32)[colour])
    return np.concatenate(obs)


def _hand_state(env: rooms.RoomsEnv, position) -> RoomsState:
    """TwoRooms with walls 0 / 1, floors 2 / 3, objects 4 at (1, 2) and 5 at (3, 8)."""
    cell_colour = np.where(np.arange(13) < 6, 2, 3)[None].repeat(7, 0)
    cell_colour[1, 2], cell_colour[3, 8] = 4, 5
    return RoomsState(
        position=jnp.array(position, jnp.int32),
        wall_colour=jnp.array([0, 1]),
        floor_colour=jnp.array([2, 3]),
        object_colour=jnp.array([4, 5]),
        object_cell=jnp.array([[1, 2], [3, 8]]),
        cell_colour=jnp.asarray(cell_colour),
        teleport=jnp.int32(0),
        time=0,
    )


def test_registered_with_defaults():
    assert set(rooms.TASKS) <= set(names(include_gymnax=False))
    for name, steps in [("TwoRoomsRecall", 128), ("FourRoomsRecall", 128), ("TenRoomsRecall", 320)]:
        env, params = make(name)
        assert params.context_steps == params.query_steps == steps
        assert env.tour_steps <= params.context_steps
        assert env.observation_space(params).shape == (72,) and env.action_space(params).n == 5
    env, params = make("TwoRoomsTeleport", context_steps=60, query_steps=7)
    assert (params.context_steps, params.query_steps, params.max_steps_in_episode) == (60, 7, 67)
    with pytest.raises(ValueError, match="allowed"):
        make("TwoRoomsRecall", bogus=1)


def test_doors_sit_between_neighbouring_rooms_only():
    env, _ = make("TwoRoomsRecall")
    assert {tuple(c) for c in np.argwhere(env.door)} == {(3, 6)}
    assert env.wall.shape == (7, 13) and (~env.wall).sum() == 2 * 25 + 1
    env, _ = make("FourRoomsRecall")
    assert {tuple(c) for c in np.argwhere(env.door)} == {(3, 6), (9, 6), (6, 3), (6, 9)}
    env, _ = make("TenRoomsRecall")
    assert env.wall.shape == (13, 31) and env.door.sum() == 8 + 5


@pytest.mark.parametrize(
    "start, action, end",
    [
        ((1, 1), UP, (1, 1)),  # outer walls
        ((1, 1), LEFT, (1, 1)),
        ((1, 1), STAY, (1, 1)),
        ((1, 1), RIGHT, (1, 2)),
        ((1, 1), DOWN, (2, 1)),
        ((2, 5), RIGHT, (2, 5)),  # the wall between rooms, beside the door
        ((3, 5), RIGHT, (3, 6)),  # into the door ...
        ((3, 6), RIGHT, (3, 7)),  # ... and through it
        ((3, 6), UP, (3, 6)),  # a door's sides are walls
        ((3, 7), LEFT, (3, 6)),
        ((5, 2), DOWN, (5, 2)),
        ((5, 3), DOWN, (6, 3)),  # the door between the rooms above and below
        ((6, 3), DOWN, (7, 3)),
        ((11, 11), RIGHT, (11, 11)),
        ((11, 11), DOWN, (11, 11)),
    ],
)
def test_walls_block_moves_and_doors_let_through(start, action, end):
    assert tuple(np.asarray(_four_rooms_move()(jnp.array(start), action))) == end


@cache
def _four_rooms_move():
    """Jitted ``(position [2], action) -> position`` after one FourRooms step."""
    env, params = make("FourRoomsRecall")

    def move(position, action):
        _, state = env.reset_env(jax.random.key(0), params)
        state = state.replace(position=position.astype(jnp.int32), time=5)
        return env.step_env(jax.random.key(1), state, action, params)[1].position

    return jax.jit(move, compiler_options=FAST_COMPILE)


@pytest.mark.parametrize(
    "position, colours",
    [
        ((1, 1), [0, 0, 0, 0, 2, 4, 0, 2, 2]),  # a corner, the object to the right
        ((3, 5), [2, 2, 0, 2, 2, 3, 2, 2, 0]),  # beside the door: it has room 1's floor
        ((3, 6), [2, 1, 3, 2, 3, 3, 2, 1, 3]),  # in the door, which belongs to room 1
        ((3, 7), [1, 3, 3, 3, 3, 5, 1, 3, 3]),
        ((3, 8), [3, 3, 3, 3, 5, 3, 3, 3, 3]),  # on the object
    ],
)
def test_observation_of_hand_built_states(position, colours):
    env, params = make("TwoRoomsRecall")
    obs = env.get_obs(_hand_state(env, position))
    assert obs.shape == (72,) and obs.dtype == jnp.float32
    np.testing.assert_array_equal(obs, np.eye(NUM_COLOURS, dtype=np.float32)[colours].ravel())


def test_observations_match_reference_along_episodes():
    """Every observation of scripted episodes, against the cell-by-cell reference rendered
    from the colours drawn at reset (so the colours stay as drawn for the whole episode)."""
    for name, (rows, cols) in [("TwoRoomsRecall", (1, 2)), ("FourRoomsRecall", (2, 2))]:
        env, params = make(name)
        data = _data(name)
        reset = jax.jit(jax.vmap(env.reset_env, (0, None)), compiler_options=FAST_COMPILE)
        _, states = reset(jax.random.split(jax.random.key(0), 4), params)
        for n in range(2):
            state = jax.tree.map(lambda leaf, n=n: np.asarray(leaf[n]), states)
            for t in range(0, data.obs.shape[0], 4):
                expected = _reference_obs(state, tuple(data.position[t, n]), rows, cols)
                np.testing.assert_array_equal(data.obs[t, n], expected, err_msg=f"{name} t={t}")


def test_colours_are_drawn_per_episode():
    env, params = make("TenRoomsRecall")
    draws = []
    for seed in range(2):
        _, state = env.reset_env(jax.random.key(seed), params)
        colours = np.stack([state.wall_colour, state.floor_colour, state.object_colour], 1)
        assert colours.shape == (10, 3) and ((colours >= 0) & (colours < NUM_COLOURS)).all()
        assert all(len(set(room)) == 3 for room in colours.tolist())  # wall, floor, object differ
        assert len({tuple(room) for room in colours.tolist()}) > 1  # not one palette for all
        draws.append((colours, np.asarray(state.object_cell)))
    assert not np.array_equal(draws[0][0], draws[1][0])
    assert not np.array_equal(draws[0][1], draws[1][1])
    assert not np.array_equal(_data("TwoRoomsRecall").obs, _data("TwoRoomsRecall", seed=1).obs)


@pytest.mark.parametrize(
    "name, rows, cols",
    [("TwoRoomsRecall", 1, 2), ("FourRoomsRecall", 2, 2), ("TenRoomsRecall", 2, 5)],
)
def test_context_visits_every_floor_cell(name, rows, cols):
    env, params = make(name)
    data = _data(name)
    position = data.position[:, 0]
    assert not env.wall[position[:, 0], position[:, 1]].any()
    assert (
        np.abs(np.diff(position, axis=0)).sum(1) == np.where(data.action[:-1, 0] == 0, 0, 1)
    ).all()
    context = {tuple(p) for p in position[data.phase[:, 0] == 0]}
    floor = np.argwhere(~env.wall & ~env.door)
    assert len(floor) == 25 * env.num_rooms
    assert {tuple(p) for p in floor} <= context
    assert set(_room(floor, rows, cols).tolist()) == set(range(env.num_rooms))


def test_recall_query_replays_the_context_backwards():
    data = _data("TwoRoomsRecall")
    c, t = 128, 257
    assert data.obs.shape == (t, 4, 72)
    np.testing.assert_array_equal(data.phase[:, 0], np.arange(t) > c)
    np.testing.assert_array_equal(data.is_first[:, 0], np.arange(t) == 0)
    k = np.arange(1, c + 1)
    np.testing.assert_array_equal(data.obs[c + k], data.obs[c - k])
    np.testing.assert_array_equal(data.position[c + k], data.position[c - k])
    assert (data.reward == 0).all()


def test_teleport_goes_to_a_room_seen_in_the_context():
    env, params = make("TwoRoomsTeleport")
    data = _data("TwoRoomsTeleport", 8)
    c = params.context_steps
    assert (data.action[c] == STAY).all()
    jumps = set()
    for n in range(8):
        position = data.position[:, n]
        context = {tuple(p) for p in position[: c + 1]}
        assert _room(position[c + 1], 1, 2) != _room(position[c], 1, 2)
        assert tuple(position[c + 1]) in context and not env.door[tuple(position[c + 1])]
        assert {tuple(p) for p in position[c + 1 :]} <= context
        steps = np.abs(np.diff(position[c + 1 :], axis=0)).sum(1)
        assert (steps == 1).all(), "the query walks the tour one cell per step"
        jumps.add(tuple(position[c + 1]))
    assert len(jumps) > 1, "the teleport cell is drawn per episode"
    recall = _data("TwoRoomsRecall")
    assert (np.abs(recall.position[c + 1] - recall.position[c]).sum(-1) <= 1).all()


def test_distract_reward_is_the_cue_colour():
    data = _data("TwoRoomsDistract", 8)
    c = 128
    centre = data.obs[:, :, CENTRE].argmax(-1)
    rewards, cues = [], []
    for n in range(8):
        in_room_0 = data.position[:, n, 1] < 6
        seen, counts = np.unique(centre[in_room_0, n], return_counts=True)
        assert len(seen) == 2, "room 0's floor and its object"
        cue = seen[np.argmin(counts)]  # the object covers one of the room's 25 cells
        assert data.reward[-1, n] == pytest.approx(cue / (NUM_COLOURS - 1))
        assert (data.reward[:-1, n] == 0).all()
        rewards.append(data.reward[-1, n])
        cues.append(cue)
    assert len(set(cues)) > 1 and len(set(rewards)) == len(set(cues))
    # The query never shows room 0: its window stays right of the wall column 6.
    assert (data.position[c + 1 :, :, 1] >= 7).all()


def test_dataset_is_deterministic_and_time_major():
    first = rooms.dataset("TwoRoomsRecall", 3, jax.random.key(7), context_steps=60, query_steps=20)
    again = rooms.dataset("TwoRoomsRecall", 3, jax.random.key(7), context_steps=60, query_steps=20)
    shapes = {"obs": (81, 3, 72), "position": (81, 3, 2)}
    dtypes = {"obs": jnp.float32, "action": jnp.int32, "reward": jnp.float32}
    dtypes |= {"is_first": jnp.bool_, "phase": jnp.int32, "position": jnp.int32}
    for field, a, b in zip(first._fields, first, again, strict=True):
        assert a.shape == shapes.get(field, (81, 3)) and a.dtype == dtypes[field], field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert (first.phase.sum(0) == 20).all() and (first.action[-1] == 0).all()
    with pytest.raises(ValueError, match="allowed"):
        rooms.dataset("TwoRoomsRecall", 1, jax.random.key(0), bogus=1)
    with pytest.raises(ValueError, match="TwoRoomsRecall"):
        rooms.dataset("TwoRoomRecall", 1, jax.random.key(0))


def test_jit_vmap_step_auto_resets_after_the_last_query_step():
    env, params = make("TwoRoomsTeleport", context_steps=4, query_steps=3)
    keys = jax.random.split(jax.random.key(0), 5)

    def run(keys):
        obs, state = jax.vmap(env.reset, (0, None))(keys, params)

        def body(state, _):
            action = jax.vmap(env.scripted_action, (0, None))(state, params)
            obs, state, reward, terminated, truncated, info = jax.vmap(env.step, (0, 0, 0, None))(
                keys, state, action, params
            )
            out = (obs, reward, terminated, truncated, info["phase"], info["final_observation"])
            return state, out

        return obs, jax.lax.scan(body, state, length=7)

    obs0, (state, outputs) = jax.jit(run, compiler_options=FAST_COMPILE)(keys)
    obs, reward, terminated, truncated, phase, final_obs = map(np.asarray, outputs)
    assert obs0.shape == (5, 72) and (obs0.sum(-1) == 9).all()
    steps = np.arange(1, 8)[:, None]
    np.testing.assert_array_equal(terminated, np.broadcast_to(steps == 7, (7, 5)))
    np.testing.assert_array_equal(phase, np.broadcast_to(steps > 4, (7, 5)))
    assert not truncated.any() and (reward == 0).all()
    assert (state.time == 0).all() and (state.position == np.array([1, 1])).all()
    np.testing.assert_array_equal(obs[-1], jax.vmap(env.get_obs)(state))
    np.testing.assert_array_equal(obs[:-1], final_obs[:-1])
    assert not np.array_equal(final_obs[-1], obs[-1])


def test_seen_in_context_marks_window_cells_a_context_window_covered():
    # One episode on a line: context positions (1, 1), (1, 2) (C = 1), then (1, 3), (4, 4).
    position = np.array([[[1, 1]], [[1, 2]], [[1, 3]], [[4, 4]]], np.int32)
    seen = np.asarray(rooms.seen_in_context(jnp.asarray(position), 1))
    assert seen.shape == (4, 1, 9)
    assert seen[:2].all()  # the context's own windows
    # At (1, 3) the window spans columns 2-4: columns 2 and 3 were seen, column 4 not.
    np.testing.assert_array_equal(seen[2, 0].reshape(3, 3), [[1, 1, 0]] * 3)
    # At (4, 4) the window rows 3-5 never met the context's rows 0-2.
    assert not seen[3].any()


def test_seen_in_context_on_a_recall_dataset():
    data = _data("TwoRoomsRecall")
    seen = np.asarray(rooms.seen_in_context(jnp.asarray(data.position), 128))
    # The query walks the context backwards, so every query window was seen.
    assert seen.all()
    short = np.asarray(rooms.seen_in_context(jnp.asarray(data.position), 10))
    assert short[:11].all() and not short[11:].all()


def test_env_methods_give_the_tools_scripted_episodes_and_the_seen_split():
    env, params = make("TwoRoomsDistract", context_steps=20, query_steps=6)
    key = jax.random.key(3)
    data = jax.jit(env.scripted_episodes, static_argnums=2)(key, params, 2)
    want = rooms.rollout(env, params, 2, key)
    for field, a, b in zip(data._fields, data, want, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=field)
    # With observations 0 .. 9 as the context, the split is seen_in_context's up to obs 9.
    np.testing.assert_array_equal(
        env.seen_in_context(data, 10), rooms.seen_in_context(data.position, 9)
    )
    assert env.cell_classes == NUM_COLOURS and env.has_reward
    assert not make("TwoRoomsRecall")[0].has_reward
