"""Battleship and MineSweeper against the reference popgym package."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import popgym.envs
import pytest

from ssmrl.envs import make
from ssmrl.envs.popgym.battleship import Battleship
from ssmrl.envs.popgym.bits import unpack_rows
from ssmrl.envs.popgym.minesweeper import MineSweeper
from tests.envs.reference import assert_means_match, jax_random_returns, reference_random_returns

LEVELS = ("Easy", "Medium", "Hard")
BATTLESHIP = [f"Battleship{level}" for level in LEVELS]
MINESWEEPER = [f"MineSweeper{level}" for level in LEVELS]
ENVS = {name: make(name) for name in BATTLESHIP + MINESWEEPER}
BATCH = 8  # episodes per compiled rollout; every rollout of an env uses this shape
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _rollout(env, params, states, actions):
    """Step a batch of states through given action sequences without auto-reset.

    Returns per-step ``(obs, reward, terminated, truncated)``, each ``(batch, steps, ...)``.
    """

    def one(state, actions):
        def body(state, action):
            obs, state, reward, terminated, _ = env.step_env(
                jax.random.key(0), state, action, params
            )
            return state, (obs, reward, terminated, env.is_truncated(state, params))

        return jax.lax.scan(body, state, actions)[1]

    return jax.vmap(one)(states, actions)


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _reset_batch(env, params, keys):
    return jax.vmap(env.reset, in_axes=(0, None))(keys, params)


def _stack(states):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _pad(sequences, length):
    out = np.zeros((len(sequences), length), np.int32)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = seq
    return out


def _reference_episode(ref, actions, cols, num_obs):
    """Step the reference env (already reset) until the episode ends."""
    steps = []
    for a in actions:
        obs, reward, terminated, truncated, _ = ref.step(np.array(divmod(int(a), cols)))
        steps.append((np.eye(num_obs)[obs], reward, terminated, truncated))
        if terminated or truncated:
            return steps
    raise AssertionError("reference episode did not end")


def _assert_same_episodes(name, env, params, states, actions, ref_episodes):
    obs, reward, terminated, truncated = map(
        np.asarray, _rollout(env, params, states, jnp.asarray(actions))
    )
    for i, ref_steps in enumerate(ref_episodes):
        n = len(ref_steps)
        ref_obs, ref_reward, ref_term, ref_trunc = map(np.array, zip(*ref_steps, strict=True))
        np.testing.assert_array_equal(obs[i, :n], ref_obs, err_msg=f"{name} episode {i}")
        np.testing.assert_allclose(reward[i, :n], ref_reward, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(terminated[i, :n], ref_term)
        np.testing.assert_array_equal(truncated[i, :n], ref_trunc)
        np.testing.assert_allclose(reward[i, :n].sum(), ref_reward.sum(), atol=1e-5)


@pytest.mark.parametrize("name", BATTLESHIP + MINESWEEPER)
def test_spaces_and_lengths_match_reference(name):
    env, params = ENVS[name]
    ref = getattr(popgym.envs, name)()
    assert env.observation_space(params).shape == (ref.observation_space.n,)
    assert env.action_space(params).n == env.num_actions == np.prod(ref.action_space.nvec)
    assert params.max_steps_in_episode == ref.max_episode_length


def test_minesweeper_aliases():
    for level in LEVELS:
        env, params = make(f"Minesweeper{level}")
        assert isinstance(env, MineSweeper)
        assert env.dims == ENVS[f"MineSweeper{level}"][0].dims


@pytest.mark.parametrize("name", BATTLESHIP)
def test_battleship_matches_reference_on_its_boards(name):
    """Reference boards copied into our state give identical episodes.

    Policies: ship cells in order (the optimal return 1), each ship cell twice
    (repeat hits are misses), a random permutation, and uniform random shots.
    """
    env, params = ENVS[name]
    n = env.board_size
    ref = getattr(popgym.envs, name)()
    rng = np.random.default_rng(0)
    states, actions, episodes = [], [], []
    for i in range(BATCH):
        ref_obs, _ = ref.reset(seed=i)
        board = ref.board.copy()
        ships = np.flatnonzero(board)
        seq = [
            ships,
            np.repeat(ships, 2),
            rng.permutation(n * n),
            rng.integers(0, n * n, n * n),
        ][i % 4]
        obs, state = env.reset_from_board(board)
        np.testing.assert_array_equal(obs, np.eye(2)[ref_obs])
        states.append(state)
        actions.append(seq)
        episodes.append(_reference_episode(ref, seq, n, 2))
        if i % 4 == 0:
            assert len(episodes[-1]) == env.needed_hits and episodes[-1][-1][2]
            np.testing.assert_allclose(sum(step[1] for step in episodes[-1]), 1.0, atol=1e-9)
    _assert_same_episodes(name, env, params, _stack(states), _pad(actions, n * n), episodes)


@pytest.mark.parametrize("name", MINESWEEPER)
def test_minesweeper_matches_reference_on_its_boards(name):
    """Reference minefields copied into our state give identical episodes.

    Policies: every free cell (the optimal return 1), free cells with one repeat
    (truncated), free cells then a mine, and uniform random clicks.
    """
    env, params = ENVS[name]
    rows, cols = env.dims
    length = params.max_steps_in_episode
    ref = getattr(popgym.envs, name)()
    rng = np.random.default_rng(1)
    states, actions, episodes = [], [], []
    for i in range(BATCH):
        ref_obs, _ = ref.reset(seed=i)
        mines = ref.hidden_grid == 1
        free = rng.permutation(np.flatnonzero(~mines))
        seq = [
            free,
            np.concatenate([free[:1], free[:-1]]),
            np.concatenate([free[:5], np.flatnonzero(mines)[:1]]),
            rng.integers(0, rows * cols, length),
        ][i % 4]
        obs, state = env.reset_from_mines(mines)
        np.testing.assert_array_equal(obs, np.eye(env.num_obs)[ref_obs])
        states.append(state)
        actions.append(seq)
        episodes.append(_reference_episode(ref, seq, cols, env.num_obs))
        last = episodes[-1][-1]
        if i % 4 == 0:
            assert len(episodes[-1]) == length and last[2] and not last[3]
            np.testing.assert_allclose(sum(step[1] for step in episodes[-1]), 1.0, atol=1e-9)
        if i % 4 == 1:
            assert len(episodes[-1]) == length and last[3] and not last[2]
    _assert_same_episodes(name, env, params, _stack(states), _pad(actions, length), episodes)


@pytest.mark.parametrize("name", BATTLESHIP)
def test_battleship_placement_matches_reference(name):
    """Our ship layouts: right cell count, same per-cell occupancy as the reference,
    and shooting the ship cells wins with return 1."""
    env, params = ENVS[name]
    n = env.board_size
    _, states = _reset_batch(env, params, jax.random.split(jax.random.key(1), 4000))
    boards = np.asarray(unpack_rows(states.board, n)).reshape(4000, -1)
    assert (boards.sum(1) == env.needed_hits).all()
    ref = getattr(popgym.envs, name)()
    ref.reset(seed=0)
    ref_boards = []
    for _ in range(1000):
        ref.reset()
        ref_boards.append(ref.board.reshape(-1).copy())
    ref_boards = np.array(ref_boards)
    p, q = boards.mean(0), ref_boards.mean(0)
    pooled = (p * 4000 + q * 1000) / 5000
    se = np.sqrt(pooled * (1 - pooled) * (1 / 4000 + 1 / 1000)) + 1e-9
    assert np.abs(p - q).max() > 0  # the comparison is not vacuous
    assert (np.abs(p - q) / se).max() < 4.5, "per-cell ship occupancy differs"
    # Corners are rarer than the centre, as the reference's placement implies.
    assert p.reshape(n, n)[0, 0] < p.reshape(n, n)[n // 2, n // 2]

    first = jax.tree.map(lambda x: x[:BATCH], states)
    optimal = np.argsort(~boards[:BATCH], axis=1, kind="stable")
    _, reward, terminated, truncated = map(
        np.asarray, _rollout(env, params, first, jnp.asarray(optimal, jnp.int32))
    )
    hits = env.needed_hits
    np.testing.assert_allclose(reward[:, :hits].sum(1), 1.0, atol=1e-5)
    assert terminated[:, hits - 1].all() and not terminated[:, : hits - 1].any()
    assert not truncated[:, :hits].any()


@pytest.mark.parametrize("name", MINESWEEPER)
def test_minesweeper_mines_uniform_and_optimal(name):
    """Our minefields: exact mine count, uniform cells, and clearing every free cell
    wins with return 1."""
    env, params = ENVS[name]
    count = 4000
    _, states = _reset_batch(env, params, jax.random.split(jax.random.key(2), count))
    mines = np.asarray(states.mines).reshape(count, -1)
    assert (mines.sum(1) == env.num_mines).all()
    p = env.num_mines / env.num_cells
    z = (mines.mean(0) - p) / np.sqrt(p * (1 - p) / count)
    assert np.abs(z).max() < 4.5, "mines are not uniform over cells"

    first = jax.tree.map(lambda x: x[:BATCH], states)
    optimal = np.argsort(mines[:BATCH], axis=1, kind="stable")[:, : params.max_steps_in_episode]
    _, reward, terminated, truncated = map(
        np.asarray, _rollout(env, params, first, jnp.asarray(optimal, jnp.int32))
    )
    np.testing.assert_allclose(reward.sum(1), 1.0, atol=1e-5)
    assert terminated[:, -1].all() and not terminated[:, :-1].any() and not truncated.any()


@pytest.mark.parametrize("name", BATTLESHIP + MINESWEEPER)
def test_out_of_range_actions_are_clipped(name):
    env, params = ENVS[name]
    length = params.max_steps_in_episode
    side = int(np.sqrt(env.num_actions))
    layout = np.zeros((side, side), bool)
    layout[0, 1:3] = True  # a two-cell ship, or two mines
    reset = env.reset_from_mines if isinstance(env, MineSweeper) else env.reset_from_board
    states = _stack([reset(layout)[1]] * BATCH)
    last = env.num_actions - 1
    actions = np.zeros((BATCH, length), np.int32)
    actions[0, :4] = [-5, last + 3, 2**31 - 1, -(2**31)]
    actions[1, :4] = [0, last, last, 0]
    obs, reward, terminated, truncated = map(
        np.asarray, _rollout(env, params, states, jnp.asarray(actions))
    )
    for out in (obs, reward, terminated, truncated):
        np.testing.assert_array_equal(out[0, :4], out[1, :4])
    assert np.isfinite(obs).all() and np.isfinite(reward).all()
    assert ((obs == 0) | (obs == 1)).all() and (obs.sum(-1) == 1).all()


@pytest.mark.parametrize("name", BATTLESHIP + MINESWEEPER)
def test_random_policy_return_matches_reference(name):
    env, params = ENVS[name]
    ours = jax_random_returns(env, params, 400, jax.random.key(4), params.max_steps_in_episode)
    ref = reference_random_returns(name, 200)
    lowest = -1.0
    if isinstance(env, Battleship):
        # As in the reference, all misses give -cells / (cells - ship cells) < -1.
        cells = params.max_steps_in_episode
        lowest = -cells / (cells - env.needed_hits)
    assert ours.min() >= lowest - 1e-5 and ours.max() <= 1.0 + 1e-5
    assert_means_match(ours, ref)


def test_default_constructors_match_reference_defaults():
    assert Battleship().board_size == popgym.envs.battleship.Battleship().board_size
    ref = popgym.envs.minesweeper.MineSweeper()
    env = MineSweeper()
    assert env.dims == ref.dims and env.num_mines == ref.num_mines
