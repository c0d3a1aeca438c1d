"""The POPGym card tasks against the reference popgym package.

Autoencode, CountRecall, RepeatFirst, RepeatPrevious, HigherLower and
Concentration, each at Easy/Medium/Hard. Exact conformance goes from our
environment to the reference: we play an episode of ours, rebuild a reference
deck that deals the card values our observations showed, then step the
reference with the same actions and compare every reward, flag and (one-hot)
observation.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import popgym.envs
import pytest
from popgym.core.deck import Deck

from ssmrl.envs import make
from ssmrl.envs.popgym import cards
from tests.envs.reference import assert_means_match, reference_random_returns

FAMILIES = (
    "Autoencode",
    "CountRecall",
    "RepeatFirst",
    "RepeatPrevious",
    "HigherLower",
    "Concentration",
)
TASKS = [f + level for f in FAMILIES for level in ("Easy", "Medium", "Hard")]


def encode(space: gym.Space, obs) -> np.ndarray:
    """One-hot encoding of a reference observation, in the order ssmrl uses."""
    if isinstance(space, gym.spaces.Discrete):
        return np.eye(space.n, dtype=np.float32)[int(np.asarray(obs).item())]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return np.concatenate(
            [np.eye(n, dtype=np.float32)[int(o)] for n, o in zip(space.nvec, obs, strict=True)]
        )
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([encode(s, o) for s, o in zip(space.spaces, obs, strict=True)])
    raise TypeError(space)


def card_ids(values: np.ndarray, attribute: str, num_decks: int) -> np.ndarray:
    """Distinct card ids with the given attribute values; -1 entries get the unused cards."""
    ids = np.arange(cards.DECK_SIZE * num_decks)
    of_value = np.asarray(cards.card_values(ids, attribute))
    pools = [list(ids[of_value == v]) for v in range(cards.NUM_VALUES[attribute])]
    out = np.array([pools[v].pop(0) if v >= 0 else -1 for v in values])
    leftover = [c for pool in pools for c in pool]
    out[out < 0] = leftover  # raises unless exactly the unused cards fill the gaps
    return out


def load_deck(deck: Deck, idx: np.ndarray) -> None:
    """Make the reference deck's reset use the order ``idx`` instead of shuffling."""

    def reset(shuffle=True, rng=None):
        for hand in deck.hands.values():
            hand.clear()
        deck.deck_len = deck.num_cards
        deck.idx = np.array(idx)

    deck.reset = reset


@functools.cache
def task(name: str):
    """Our env, its params, a step count that outlasts any episode, and one compiled rollout.

    The rollout plays ``length`` actions through ``env.step`` (which resets after
    each episode) from a start state, keeping the observations of the first
    ``steps`` steps and every reward and flag. It is unbatched, as vmapped PRNG
    code compiles several times slower on CPU, and compiling dominates these
    tests; ``length`` is traced, so one compile serves every call.
    """
    env, params = make(name)
    steps = params.max_steps_in_episode + 1
    obs_size = env.observation_space(params).shape[0]

    def rollout(key, start, actions, length):
        def body(t, carry):
            state, obs, rewards, terminated, truncated = carry
            step = env.step(jax.random.fold_in(key, t), state, actions[t], params)
            row = jnp.minimum(t, steps - 1)
            first_obs = jnp.where(t < steps, step[5]["final_observation"], obs[row])
            return (
                step[1],
                obs.at[row].set(first_obs),
                rewards.at[t].set(step[2]),
                terminated.at[t].set(step[3]),
                truncated.at[t].set(step[4]),
            )

        flags = jnp.zeros(actions.shape, bool)
        init = (start, jnp.zeros((steps, obs_size)), jnp.zeros(actions.shape), flags, flags)
        return jax.lax.fori_loop(0, length, body, init)[1:]

    return env, params, steps, jax.jit(rollout)


def play(name: str, seed: int, actions: np.ndarray, start=None, random_returns=False):
    """Our first episode, playing ``actions``, and optionally random-policy returns.

    The first episode starts from ``env.reset_env`` with a key fixed by ``seed``
    (or from ``start = (obs, state)``) and is cut at its end. With
    ``random_returns`` the stream goes on acting uniformly at random, and every
    episode that starts after the first ``steps`` steps (so sees only random
    actions) and ends within the stream gives a return.
    """
    env, params, steps, rollout = task(name)
    episodes = int(np.clip(40_000 // steps, 60, 300))
    key_start, key_steps = jax.random.split(jax.random.key(seed))
    obs0, state = env.reset_env(key_start, params) if start is None else start
    stream = np.random.default_rng(seed).integers(0, env.num_actions, episodes * steps)
    stream[:steps] = 0
    stream[: len(actions)] = actions[:steps]
    length = len(stream) if random_returns else steps
    obs, rewards, terminated, truncated = map(
        np.asarray, rollout(key_steps, state, jnp.asarray(stream, jnp.int32), length)
    )
    ends = np.flatnonzero(terminated | truncated) + 1
    assert ends[0] <= steps, "the first episode did not end"
    starts = ends[:-1]
    returns = (
        np.add.reduceat(rewards[: ends[-1]], starts)[starts >= steps] if random_returns else None
    )
    end = ends[0]
    episode = np.asarray(obs0), obs[:end], rewards[:end], terminated[:end], truncated[:end]
    return episode, returns


def dealt_values(name: str, obs0: np.ndarray, obs: np.ndarray) -> list[np.ndarray]:
    """The card values our observations showed, per deck, in dealing (or position) order."""
    env, *_ = task(name)
    shown = np.concatenate([obs0[None], obs])
    if name.startswith("Autoencode"):
        return [shown[: env.num_cards, 2:].argmax(-1)]
    if name.startswith("CountRecall"):
        v = env.num_values
        return [shown[:, :v].argmax(-1), shown[:, v:].argmax(-1)]
    if name.startswith("Concentration"):
        per_position = shown.reshape(len(shown), env.num_cards, env.num_values + 1).argmax(-1)
        values = np.full(env.num_cards, -1)
        for row in per_position:
            values = np.where(row < env.num_values, row, values)
        return [values]
    return [shown.argmax(-1)]


def attribute_of(name: str) -> str:
    """The card attribute task `name` deals."""
    env, *_ = task(name)
    return getattr(env, "deck_type", "ranks" if name.startswith("HigherLower") else "suits")


def reference_with(name: str, values: list[np.ndarray]):
    """A reference env whose decks deal (or lay out) exactly ``values``."""
    env = getattr(popgym.envs, name)()
    attribute = attribute_of(name)
    decks = [env.value_deck, env.query_deck] if name.startswith("CountRecall") else [env.deck]
    for deck, vals in zip(decks, values, strict=True):
        ids = card_ids(vals, attribute, deck.num_decks)
        # Dealing takes cards from the end of `idx`; Concentration lays `idx` out in order.
        load_deck(deck, ids if name.startswith("Concentration") else ids[::-1])
    return env


def assert_reference_agrees(name, actions, obs0, obs, rewards, terminated, truncated, values):
    """Step the reference on the same cards and actions; compare everything step by step."""
    ref = reference_with(name, values)
    num_actions = ref.action_space.n
    ref_obs, _ = ref.reset(seed=0)
    np.testing.assert_array_equal(encode(ref.observation_space, ref_obs), obs0)
    for t, action in enumerate(actions[: len(rewards)]):
        o, r, term, trunc, _ = ref.step(int(np.clip(action, 0, num_actions - 1)))
        np.testing.assert_array_equal(encode(ref.observation_space, o), obs[t], err_msg=f"step {t}")
        assert r == pytest.approx(rewards[t], abs=1e-6), f"step {t}"
        assert (term, trunc) == (terminated[t], truncated[t]), f"step {t}"
    assert term or trunc, "the reference episode goes on"


def optimal_actions(name: str, obs0: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Return-1 actions; action t is computed from observations 0..t only."""
    env, *_ = task(name)
    shown = np.concatenate([obs0[None], obs])
    actions = np.zeros(len(obs), np.int32)
    if name.startswith("RepeatFirst"):
        actions[:] = shown[0].argmax()
    elif name.startswith("RepeatPrevious"):
        suits = shown.argmax(-1)
        for t in range(env.k - 1, len(obs)):
            actions[t] = suits[t - (env.k - 1)]
    elif name.startswith("Autoencode"):
        suits, reciting = [], False
        for t in range(len(obs)):
            if not reciting:
                # Memorise each shown card; the first observation flagged 0 shows the last one.
                suits.append(shown[t, 2:].argmax())
                reciting = shown[t, 1] == 0
            if reciting:
                actions[t] = suits.pop()
    elif name.startswith("CountRecall"):
        v = env.num_values
        counts = np.zeros(v, np.int32)
        for t in range(len(obs)):
            counts[shown[t, :v].argmax()] += 1
            actions[t] = counts[shown[t, v:].argmax()]
    return actions


def card_counting_actions(obs0: np.ndarray, obs: np.ndarray, num_decks: int) -> np.ndarray:
    """HigherLower's optimal policy from observations: guess the likelier side."""
    shown = np.concatenate([obs0[None], obs]).argmax(-1)
    left = np.full(13, 4 * num_decks)
    actions = np.zeros(len(obs), np.int32)
    for t in range(len(obs)):
        left[shown[t]] -= 1
        higher, lower = left[shown[t] + 1 :].sum(), left[: shown[t]].sum()
        actions[t] = 0 if higher >= lower else 1
    return actions


@pytest.mark.parametrize("name", TASKS)
def test_spaces_match_reference(name):
    env, params, _, _ = task(name)
    ref = getattr(popgym.envs, name)()
    ref_obs, _ = ref.reset(seed=0)
    assert env.observation_space(params).shape == encode(ref.observation_space, ref_obs).shape
    assert env.action_space(params).n == ref.action_space.n == env.num_actions
    obs0, _ = env.reset_env(jax.random.key(0), params)
    assert obs0.shape == env.observation_space(params).shape and obs0.dtype == jnp.float32


@pytest.mark.parametrize("name", TASKS)
def test_matches_reference(name):
    """First episode: random actions, some out of range (ours clips them, the reference
    gets them clipped), replayed on the reference. Later episodes: random-policy returns."""
    env, params, steps, _ = task(name)
    actions = np.random.default_rng(1).integers(-3, env.num_actions + 3, steps)
    actions[:2] = -5, env.num_actions + 3
    (obs0, obs, rewards, terminated, truncated), random_returns = play(
        name, 1, actions, random_returns=True
    )
    assert set(np.unique(obs)) <= {0.0, 1.0} and np.isfinite(rewards).all()
    values = dealt_values(name, obs0, obs)
    if not name.startswith("Concentration"):
        # Every card was dealt: each deck shows each value exactly N / V times.
        num_values = cards.NUM_VALUES[attribute_of(name)]
        for vals in values:
            assert len(vals) == env.num_decks * cards.DECK_SIZE
            np.testing.assert_array_equal(
                np.bincount(vals, minlength=num_values), len(vals) // num_values
            )
        assert len(rewards) == env.episode_length and terminated[-1] and not truncated.any()
    assert_reference_agrees(name, actions, obs0, obs, rewards, terminated, truncated, values)

    assert np.all(np.abs(random_returns) <= 1 + 1e-5)
    # About 20k reference steps: the long episodes have the least spread in their returns.
    episodes = int(np.clip(20_000 // len(rewards), 40, 150))
    assert_means_match(random_returns, reference_random_returns(name, episodes, seed=1))


@pytest.mark.parametrize(
    "name", [t for t in TASKS if not t.startswith(("HigherLower", "Concentration"))]
)
def test_policy_from_observations_earns_one(name):
    env, _, steps, _ = task(name)
    (obs0, obs, *_), _ = play(name, 2, np.zeros(steps))
    actions = optimal_actions(name, obs0, obs)
    # The cards do not depend on the actions, so the replay deals the same ones.
    (_, obs_again, rewards, terminated, truncated), _ = play(name, 2, actions)
    np.testing.assert_array_equal(obs_again, obs)
    assert rewards.sum() == pytest.approx(1.0, abs=1e-4)
    assert len(rewards) == env.episode_length and terminated[-1] and not truncated.any()
    values = dealt_values(name, obs0, obs)
    assert_reference_agrees(name, actions, obs0, obs, rewards, terminated, truncated, values)


@pytest.mark.parametrize("name", ["HigherLowerEasy", "HigherLowerMedium", "HigherLowerHard"])
def test_higher_lower_best_returns(name):
    """Knowing the next card earns (non-tied steps) / N, the most any policy can; card
    counting (optimal from observations) earns less, but far more than chance."""
    env, _, steps, _ = task(name)
    (obs0, obs, *_), _ = play(name, 3, np.zeros(steps))
    ranks = np.concatenate([obs0[None], obs]).argmax(-1)
    oracle = np.where(ranks[1:] > ranks[:-1], 0, 1)
    counting = card_counting_actions(obs0, obs, env.num_decks)
    values = dealt_values(name, obs0, obs)
    returns = {}
    for label, actions in (("oracle", oracle), ("counting", counting)):
        episode, _ = play(name, 3, actions)
        returns[label] = episode[2].sum()
        assert_reference_agrees(name, actions, *episode, values)
    assert returns["oracle"] == pytest.approx(np.sum(ranks[1:] != ranks[:-1]) / len(ranks))
    assert 0.3 < returns["counting"] < returns["oracle"]


@pytest.mark.parametrize("name", ["ConcentrationEasy", "ConcentrationMedium", "ConcentrationHard"])
def test_concentration_known_layout_earns_one(name):
    """Knowing the layout, flipping pairs in turn earns 1 in N steps (here and in popgym)."""
    env, _, _, _ = task(name)
    ids = np.random.default_rng(4).permutation(env.num_cards)
    values = np.asarray(cards.card_values(ids, env.deck_type))
    actions = np.concatenate([np.flatnonzero(values == v) for v in range(env.num_values)])
    episode, _ = play(name, 4, actions, start=env.reset_from_cards(ids))
    obs0, obs, rewards, terminated, truncated = episode
    assert rewards.sum() == pytest.approx(1.0, abs=1e-4)
    assert len(rewards) == env.num_cards and terminated[-1] and not truncated.any()
    assert_reference_agrees(name, actions, *episode, [values])


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "Concentration"])
def test_time_limit_truncates_only_cut_short_episodes(family):
    env, params = make(family + "Easy")
    _, state = env.reset_env(jax.random.key(8), params)
    end = env.episode_length
    assert params.max_steps_in_episode == end
    assert not env.is_truncated(state.replace(time=end), params)
    assert not env.is_truncated(state.replace(time=end - 1), params)
    short = params.replace(max_steps_in_episode=10)
    assert env.is_truncated(state.replace(time=10), short)
    assert not env.is_truncated(state.replace(time=9), short)


def test_card_values_match_reference_deck():
    deck = Deck(num_decks=2)
    ids = np.arange(deck.num_cards)
    for attribute, expected in (
        ("ranks", deck.ranks_idx),
        ("suits", deck.suits_idx),
        ("colors", deck.colors_idx),
    ):
        np.testing.assert_array_equal(cards.card_values(ids, attribute), expected)
        np.testing.assert_array_equal(cards.full_counts(2, attribute), np.bincount(expected))


@jax.jit
def _draws(key):
    counts = jnp.array([1, 0, 3, 2], jnp.int32)
    key_many, key_deal = jax.random.split(key)
    fresh = lambda _, key: (None, cards.draw(key, counts))
    many, left = jax.lax.scan(fresh, None, jax.random.split(key_many, 6000))[1]
    deal = lambda deck, key: cards.draw(key, deck)[::-1]
    empty, dealt = jax.lax.scan(deal, counts, jax.random.split(key_deal, 7))
    return many, left, dealt, empty


def test_draw_is_uniform_over_remaining_cards():
    many, left, dealt, empty = map(np.asarray, _draws(jax.random.key(6)))
    freq = np.bincount(many, minlength=4) / len(many)
    np.testing.assert_allclose(freq, [1 / 6, 0, 3 / 6, 2 / 6], atol=0.025)
    np.testing.assert_array_equal(left.sum(-1), 5)
    np.testing.assert_array_equal(left + np.eye(4, dtype=int)[many], [[1, 0, 3, 2]] * len(many))
    # Dealing a deck out gives back exactly its cards; an empty deck stays empty.
    np.testing.assert_array_equal(np.bincount(dealt[:6], minlength=4), [1, 0, 3, 2])
    assert dealt[6] == 0 and np.all(empty == 0)
