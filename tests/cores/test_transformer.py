"""Transformer core facts beyond the contract: the window, episodes across chunks, NaN
safety and option checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssmrl.cores as cores
from ssmrl.cores.transformer import masked_softmax
from tests.cores import reference

F, B = 3, 2


def _core(**options):
    """A tiny transformer core, its params and a jitted sequence call."""
    base = dict(features=8, num_layers=1, num_heads=2, head_size=4, window=4, mlp_ratio=2)
    core = cores.make("transformer", **(base | options))
    xs, resets = jnp.zeros((2, B, F)), jnp.zeros((2, B), bool)
    params = jax.jit(core.init)(jax.random.PRNGKey(0), core.initialize_carry(B), xs, resets)
    return core, params, jax.jit(core.apply)


def _data(seed, t):
    return jax.random.normal(jax.random.PRNGKey(seed), (t, B, F))


def _full_carry(core, seed):
    """A random carry whose W slots are all valid (a long episode in progress)."""
    zero = core.initialize_carry(B)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return cores.TransformerCarry(
        jax.random.normal(k1, zero.keys.shape),
        jax.random.normal(k2, zero.values.shape),
        jnp.ones_like(zero.valid),
    )


@pytest.mark.parametrize("num_layers", [1, 2])
def test_inputs_beyond_the_window_have_no_effect(num_layers):
    """Step t sees inputs back to t - L·W (each layer's window holds its own keys): one
    step further back, the output does not change and the gradient is exactly zero."""
    core, params, seq = _core(num_layers=num_layers)
    reach = num_layers * core.options.window
    t = reach + 6
    xs, resets = _data(0, t), jnp.zeros((t, B), bool)
    carry = _full_carry(core, 1)

    def last(xs, carry):
        return jnp.sum(core.apply(params, carry, xs, resets)[1][-1])

    g_xs, g_carry = jax.jit(jax.grad(last, argnums=(0, 1), allow_int=True))(xs, carry)
    g_xs = np.abs(np.asarray(g_xs)).sum(axis=(1, 2))
    assert np.all(g_xs[: t - 1 - reach] == 0)
    assert np.all(g_xs[t - 1 - reach :] > 0)
    assert np.all(np.asarray(g_carry.keys) == 0) and np.all(np.asarray(g_carry.values) == 0)

    _, ys = seq(params, carry, xs, resets)
    changed = xs.at[: t - 1 - reach].add(10.0)
    _, ys2 = seq(params, _full_carry(core, 2), changed, resets)
    assert np.array_equal(np.asarray(ys[-1]), np.asarray(ys2[-1]))


def test_window_of_one_matches_the_reference():
    core, params, seq = _core(window=1, num_layers=2)
    xs = _data(3, 9)
    resets = jnp.zeros((9, B), bool).at[4, 0].set(True)
    carry = _full_carry(core, 4)
    new_carry, ys = seq(params, carry, xs, resets)
    cfg = cores.options("transformer") | dataclasses.asdict(core.options)
    ref_carry, ref_ys = reference.transformer(
        params, cfg, carry, np.asarray(xs, np.float64), np.asarray(resets)
    )
    np.testing.assert_allclose(np.asarray(ys), ref_ys, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(new_carry.keys), ref_carry[0], rtol=2e-4, atol=2e-4)
    np.testing.assert_array_equal(np.asarray(new_carry.valid), ref_carry[2])


@pytest.mark.parametrize("cut", [3, 5])  # the reset inside the second chunk, or first in it
def test_attention_stays_inside_an_episode_across_a_chunk_boundary(cut):
    """A reset at step 5 of 12: the outputs from step 5 on do not depend on what came
    before, even when the sequence is cut before it and the carry passes along."""
    core, params, seq = _core(window=6, num_layers=2)
    xs, resets = _data(5, 12), jnp.zeros((12, B), bool).at[5].set(True)

    def after_reset(xs, carry):
        carry, first = core.apply(params, carry, xs[:cut], resets[:cut])
        _, second = core.apply(params, carry, xs[cut:], resets[cut:])
        return jnp.concatenate([first, second])[5:]

    ys = jax.jit(after_reset)(xs, _full_carry(core, 6))
    ys2 = jax.jit(after_reset)(xs.at[:5].add(5.0), _full_carry(core, 7))
    assert np.array_equal(np.asarray(ys), np.asarray(ys2))
    _, whole = seq(params, _full_carry(core, 6), xs, resets)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(whole[5:]), rtol=1e-5, atol=1e-5)

    def loss(xs, carry):
        return jnp.sum(after_reset(xs, carry) ** 2)

    g_xs, g_carry = jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))(
        xs, _full_carry(core, 6)
    )
    assert np.all(np.asarray(g_xs[:5]) == 0) and np.any(np.asarray(g_xs[5:]) != 0)
    assert np.all(np.asarray(g_carry.keys) == 0) and np.all(np.asarray(g_carry.values) == 0)


def test_a_reset_empties_the_window():
    """After a reset step the carry is the initial carry shifted by that one step."""
    core, params, _ = _core(window=3)
    carry = _full_carry(core, 8)
    step = jax.jit(lambda c, x, r: core.apply(params, c, x, r, method="step"))
    carry, _ = step(carry, _data(9, 1)[0], jnp.array([True, False]))
    valid = np.asarray(carry.valid)
    assert valid[0].tolist() == [False, False, True] and valid[1].all()
    assert np.all(np.asarray(carry.keys[0, :, :2]) == 0)
    assert np.all(np.asarray(carry.values[0, :, :2]) == 0)
    assert np.any(np.asarray(carry.keys[0, :, 2]) != 0)


def test_a_reset_at_every_step_is_finite_and_memoryless():
    core, params, seq = _core(window=4, num_layers=2)
    t = 9
    xs, resets = _data(10, t), jnp.ones((t, B), bool)
    carry = _full_carry(core, 11)
    _, ys = seq(params, carry, xs, resets)
    assert np.all(np.isfinite(np.asarray(ys)))
    fresh = core.initialize_carry(B)
    for i in (0, 4, 8):  # each step alone, from the initial carry
        _, alone = seq(params, fresh, xs[i : i + 1], resets[i : i + 1])
        np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(ys[i]), atol=1e-6)

    def loss(params):
        return jnp.sum(core.apply(params, carry, xs, resets)[1] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_masked_softmax_of_a_fully_masked_row_is_zero():
    scores = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = jnp.array([[True, False, True], [False, False, False]])
    p = masked_softmax(scores, mask)
    e = np.exp([1.0 - 3.0, 0.0])
    np.testing.assert_allclose(np.asarray(p[0]), [e[0] / e.sum(), 0.0, e[1] / e.sum()], rtol=1e-6)
    assert np.all(np.asarray(p[1]) == 0)
    grad = jax.grad(lambda s: jnp.sum(masked_softmax(s, mask) * jnp.arange(3.0)))(scores)
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(
        np.asarray(grad)[~np.asarray(mask)] == 0
    )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(head_size=5), "head_size must be even \\(rotary positions turn pairs\\), got 5"),
        (dict(head_size=0), "head_size must be >= 1, got 0"),
        (dict(num_heads=0), "num_heads must be >= 1, got 0"),
        (dict(window=0), "window must be >= 1, got 0"),
        (dict(mlp_ratio=0), "mlp_ratio must be >= 1, got 0"),
        (dict(features=0), "features must be >= 1"),
        (dict(num_layers=0), "num_layers must be >= 1"),
        (dict(rotary_base=1.0), "rotary_base must be > 1, got 1.0"),
    ],
)
def test_validate_rejects_bad_options(changes, match):
    options = cores.TransformerOptions(**changes)
    with pytest.raises(ValueError, match=match) as err:
        options.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        cores.build(options)
    assert (
        dataclasses.replace(options, **cores.options("transformer")) == cores.TransformerOptions()
    )


def test_any_width_is_allowed():
    """The heads' width is its own option, so width matching may pick any features."""
    for features in (1, 7, 13):
        cores.TransformerOptions(features=features).validate()
