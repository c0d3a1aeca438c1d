"""The cheap resets of the grid, bandit and card tasks keep gymnax's behaviour.

Battleship and MultiarmedBandit carry the next episode's layout or probabilities
and build them a little per step; Concentration builds its observation once;
MineSweeper samples mines with Floyd's algorithm. These tests check exact
distributions on small boards, both on the usual path and when an episode ends
before the next one is ready, and step-by-step equality with gymnax's own
auto-reset wherever the semantics are unchanged.
"""

from __future__ import annotations

import itertools
from collections import Counter
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment
from scipy import stats

from ssmrl.envs import make
from ssmrl.envs.popgym.battleship import Battleship, place_ships
from ssmrl.envs.popgym.bits import pack_rows, pick_bit, unpack_rows
from ssmrl.envs.popgym.minesweeper import sample_mines

FAST_COMPILE = {"xla_backend_optimization_level": 0}
SMALL = Battleship(board_size=4, ship_sizes=(3, 2))


def _exact_layouts(n, sizes):
    """Probability of every layout of ships placed in turn, each uniform over the
    segments that fit and avoid earlier ships -> {packed rows tuple: p}."""
    out = Counter()

    def segments(board, size):
        for r, c, vertical in itertools.product(range(n), range(n), (False, True)):
            cells = [(r + k, c) if vertical else (r, c + k) for k in range(size)]
            if all(i < n and j < n and not board[i, j] for i, j in cells):
                yield cells

    def place(board, rest, p):
        if not rest:
            key = tuple(int(sum(int(b) << j for j, b in enumerate(row))) for row in board)
            out[key] += p
            return
        options = list(segments(board, rest[0]))
        for cells in options:
            new = board.copy()
            for i, j in cells:
                new[i, j] = True
            place(new, rest[1:], p / len(options))

    place(np.zeros((n, n), bool), list(sizes), 1.0)
    return out


def _assert_distribution(samples, exact):
    counts = Counter(map(tuple, np.asarray(samples).tolist()))
    assert set(counts) <= set(exact), "a layout the process cannot produce"
    keys = sorted(exact)
    observed = np.array([counts[k] for k in keys])
    expected = np.array([exact[k] for k in keys]) * len(samples)
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_pick_bit_is_uniform_in_row_major_order():
    rows = jnp.asarray([0b0101, 0, 0b1000], jnp.uint32)
    words = jnp.arange(6, dtype=jnp.uint32)
    picks = jax.vmap(lambda w: jnp.stack(pick_bit(rows, w, 4)))(words)
    np.testing.assert_array_equal(picks, [[0, 0], [0, 2], [2, 3]] * 2)
    grid = np.random.default_rng(0).random((5, 7)) < 0.5
    np.testing.assert_array_equal(unpack_rows(pack_rows(grid), 7), grid)


def test_battleship_layouts_match_the_sequential_process():
    """``reset`` and the carried layouts of auto-resets, both placed a ship per step
    (16-step episodes) and all at once when an episode ends first (1 step)."""
    exact = _exact_layouts(4, SMALL.ship_sizes)
    count = 6000
    _, states = jax.vmap(SMALL.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), count), SMALL.default_params
    )
    _assert_distribution(states.board, exact)

    @partial(jax.jit, static_argnums=1, compiler_options=FAST_COMPILE)
    def next_boards(key, max_steps):
        params = SMALL.default_params.replace(max_steps_in_episode=max_steps)
        keys = jax.random.split(key, (count, max_steps))
        _, state = SMALL.reset(jax.random.key(1), params)

        def one(keys):
            def body(state, key):
                return SMALL.step(key, state, 0, params)[1], None

            return jax.lax.scan(body, state, keys)[0].board

        return jax.vmap(one)(keys)

    for max_steps in (1, 16):
        _assert_distribution(next_boards(jax.random.key(max_steps), max_steps), exact)


def test_place_ships_fills_standard_boards():
    for n in (8, 12):
        boards = jax.vmap(lambda k, n=n: place_ships(k, n, (2, 3, 3, 4)))(
            jax.random.split(jax.random.key(n), 500)
        )
        assert (np.asarray(unpack_rows(boards, n)).sum((1, 2)) == 12).all()


def test_minesweeper_mines_are_uniform_subsets():
    masks = jax.vmap(lambda k: sample_mines(k, 6, 2))(jax.random.split(jax.random.key(3), 15000))
    masks = np.asarray(masks)
    assert (masks.sum(1) == 2).all()
    counts = Counter(map(tuple, masks.astype(int).tolist()))
    assert len(counts) == 15
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4
    mines = np.asarray(sample_mines(jax.random.key(4), 64, 10))
    assert mines.sum() == 10


def _gymnax_step(env, key, state, action, params):
    """gymnax's own auto-reset step (reset drawn every step), for comparison."""
    return environment.Environment.step(env, key, state, action, params)


@partial(jax.jit, static_argnums=(0, 1), compiler_options=FAST_COMPILE)
def _both_rollouts(env, steps, params, key):
    """Random actions through ``env.step`` and gymnax's step from the same start;
    each step's keys are shared. -> (ours, gymnax's) per-step outputs."""
    key_reset, key_run = jax.random.split(key)
    _, state = env.reset(key_reset, params)
    space = env.action_space(params)

    def run(step):
        def body(state, key):
            key_act, key_step = jax.random.split(key)
            obs, state, reward, terminated, truncated, info = step(
                env, key_step, state, space.sample(key_act), params
            )
            return state, (obs, reward, terminated, truncated, info["final_observation"])

        return jax.lax.scan(body, state, jax.random.split(key_run, steps))[1]

    return run(lambda env, *a: env.step(*a)), run(_gymnax_step)


def test_concentration_step_is_gymnax_step():
    env, params = make("ConcentrationEasy")
    params = params.replace(max_steps_in_episode=9)  # many auto-resets
    ours, theirs = _both_rollouts(env, 60, params, jax.random.key(5))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bandit_first_episode_is_gymnax_and_next_probs_are_uniform():
    env, params = make("MultiarmedBanditEasy")
    ours, theirs = _both_rollouts(env, params.max_steps_in_episode, params, jax.random.key(6))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)

    @partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
    def probs_after(max_steps, keys):
        short = params.replace(max_steps_in_episode=max_steps)

        def one(key):
            _, state = env.reset(jax.random.key(0), short)
            keys = jax.random.split(key, max_steps)
            state = jax.lax.scan(lambda s, k: (env.step(k, s, 0, short)[1], None), state, keys)[0]
            return state.probs, state.time

        return jax.vmap(one)(keys)

    for max_steps in (3, 12):  # episodes shorter and longer than the 10 arms
        probs, time = map(
            np.asarray, probs_after(max_steps, jax.random.split(jax.random.key(7), 800))
        )
        assert (time == 0).all()
        assert stats.kstest(probs.reshape(-1), "uniform").pvalue > 1e-4
        # Arms are independent: neighbouring arms are uncorrelated.
        assert abs(np.corrcoef(probs[:, :-1].reshape(-1), probs[:, 1:].reshape(-1))[0, 1]) < 0.06
