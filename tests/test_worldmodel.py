"""The world model's pure helpers against NumPy float64 and hand numbers; the module's
sequence call against step-by-step calls, resets, imagination and losses on tiny sizes."""

from __future__ import annotations

import functools
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cores
from ssmrl.worldmodel import (
    KLBalance,
    WorldModel,
    WorldModelCarry,
    WorldModelConfig,
    flatten_time,
    kl_balance_loss,
    kl_categorical,
    straight_through_sample,
    symexp,
    symlog,
    symlog_bins,
    two_hot,
    two_hot_decode,
    two_hot_nll,
    unimix_probs,
)
from ssmrl.xla import FAST_COMPILE

T, B, D, A, L, C, H, HORIZON = 6, 3, 3, 2, 4, 4, 16, 4  # D: observation size
F = H + L * C
MID = 3  # sequence 1 starts a new episode here

CORE_OPTIONS = {
    "s5-sequential": cores.S5Options(features=H, num_layers=1, state_size=8, scan="sequential"),
    "s5-associative": cores.S5Options(features=H, num_layers=1, state_size=8, scan="associative"),
    "gru": cores.GRUOptions(features=H, num_layers=2),
}


# Backend optimisations off: compiling dominates this file's time, running is cheap.
fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


two_hot_jit = fast_jit(two_hot)
decode_jit = fast_jit(two_hot_decode)
unimix_jit = fast_jit(unimix_probs)
kl_jit = fast_jit(kl_categorical)
rng = np.random.default_rng(0)


def f32(x):
    return np.asarray(x, np.float32)


def test_symlog_symexp_numpy_and_round_trip():
    x = np.array([-1e4, -(np.e**2) + 1, -1.0, -1e-3, 0.0, 1e-3, np.e - 1, 7.5, 1e4])
    expected = np.sign(x) * np.log1p(np.abs(x))
    np.testing.assert_allclose(expected[[1, 6]], [-2.0, 1.0])
    y = symlog(f32(x))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(symexp(y), x, rtol=1e-5)
    y = np.linspace(-20.0, 20.0, 9)
    np.testing.assert_allclose(symexp(f32(y)), np.sign(y) * np.expm1(np.abs(y)), rtol=1e-5)


def test_two_hot_by_hand():
    bins = f32([0.0, 1.0, 2.0, 4.0])
    x = f32([1.25, 3.0, 2.0, 0.0, 4.0, -5.0, 10.0])
    expected = [
        [0.0, 0.75, 0.25, 0.0],
        [0.0, 0.0, 0.5, 0.5],
        [0.0, 0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
    np.testing.assert_allclose(two_hot_jit(x, bins), expected, atol=1e-7)
    np.testing.assert_allclose(two_hot_jit(x.reshape(7, 1), bins)[:, 0], expected, atol=1e-7)
    np.testing.assert_allclose(decode_jit(np.log(f32([0.25, 0.75])), f32([0.0, 2.0])), 1.5)


def test_two_hot_round_trip_on_symlog_bins():
    bins = symlog_bins(255, 20.0)
    assert bins.shape == (255,)
    np.testing.assert_allclose(np.diff(np.asarray(bins)), 40.0 / 254, rtol=1e-4)
    x = f32(rng.uniform(-20.0, 20.0, (5, 40)))
    weights = np.asarray(two_hot_jit(x, bins))
    assert weights.shape == (5, 40, 255)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (weights > 0).sum(-1).max() <= 2
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(decode_jit(np.log(weights), bins), x, atol=1e-4)
        far = np.log(np.asarray(two_hot_jit(f32([99.0, -99.0]), bins)))
    np.testing.assert_allclose(decode_jit(far, bins), [20.0, -20.0], rtol=1e-6)
    logits = f32(rng.normal(size=(3, 255)))
    np.testing.assert_allclose(
        decode_jit(logits, bins), softmax64(logits) @ np.asarray(bins, np.float64), atol=1e-4
    )


def test_two_hot_nll_against_numpy():
    bins = f32([-1.0, 0.0, 1.0, 3.0])
    x = f32([np.e - 1.0, 0.0, -5.0])  # symlog: 1 (bin 2), 0 (bin 1), below the first bin
    logits = f32(rng.normal(size=(3, 4)))
    log_p = np.log(softmax64(logits))
    expected = [-log_p[0, 2], -log_p[1, 1], -log_p[2, 0]]
    np.testing.assert_allclose(fast_jit(two_hot_nll)(logits, x, bins), expected, rtol=1e-5)
    half = f32([np.expm1(2.0)])  # symlog 2: halfway between the bins 1 and 3
    np.testing.assert_allclose(
        two_hot_nll(logits[:1], half, bins), [-(log_p[0, 2] + log_p[0, 3]) / 2], rtol=1e-5
    )


def test_unimix_probs():
    np.testing.assert_allclose(
        unimix_jit(np.log(f32([1.0, 3.0])), 0.01), [0.2525, 0.7475], rtol=1e-6
    )
    logits = f32(rng.normal(size=(2, L, C)) * 30.0)
    probs = np.asarray(unimix_jit(logits, 0.01))
    np.testing.assert_allclose(probs, 0.99 * softmax64(logits) + 0.01 / C, rtol=1e-5, atol=1e-7)
    assert probs.min() >= 0.01 / C * (1 - 1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_straight_through_sample():
    probs = f32([0.1, 0.2, 0.7])
    sample = fast_jit(jax.vmap(straight_through_sample, (0, None)))
    samples = np.asarray(sample(jax.random.split(jax.random.key(0), 4000), probs))
    assert set(np.unique(samples)) == {0.0, 1.0}
    np.testing.assert_array_equal(samples.sum(-1), 1.0)
    np.testing.assert_allclose(samples.mean(0), probs, atol=0.03)
    np.testing.assert_array_equal(straight_through_sample(None, probs), [0.0, 0.0, 1.0])
    w = f32([1.0, -2.0, 3.0])
    grad = jax.grad(lambda p: jnp.sum(straight_through_sample(jax.random.key(1), p) * w))(probs)
    np.testing.assert_allclose(grad, w)


def kl64(p_logits, q_logits):
    p, q = softmax64(p_logits), softmax64(q_logits)
    return (p * (np.log(p) - np.log(q))).sum((-2, -1))


def test_kl_categorical():
    half, quarter = np.log(f32([[[0.5, 0.5]], [[0.25, 0.75]]]))
    np.testing.assert_allclose(kl_jit(half, quarter), 0.5 * np.log(4.0 / 3.0), rtol=1e-6)
    p, q = f32(rng.normal(size=(2, 3, L, C + 1)))
    kl = kl_jit(p, q)
    assert kl.shape == (3,)
    np.testing.assert_allclose(kl, kl64(p, q), rtol=1e-5)
    np.testing.assert_allclose(kl_jit(p, p), 0.0, atol=1e-6)


def test_kl_balance_by_hand_and_free_nats():
    post = np.log(f32([[[0.99, 0.01]], [[0.5, 0.5]]]))  # [2 steps, 1 group, 2 classes]
    prior = np.log(f32([[[0.01, 0.99]], [[0.25, 0.75]]]))
    out = kl_balance_loss(post, prior, free_nats=1.0, dyn_scale=0.5, rep_scale=0.1)
    assert isinstance(out, KLBalance)
    kl_high = 0.98 * np.log(99.0)  # 0.99 ln 99 + 0.01 ln(1/99); step 1's KL is below 1
    np.testing.assert_allclose(out.dyn, [0.5 * kl_high, 0.5], rtol=1e-5)
    np.testing.assert_allclose(out.rep, [0.1 * kl_high, 0.1], rtol=1e-5)

    def terms(a, b):
        return jnp.sum(jnp.stack(kl_balance_loss(a, b)), 1)

    # Jacobians [term (dyn, rep), step, group, class] with respect to post and prior.
    d_post, d_prior = (np.asarray(g) for g in fast_jit(jax.jacrev(terms, (0, 1)))(post, prior))
    (d_dyn_post, d_rep_post), (d_dyn_prior, d_rep_prior) = d_post, d_prior
    p, q = softmax64(post), softmax64(prior)
    np.testing.assert_array_equal(d_dyn_post, 0.0)
    np.testing.assert_array_equal(d_dyn_prior[1], 0.0)
    np.testing.assert_allclose(d_dyn_prior[0], 0.5 * (q - p)[0], rtol=1e-4)
    np.testing.assert_array_equal(d_rep_prior, 0.0)
    np.testing.assert_array_equal(d_rep_post[1], 0.0)
    log_ratio = np.log(p) - np.log(q)
    np.testing.assert_allclose(d_rep_post[0], 0.1 * (p * (log_ratio - kl_high))[0], rtol=1e-4)


def test_config_validate():
    WorldModelConfig().validate()
    WorldModelConfig(core=cores.LSTMOptions()).validate()
    bad = [
        dict(latents=0),
        dict(classes=0),
        dict(depth=0),
        dict(unimix=1.0),
        dict(free_nats=-1.0),
        dict(dyn_scale=float("nan")),
        dict(bins=1),
        dict(bin_limit=0.0),
        dict(core=object()),
        dict(core=cores.S5Options(scan="fast")),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            WorldModelConfig(**kwargs).validate()


def policy_fn(features, key):
    """A stochastic discrete policy whose logits depend on the features."""
    logits = features[:, :A] * 3.0
    return jax.nn.one_hot(jax.random.categorical(key, logits), A)


def batch(seed):
    keys = jax.random.split(jax.random.key(seed), 4)
    obs = jax.random.normal(keys[0], (T, B, D)) * 2.0
    prev_action = jax.nn.one_hot(jax.random.randint(keys[1], (T, B), 0, A), A)
    is_first = jnp.zeros((T, B), bool).at[0, 0].set(True).at[MID, 1].set(True)
    reward = jax.random.normal(keys[2], (T, B)) * 5.0
    cont = (jax.random.uniform(keys[3], (T, B)) > 0.2).astype(jnp.float32)
    valid = jnp.ones((T, B)).at[-2:, 2].set(0.0)
    return obs, prev_action, is_first, reward, cont, valid


@functools.cache
def setup(name):
    """Model, params, a non-zero start carry and jitted functions for one core, built once.

    ``observe`` goes through the loss's compiled function (the loss returns observe's
    outputs), which saves a compile per core.
    """
    config = WorldModelConfig(core=CORE_OPTIONS[name], latents=L, classes=C, hidden=16, depth=1)
    model = WorldModel(config, obs_dim=D)
    obs, prev_action, is_first, reward, cont, valid = batch(0)
    zero = model.initialize_carry(B)
    params = fast_jit(model.init)(
        jax.random.key(1), zero, obs, prev_action, is_first, jax.random.key(2)
    )

    def loss_fn(params, *args):
        losses, out = model.apply(params, *args, method="loss")
        return losses.total, (losses, out)

    loss = fast_jit(jax.value_and_grad(loss_fn, has_aux=True))

    def observe(params, carry, obs, prev_action, is_first, key):
        (_, (_, out)), _ = loss(params, carry, obs, prev_action, reward, cont, is_first, valid, key)
        return out

    def method(name):
        return fast_jit(functools.partial(model.apply, method=name))

    fns = dict(
        loss=loss,
        observe=observe,
        obs_step=method("obs_step"),
        img_step=method("img_step"),
        open_loop=method("open_loop"),
        heads=method("heads"),
        prior=method("prior"),
        imagine=fast_jit(
            lambda p, start, key: model.apply(p, policy_fn, start, HORIZON, key, method="imagine")
        ),
        features_grad=fast_jit(
            jax.grad(
                lambda p, c, o, a, f, k: jnp.sum(
                    model.apply(p, c, o, a, f, k, method="observe").features[MID:, 1]
                ),
                argnums=(1, 2, 3),
            )
        ),
    )
    # The carry a previous chunk left behind, so the carried-in state matters.
    start = observe(params, zero, *batch(9)[:3], jax.random.key(3)).carry
    return model, params, start, fns


@functools.cache
def observed(name):
    """observe's outputs and the same computed by T obs_step calls with the same keys."""
    _, params, start, fns = setup(name)
    obs, prev_action, is_first, *_ = batch(0)
    key = jax.random.key(4)
    out = fns["observe"](params, start, obs, prev_action, is_first, key)
    carry, steps = start, []
    for t, key_t in enumerate(jax.random.split(key, T)):
        carry, features = fns["obs_step"](params, carry, obs[t], prev_action[t], is_first[t], key_t)
        steps.append((carry, features))
    carries = jax.tree.map(lambda *xs: np.stack(xs), *[c for c, _ in steps])
    return out, carries, np.stack([f for _, f in steps])


def assert_trees_close(a, b, atol=2e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol)


def finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


cores_param = pytest.mark.parametrize("name", list(CORE_OPTIONS))


@cores_param
def test_shapes_and_finite(name):
    _, params, start, fns = setup(name)
    out, _, _ = observed(name)
    assert out.post_logits.shape == out.post.shape == out.prior_logits.shape == (T, B, L, C)
    assert out.features.shape == (T, B, F)
    assert out.carries.z.shape == (T, B, L, C) and out.carries.h.shape == (T, B, H)
    for leaf, per_step in zip(jax.tree.leaves(start), jax.tree.leaves(out.carries), strict=True):
        assert per_step.shape == (T, *leaf.shape)
    assert_trees_close(out.carry, jax.tree.map(lambda x: np.asarray(x)[-1], out.carries), atol=0)
    np.testing.assert_allclose(np.asarray(out.post).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(np.asarray(out.prior_logits)).sum(-1), 1.0, rtol=1e-5)
    assert finite(out)

    obs, prev_action, is_first, reward, cont, valid = batch(0)
    (total, (losses, lout)), grads = fns["loss"](
        params, start, obs, prev_action, reward, cont, is_first, valid, jax.random.key(4)
    )
    assert all(x.shape == () for x in losses)
    np.testing.assert_allclose(total, sum(losses[1:]), rtol=1e-6)
    assert float(losses.dyn) >= 0.5 and float(losses.rep) >= 0.1
    assert finite((losses, grads)) and finite(lout)
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["params"]["core"]))

    traj = fns["imagine"](params, flatten_time(out.carries), jax.random.key(5))
    assert traj.features.shape == (HORIZON + 1, T * B, F)
    assert traj.actions.shape == (HORIZON, T * B, A)
    np.testing.assert_allclose(
        np.asarray(traj.features)[0], np.reshape(out.features, (T * B, F)), atol=1e-6
    )
    assert finite(traj)


@cores_param
def test_observe_equals_step_by_step(name):
    out, carries, features = observed(name)
    np.testing.assert_allclose(out.features, features, rtol=1e-4, atol=2e-5)
    assert_trees_close(out.carries, carries)
    np.testing.assert_array_equal(out.post, carries.z)


@cores_param
def test_reset_isolates_later_steps(name):
    """After sequence 1's is_first at MID, nothing earlier (observations, actions, the
    carried-in state) changes its features; earlier steps do change."""
    _, params, start, fns = setup(name)
    obs, prev_action, is_first, *_ = (np.array(x) for x in batch(0))
    out = observed(name)[0]
    obs[:MID, 1] += 3.0
    prev_action[:MID, 1] = 1.0 - prev_action[:MID, 1]
    other_start = jax.tree.map(lambda x: np.array(x), start)
    for leaf in jax.tree.leaves(other_start):
        leaf[1] = 1.0
    changed = fns["observe"](params, other_start, obs, prev_action, is_first, jax.random.key(4))
    before, after = np.asarray(out.features), np.asarray(changed.features)
    np.testing.assert_allclose(after[MID:, 1], before[MID:, 1], atol=1e-6)
    np.testing.assert_array_equal(after[:, 0], before[:, 0])
    assert np.abs(after[:MID, 1] - before[:MID, 1]).max() > 1e-3


def test_reset_gradient_is_zero():
    """The gradient of sequence 1's features after its reset with respect to everything
    before it is exactly zero (S5's associative scan, where the reset is in the operator)."""
    _, params, start, fns = setup("s5-associative")
    obs, prev_action, is_first, *_ = batch(0)
    grads = fns["features_grad"](params, start, obs, prev_action, is_first, jax.random.key(4))
    d_start, d_obs, d_action = jax.tree.map(np.asarray, grads)
    for g in jax.tree.leaves(d_start):
        np.testing.assert_array_equal(g[1], 0.0)
    np.testing.assert_array_equal(d_obs[:MID, 1], 0.0)
    np.testing.assert_array_equal(d_action[:MID, 1], 0.0)
    assert np.abs(d_obs[MID:, 1]).max() > 0 and np.abs(d_action[MID + 1 :, 1]).max() > 0


@cores_param
def test_imagination_from_carries_equals_prefix_rerun(name):
    _, params, _, fns = setup(name)
    out, step_carries, _ = observed(name)
    key = jax.random.key(6)
    from_sequence = fns["imagine"](params, flatten_time(out.carries), key)
    from_steps = fns["imagine"](params, flatten_time(step_carries), key)
    np.testing.assert_allclose(from_sequence.features, from_steps.features, rtol=1e-4, atol=5e-5)
    np.testing.assert_array_equal(from_sequence.actions, from_steps.actions)


def test_img_step_and_open_loop():
    """open_loop equals a loop of img_step, whose latent is the prior's (here its mode)."""
    _, params, _, fns = setup("gru")
    out = observed("gru")[0]
    start = jax.tree.map(lambda x: np.asarray(x)[2], out.carries)
    actions = np.eye(A, dtype=np.float32)[np.array([[0, 1, 1], [1, 0, 1]])]
    features = np.asarray(fns["open_loop"](params, start, actions, None))
    assert features.shape == (2, B, F)
    carry = start
    for i in range(2):
        carry, f, z = fns["img_step"](params, carry, actions[i], None)
        assert isinstance(carry, WorldModelCarry) and z.shape == (B, L, C)
        np.testing.assert_allclose(f, features[i], atol=1e-5)
        np.testing.assert_array_equal(z, carry.z)
        mode = np.argmax(np.asarray(fns["prior"](params, carry.h)), -1)
        np.testing.assert_array_equal(z, np.eye(C)[mode])


def test_loss_matches_numpy():
    _, params, start, fns = setup("gru")
    obs, prev_action, is_first, reward, cont, valid = batch(0)
    key = jax.random.key(4)
    (total, (losses, out)), _ = fns["loss"](
        params, start, obs, prev_action, reward, cont, is_first, valid, key
    )
    heads = fns["heads"](params, out.features)
    w = np.asarray(valid, np.float64)

    def mean(x):
        return (x * w).sum() / w.sum()

    obs64 = np.asarray(obs, np.float64)
    target = np.sign(obs64) * np.log1p(np.abs(obs64))
    decoder = mean(((np.asarray(heads.obs, np.float64) - target) ** 2).sum(-1))
    r = np.asarray(reward, np.float64)
    bins = np.linspace(-20.0, 20.0, 255)
    y = np.clip(np.sign(r) * np.log1p(np.abs(r)), -20, 20)
    i = np.clip(np.searchsorted(bins, y, side="right") - 1, 0, 253)
    frac = (y - bins[i]) / (bins[i + 1] - bins[i])
    logits = np.asarray(heads.reward_logits, np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    pick = np.take_along_axis
    nll = -(
        (1 - frac) * pick(log_p, i[..., None], -1)[..., 0]
        + frac * pick(log_p, i[..., None] + 1, -1)[..., 0]
    )
    c_logit = np.asarray(heads.cont_logits, np.float64)
    p_cont = 1.0 / (1.0 + np.exp(-c_logit))
    cont64 = np.asarray(cont, np.float64)
    cont_nll = mean(-(cont64 * np.log(p_cont) + (1 - cont64) * np.log(1 - p_cont)))
    kl = kl64(out.post_logits, out.prior_logits)
    expected = [
        decoder,
        mean(nll),
        cont_nll,
        mean(0.5 * np.maximum(1.0, kl)),
        mean(0.1 * np.maximum(1.0, kl)),
    ]
    np.testing.assert_allclose(losses[1:], expected, rtol=1e-4)
    np.testing.assert_allclose(total, sum(expected), rtol=1e-4)


def test_terminal_weight_scales_the_continue_loss_of_terminal_rows_only():
    _, params, start, fns = setup("gru")
    obs, prev_action, is_first, reward, cont, valid = batch(0)
    config = WorldModelConfig(
        core=CORE_OPTIONS["gru"], latents=L, classes=C, hidden=16, depth=1, terminal_weight=3.0
    )
    weighted = WorldModel(config, obs_dim=D)
    args = (start, obs, prev_action, reward, cont, is_first, valid, jax.random.key(4))
    (_, (plain, out)), _ = fns["loss"](params, *args)
    losses, _ = weighted.apply(params, *args, method="loss")
    c_logit = np.asarray(fns["heads"](params, out.features).cont_logits, np.float64)
    terminal = (np.asarray(cont) == 0) * np.asarray(valid, np.float64)
    # -log(1 - sigmoid(l)) = log(1 + e^l) is a terminal row's loss; it counts 2 more times.
    extra = 2.0 * (terminal * np.log1p(np.exp(c_logit))).sum() / np.asarray(valid).sum()
    assert terminal.sum() > 0
    np.testing.assert_allclose(losses.cont, plain.cont + extra, rtol=1e-4)
    np.testing.assert_allclose(losses.decoder, plain.decoder, rtol=1e-6)
    with pytest.raises(ValueError, match="terminal_weight"):
        replace(config, terminal_weight=-1.0).validate()


def test_continue_prob_equals_predicts_continue():
    model, params, start, fns = setup("gru")
    features = jax.random.normal(jax.random.key(9), (5, start.h.shape[-1] + L * C))
    np.testing.assert_array_equal(
        model.apply(params, features, method="continue_prob"),
        model.apply(params, features, method="predict").cont,
    )


def test_flatten_time_merges_the_leading_axes_of_empty_leaves_too():
    tree = {"empty": jnp.zeros((3, 2, 0)), "full": jnp.arange(12.0).reshape(3, 2, 2)}
    flat = flatten_time(tree)
    assert flat["empty"].shape == (6, 0) and flat["full"].shape == (6, 2)
    np.testing.assert_array_equal(flat["full"][3], tree["full"][1, 1])
