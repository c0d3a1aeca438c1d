"""LabyrinthEscape and LabyrinthExplore against the reference popgym package and mazelib."""

from __future__ import annotations

import warnings
from collections import deque
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import popgym.envs
import pytest
from scipy import ndimage

from ssmrl.envs import make
from ssmrl.envs.popgym.labyrinth import WALL, generate_maze
from tests.envs.reference import assert_means_match, jax_random_returns, reference_random_returns

LEVELS = {"Easy": 10, "Medium": 14, "Hard": 18}
ESCAPE = [f"LabyrinthEscape{level}" for level in LEVELS]
EXPLORE = [f"LabyrinthExplore{level}" for level in LEVELS]
ENVS = {name: make(name) for name in ESCAPE + EXPLORE}
MOVES = {(0, -1): 0, (0, 1): 1, (-1, 0): 2, (1, 0): 3}
MAZES = 400  # generated per size for the property checks
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _reference(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(popgym.envs, name)()


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _rollout(env, params, states, actions):
    """Step a batch of states through given action sequences without auto-reset."""

    def one(state, actions):
        def body(state, action):
            obs, state, reward, terminated, _ = env.step_env(
                jax.random.key(0), state, action, params
            )
            return state, (obs, reward, terminated, env.is_truncated(state, params))

        return jax.lax.scan(body, state, actions)[1]

    return jax.vmap(one)(states, actions)


@cache
def _our_mazes(rooms: int):
    """`MAZES` mazes from our generator as numpy ``(walls, start, goal)``."""
    keys = jax.random.split(jax.random.key(rooms), MAZES)
    gen = jax.jit(jax.vmap(lambda k: generate_maze(k, rooms, rooms)), compiler_options=FAST_COMPILE)
    return tuple(np.asarray(x) for x in gen(keys))


def _neighbours(free, pos):
    for dr, dc in MOVES:
        r, c = pos[0] + dr, pos[1] + dc
        if 0 <= r < free.shape[0] and 0 <= c < free.shape[1] and free[r, c]:
            yield r, c


def _bfs(free, source):
    """Distances and BFS parents from ``source`` over free squares."""
    dist, parent = {source: 0}, {source: None}
    queue = deque([source])
    while queue:
        pos = queue.popleft()
        for nxt in _neighbours(free, pos):
            if nxt not in dist:
                dist[nxt], parent[nxt] = dist[pos] + 1, pos
                queue.append(nxt)
    return dist, parent


def _action(a, b):
    return MOVES[(b[0] - a[0], b[1] - a[1])]


def _escape_policy(walls, start, goal):
    """Shortest path to the goal; returns the actions and their number."""
    free = ~walls
    free[tuple(goal)] = True
    _, parent = _bfs(free, tuple(start))
    path = [tuple(goal)]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    path = path[::-1]
    return [_action(a, b) for a, b in zip(path, path[1:], strict=False)]


def _explore_policy(walls, start):
    """Depth-first tour of the maze tree that enters the deepest branch last.

    On a tree this visits every square in the fewest steps, ``2 E - D`` for
    ``E`` edges and ``D`` the largest distance from the start.
    """
    free = ~walls
    free[tuple(start)] = True
    dist, parent = _bfs(free, tuple(start))
    children = {pos: [] for pos in dist}
    for pos, par in parent.items():
        if par is not None:
            children[par].append(pos)
    height = {}
    for pos in sorted(dist, key=dist.get, reverse=True):
        height[pos] = 1 + max((height[c] for c in children[pos]), default=-1)
    actions, remaining = [], len(dist) - 1
    stack = [(tuple(start), iter(sorted(children[tuple(start)], key=height.get)))]
    while remaining:
        pos, todo = stack[-1]
        nxt = next(todo, None)
        if nxt is None:
            stack.pop()
            actions.append(_action(pos, stack[-1][0]))
            continue
        actions.append(_action(pos, nxt))
        remaining -= 1
        stack.append((nxt, iter(sorted(children[nxt], key=height.get))))
    edges, depth = len(dist) - 1, max(dist.values())
    assert len(actions) == 2 * edges - depth
    return actions


def _policy(name, walls, start, goal):
    if "Escape" in name:
        return _escape_policy(walls, start, goal)
    return _explore_policy(walls, start)


def _best_return(name, walls, start, goal, steps):
    """The largest possible return: each non-rewarding step costs 1 / 1024."""
    if "Escape" in name:
        return 1.0 - len(_escape_policy(walls, start, goal)) / steps
    free = ~walls
    free[tuple(start)] = True
    dist, _ = _bfs(free, tuple(start))
    return 1.0 - (len(dist) - 1 - max(dist.values())) / steps


def _reference_episode(ref, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = ref.step(int(a))
        out.append((np.eye(5)[obs].reshape(-1), reward, terminated, truncated))
        if terminated or truncated:
            return out
    raise AssertionError("reference episode did not end")


def _stack(states):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


@pytest.mark.parametrize("name", ESCAPE + EXPLORE)
def test_spaces_and_lengths_match_reference(name):
    env, params = ENVS[name]
    ref = _reference(name)
    assert env.observation_space(params).shape == (ref.observation_space.nvec.sum(),)
    assert env.action_space(params).n == env.num_actions == ref.action_space.n
    assert params.max_steps_in_episode == ref.max_episode_length
    assert env.shape == ref.state_space.shape


@pytest.mark.parametrize("rooms", [5, 7, 9])
def test_generated_mazes_are_perfect(rooms):
    """Every maze is a spanning tree of the rooms inside a closed border, with the
    openings on opposite sides next to a room."""
    walls, start, goal = _our_mazes(rooms)
    size = 2 * rooms + 1
    assert walls.shape == (MAZES, size, size)
    free = ~walls
    assert walls[:, [0, -1], :].all() and walls[:, :, [0, -1]].all()
    assert free[:, 1::2, 1::2].all() and walls[:, ::2, ::2].all()
    # A tree: connected, with one passage fewer than rooms.
    assert (free.sum((1, 2)) == 2 * rooms**2 - 1).all()
    links = (free[:, 1:, :] & free[:, :-1, :]).sum((1, 2)) + (free[:, :, 1:] & free[:, :, :-1]).sum(
        (1, 2)
    )
    assert (links == free.sum((1, 2)) - 1).all()
    assert all(ndimage.label(f)[1] == 1 for f in free)

    for s, g in zip(start, goal, strict=True):
        on_side = [s[0] == 0, s[0] == size - 1, s[1] == 0, s[1] == size - 1]
        assert sum(on_side) == 1
        assert (size - 1 - s == g)[np.argmax(on_side) // 2]  # opposite side
        along = 1 - np.argmax(on_side) // 2
        assert s[along] % 2 == 1 and g[along] % 2 == 1
    sides = np.stack([start[:, 0] == 0, start[:, 0] == size - 1, start[:, 1] == 0]).mean(1)
    assert np.all(np.abs(sides - 0.25) < 0.08)


@pytest.mark.parametrize("level", LEVELS)
def test_maze_distribution_matches_reference(level):
    """Dead ends, horizontal passages, corner-to-corner and start-to-goal path
    lengths of our mazes agree with the reference's (mazelib's HuntAndKill; other
    algorithms, e.g. Prim's or recursive backtracking, give clearly different
    dead-end counts, and a walk favouring some directions skews the passages)."""

    def stats(walls, start, goal):
        free = ~walls
        padded = np.pad(free, 1)
        degree = (
            padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        )[1::2, 1::2]
        dead_ends = int((free[1::2, 1::2] & (degree == 1)).sum())
        dist, _ = _bfs(free, (1, 1))
        corners = dist[(free.shape[0] - 2, free.shape[1] - 2)]
        across = int(free[1:-1:2, 2:-1:2].sum())
        return dead_ends, across, corners, len(_escape_policy(walls, start, goal))

    ours = np.array(
        [stats(*maze) for maze in zip(*_our_mazes(LEVELS[level] // 2), strict=True)], float
    )
    ref_env = _reference(f"LabyrinthEscape{level}")
    ref = []
    for seed in range(150):
        ref_env.reset(seed=seed)
        maze = ref_env.maze
        walls = maze.grid == WALL
        walls[maze.start] = walls[maze.end] = True
        ref.append(stats(walls, maze.start, maze.end))
    ref = np.array(ref, float)
    for k in range(ours.shape[1]):
        assert_means_match(ours[:, k], ref[:, k])


@pytest.mark.parametrize("name", ESCAPE + EXPLORE)
def test_episodes_match_reference_and_optimal_policy(name):
    """Reference mazes copied into our state give identical episodes under random
    and optimal actions; the optimal policy reaches the best possible return on
    reference mazes and on ours; out-of-range actions act as clipped ones."""
    env, params = ENVS[name]
    steps = params.max_steps_in_episode
    ref = _reference(name)
    rng = np.random.default_rng(0)
    states, actions, episodes, best = [], [], [], []
    for seed in range(2):
        ref_obs, _ = ref.reset(seed=seed)
        grid = ref.maze.grid.copy()
        walls, start, goal = grid == WALL, ref.maze.start, ref.maze.end
        obs, state = env.reset_from_maze(jax.random.key(seed), walls, start, goal)
        np.testing.assert_array_equal(obs, np.eye(5)[ref_obs].reshape(-1))
        optimal = _policy(name, walls, start, goal)
        # Seed 0 walks at random; seed 1 paces between the start and the first
        # room until the time limit.
        back = {0: 1, 1: 0, 2: 3, 3: 2}[optimal[0]]
        pacing = np.resize([optimal[0], back], steps - 1)
        for seq in ([rng.integers(0, 4, steps - 1), pacing][seed], optimal):
            ref.reset(seed=seed)
            states.append(state)
            actions.append(seq)
            episodes.append(_reference_episode(ref, seq))
        best.append(_best_return(name, walls, start, goal, steps))
    our_walls, our_start, our_goal = _our_mazes(env.rooms[0])
    for i in range(2):
        maze = our_walls[i], our_start[i], our_goal[i]
        states.append(env.reset_from_maze(jax.random.key(i), *maze)[1])
        actions.append(_policy(name, *maze))
        best.append(_best_return(name, *maze, steps))
    # Out-of-range actions on the first reference maze, and their clipped values.
    wild = rng.integers(-100, 100, steps - 1)
    states += [states[0], states[0]]
    actions += [wild, np.clip(wild, 0, 3)]

    padded = np.zeros((len(actions), steps - 1), np.int32)
    for i, seq in enumerate(actions):
        padded[i, : len(seq)] = seq
    obs, reward, terminated, truncated = map(
        np.asarray, _rollout(env, params, _stack(states), jnp.asarray(padded))
    )
    for i, ref_steps in enumerate(episodes):
        n = len(ref_steps)
        ref_obs, ref_reward, ref_term, ref_trunc = map(np.array, zip(*ref_steps, strict=True))
        np.testing.assert_array_equal(obs[i, :n], ref_obs, err_msg=f"episode {i}")
        np.testing.assert_allclose(reward[i, :n], ref_reward, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(terminated[i, :n], ref_term)
        np.testing.assert_array_equal(truncated[i, :n], ref_trunc)
        if i % 2 == 1:  # optimal actions
            assert ref_term[-1] and not ref_term[:-1].any()
            np.testing.assert_allclose(ref_reward.sum(), best[i // 2], atol=1e-9)
    assert len(episodes[2]) == steps - 1 and episodes[2][-1][3] and not episodes[2][-1][2]
    for i in (4, 5):  # our mazes, optimal actions
        n = len(actions[i])
        assert terminated[i, n - 1] and not terminated[i, : n - 1].any()
        assert not truncated[i, :n].any()
        np.testing.assert_allclose(reward[i, :n].sum(), best[2 + i - 4], atol=1e-4)
    for out in (obs, reward, terminated, truncated):
        np.testing.assert_array_equal(out[6], out[7])
    assert np.isfinite(obs[6]).all() and (obs[6].sum(-1) == 10).all()


def _assert_perfect(grid, rooms):
    """``grid`` (our state's) is a spanning tree of the rooms plus its openings."""
    free = grid != WALL
    openings = free[[0, -1], :].sum() + free[:, [0, -1]].sum()
    assert openings in (1, 2)
    assert free[1::2, 1::2].all() and not free[::2, ::2].any()
    assert free.sum() == 2 * rooms**2 - 1 + openings
    links = (free[1:, :] & free[:-1, :]).sum() + (free[:, 1:] & free[:, :-1]).sum()
    assert links == free.sum() - 1 and ndimage.label(free)[1] == 1


def test_auto_reset_mazes_are_perfect():
    """Mazes after auto-resets are perfect and all different, both when the next
    maze was finished a few passages per step (11-step episodes) and when the
    episode ended too soon and the rest was carved at reset (3-step episodes)."""
    env, params = ENVS["LabyrinthEscapeEasy"]
    passages = env.rooms[0] * env.rooms[1] - 1
    max_steps = jnp.array([4, 4, 12, 12])
    steps = 48

    def one(key, actions, max_steps):
        params_here = params.replace(max_steps_in_episode=max_steps)
        _, state = env.reset(key, params_here)

        def body(state, inputs):
            key, action = inputs
            carved = state.next_maze.carved
            _, state, _, terminated, truncated, _ = env.step(key, state, action, params_here)
            return state, (state.grid, terminated | truncated, carved)

        return jax.lax.scan(body, state, (jax.random.split(key, steps), actions))[1]

    keys = jax.random.split(jax.random.key(6), 4)
    actions = jnp.asarray(np.random.default_rng(6).integers(0, 4, (4, steps)), jnp.int32)
    run = jax.jit(jax.vmap(one), compiler_options=FAST_COMPILE)
    grids, done, carved = map(np.asarray, run(keys, actions, max_steps))
    ahead = carved + env.carve_per_step >= passages  # finished without the fallback
    assert not ahead[:2][done[:2]].any() and ahead[2:][done[2:]].all()
    assert done[:2].sum() == 2 * (steps // 3) and done[2:].sum() >= 6
    starts = grids[done]
    assert len({g.tobytes() for g in starts}) == len(starts)
    for grid in starts:
        _assert_perfect(grid, env.rooms[0])


def test_random_policy_return_matches_reference():
    """The random walk's exploration return (Escape's random returns are too noisy
    to be worth the compile; its maze and opening statistics are checked above)."""
    env, params = ENVS["LabyrinthExploreHard"]
    ours = jax_random_returns(env, params, 64, jax.random.key(5), params.max_steps_in_episode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = reference_random_returns("LabyrinthExploreHard", 16)
    assert ours.min() >= -1.0 and ours.max() <= 1.0
    assert_means_match(ours, ref)
