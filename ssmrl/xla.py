"""XLA compile options shared by the driver and evaluation."""

from __future__ import annotations

FAST_COMPILE = {"xla_backend_optimization_level": 0}
"""Backend optimisations off: compiles several times faster, runs somewhat slower."""


def compiler_options(fast_compile: bool) -> dict | None:
    """``compiler_options`` for `jax.jit`: `FAST_COMPILE` or XLA's defaults."""
    return FAST_COMPILE if fast_compile else None
