"""S5 initialisation and discretisation facts, checked by hand and in NumPy float64."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssmrl.cores as cores
from ssmrl.cores.hippo import block_diagonal_init, hippo_n, hippo_n_eig
from ssmrl.cores.s5 import discretize


def test_hippo_n_by_hand():
    s = np.sqrt([0.5, 1.5, 2.5])
    want = np.array(
        [
            [-0.5, s[0] * s[1], s[0] * s[2]],
            [-s[1] * s[0], -0.5, s[1] * s[2]],
            [-s[2] * s[0], -s[2] * s[1], -0.5],
        ]
    )
    np.testing.assert_allclose(hippo_n(3), want)


def test_hippo_n_is_normal_part_of_legs():
    n = 6
    legs = np.array(
        [
            [
                -np.sqrt(2 * i + 1) * np.sqrt(2 * k + 1) if i > k else (-(i + 1) if i == k else 0.0)
                for k in range(n)
            ]
            for i in range(n)
        ]
    )
    p = np.sqrt(np.arange(n) + 0.5)
    np.testing.assert_allclose(hippo_n(n), legs + np.outer(p, p), atol=1e-12)


@pytest.mark.parametrize("n", [2, 8, 16])
def test_eigendecomposition(n):
    lam, v = hippo_n_eig(n)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, hippo_n(n), atol=1e-10)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(n), atol=1e-10)
    np.testing.assert_allclose(lam.real, -0.5)
    np.testing.assert_allclose(lam, np.conj(lam[::-1]), atol=1e-10)


@pytest.mark.parametrize("conj_sym", [True, False])
def test_blocks_tile_the_eigenvalues(conj_sym):
    lam, v = block_diagonal_init(16, 4, conj_sym)
    block, _ = hippo_n_eig(4)
    if conj_sym:
        block = block[:2]
    np.testing.assert_allclose(lam, np.tile(block, 4))
    size = v.shape[1] // 4
    for j in range(4):  # V is block diagonal: block j only touches rows 4j..4j+3
        rows = np.zeros(16, bool)
        rows[4 * j : 4 * j + 4] = True
        np.testing.assert_array_equal(v[~rows, j * size : (j + 1) * size], 0)
    core = cores.make("s5", features=4, num_layers=1, state_size=16, blocks=4, conj_sym=conj_sym)
    params = jax.jit(core.init)(
        jax.random.PRNGKey(0),
        core.initialize_carry(1),
        jnp.zeros((1, 1, 3)),
        jnp.zeros((1, 1), bool),
    )["params"]["layers_0"]
    np.testing.assert_allclose(params["lambda_re"], lam.real, atol=1e-6)
    np.testing.assert_allclose(params["lambda_im"], lam.imag, atol=1e-5)


def test_blocks_change_the_spectrum():
    one, _ = block_diagonal_init(16, 1, True)
    four, _ = block_diagonal_init(16, 4, True)
    assert one.shape == four.shape == (8,)
    assert np.abs(one.imag).max() > 2 * np.abs(four.imag).max()


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretised_eigenvalues_inside_unit_circle(method):
    lam, _ = block_diagonal_init(64, 4, True)
    step = np.exp(np.random.default_rng(0).uniform(np.log(1e-3), np.log(1e-1), lam.shape))
    lam_bar, _ = discretize(
        jnp.asarray(lam, jnp.complex64),
        jnp.ones((32, 1), jnp.complex64),
        jnp.asarray(step, jnp.float32),
        method,
    )
    assert np.all(lam.real < 0)
    assert np.all(np.abs(np.asarray(lam_bar)) < 1)


def test_discretisation_by_hand():
    lam = np.array([-0.5 + 2j])
    step = np.array([0.1])
    b = np.array([[1.0 + 0j, 2.0 + 0j]])
    zoh_lam, zoh_b = discretize(lam, b, step, "zoh")
    np.testing.assert_allclose(zoh_lam, np.exp(-0.05 + 0.2j), rtol=1e-6)
    np.testing.assert_allclose(zoh_b, (np.exp(-0.05 + 0.2j) - 1) / (-0.5 + 2j) * b, rtol=1e-6)
    bil_lam, bil_b = discretize(lam, b, step, "bilinear")
    np.testing.assert_allclose(
        bil_lam, (1 + 0.05 * (-0.5 + 2j)) / (1 - 0.05 * (-0.5 + 2j)), rtol=1e-6
    )
    np.testing.assert_allclose(bil_b, 0.1 / (1 - 0.05 * (-0.5 + 2j)) * b, rtol=1e-6)
    # For small steps both agree with the continuous system to first order.
    small = np.array([1e-4])
    a_z, _ = discretize(lam, b, small, "zoh")
    a_b, _ = discretize(lam, b, small, "bilinear")
    np.testing.assert_allclose(a_z, a_b, atol=1e-7)


def _one_layer(**options):
    """A 4-wide, 4-state, one-layer S5 core, its carry for one row and its params."""
    core = cores.make("s5", features=4, num_layers=1, state_size=4, scan="sequential", **options)
    carry = core.initialize_carry(1)
    params = jax.jit(core.init)(
        jax.random.PRNGKey(0), carry, jnp.ones((1, 1, 2)), jnp.zeros((1, 1), bool)
    )
    return core, carry, params


def test_clip_eigs_keeps_real_part_negative():
    core, carry, params = _one_layer(clip_eigs=True)
    layer = params["params"]["layers_0"]
    # Push the eigenvalues into the unstable half-plane; clipping must hold them at -1e-4.
    bad = jax.tree.map(lambda x: x, params)  # a copy to edit
    bad["params"]["layers_0"]["lambda_re"] = jnp.full_like(layer["lambda_re"], 5.0)
    xs, resets = jnp.ones((2000, 1, 2)), jnp.zeros((2000, 1), bool)
    _, ys = jax.jit(core.apply)(bad, carry, xs, resets)
    assert np.isfinite(np.asarray(ys)).all()
    unclipped = core.clone(options=dataclasses.replace(core.options, clip_eigs=False))
    _, ys = jax.jit(unclipped.apply)(bad, carry, xs, resets)
    assert not np.isfinite(np.asarray(ys)).all()


def test_log_step_range():
    core = cores.make("s5", features=4, num_layers=1, state_size=64, dt_min=0.01, dt_max=0.02)
    params = jax.jit(core.init)(
        jax.random.PRNGKey(0),
        core.initialize_carry(1),
        jnp.zeros((1, 1, 3)),
        jnp.zeros((1, 1), bool),
    )
    step = np.exp(np.asarray(params["params"]["layers_0"]["log_step"]))
    assert step.min() >= 0.01 - 1e-7 and step.max() <= 0.02 + 1e-7
    assert step.max() - step.min() > 0.005  # actually spread over the range


def test_carry_stays_finite_over_10000_steps():
    core = cores.make("s5", features=16, num_layers=2, state_size=16, scan="sequential")
    carry = core.initialize_carry(2)
    xs = jax.random.normal(jax.random.PRNGKey(0), (10_000, 2, 3)) * 3
    resets = jnp.zeros((10_000, 2), bool)
    params = jax.jit(core.init)(jax.random.PRNGKey(1), carry, xs[:1], resets[:1])
    carry, ys = jax.jit(core.apply)(params, carry, xs, resets)
    assert np.isfinite(np.asarray(ys)).all()
    assert np.isfinite(np.asarray(carry)).all()
    assert np.abs(np.asarray(carry)).max() < 1e4


def test_encoder_width_is_independent_of_state_size():
    core = cores.make("s5", features=24, num_layers=1, state_size=8)
    carry = core.initialize_carry(2)
    xs, resets = jnp.ones((3, 2, 5)), jnp.zeros((3, 2), bool)
    params = jax.jit(core.init)(jax.random.PRNGKey(0), carry, xs, resets)
    carry, ys = jax.jit(core.apply)(params, carry, xs, resets)
    assert ys.shape == (3, 2, 24) and carry.shape == (2, 1, 4)


def test_input_decay_never_amplifies_an_unstable_state():
    """With ``Re(λ) > 0`` (|Λ̄| > 1), the input-dependent factor is 1, not |Λ̄|^extra."""
    core, _, params = _one_layer(input_decay=True)
    layer = params["params"]["layers_0"]
    layer["lambda_re"] = jnp.full_like(layer["lambda_re"], 0.5)
    layer["decay"]["bias"] = jnp.full_like(layer["decay"]["bias"], 3.0)  # extra ~ 3 steps
    layer["decay"]["kernel"] = jnp.zeros_like(layer["decay"]["kernel"])
    bound = core.clone(parent=None).bind(params)
    lam_bar, _, _ = bound.layers[0]._system()
    u = jnp.ones((1, 4))
    a = bound.layers[0]._factor(lam_bar, u)
    np.testing.assert_allclose(np.abs(np.asarray(lam_bar)), np.exp(0.5 * step_of(layer)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a)[0], np.asarray(lam_bar), rtol=1e-6)
    # Where |Λ̄| < 1 the factor still shrinks: |a| = |Λ̄|^(1 + softplus(3)).
    layer["lambda_re"] = jnp.full_like(layer["lambda_re"], -0.5)
    bound = core.clone(parent=None).bind(params)
    lam_bar, _, _ = bound.layers[0]._system()
    a = bound.layers[0]._factor(lam_bar, u)
    want = np.abs(np.asarray(lam_bar)) ** (1.0 + np.log1p(np.exp(3.0)))
    np.testing.assert_allclose(np.abs(np.asarray(a))[0], want, rtol=1e-5)


def step_of(layer):
    return np.exp(np.asarray(layer["log_step"]))
