"""Diagonal linear recurrences with episode resets, as a parallel or a sequential scan.

The recurrence, per batch row and state dimension::

    x[t] = b[t]                  if reset[t]
    x[t] = a * x[t-1] + b[t]     otherwise,      x[-1] = x0

``a`` is one factor per state dimension, or one per step, row and state dimension.

A reset replaces the carried state by zero *before* input ``t`` is consumed,
which is what the memory cores need (their initial carry is zero).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCAN_MODES = ("associative", "sequential", "auto")


def resolve_scan_mode(mode: str) -> str:
    """Map ``"auto"`` to the faster form on the running backend.

    On CPU the sequential form is several times faster (``scripts/bench_cores.py``);
    on accelerators the parallel form wins for long sequences.
    """
    if mode not in SCAN_MODES:
        raise ValueError(f"scan must be one of {SCAN_MODES}, got {mode!r}")
    if mode == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "associative"
    return mode


def _reset_compose(earlier, later):
    """Compose two affine maps ``x -> r ? b : a*x + b``; ``later`` applied after ``earlier``.

    If the later map resets, it ignores its input entirely, so the composition is the
    later map itself. Otherwise ``a2*(a1*x + b1) + b2`` with the earlier reset flag kept.
    ``jnp.where`` (not multiplication by zero) makes gradients through a reset exactly zero
    even when the discarded branch holds inf or NaN.
    """
    a1, b1, r1 = earlier
    a2, b2, r2 = later
    a = jnp.where(r2, a2, a2 * a1)
    b = jnp.where(r2, b2, a2 * b1 + b2)
    return a, b, r1 | r2


def linear_recurrence(
    a: jax.Array, b: jax.Array, resets: jax.Array, x0: jax.Array, mode: str = "auto"
) -> jax.Array:
    """Run the reset-aware diagonal recurrence over time.

    | arg    | shape      | dtype              |
    |--------|------------|--------------------|
    | a      | [P] or [T, B, P] (per step) | float or complex |
    | b      | [T, B, P]  | same as a          |
    | resets | [T, B]     | bool               |
    | x0     | [B, P]     | same as a          |
    | return | [T, B, P]  | all states x[0..T-1]; the last is the new carry |
    """
    mode = resolve_scan_mode(mode)
    r = resets[..., None]
    if mode == "sequential":

        def step(x, inputs):
            a_t, b_t, r_t = inputs
            x = jnp.where(r_t, b_t, a_t * x + b_t)
            return x, x

        a_seq = a if a.ndim == b.ndim else jnp.broadcast_to(a, (b.shape[0], *a.shape))
        _, xs = jax.lax.scan(step, x0, (a_seq, b, r))
        return xs
    # Fold the carried-in state into the first element; the first element then ignores
    # its input, so the prefix's b component is the state at every step.
    a_0 = a[0] if a.ndim == b.ndim else a
    b = b.at[0].set(jnp.where(r[0], b[0], a_0 * x0 + b[0]))
    r = r.at[0].set(True)
    a_full = jnp.broadcast_to(a, b.shape)
    r_full = jnp.broadcast_to(r, b.shape)
    _, xs, _ = jax.lax.associative_scan(_reset_compose, (a_full, b, r_full), axis=0)
    return xs
