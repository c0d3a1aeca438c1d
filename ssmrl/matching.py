"""World models of equal size with different backbones: parameter counts and width matching.

```python
s5 = WorldModelConfig(core=cores.S5Options(features=128, num_layers=2, state_size=64))
gru, count = matched_width(s5, "gru", obs_dim=72, act_dim=5)   # GRU width nearest in size
```

Comparing backbones is fair only at equal parameter count: `matched_width` gives core
``name`` the ``features`` (width) whose whole world model comes closest to the
reference one's parameter count, keeping every other setting.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssmrl import cores
from ssmrl.worldmodel import WorldModel, WorldModelConfig


@functools.cache
def param_count(config: WorldModelConfig, obs_dim: int, act_dim: int) -> int:
    """Number of world-model parameters (shapes only, nothing is initialised)."""
    model = WorldModel(config, obs_dim=obs_dim)
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(
        model.init,
        key,
        model.initialize_carry(1),
        jnp.zeros((1, 1, obs_dim)),
        jnp.zeros((1, 1, act_dim)),
        jnp.zeros((1, 1), bool),
        key,
    )
    return sum(leaf.size for leaf in jax.tree.leaves(shapes))


def with_core(config: WorldModelConfig, name: str, **changes: Any) -> WorldModelConfig:
    """``config`` whose backbone is core ``name`` (shared options kept), with ``changes``."""
    core = dataclasses.replace(cores.convert(config.core, name), **changes)
    return dataclasses.replace(config, core=core)


def matched_width(
    config: WorldModelConfig,
    name: str,
    obs_dim: int,
    act_dim: int,
    tolerance: float = 0.1,
    widths: tuple[int, int] = (4, 2048),
    options: dict[str, Any] | None = None,
) -> tuple[WorldModelConfig, int]:
    """``(config with core name, its parameter count)``: the width in ``widths`` (inclusive)
    whose world model's size is closest to ``config``'s, the core's other ``options`` set
    as given. The count grows with the width, so a bisection finds it. ValueError (one
    line) when the closest lies outside ``±tolerance`` of the target."""
    target = param_count(config, obs_dim, act_dim)
    options = options or {}

    def count(width: int) -> int:
        return param_count(with_core(config, name, **options, features=width), obs_dim, act_dim)

    low, high = widths
    while low < high:
        mid = (low + high) // 2
        if count(mid) < target:
            low = mid + 1
        else:
            high = mid
    best = min(sorted({low, max(low - 1, widths[0])}), key=lambda w: abs(count(w) - target))
    chosen = with_core(config, name, **options, features=best)
    params = count(best)
    if abs(params - target) > tolerance * target:
        raise ValueError(
            f"{name}: no width in {widths[0]}..{widths[1]} gives a world model within "
            f"{tolerance:.0%} of the reference's {target} parameters (closest: {params} "
            f"with features={best})"
        )
    return chosen, params
