"""Boolean grids packed into 32-bit words, shared by the POPGym grid tasks.

A grid of ``lines`` rows and at most 32 columns is kept as a ``(lines,)`` uint32
array whose row ``r`` has bit ``c`` set where ``grid[r, c]`` is True. Masks this
small then cost a few word operations instead of one per cell.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pack_rows(grid: jax.Array) -> jax.Array:
    """``(..., lines, width)`` bool grid (width <= 32) -> ``(..., lines)`` uint32 rows."""
    grid = jnp.asarray(grid).astype(jnp.uint32)
    cols = jnp.arange(grid.shape[-1], dtype=jnp.uint32)
    return jnp.sum(grid << cols, axis=-1, dtype=jnp.uint32)


def unpack_rows(rows: jax.Array, width: int) -> jax.Array:
    """Inverse of `pack_rows`: ``(..., lines)`` uint32 rows -> ``(..., lines, width)`` bool."""
    cols = jnp.arange(width, dtype=jnp.uint32)
    return ((jnp.asarray(rows)[..., None] >> cols) & 1).astype(bool)


def bit_at(rows: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
    """Whether bit ``col`` of ``rows[row]`` is set (False for a row outside ``rows``)."""
    line = jnp.sum(jnp.where(jnp.arange(rows.shape[0]) == row, rows, 0), dtype=jnp.uint32)
    return ((line >> jnp.asarray(col).astype(jnp.uint32)) & 1) == 1


def with_bit(rows: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
    """``rows`` with bit ``col`` of ``rows[row]`` set."""
    bit = jnp.uint32(1) << jnp.asarray(col).astype(jnp.uint32)
    return rows | jnp.where(jnp.arange(rows.shape[0]) == row, bit, 0)


def prefix_sums(counts: jax.Array) -> jax.Array:
    """Inclusive running sums of a short 1-D array.

    Log-step shifted adds: under vmap on a CPU several times cheaper than
    ``jnp.cumsum``, and unlike an unrolled chain of adds, not recomputed by XLA
    for every element of each array that uses the result.
    """
    sums, shift = counts, 1
    while shift < counts.shape[0]:
        sums = sums + jnp.pad(sums[:-shift], (shift, 0))
        shift *= 2
    return sums


def pick_bit(rows: jax.Array, word: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Row and column (int32) of a uniform set bit of ``rows``, chosen by a random
    32-bit ``word``: the ``(word % count)``-th in row-major order, uniform up to a
    relative bias below ``count / 2**32``. Row and column are 0 when no bit is set.
    """
    lines = rows.shape[0]
    per_row = jax.lax.population_count(rows)
    rank = word % jnp.maximum(per_row.sum(dtype=jnp.uint32), 1)
    ends = prefix_sums(per_row)
    # The row holding the rank-th set bit: the first whose running count passes it.
    at = (ends > rank) & (ends - per_row <= rank)
    row = jnp.minimum(jnp.sum(ends <= rank, dtype=jnp.int32), lines - 1)
    line = jnp.sum(jnp.where(at, rows, 0), dtype=jnp.uint32)
    rank = rank - jnp.sum(jnp.where(at, ends - per_row, 0), dtype=jnp.uint32)
    # Bit c is the rank-th set bit when the bits 0 .. c hold rank + 1 set bits.
    upto = (jnp.uint32(2) << jnp.arange(width, dtype=jnp.uint32)) - 1
    below = jax.lax.population_count(line & upto)
    col = jnp.minimum(jnp.sum(below <= rank, dtype=jnp.int32), width - 1)
    return row, col
