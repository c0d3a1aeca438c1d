"""Random orthogonal matrices without LAPACK.

On a CPU, XLA runs a batched QR factorisation (what ``jax.random.orthogonal`` and
``flax.linen.initializers.orthogonal`` use) as a LAPACK call that splits its batch
over the intra-op thread pool and waits for the pieces. When two such calls run
at once on a pool of two threads (a 2-core machine, two layers initialised in one
``vmap`` over seeds) each waits for the other's thread and the program hangs.
Gram-Schmidt in plain matrix products has no such call and gives the same
distribution (the Q factor of a Gaussian matrix with a positive-diagonal R).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def orthonormal(key: jax.Array, rows: int, cols: int, dtype=jnp.float32) -> jax.Array:
    """A Haar-random ``[rows, cols]`` matrix with orthonormal columns (rows >= cols) or rows.

    | argument | shape |
    |---|---|
    | ``key`` | a PRNG key |
    | result | ``[rows, cols]`` |

    Classical Gram-Schmidt with one re-orthogonalisation pass per column, in float32
    products; ``Q^T Q`` is the identity to about 1e-6.
    """
    if rows < cols:
        return orthonormal(key, cols, rows, dtype).T
    a = jax.random.normal(key, (rows, cols), jnp.float32)

    def column(j, q):
        v = a[:, j]
        done = (jnp.arange(cols) < j).astype(a.dtype)
        for _ in range(2):  # the second pass removes what rounding left of earlier columns
            v = v - q @ ((q.T @ v) * done)
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    q = jax.lax.fori_loop(0, cols, column, jnp.zeros_like(a))
    return q.astype(dtype)


def orthogonal_init(scale: float = 1.0):
    """A flax initializer like ``nn.initializers.orthogonal`` for 2-D shapes, LAPACK-free."""

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 2:
            raise ValueError(f"orthogonal_init needs a 2-D shape, got {shape}")
        return scale * orthonormal(key, shape[0], shape[1], dtype)

    return init
