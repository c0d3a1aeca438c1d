"""GAE and λ-returns against hand-computed numbers and plain NumPy float64 loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl.returns import (
    GAEOutput,
    gae,
    imagined_targets,
    lambda_returns,
    next_values_from,
    percentile_scale,
    replayed_targets,
)

GAMMA, LAM = 0.9, 0.8

# One compile per input shape (gamma and lam are traced), which keeps the suite fast.
gae_jit = jax.jit(gae)
next_values_jit = jax.jit(next_values_from)


def gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
    """The recurrence written out with Python loops, in float64; arrays [T, B]."""
    rewards, values, next_values = (
        np.asarray(x, np.float64) for x in (rewards, values, next_values)
    )
    t_len, b_len = values.shape
    gammas = np.broadcast_to(np.asarray(gamma, np.float64), (t_len, b_len))
    advantages = np.zeros((t_len, b_len))
    for b in range(b_len):
        next_advantage = 0.0
        for t in reversed(range(t_len)):
            gamma = gammas[t, b]
            if terminated[t, b]:
                delta = rewards[t, b] - values[t, b]
            else:
                delta = rewards[t, b] + gamma * next_values[t, b] - values[t, b]
            if terminated[t, b] or truncated[t, b]:
                next_advantage = 0.0
            next_advantage = delta + gamma * lam * next_advantage
            advantages[t, b] = next_advantage
    return advantages, advantages + values


def monte_carlo_loop(rewards, next_values, terminated, truncated, gamma):
    """Discounted reward sums walked forward to the episode's end (or the rollout's),
    bootstrapped from next_values where the walk stops without a termination."""
    t_len, b_len = rewards.shape
    out = np.zeros((t_len, b_len))
    for b in range(b_len):
        for t in range(t_len):
            total, discount = 0.0, 1.0
            for k in range(t, t_len):
                total += discount * rewards[k, b]
                discount *= gamma
                if terminated[k, b]:
                    break
                if truncated[k, b] or k == t_len - 1:
                    total += discount * next_values[k, b]
                    break
            out[t, b] = total
    return out


def random_rollout(seed, t_len=50, b_len=7, p_term=0.08, p_trunc=0.08):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(t_len, b_len))
    values = rng.normal(size=(t_len, b_len))
    final_values = rng.normal(size=(t_len, b_len))
    last_value = rng.normal(size=b_len)
    terminated = rng.random((t_len, b_len)) < p_term
    truncated = (rng.random((t_len, b_len)) < p_trunc) & ~terminated
    next_values = np.concatenate([values[1:], last_value[None]])
    next_values = np.where(truncated, final_values, next_values)
    # Whatever sits at a terminated step must be ignored.
    next_values = np.where(terminated, np.nan, next_values)
    return rewards, values, next_values, terminated, truncated


def f32(*xs):
    return [jnp.asarray(x, jnp.float32) if x.dtype != bool else jnp.asarray(x) for x in xs]


def test_hand_computed_termination_then_truncation():
    # T=3, one env, gamma=0.9, lam=0.8 (gamma*lam = 0.72).
    # t=0 continues, t=1 terminates, t=2 is truncated with V(final obs) = 2.0.
    rewards = [1.0, 2.0, 3.0]
    values = [0.5, 1.0, 1.5]
    next_values = [1.0, 99.0, 2.0]  # 99 sits at the terminated step and must be ignored
    terminated = [False, True, False]
    truncated = [False, False, True]
    # delta_2 = 3 + 0.9*2.0 - 1.5 = 3.3;  A_2 = 3.3 (done: nothing after it counts)
    # delta_1 = 2 + 0       - 1.0 = 1.0;  A_1 = 1.0 (done: A_2 is cut off)
    # delta_0 = 1 + 0.9*1.0 - 0.5 = 1.4;  A_0 = 1.4 + 0.72*1.0 = 2.12
    # returns = A + V = [2.62, 2.0, 4.8]
    out = gae_jit(
        *map(jnp.asarray, (rewards, values, next_values, terminated, truncated)), GAMMA, LAM
    )
    assert isinstance(out, GAEOutput)
    np.testing.assert_allclose(out.advantages, [2.12, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(out.returns, [2.62, 2.0, 4.8], rtol=1e-6)


def test_hand_computed_truncation_vs_termination():
    # T=3, one env; the first episode ends at t=0. V(final obs of that episode) = 4.0,
    # the value after the rollout = 5.0.
    rewards = jnp.array([1.0, 1.0, 1.0])
    values = jnp.array([1.0, 2.0, 3.0])
    next_values = jnp.array([4.0, 3.0, 5.0])
    no = jnp.zeros(3, bool)
    first = jnp.array([True, False, False])
    # delta_2 = 1 + 0.9*5 - 3 = 2.5;  A_2 = 2.5
    # delta_1 = 1 + 0.9*3 - 2 = 1.7;  A_1 = 1.7 + 0.72*2.5 = 3.5
    # truncated at 0:  delta_0 = 1 + 0.9*4 - 1 = 3.6;  A_0 = 3.6 (A_1 cut off)
    # terminated at 0: delta_0 = 1 - 1 = 0;            A_0 = 0
    truncated = gae_jit(rewards, values, next_values, no, first, GAMMA, LAM)
    terminated = gae_jit(rewards, values, next_values, first, no, GAMMA, LAM)
    np.testing.assert_allclose(truncated.advantages, [3.6, 3.5, 2.5], rtol=1e-6)
    np.testing.assert_allclose(terminated.advantages, [0.0, 3.5, 2.5], atol=1e-6)
    # No episode end: A_0 = 3.6 + 0.72*3.5 = 6.12
    running = gae_jit(rewards, values, next_values, no, no, GAMMA, LAM)
    np.testing.assert_allclose(running.advantages, [6.12, 3.5, 2.5], rtol=1e-6)


def test_next_values_from_hand_computed():
    values = jnp.array([1.0, 2.0, 3.0])
    final_values = jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_array_equal(
        next_values_jit(values, jnp.array(4.0), final_values, jnp.array([False, True, False])),
        [2.0, 20.0, 4.0],
    )
    np.testing.assert_array_equal(
        next_values_jit(values, jnp.array(4.0), final_values, jnp.array([False, False, True])),
        [2.0, 3.0, 30.0],
    )
    # [T, B]: the last value is one per env.
    values = jnp.arange(6.0).reshape(3, 2)
    truncated = jnp.array([[True, False], [False, False], [False, True]])
    out = next_values_jit(values, jnp.array([7.0, 8.0]), -values, truncated)
    np.testing.assert_array_equal(out, [[-0.0, 3.0], [4.0, 5.0], [7.0, -5.0]])


@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy_loop(seed):
    rollout = random_rollout(seed)
    expected_adv, expected_ret = gae_loop(*rollout, GAMMA, LAM)
    out = gae_jit(*f32(*rollout), GAMMA, LAM)
    assert out.advantages.shape == (50, 7) and out.advantages.dtype == jnp.float32
    np.testing.assert_allclose(out.advantages, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.returns, expected_ret, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(2))
def test_per_step_gamma_matches_numpy_loop(seed):
    rollout = random_rollout(seed)
    gamma = np.where(np.random.default_rng(seed).random((50, 7)) < 0.1, 0.3, GAMMA)
    expected_adv, expected_ret = gae_loop(*rollout, gamma, LAM)
    out = gae_jit(*f32(*rollout), jnp.asarray(gamma, jnp.float32), LAM)
    np.testing.assert_allclose(out.advantages, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.returns, expected_ret, rtol=1e-5, atol=1e-5)


def test_zero_gamma_at_a_step_ends_the_return_there_like_a_termination():
    rewards, values, next_values, _, _ = random_rollout(0, p_term=0.0, p_trunc=0.0)
    cut = np.random.default_rng(1).random((50, 7)) < 0.1
    no = np.zeros_like(cut)
    by_gamma = gae_jit(*f32(rewards, values, next_values, no, no), jnp.where(cut, 0.0, GAMMA), LAM)
    by_flag = gae_jit(*f32(rewards, values, next_values, cut, no), GAMMA, LAM)
    np.testing.assert_allclose(by_gamma.advantages, by_flag.advantages, rtol=1e-6, atol=1e-6)


def test_next_values_from_matches_rollout_construction():
    rng = np.random.default_rng(0)
    values, final_values = rng.normal(size=(2, 50, 7))
    last_value = rng.normal(size=7)
    truncated = rng.random((50, 7)) < 0.1
    expected = np.empty((50, 7))
    for t in range(50):
        for b in range(7):
            if truncated[t, b]:
                expected[t, b] = final_values[t, b]
            else:
                expected[t, b] = values[t + 1, b] if t < 49 else last_value[b]
    out = next_values_jit(*f32(values, last_value, final_values, truncated))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_termination_and_truncation_differ_only_in_the_ending_episode():
    rewards, values, next_values, terminated, truncated = random_rollout(5, p_term=0.0)
    next_values = np.where(np.isnan(next_values), 0.0, next_values)
    b = 3
    s = int(np.flatnonzero(truncated[:, b])[1])  # the second truncation in env 3
    start = int(np.flatnonzero(truncated[:s, b])[-1]) + 1  # first step of that episode
    as_term, as_trunc = terminated.copy(), truncated.copy()
    as_term[s, b], as_trunc[s, b] = True, False
    base = gae_jit(*f32(rewards, values, next_values, terminated, truncated), GAMMA, LAM)
    flipped = gae_jit(*f32(rewards, values, next_values, as_term, as_trunc), GAMMA, LAM)
    # Dropping the bootstrap gamma * V(final obs) at step s lowers A_t for the steps of
    # that episode by (gamma*lam)^(s-t) * gamma * next_values[s]; nothing else moves.
    expected = np.zeros(rewards.shape)
    for t in range(start, s + 1):
        expected[t, b] = -((GAMMA * LAM) ** (s - t)) * GAMMA * next_values[s, b]
    np.testing.assert_allclose(flipped.advantages - base.advantages, expected, atol=1e-5)
    assert expected[start, b] != 0.0


@pytest.mark.parametrize("seed", range(2))
def test_lambda_one_is_bootstrapped_monte_carlo(seed):
    rollout = random_rollout(seed)
    rewards, _, next_values, terminated, truncated = rollout
    expected = monte_carlo_loop(rewards, next_values, terminated, truncated, GAMMA)
    out = gae_jit(*f32(*rollout), GAMMA, 1.0)
    np.testing.assert_allclose(out.returns, expected, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_td_error():
    rewards, values, next_values, terminated, truncated = random_rollout(1)
    bootstrap = np.where(terminated, 0.0, GAMMA * np.nan_to_num(next_values))
    expected = rewards + bootstrap - values
    out = gae_jit(*f32(rewards, values, next_values, terminated, truncated), GAMMA, 0.0)
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-5, atol=1e-5)


def test_any_trailing_batch_shape():
    rollout = random_rollout(2)
    batched = gae_jit(*f32(*rollout), GAMMA, LAM)
    # [T]: each env on its own.
    for b in range(7):
        single = gae_jit(*f32(*(x[:, b] for x in rollout)), GAMMA, LAM)
        np.testing.assert_allclose(single.advantages, batched.advantages[:, b], rtol=1e-6)
    # [T, 1, 7, 1]: the same numbers with extra batch dims.
    nested = gae_jit(*f32(*(x[:, None, :, None] for x in rollout)), GAMMA, LAM)
    np.testing.assert_allclose(nested.advantages[:, 0, :, 0], batched.advantages, rtol=1e-6)


def test_float_flags_equal_bool_flags():
    rewards, values, next_values, terminated, truncated = random_rollout(3)
    as_bool = gae_jit(*f32(rewards, values, next_values, terminated, truncated), GAMMA, LAM)
    as_float = gae_jit(
        *f32(rewards, values, next_values, terminated.astype(float), truncated.astype(float)),
        GAMMA,
        LAM,
    )
    np.testing.assert_array_equal(as_bool.advantages, as_float.advantages)


def test_eager_jit_and_vmap():
    rollouts = [f32(*random_rollout(s)) for s in range(3)]
    stacked = [jnp.stack(xs) for xs in zip(*rollouts, strict=True)]  # [S, T, B]
    # gamma and lam traced (as when they come from a vmapped config) vs. eager Python floats.
    jitted = [gae_jit(*r, jnp.float32(GAMMA), jnp.float32(LAM)) for r in rollouts]
    eager = gae(*rollouts[0], GAMMA, LAM)
    np.testing.assert_allclose(eager.advantages, jitted[0].advantages, rtol=1e-5, atol=1e-6)
    over_seeds = jax.jit(jax.vmap(gae, in_axes=(0, 0, 0, 0, 0, None, None)))(*stacked, GAMMA, LAM)
    np.testing.assert_allclose(
        over_seeds.advantages, jnp.stack([j.advantages for j in jitted]), rtol=1e-5, atol=1e-6
    )
    # vmap over the env axis of one [T, B] rollout gives the batched result.
    over_envs = jax.jit(jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1))(
        *rollouts[0], GAMMA, LAM
    )
    np.testing.assert_allclose(over_envs.returns, jitted[0].returns, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_is_an_error():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="truncated"):
        gae_jit(x, x, x, x.astype(bool), jnp.zeros((4,), bool), GAMMA, LAM)


# --- lambda_returns ---------------------------------------------------------------------

lambda_returns_jit = jax.jit(lambda_returns)


def lambda_returns_loop(rewards, next_values, continues, discount, lam):
    """R[t] = r[t] + g[t] ((1 - lam) v[t+1] + lam R[t+1]), R[T] = v[T]; Python loops, float64.

    Arrays [T, ...]; the trailing dims are flattened and walked one sequence at a time."""
    rewards, next_values, continues = (
        np.asarray(x, np.float64) for x in (rewards, next_values, continues)
    )
    shape = rewards.shape
    discount = np.broadcast_to(np.asarray(discount, np.float64), shape)
    r, v, c, d = (x.reshape(shape[0], -1) for x in (rewards, next_values, continues, discount))
    out = np.zeros(r.shape)
    for b in range(r.shape[1]):
        ret = v[-1, b]
        for t in reversed(range(r.shape[0])):
            g = d[t, b] * c[t, b]
            ret = r[t, b] + g * ((1 - lam) * v[t, b] + lam * ret)
            out[t, b] = ret
    return out.reshape(shape)


def random_imagination(seed, shape, p_end=0.1, soft=False):
    rng = np.random.default_rng(seed)
    rewards, next_values = rng.normal(size=(2, *shape))
    continues = (rng.random(shape) >= p_end).astype(np.float64)
    if soft:  # predicted continue probabilities
        continues = continues * rng.uniform(0.5, 1.0, shape)
    return rewards, next_values, continues


def test_lambda_returns_hand_computed():
    # T=3, gamma=0.9, lam=0.8; s[2] is terminal (continues[1] = 0).
    rewards = jnp.array([1.0, 2.0, 3.0])
    next_values = jnp.array([10.0, 20.0, 30.0])
    continues = jnp.array([1.0, 0.0, 1.0])
    # R[3] = 30;  R[2] = 3 + 0.9 * (0.2*30 + 0.8*30) = 30
    # R[1] = 2 (cut)
    # R[0] = 1 + 0.9 * (0.2*10 + 0.8*2) = 4.24
    out = lambda_returns_jit(rewards, next_values, continues, GAMMA, LAM)
    np.testing.assert_allclose(out, [4.24, 2.0, 30.0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(1,), (16,), (16, 5), (9, 2, 3)])
@pytest.mark.parametrize("soft", [False, True])
def test_lambda_returns_match_numpy_loop(shape, soft):
    rewards, next_values, continues = random_imagination(len(shape) + 10 * soft, shape, soft=soft)
    expected = lambda_returns_loop(rewards, next_values, continues, GAMMA, LAM)
    out = lambda_returns_jit(*f32(rewards, next_values, continues), GAMMA, LAM)
    assert out.shape == shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_lambda_returns_per_step_discount_and_bool_continues():
    rewards, next_values, continues = random_imagination(3, (20, 4))
    discount = np.random.default_rng(4).uniform(0.5, 1.0, (20, 4))
    expected = lambda_returns_loop(rewards, next_values, continues, discount, LAM)
    out = lambda_returns_jit(*f32(rewards, next_values, continues, discount), LAM)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    as_bool = lambda_returns_jit(
        *f32(rewards, next_values, continues.astype(bool), discount), jnp.float32(LAM)
    )
    np.testing.assert_array_equal(as_bool, out)


def test_lambda_zero_is_one_step_td_target():
    rewards, next_values, continues = random_imagination(5, (20, 4), soft=True)
    expected = rewards + GAMMA * continues * next_values
    out = lambda_returns_jit(*f32(rewards, next_values, continues), GAMMA, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_lambda_one_is_discounted_monte_carlo_bootstrapped_with_the_last_value():
    rewards, next_values, continues = random_imagination(6, (20, 4), soft=True)
    t_len, b_len = rewards.shape
    expected = np.zeros((t_len, b_len))
    for b in range(b_len):
        for t in range(t_len):
            total, weight = 0.0, 1.0
            for k in range(t, t_len):
                total += weight * rewards[k, b]
                weight *= GAMMA * continues[k, b]
            expected[t, b] = total + weight * next_values[-1, b]
    out = lambda_returns_jit(*f32(rewards, next_values, continues), GAMMA, 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_zero_continue_cuts_everything_after_it():
    rewards, next_values, continues = random_imagination(7, (20, 4), p_end=0.0)
    continues[8, 2] = 0.0
    base = lambda_returns_jit(*f32(rewards, next_values, continues), GAMMA, LAM)
    # NaN rewards and values after the cut do not reach the steps up to it.
    later_r, later_v = rewards.copy(), next_values.copy()
    later_r[9:, 2], later_v[8:, 2] = np.nan, np.inf
    out = lambda_returns_jit(*f32(later_r, later_v, continues), GAMMA, LAM)
    np.testing.assert_array_equal(out[:9, 2], base[:9, 2])
    np.testing.assert_allclose(out[8, 2], rewards[8, 2], rtol=1e-6)
    # The other sequences are untouched.
    np.testing.assert_array_equal(np.delete(out, 2, axis=1), np.delete(base, 2, axis=1))
    # A zero discount at a step cuts the same way.
    by_discount = lambda_returns_jit(
        *f32(rewards, next_values, np.ones_like(continues)),
        jnp.where(jnp.asarray(continues) == 0, 0.0, GAMMA),
        LAM,
    )
    np.testing.assert_allclose(by_discount, base, rtol=1e-6, atol=1e-6)


def test_lambda_returns_equal_gae_returns_without_truncation():
    rewards, values, _, terminated, _ = random_rollout(8, p_trunc=0.0)
    last_value = np.random.default_rng(8).normal(size=7)
    next_values = np.concatenate([values[1:], last_value[None]])
    no = np.zeros_like(terminated)
    by_gae = gae_jit(*f32(rewards, values, next_values, terminated, no), GAMMA, LAM)
    by_lambda = lambda_returns_jit(
        *f32(rewards, next_values, 1.0 - terminated.astype(np.float64)), GAMMA, LAM
    )
    np.testing.assert_allclose(by_lambda, by_gae.returns, rtol=1e-5, atol=1e-5)


def test_lambda_returns_vmap_and_gradient():
    data = [f32(*random_imagination(s, (12, 3), soft=True)) for s in range(3)]
    stacked = [jnp.stack(xs) for xs in zip(*data, strict=True)]
    over_seeds = jax.jit(jax.vmap(lambda_returns, in_axes=(0, 0, 0, None, None)))(
        *stacked, GAMMA, LAM
    )
    for s in range(3):
        np.testing.assert_allclose(
            over_seeds[s], lambda_returns_jit(*data[s], GAMMA, LAM), rtol=1e-6, atol=1e-6
        )
    # The gradient of R[0] with respect to every value, against finite differences of the
    # float64 loop (exact up to rounding: R is linear in the values).
    rewards, next_values, continues = (np.asarray(x, np.float64) for x in data[0])
    grad = jax.grad(lambda v: lambda_returns(data[0][0], v, data[0][2], GAMMA, LAM)[0, 1])(
        data[0][1]
    )
    eps = 1e-6
    expected = np.zeros(next_values.shape)
    for t in range(next_values.shape[0]):
        bumped = next_values.copy()
        bumped[t, 1] += eps
        expected[t, 1] = (
            lambda_returns_loop(rewards, bumped, continues, GAMMA, LAM)[0, 1]
            - lambda_returns_loop(rewards, next_values, continues, GAMMA, LAM)[0, 1]
        ) / eps
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_lambda_returns_shape_mismatch_is_an_error():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="continues"):
        lambda_returns_jit(x, x, jnp.zeros((4,)), GAMMA, LAM)


def test_percentile_scale_is_an_ema_of_numpy_percentiles():
    rng = np.random.default_rng(3)
    low = high = 0.0
    jit_scale = jax.jit(percentile_scale, static_argnums=(3, 4, 5))
    for step in range(4):
        returns = rng.normal(0.0, 5.0 * (step + 1), (15, 8)).astype(np.float32)
        out = jit_scale(returns, jnp.float32(low), jnp.float32(high), 10.0, 90.0, 0.9)
        p10, p90 = np.percentile(returns.astype(np.float64), [10.0, 90.0])
        low, high = 0.9 * low + 0.1 * p10, 0.9 * high + 0.1 * p90
        np.testing.assert_allclose([out.low, out.high], [low, high], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.scale, max(1.0, high - low), rtol=1e-4)
        low, high = float(out.low), float(out.high)
    # A small range (below 1) is left as it is: the scale is 1.
    small = percentile_scale(jnp.linspace(0.0, 0.5, 20), jnp.float32(0.0), jnp.float32(0.4))
    assert float(small.scale) == 1.0


def test_imagined_targets_against_a_numpy_loop():
    rng = np.random.default_rng(0)
    h, n, gamma, lam = 5, 3, 0.9, 0.8
    reward = rng.normal(size=(h + 1, n))
    cont_prob = rng.uniform(size=(h + 1, n))
    cont_prob[2, 0] = 0.0  # state 2 of rollout 0 is surely terminal: nothing after it counts
    start_cont = np.array([1.0, 0.0, 1.0])  # rollout 1 starts at a terminal (or padding)
    values = rng.normal(size=(h + 1, n))
    returns, weight = imagined_targets(
        *map(jnp.asarray, (reward, cont_prob, start_cont, values)), gamma, lam
    )
    flag = np.concatenate([start_cont[None], cont_prob[1:]])
    want_ret, want_w = np.zeros((h, n)), np.zeros((h, n))
    for b in range(n):
        ret = values[h, b]
        for t in reversed(range(h)):
            g = gamma * flag[t + 1, b]
            ret = reward[t + 1, b] + g * ((1 - lam) * values[t + 1, b] + lam * ret)
            want_ret[t, b] = ret
        for t in range(h):
            want_w[t, b] = np.prod(gamma * flag[: t + 1, b]) / gamma
    np.testing.assert_allclose(returns, want_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weight, want_w, rtol=1e-6)
    assert want_w[3, 0] == 0.0 and want_w[0, 1] == 0.0
    np.testing.assert_allclose(returns[1, 0], reward[2, 0], rtol=1e-6)  # cut at the terminal


def replayed_loop(reward, cont, is_first, valid, boot, gamma, lam):
    """The replayed-value targets with float64 loops over each sequence; arrays [T, B]."""
    t_len, b_len = boot.shape
    ret, weight = np.zeros((t_len, b_len)), np.zeros((t_len, b_len))
    for b in range(b_len):
        for t in reversed(range(t_len)):
            end = t == t_len - 1 or is_first[t + 1, b] or not valid[t + 1, b]
            if end:
                ret[t, b] = boot[t, b]
            elif cont[t + 1, b] == 0:  # the next state is terminal: nothing after it counts
                ret[t, b] = reward[t + 1, b]
            else:
                ahead = (1 - lam) * boot[t + 1, b] + lam * ret[t + 1, b]
                ret[t, b] = reward[t + 1, b] + gamma * cont[t + 1, b] * ahead
            weight[t, b] = float(valid[t, b] and cont[t, b] > 0 and not end)
    return ret, weight


def test_replayed_targets_against_a_numpy_loop():
    rng = np.random.default_rng(1)
    t_len, b_len, gamma, lam = 9, 3, 0.9, 0.8
    reward = rng.normal(size=(t_len, b_len))
    boot = rng.normal(size=(t_len, b_len))
    cont = np.ones((t_len, b_len))
    is_first = np.zeros((t_len, b_len), bool)
    valid = np.ones((t_len, b_len), bool)
    cont[3, 0], is_first[4, 0] = 0.0, True  # sequence 0: a terminal, then a new episode
    is_first[6, 1] = True  # sequence 1: truncated after row 5
    valid[7:, 2] = False  # sequence 2: padding at the end
    boot[3, 0] = np.inf  # a terminal's own value never enters a target
    got_ret, got_w = replayed_targets(
        *map(jnp.asarray, (reward, cont, is_first, valid, boot)), gamma, lam
    )
    want_ret, want_w = replayed_loop(reward, cont, is_first, valid, boot, gamma, lam)
    finite = np.isfinite(want_ret)
    np.testing.assert_allclose(np.asarray(got_ret)[finite], want_ret[finite], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_w, want_w)
    # By hand: the row before a terminal gets its reward alone; the rows at an
    # episode's or a sequence's end weigh 0, and so does the terminal itself.
    np.testing.assert_allclose(got_ret[2, 0], reward[3, 0], rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(got_ret)[:3, 0]))
    assert want_w[3, 0] == 0 and want_w[5, 1] == 0 and want_w[6, 2] == 0 and want_w[-1, 0] == 0
    np.testing.assert_allclose(got_ret[5, 1], boot[5, 1], rtol=1e-6)
