"""LRU initialisation and stability facts, checked in NumPy float64."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssmrl.cores as cores

RINGS = [
    dict(),  # the defaults (the public code's): r in [0, 1], phase in (0, 2π]
    dict(r_min=0.9, r_max=0.999, max_phase=math.pi / 10),  # the paper's long-range ring
    dict(r_min=0.5, r_max=0.5, max_phase=1.0),  # one radius
]


def _one_layer(state_size=4, **options):
    """A 4-wide one-layer LRU core and its params."""
    core = cores.make("lru", features=4, num_layers=1, state_size=state_size, **options)
    params = jax.jit(core.init)(
        jax.random.PRNGKey(0),
        core.initialize_carry(1),
        jnp.ones((1, 1, 2)),
        jnp.zeros((1, 1), bool),
    )
    return core, params


def _magnitude_phase(layer):
    """|λ| and arg λ in float64 from the params: λ = exp(-(1e-6 + exp(ν_log)) + i exp(θ_log))."""
    nu = 1e-6 + np.exp(np.asarray(layer["nu_log"], np.float64))
    return np.exp(-nu), np.exp(np.asarray(layer["theta_log"], np.float64))


@pytest.mark.parametrize("ring", RINGS)
def test_initial_eigenvalues_lie_on_the_ring(ring):
    core, params = _one_layer(state_size=2048, **ring)
    o = core.options
    layer = params["params"]["layers_0"]
    r, phase = _magnitude_phase(layer)
    assert np.all(np.isfinite(np.asarray(layer["nu_log"])))
    assert np.all(np.isfinite(np.asarray(layer["theta_log"])))
    assert r.min() >= o.r_min - 1e-6 and r.max() <= o.r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= o.max_phase * (1 + 1e-6)
    # |λ|² uniform on [r_min², r_max²] (uniform over the ring's area), phase uniform.
    np.testing.assert_allclose(np.mean(r**2), (o.r_min**2 + o.r_max**2) / 2, atol=0.02)
    np.testing.assert_allclose(np.mean(phase), o.max_phase / 2, atol=0.03 * o.max_phase)
    # The layer's λ is the paper's exp(-ν + iθ).
    lam = core.clone(parent=None).bind(params).layers[0]._system()[0]
    np.testing.assert_allclose(np.asarray(lam), r * np.exp(1j * phase), atol=2e-6)


@pytest.mark.parametrize("ring", RINGS[:2])
def test_gamma_normalises_the_input_at_init(ring):
    _, params = _one_layer(state_size=256, **ring)
    layer = params["params"]["layers_0"]
    r, _ = _magnitude_phase(layer)
    gamma = np.exp(np.asarray(layer["gamma_log"], np.float64))
    np.testing.assert_allclose(gamma, np.sqrt(1 - r**2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nu_log", [-1e4, -100.0, -30.0, -17.0, 0.0, 30.0])
def test_eigenvalues_stay_inside_the_unit_circle(nu_log):
    """|λ| < 1 for any ν_log, in float32: a long input stream never blows the state up."""
    core, params = _one_layer(r_min=0.0, r_max=1.0)
    params["params"]["layers_0"]["nu_log"] = jnp.full((4,), nu_log)
    lam = core.clone(parent=None).bind(params).layers[0]._system()[0]
    assert np.all(np.abs(np.asarray(lam)) < 1)
    xs, resets = jnp.ones((2000, 1, 2)), jnp.zeros((2000, 1), bool)
    carry = core.initialize_carry(1)

    def loss(params):
        carry_out, ys = core.apply(params, carry, xs, resets)
        return jnp.sum(ys) + jnp.sum(jnp.abs(carry_out))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_associative_equals_sequential():
    base = dict(features=8, num_layers=2, state_size=4, r_min=0.0, r_max=1.0)
    assoc = cores.make("lru", scan="associative", **base)
    seq = cores.make("lru", scan="sequential", **base)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(64, 3, 5)), jnp.float32)
    resets = jnp.asarray(rng.random((64, 3)) < 0.2)
    carry = assoc.initialize_carry(3) + 0.5j
    params = jax.jit(assoc.init)(jax.random.PRNGKey(1), carry, xs[:1], resets[:1])
    for t in (1, 64):
        ca, ya = jax.jit(assoc.apply)(params, carry, xs[:t], resets[:t])
        cs, ys = jax.jit(seq.apply)(params, carry, xs[:t], resets[:t])
        np.testing.assert_allclose(np.asarray(ya), np.asarray(ys), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(ca), np.asarray(cs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(r_min=0.99, r_max=0.9), "need 0 <= r_min <= r_max <= 1, got r_min=0.99"),
        (dict(r_min=-0.1), "need 0 <= r_min <= r_max <= 1"),
        (dict(r_max=1.5), "need 0 <= r_min <= r_max <= 1"),
        (dict(max_phase=0.0), "max_phase must lie in \\(0, 2π\\], got 0.0"),
        (dict(max_phase=7.0), "max_phase must lie in"),
        (dict(state_size=0), "state_size must be >= 1"),
        (dict(features=0), "features must be >= 1"),
        (dict(mixing="glu"), "mixing must be one of"),
        (dict(scan="parallel"), "scan must be one of \\('associative'"),
    ],
)
def test_validate_rejects_bad_options(changes, match):
    options = cores.LRUOptions(**changes)
    with pytest.raises(ValueError, match=match) as err:
        options.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        cores.build(options)
    cores.LRUOptions(r_min=0.0, r_max=1.0, max_phase=2 * math.pi).validate()  # the edges
    assert dataclasses.replace(options, **cores.options("lru")) == cores.LRUOptions()
