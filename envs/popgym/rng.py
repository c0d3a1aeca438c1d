"""Random 32-bit words at one threefry hash per two words.

With JAX's default threefry generator, `jax.random.split` costs one threefry2x32
hash per key made and `jax.random.bits` one per 32-bit word, and every call is
its own loop over a vmapped batch. A step that splits its key and draws one word
from each half therefore pays four hashes for two words. Each hash yields 64
bits, so `words` hashes one counter per two words under the key and keeps both
halves: two words for the price of one, from one call.

For a threefry key, block ``b`` of ``words`` hashes the counters ``(b, 0), (b, 1),
...``; block 0 is then the key data of ``jax.random.split(key, (count + 1) // 2)``
laid end to end (with JAX's default ``jax_threefry_partitionable``). Other key
types fall back to ``jax.random.bits(jax.random.fold_in(key, b), (count,))``.
Either way, different blocks of one key are independent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p


def words(key: jax.Array, count: int, block: int | jax.Array = 0) -> tuple[jax.Array, ...]:
    """``count`` independent uniform uint32 scalars from ``key`` (block ``block``)."""
    if jax.random.key_impl(key) != "threefry2x32":
        bits = jax.random.bits(jax.random.fold_in(key, block), (count,), jnp.uint32)
        return tuple(bits[i] for i in range(count))
    data = jax.random.key_data(key)
    high = jnp.asarray(block, jnp.uint32)
    out: list[jax.Array] = []
    for low in range((count + 1) // 2):
        out += threefry2x32_p.bind(data[0], data[1], high, jnp.uint32(low))
    return tuple(out[:count])


def uniform(word: jax.Array) -> jax.Array:
    """A float32 in ``[0, 1)`` from a random uint32 word, as ``jax.random.uniform``
    makes it: the word's top 23 bits as the mantissa of a float in ``[1, 2)``, minus 1."""
    mantissa = (word >> 9) | jnp.uint32(0x3F800000)
    return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
