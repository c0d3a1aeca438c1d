"""The cheap steps and resets of the grid, bandit, card and control tasks keep their behaviour.

`AutoReset` (the auto-reset step that CountRecall, Autoencode, Concentration,
Battleship, MultiarmedBandit, the labyrinths, CartPole and Pendulum share) must
agree with gymnax's; Battleship and MultiarmedBandit carry the next episode's
layout or probabilities and build them a little per step; Concentration builds
its observation once; MineSweeper samples mines with Floyd's algorithm;
`rng.words` gives two words per hash. These tests check exact distributions on
small boards, both on the usual path and when an episode ends before the next
one is ready, step-by-step equality with gymnax's auto-reset or with `step_env`
wherever the semantics are unchanged, and that the control tasks' auto-resets
draw fresh uniform starts and noise. Each test compiles one function.
"""

from __future__ import annotations

import itertools
from collections import Counter
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces
from scipy import stats

from ssmrl.envs import make
from ssmrl.envs.popgym.autoreset import AutoReset
from ssmrl.envs.popgym.battleship import Battleship, place_ships
from ssmrl.envs.popgym.bits import pack_rows, pick_bit, prefix_sums, unpack_rows
from ssmrl.envs.popgym.cards import deal
from ssmrl.envs.popgym.cartpole import CartPole
from ssmrl.envs.popgym.minesweeper import sample_mines
from ssmrl.envs.popgym.rng import normal, uniform, words

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


def test_pick_bit_prefix_sums_and_packing():
    rows = jnp.asarray([0b0101, 0, 0b1000], jnp.uint32)
    counts = np.random.default_rng(1).integers(0, 5, 13)
    grid = np.random.default_rng(0).random((5, 7)) < 0.5

    @jax.jit
    def run(words, counts, grid):
        picks = jax.vmap(lambda w: jnp.stack(pick_bit(rows, w, 4)))(words)
        return picks, prefix_sums(counts), unpack_rows(pack_rows(grid), 7)

    picks, sums, unpacked = run(jnp.arange(6, dtype=jnp.uint32), counts, grid)
    np.testing.assert_array_equal(picks, [[0, 0], [0, 2], [2, 3]] * 2)
    np.testing.assert_array_equal(sums, np.cumsum(counts))
    np.testing.assert_array_equal(unpacked, grid)


def test_deal_takes_the_word_modulo_the_deck_in_value_order():
    @jax.jit
    def run(counts):
        values = jax.vmap(lambda w: deal(w, counts)[0])(jnp.arange(10, dtype=jnp.uint32))
        return values, deal(jnp.uint32(7), counts, 5), deal(jnp.uint32(7), 0 * counts)

    values, (value, left), (empty_value, empty_left) = run(jnp.asarray([2, 0, 3], jnp.int32))
    np.testing.assert_array_equal(values, [0, 0, 2, 2, 2] * 2)
    assert value == 2 and left.tolist() == [2, 0, 2]
    assert empty_value == 0 and empty_left.tolist() == [0, 0, 0]


def test_words_are_split_key_data_and_blocks_differ():
    @jax.jit
    def run(key, raw, rbg):
        block = [jnp.stack(words(k, 5)) for k in (key, raw, rbg)]
        block_1 = [jnp.stack(words(k, 5, block=1)) for k in (key, rbg)]
        split = jax.random.key_data(jax.random.split(key, 3)).reshape(-1)[:5]
        bits = jax.random.bits(key, (1000,))
        ours = (uniform(bits), uniform(bits, -0.05, 0.05), uniform(bits, -jnp.pi, jnp.pi))
        ours += (normal(bits),)
        theirs = tuple(
            jax.random.uniform(key, (1000,), jnp.float32, *bounds)
            for bounds in ((0.0, 1.0), (-0.05, 0.05), (-jnp.pi, jnp.pi))
        )
        return block, block_1, split, ours, (*theirs, jax.random.normal(key, (1000,)))

    key = jax.random.key(11)
    rbg = jax.random.key(11, impl="rbg")
    (ours, raw, rbg), (ours_1, rbg_1), split, floats_ours, floats_jax = run(
        key, jax.random.PRNGKey(11), rbg
    )
    np.testing.assert_array_equal(ours, split)
    np.testing.assert_array_equal(raw, split)
    assert len(set(np.concatenate([ours, ours_1]).tolist())) == 10
    assert len(set(np.concatenate([rbg, rbg_1]).tolist())) == 10
    jax.tree.map(np.testing.assert_array_equal, floats_ours, floats_jax)


def test_battleship_layouts_match_the_sequential_process():
    """``reset`` and the carried layouts of auto-resets: built from proposals kept
    when they fit (16-step episodes), placed all at once when an episode ends
    first (1 step), and both (3 steps)."""
    exact = _exact_layouts(4, SMALL.ship_sizes)
    count = 4000
    _, states = jax.vmap(SMALL.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), count), SMALL.default_params
    )
    _assert_distribution(states.board, exact)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def next_boards(key, params):
        _, state = SMALL.reset(jax.random.key(1), params)

        def one(keys):
            def body(state, key):
                return SMALL.step(key, state, 0, params)[1], None

            return jax.lax.scan(body, state, keys)[0].board

        # 16 steps: one 16-step episode, sixteen 1-step ones, or 3-step ones.
        return jax.vmap(one)(jax.random.split(key, (count, 16)))

    for max_steps in (1, 3, 16):
        params = SMALL.default_params.replace(max_steps_in_episode=max_steps)
        _assert_distribution(next_boards(jax.random.key(max_steps), params), exact)


def test_place_ships_fills_standard_boards():
    @partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
    def cells(n, keys):  # the largest board; smaller ones are checked against popgym
        boards = jax.vmap(lambda k: place_ships(k, n, (2, 3, 3, 4)))(keys)
        return unpack_rows(boards, n).sum((1, 2))

    assert (np.asarray(cells(12, jax.random.split(jax.random.key(12), 200))) == 12).all()


def test_minesweeper_mines_are_uniform_subsets():
    @partial(jax.jit, static_argnums=(0, 1), compiler_options=FAST_COMPILE)
    def masks(cells, mines, keys):
        return jax.vmap(lambda k: sample_mines(k, cells, mines))(keys)

    small = np.asarray(masks(6, 2, jax.random.split(jax.random.key(3), 4000)))
    assert (small.sum(1) == 2).all()
    counts = Counter(map(tuple, small.astype(int).tolist()))
    assert len(counts) == 15
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4
    assert np.asarray(masks(64, 10, jax.random.split(jax.random.key(4), 1))).sum() == 10


def _gymnax_step(env, key, state, action, params):
    """gymnax's own auto-reset step (reset drawn every step), for comparison."""
    return environment.Environment.step(env, key, state, action, params)


@struct.dataclass
class _CounterState(environment.EnvState):
    count: jax.Array
    time: int


class _Counter(AutoReset[_CounterState, environment.EnvParams]):
    """A toy task: the observation counts the actions' sum; an action of 3
    terminates. Its reset ignores the key, so `AutoReset.step` must equal gymnax's."""

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=4)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, _CounterState]:
        return jnp.full((2,), -1.0), _CounterState(count=jnp.int32(0), time=0)

    def next_episode(self, key, state, done, params):
        return state, self.reset_env(key, params)

    def step_env(self, key, state, action, params):
        state = _CounterState(count=state.count + action, time=state.time + 1)
        obs = jnp.stack([state.count, state.time]).astype(jnp.float32)
        return obs, state, -state.count.astype(jnp.float32), action == 3, {"count": state.count}

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(4)


@partial(jax.jit, static_argnums=(0, 1, 4), compiler_options=FAST_COMPILE)
def _both_rollouts(env, steps, params, key, reference=_gymnax_step):
    """Random actions through ``env.step`` and ``reference(env, key, state, action,
    params)`` (gymnax's step) from the same start; each step's keys are shared.
    -> (ours, the reference's) per-step outputs."""
    key_reset, key_run = jax.random.split(key)
    _, state = env.reset(key_reset, params)
    space = env.action_space(params)

    def run(step):
        def body(state, key):
            key_act, key_step = jax.random.split(key)
            obs, state, reward, terminated, truncated, info = step(
                env, key_step, state, space.sample(key_act), params
            )
            return state, (obs, reward, terminated, truncated, info)

        return jax.lax.scan(body, state, jax.random.split(key_run, steps))[1]

    return run(lambda env, *a: env.step(*a)), run(reference)


def test_auto_reset_step_is_gymnax_step():
    env = _Counter()
    ours, theirs = _both_rollouts(env, 40, env.default_params, jax.random.key(2))
    assert ours[2].any() and ours[3].any()  # both ways for episodes to end occur
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_concentration_step_is_auto_reset_step():
    """The step that builds the observation once equals `AutoReset.step`, whose reset
    draws nothing, for the same keys; the ranks task writes its one-hot observation
    as ones into zeros."""
    env, params = make("ConcentrationHard")
    params = params.replace(max_steps_in_episode=9)  # many auto-resets
    ours, theirs = _both_rollouts(env, 60, params, jax.random.key(5), AutoReset.step)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    obs = ours[0].reshape(60, env.num_cards, env.num_values + 1)
    assert (obs.sum(-1) == 1).all() and obs[..., :-1].any()


def test_bandit_steps_are_step_env_and_next_probs_are_uniform():
    """Within episodes ``step`` is ``step_env``; the probabilities of the episodes
    after ones shorter and longer than the 10 arms are independent uniforms."""
    env, params = make("MultiarmedBanditEasy")

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def rollouts(params, keys):
        def one(key):
            _, state = env.reset(jax.random.key(0), params)

            def body(state, key):
                action = jax.random.randint(key, (), 0, env.num_arms)
                obs, new, reward, _, truncated, info = env.step(key, state, action, params)
                alone = env.step_env(key, state, action, params)
                same = (info["final_observation"] == alone[0]).all() & (reward == alone[2])
                same &= truncated | (obs == alone[0]).all()
                return new, same

            state, same = jax.lax.scan(body, state, jax.random.split(key, 12))
            return state.probs, state.time, same

        return jax.vmap(one)(keys)

    for max_steps in (3, 12):
        short = params.replace(max_steps_in_episode=max_steps)
        probs, time, same = map(
            np.asarray, rollouts(short, jax.random.split(jax.random.key(7), 600))
        )
        assert (time == 0).all() and same.all()
        assert stats.kstest(probs.reshape(-1), "uniform").pvalue > 1e-4
        # Arms are independent: neighbouring arms are uncorrelated.
        assert abs(np.corrcoef(probs[:, :-1].reshape(-1), probs[:, 1:].reshape(-1))[0, 1]) < 0.07


def test_count_recall_resets_are_uniform_and_steps_are_step_env():
    env, params = make("CountRecallMedium")
    params = params.replace(max_steps_in_episode=2)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def firsts(keys):
        def one(key):
            _, state = env.reset(jax.random.key(0), params)
            obs, state, reward, _, truncated, info = env.step(key, state, 0, params)
            obs, state, reward, _, truncated, info = env.step(key, state, 0, params)
            return obs, state.time, info["final_observation"]

        return jax.vmap(one)(keys)

    obs, time, final = map(np.asarray, firsts(jax.random.split(jax.random.key(8), 4000)))
    assert (time == 0).all()
    value, query = obs[:, :4].argmax(1), obs[:, 4:].argmax(1)
    pairs = Counter(zip(value.tolist(), query.tolist(), strict=True))
    assert len(pairs) == 16 and stats.chisquare(list(pairs.values())).pvalue > 1e-4
    # The reset's cards do not follow the cards of the step that ended the episode.
    assert abs(np.corrcoef(final[:, :4].argmax(1), value)[0, 1]) < 0.07


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _one_step_episodes(env, params, keys):
    """Two steps from one start under each key, every step ending its episode
    (``params`` must truncate after one step) -> per step: the observation, the
    final observation, ``step_env``'s observation and reward, the noiseless
    ``step_env`` observation, the reward and the state after the auto-reset."""
    space = env.action_space(params)

    def one(key):
        _, state = env.reset(jax.random.key(0), params)

        def body(state, key):
            action = space.sample(jax.random.fold_in(key, 1))
            obs, new, reward, _, _, info = env.step(key, state, action, params)
            alone = env.step_env(key, state, action, params)
            clean = env.step_env(key, state, action, params.replace(noise_std=0.0))[0]
            return new, (obs, info["final_observation"], alone[0], alone[2], clean, reward, new)

        return jax.lax.scan(body, state, jax.random.split(key, 2))[1]

    return jax.vmap(one)(keys)


@pytest.mark.parametrize(
    "name",
    [
        "VelocityOnlyCartPoleEasy",
        "NoisyPositionOnlyCartPoleMedium",
        "NoisyPositionOnlyPendulumEasy",
    ],
)
def test_control_auto_resets_draw_fresh_starts_and_noise(name):
    """CartPole and Pendulum: the step is ``step_env`` (noise included); the reset
    after it starts from uniform states with its own noise (none without noise)."""
    env, params = make(name)
    params = params.replace(max_steps_in_episode=1)
    out = _one_step_episodes(env, params, jax.random.split(jax.random.key(9), 2000))
    obs, final, alone_obs, alone_reward, clean, reward, state = jax.tree.map(
        lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), out
    )
    np.testing.assert_array_equal(final, alone_obs)
    np.testing.assert_array_equal(reward, alone_reward)
    assert (state.time == 0).all()
    if isinstance(env, CartPole):
        starts = {0.05: [state.x, state.x_dot, state.theta, state.theta_dot]}
        start_obs = np.stack([state.x, state.theta], -1)
    else:
        starts = {np.pi: [state.theta], 1.0: [state.theta_dot]}
        start_obs = np.stack([np.cos(state.theta), np.sin(state.theta)], -1)
    for bound, values in starts.items():
        for v in values:
            assert stats.kstest(v, "uniform", (-bound, 2 * bound)).pvalue > 1e-4
    if params.noise_std == 0:
        np.testing.assert_array_equal(obs, start_obs)
        np.testing.assert_array_equal(final, clean)
        return
    reset_noise, step_noise = obs - start_obs, final - clean
    assert (reset_noise != 0).mean() > 0.9 and (step_noise != 0).mean() > 0.9
    if isinstance(env, CartPole):  # x is never clipped: its noise is exactly normal
        for noise in (reset_noise[:, 0], step_noise[:, 0]):
            assert stats.kstest(noise / params.noise_std, "norm").pvalue > 1e-4
        assert abs(np.corrcoef(reset_noise[:, 0], step_noise[:, 0])[0, 1]) < 0.07
        assert abs(np.corrcoef(reset_noise[:, 0], state.x)[0, 1]) < 0.07


def test_autoencode_resets_are_uniform_and_steps_are_step_env():
    env, params = make("AutoencodeMedium")
    params = params.replace(max_steps_in_episode=1)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def firsts(keys):
        def one(key):
            _, state = env.reset(jax.random.key(0), params)
            obs, new, reward, _, truncated, info = env.step(key, state, 0, params)
            alone = env.step_env(key, state, 0, params)
            same = (info["final_observation"] == alone[0]).all() & (reward == alone[2])
            return obs, new, info["final_observation"], same & truncated

        return jax.vmap(one)(keys)

    obs, state, final, same = jax.tree.map(
        np.asarray, firsts(jax.random.split(jax.random.key(10), 4000))
    )
    assert same.all() and (state.time == 0).all()
    first = obs[:, 2:].argmax(1)
    assert (obs[:, 1] == 1).all() and (state.suits[:, 0] == first).all()
    np.testing.assert_array_equal(state.remaining, 26 - (np.arange(4) == first[:, None]))
    assert stats.chisquare(np.bincount(first, minlength=4)).pvalue > 1e-4
    # The reset's card does not follow the card the step dealt.
    assert abs(np.corrcoef(final[:, 2:].argmax(1), first)[0, 1]) < 0.07
