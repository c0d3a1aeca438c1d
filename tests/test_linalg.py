"""Tests for ssmrl.linalg.orthonormal against NumPy's float64 QR."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ssmrl.linalg import orthogonal_init, orthonormal


@pytest.mark.parametrize("rows,cols", [(1, 1), (5, 3), (12, 4), (64, 64), (3, 7)])
def test_matches_the_q_factor_with_positive_r_diagonal(rows, cols):
    key = jax.random.PRNGKey(rows * 100 + cols)
    q = np.asarray(orthonormal(key, rows, cols), np.float64)
    n, m = max(rows, cols), min(rows, cols)
    a = np.asarray(jax.random.normal(key, (n, m)), np.float64)
    ref, r = np.linalg.qr(a)
    ref = ref * np.sign(np.diag(r))
    if rows < cols:
        ref = ref.T
    assert q.shape == (rows, cols)
    np.testing.assert_allclose(q, ref, atol=2e-5)
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, np.eye(m), atol=2e-5)


def test_entries_have_the_haar_second_moment_and_vmap_works():
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    q = np.asarray(jax.jit(jax.vmap(lambda k: orthonormal(k, 8, 8)))(keys), np.float64)
    # Each column is uniform on the unit sphere in R^8: any one entry has mean 0 and
    # E[q^2] = 1/8 (standard error over 400 draws about 0.007 and 0.0074).
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        assert abs(q[:, i, j].mean()) < 0.05
        assert abs((q[:, i, j] ** 2).mean() - 1 / 8) < 0.03


def test_initializer_scales_and_rejects_other_ranks():
    w = np.asarray(orthogonal_init(2.0)(jax.random.PRNGKey(1), (6, 2)), np.float64)
    np.testing.assert_allclose(w.T @ w, 4 * np.eye(2), atol=1e-4)
    with pytest.raises(ValueError, match="2-D"):
        orthogonal_init()(jax.random.PRNGKey(1), (2, 2, 2))
