"""Playing-card decks shared by the POPGym card tasks.

A deck of ``num_decks`` standard decks holds ``52 * num_decks`` cards with ids
``0 .. 52 * num_decks - 1``. Card ``c`` has rank ``(c % 52) // 4`` (ace, 2, ...,
king), suit ``c % 4`` and colour ``c % 2``, the numbering of the reference
``popgym.core.deck.Deck``.

The tasks only ever look at one attribute of each card (its rank, suit or
colour), so a deck is kept as the number of cards of each attribute value still
in it, and dealing draws a value with probability proportional to those counts.
This deals the sequence distribution of a uniformly shuffled deck (up to the
negligible bias noted in ``draw``), but costs O(values) per card instead of an
O(N log N) shuffle at every reset (gymnax computes a reset at every step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssmrl.envs.popgym.bits import prefix_sums

DECK_SIZE = 52
NUM_VALUES = {"ranks": 13, "suits": 4, "colors": 2}


def card_values(cards: jax.Array, attribute: str) -> jax.Array:
    """``attribute`` ("ranks", "suits" or "colors") of card ids, int32."""
    cards = jnp.asarray(cards).astype(jnp.int32)
    if attribute == "ranks":
        return (cards % DECK_SIZE) // NUM_VALUES["suits"]
    if attribute == "suits":
        return cards % NUM_VALUES["suits"]
    if attribute == "colors":
        return cards % NUM_VALUES["colors"]
    raise ValueError(f"unknown card attribute {attribute!r}; use one of {sorted(NUM_VALUES)}")


def full_counts(num_decks: int, attribute: str) -> jax.Array:
    """Number of cards of each ``attribute`` value in ``num_decks`` decks, int32."""
    num_values = NUM_VALUES[attribute]
    return jnp.full((num_values,), DECK_SIZE * num_decks // num_values, jnp.int32)


def draw(key: jax.Array, counts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Deal one card uniformly from a deck given as per-value ``counts``, with the
    random word ``jax.random.bits(key)``: see `deal`."""
    return deal(jax.random.bits(key, (), jnp.uint32), counts)


def deal(
    word: jax.Array, counts: jax.Array, total: jax.Array | int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Deal one card uniformly from a deck given as per-value ``counts``, chosen by
    the random uint32 ``word``.

    Returns the dealt value (int32) and the counts without it. An empty deck
    deals value 0 and stays empty. ``total`` is ``counts.sum()``, for callers
    that know it without summing. The card is the word modulo the deck size,
    which favours some cards by less than ``N / 2**32`` (a fraction of 2e-7 for
    the largest deck); ``jax.random.randint`` would remove that but compiles
    several times slower.
    """
    if total is None:
        total = counts.sum()
    total = jnp.asarray(total, counts.dtype)
    pick = (word % jnp.maximum(total, 1).astype(jnp.uint32)).astype(counts.dtype)
    # A sum, not a one-hot compare chain: XLA materialises the reduction once
    # instead of recomputing the prefix sums for every element that uses it.
    value = jnp.sum(prefix_sums(counts) <= pick, dtype=jnp.int32)
    value = jnp.where(total > 0, jnp.minimum(value, counts.shape[0] - 1), 0)
    taken = (jnp.arange(counts.shape[0]) == value) & (total > 0)
    return value, counts - taken.astype(counts.dtype)
