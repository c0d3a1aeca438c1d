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
import numpy as np
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


def uniform(word: jax.Array, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """A float32 in ``[minval, maxval)`` from a random uint32 word, as
    ``jax.random.uniform`` makes it: the word's top 23 bits as the mantissa of a
    float in ``[1, 2)``, minus 1, scaled and shifted (and kept from rounding below
    ``minval``)."""
    mantissa = (word >> 9) | jnp.uint32(0x3F800000)
    unit = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
    if (minval, maxval) == (0.0, 1.0):
        return unit
    low, high = jnp.float32(minval), jnp.float32(maxval)
    return jnp.maximum(low, unit * (high - low) + low)


def normal(word: jax.Array) -> jax.Array:
    """A standard normal float32 from a random uint32 word, as ``jax.random.normal``
    makes it: ``sqrt(2) erfinv(u)`` with ``u`` uniform on ``(-1, 1)``."""
    low = np.nextafter(np.float32(-1.0), np.float32(0.0))
    return np.float32(np.sqrt(2)) * jax.scipy.special.erfinv(uniform(word, low, 1.0))
