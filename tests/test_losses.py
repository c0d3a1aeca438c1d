"""PPO loss pieces against hand-computed numbers."""

import jax
import jax.numpy as jnp
import numpy as np

from ssmrl.losses import SurrogateAux, clipped_surrogate, clipped_value_loss, normalize

EPS = 0.2

# Six entries covering every branch of min(ratio * A, clip(ratio) * A), eps = 0.2:
#   ratio  A    ratio*A  clip*A   min    which     d(-min)/d log_prob (before the 1/6)
#   1.5    2    3.0      2.4      2.4    clipped   0
#   0.5   -1   -0.5     -0.8     -0.8    clipped   0
#   1.1    1    1.1      1.1      1.1    inside   -ratio*A = -1.1
#   0.9   -3   -2.7     -2.7     -2.7    inside   -ratio*A =  2.7
#   1.5   -1   -1.5     -1.2     -1.5    unclipped (pessimistic side)  1.5
#   0.5    2    1.0      1.6      1.0    unclipped (pessimistic side) -1.0
# loss = -(2.4 - 0.8 + 1.1 - 2.7 - 1.5 + 1.0) / 6 = 0.5 / 6
# clip_fraction = 4/6 (|ratio - 1| > 0.2 for 1.5, 0.5, 1.5, 0.5)
RATIOS = np.array([1.5, 0.5, 1.1, 0.9, 1.5, 0.5])
ADVANTAGES = jnp.array([2.0, -1.0, 1.0, -3.0, -1.0, 2.0])
OLD_LOG_PROB = jnp.array([-0.3, -1.2, -2.0, -0.7, -0.1, -1.6])
LOG_PROB = OLD_LOG_PROB + jnp.log(jnp.asarray(RATIOS, jnp.float32))

# Jitted once each, so the suite compiles little and stays fast.
surrogate = jax.jit(clipped_surrogate)
surrogate_grad = jax.jit(jax.grad(lambda *a: clipped_surrogate(*a)[0]))  # d loss / d log_prob
value_loss = jax.jit(clipped_value_loss)
value_loss_grad = jax.jit(jax.grad(clipped_value_loss))  # d loss / d values
normalize_jit = jax.jit(normalize)


def test_surrogate_hand_computed():
    loss, aux = surrogate(LOG_PROB, OLD_LOG_PROB, ADVANTAGES, EPS)
    assert isinstance(aux, SurrogateAux)
    np.testing.assert_allclose(loss, 0.5 / 6, rtol=1e-5)
    np.testing.assert_allclose(aux.clip_fraction, 4 / 6, rtol=1e-6)
    # (r - 1) - log r: 1.5 -> 0.5 - 0.405465 = 0.094535;  0.5 -> -0.5 + 0.693147 = 0.193147
    #                  1.1 -> 0.1 - 0.095310 = 0.004690;  0.9 -> -0.1 + 0.105361 = 0.005361
    kl = (2 * 0.0945349 + 2 * 0.1931472 + 0.0046898 + 0.0053605) / 6
    np.testing.assert_allclose(aux.approx_kl, kl, rtol=1e-4)


def test_surrogate_gradient_is_zero_where_clipped():
    grad = surrogate_grad(LOG_PROB, OLD_LOG_PROB, ADVANTAGES, EPS)
    # d(-ratio * A / 6)/d log_prob = -ratio * A / 6 on the unclipped entries (table above).
    expected = np.array([0.0, 0.0, -1.1, 2.7, 1.5, -1.0]) / 6
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert grad[0] == 0.0 and grad[1] == 0.0


def test_surrogate_at_equal_log_probs():
    loss, aux = surrogate(OLD_LOG_PROB, OLD_LOG_PROB, ADVANTAGES, EPS)
    assert aux.approx_kl == 0.0 and aux.clip_fraction == 0.0
    # ratio = 1: the loss is -mean(A) and its gradient -A / n.
    np.testing.assert_allclose(loss, -ADVANTAGES.mean(), rtol=1e-6)
    grad = surrogate_grad(OLD_LOG_PROB, OLD_LOG_PROB, ADVANTAGES, EPS)
    np.testing.assert_allclose(grad, -ADVANTAGES / 6, rtol=1e-6)


def test_approx_kl_is_non_negative_and_small_for_close_policies():
    rng = np.random.default_rng(0)
    old = jnp.asarray(rng.normal(size=1000), jnp.float32)
    for scale in (1e-2, 0.3, 2.0):
        new = old + jnp.asarray(scale * rng.normal(size=1000), jnp.float32)
        _, aux = surrogate(new, old, jnp.ones(1000), EPS)
        assert aux.approx_kl >= 0.0
    _, aux = surrogate(old + 1e-3, old, jnp.ones(1000), EPS)
    # (e^x - 1) - x = x^2/2 + O(x^3)
    np.testing.assert_allclose(aux.approx_kl, 0.5e-6, rtol=0.05)


# Old predictions 0, eps = 0.5, so v_clip = clip(v, -0.5, 0.5):
#   v     R     (v - R)^2   (v_clip - R)^2   max    which       d/dv of 0.5 * max / 4
#   1.0   2.0   1.0         2.25             2.25   clipped     0
#   1.0   0.0   1.0         0.25             1.0    unclipped   0.5 * 2 * 1.0 / 4  =  0.25
#  -1.0  -2.0   1.0         2.25             2.25   clipped     0
#   0.2   1.0   0.64        0.64             0.64   inside      0.5 * 2 * -0.8 / 4 = -0.2
# loss = 0.5 * (2.25 + 1.0 + 2.25 + 0.64) / 4 = 0.7675
V = jnp.array([1.0, 1.0, -1.0, 0.2])
OLD_V = jnp.zeros(4)
R = jnp.array([2.0, 0.0, -2.0, 1.0])


def test_value_loss_hand_computed():
    np.testing.assert_allclose(value_loss(V, OLD_V, R, 0.5), 0.7675, rtol=1e-6)
    grad = value_loss_grad(V, OLD_V, R, 0.5)
    np.testing.assert_allclose(grad, [0.0, 0.25, 0.0, -0.2], rtol=1e-6)


def test_value_loss_without_clipping_is_half_mse():
    rng = np.random.default_rng(1)
    v, old, r = (jnp.asarray(rng.normal(size=(8, 3)), jnp.float32) for _ in range(3))
    np.testing.assert_allclose(value_loss(v, old, r, 1e6), 0.5 * jnp.mean((v - r) ** 2), rtol=1e-6)
    # Unchanged predictions: clipping is a no-op whatever eps is.
    np.testing.assert_allclose(
        value_loss(old, old, r, 0.0), 0.5 * jnp.mean((old - r) ** 2), rtol=1e-6
    )


def test_normalize():
    # mean 2.5, population std sqrt(1.25) = 1.118034
    np.testing.assert_allclose(
        normalize_jit(jnp.array([1.0, 2.0, 3.0, 4.0])),
        [-1.3416408, -0.4472136, 0.4472136, 1.3416408],
        rtol=1e-6,
    )
    x = jnp.asarray(np.random.default_rng(2).normal(3.0, 5.0, size=(16, 8)), jnp.float32)
    y = normalize_jit(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(), 1.0, rtol=1e-6)
    # A constant input gives zeros, not NaN.
    np.testing.assert_array_equal(normalize_jit(jnp.full(5, 7.0)), np.zeros(5))


def test_masks_average_over_valid_entries_only():
    rng = np.random.default_rng(3)
    keep = rng.random((6, 5)) < 0.6
    keep[0, 0] = True
    lp, old, adv, v, old_v, r = rng.normal(size=(6, 6, 5)).astype(np.float32)
    mask = jnp.asarray(keep)
    # Garbage in the padding must change nothing, gradients included.
    lp_garbage = np.where(keep, lp, np.inf)
    adv_garbage = np.where(keep, adv, np.nan)
    v_garbage = np.where(keep, v, np.nan)

    loss, aux = surrogate(lp_garbage, old, adv_garbage, EPS, mask)
    ref_loss, ref_aux = surrogate(lp[keep], old[keep], adv[keep], EPS)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(aux.approx_kl, ref_aux.approx_kl, rtol=1e-5)
    np.testing.assert_allclose(aux.clip_fraction, ref_aux.clip_fraction, rtol=1e-6)
    grad = np.asarray(surrogate_grad(lp_garbage, old, adv_garbage, EPS, mask))
    ref_grad = surrogate_grad(lp[keep], old[keep], adv[keep], EPS)
    np.testing.assert_allclose(grad[keep], ref_grad, rtol=1e-6)
    np.testing.assert_array_equal(grad[~keep], 0.0)

    np.testing.assert_allclose(
        value_loss(v_garbage, old_v, r, EPS, mask),
        value_loss(v[keep], old_v[keep], r[keep], EPS),
        rtol=1e-6,
    )
    grad = np.asarray(value_loss_grad(v_garbage, old_v, r, EPS, mask))
    ref_grad = value_loss_grad(v[keep], old_v[keep], r[keep], EPS)
    np.testing.assert_allclose(grad[keep], ref_grad, rtol=1e-6)
    np.testing.assert_array_equal(grad[~keep], 0.0)

    y = np.asarray(normalize_jit(adv_garbage, 1e-8, mask))
    np.testing.assert_allclose(y[keep], normalize_jit(adv[keep]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[~keep], 0.0)


def test_all_masked_is_zero_not_nan():
    x = jnp.ones(4)
    none = jnp.zeros(4, bool)
    loss, aux = surrogate(x, x, x, EPS, none)
    assert loss == 0.0 and aux.approx_kl == 0.0 and aux.clip_fraction == 0.0
    assert value_loss(x, x, x, EPS, none) == 0.0
    np.testing.assert_array_equal(normalize_jit(x, 1e-8, none), np.zeros(4))


def test_vmap_over_minibatches():
    rng = np.random.default_rng(4)
    lp, old, adv = (jnp.asarray(rng.normal(size=(3, 10)), jnp.float32) for _ in range(3))
    losses, aux = jax.jit(jax.vmap(clipped_surrogate, in_axes=(0, 0, 0, None)))(lp, old, adv, EPS)
    for i in range(3):
        loss_i, aux_i = surrogate(lp[i], old[i], adv[i], EPS)
        np.testing.assert_allclose(losses[i], loss_i, rtol=1e-6)
        np.testing.assert_allclose(aux.approx_kl[i], aux_i.approx_kl, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(normalize))(adv)[1], normalize_jit(adv[1]), rtol=1e-6
    )
