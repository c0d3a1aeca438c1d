"""The reset-aware linear recurrence against a NumPy float64 loop."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmrl.cores.scan import linear_recurrence, resolve_scan_mode
from tests.cores import reference

T, B, P = 16, 3, 4


def _inputs(seed, t=T, p_reset=0.3):
    rng = np.random.default_rng(seed)
    a = 0.95 * np.exp(1j * rng.uniform(-np.pi, np.pi, P)) * rng.uniform(0.5, 1.0, P)
    b = rng.normal(size=(t, B, P)) + 1j * rng.normal(size=(t, B, P))
    x0 = rng.normal(size=(B, P)) + 1j * rng.normal(size=(B, P))
    resets = rng.random((t, B)) < p_reset
    return a, b, resets, x0


def _c64(*arrays):
    return [jnp.asarray(x, jnp.complex64) for x in arrays]


_scan = {m: jax.jit(partial(linear_recurrence, mode=m)) for m in ("associative", "sequential")}


@pytest.mark.parametrize("mode", ["associative", "sequential"])
@pytest.mark.parametrize("t", [1, 2, 7, 64])
@pytest.mark.parametrize("p_reset", [0.0, 0.2, 1.0])
def test_matches_numpy_loop(mode, t, p_reset):
    a, b, resets, x0 = _inputs(t, t=t, p_reset=p_reset)
    resets[0, 0] = resets[-1, -1] = True
    ja, jb, jx0 = _c64(a, b, x0)
    got = _scan[mode](ja, jb, jnp.asarray(resets), jx0)
    want = reference.linear_recurrence(a, b, resets, x0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["associative", "sequential"])
def test_per_step_factors_match_numpy_loop(mode):
    _, b, resets, x0 = _inputs(5, t=33)
    rng = np.random.default_rng(6)
    a = rng.uniform(0.3, 1.0, b.shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, b.shape))
    ja, jb, jx0 = _c64(a, b, x0)
    got = _scan[mode](ja, jb, jnp.asarray(resets), jx0)
    want = reference.linear_recurrence(a, b, resets, x0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # Factors that differ in time give other states than their mean held fixed.
    fixed = reference.linear_recurrence(a.mean((0, 1)), b, resets, x0)
    assert np.abs(want - fixed).max() > 0.1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=T * B, max_size=T * B), st.integers(0, 2**16))
def test_random_reset_patterns(flags, seed):
    a, b, _, x0 = _inputs(seed)
    resets = np.array(flags).reshape(T, B)
    want = reference.linear_recurrence(a, b, resets, x0)
    ja, jb, jx0 = _c64(a, b, x0)
    for mode in _scan:
        got = _scan[mode](ja, jb, jnp.asarray(resets), jx0)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["associative", "sequential"])
def test_gradient_through_reset_is_exactly_zero(mode):
    a, b, resets, x0 = _inputs(1, p_reset=0.0)
    resets[9, :] = True
    ja, jb, jx0 = _c64(a, b, x0)

    def later_sum(b, x0):
        xs = linear_recurrence(ja, b, jnp.asarray(resets), x0, mode)
        return jnp.sum(jnp.abs(xs[9:]) ** 2)

    g_b, g_x0 = jax.grad(later_sum, argnums=(0, 1))(jb, jx0)
    assert np.all(np.asarray(g_b[:9]) == 0)
    assert np.all(np.asarray(g_x0) == 0)
    assert np.all(np.abs(np.asarray(g_b[9:])) > 0)


def test_nan_before_reset_does_not_leak():
    a, b, resets, x0 = _inputs(2, p_reset=0.0)
    resets[5, :] = True
    b[:5] = np.nan
    ja, jb, jx0 = _c64(a, b, x0)
    for mode in _scan:
        xs = np.asarray(_scan[mode](ja, jb, jnp.asarray(resets), jx0))
        assert np.isfinite(xs[5:]).all(), mode


def test_resolve_scan_mode():
    assert resolve_scan_mode("associative") == "associative"
    expected = "sequential" if jax.default_backend() == "cpu" else "associative"
    assert resolve_scan_mode("auto") == expected
    with pytest.raises(ValueError, match="associative"):
        resolve_scan_mode("parallel")
