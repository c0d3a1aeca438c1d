"""Memory cores: S5, GRU, LSTM and a memoryless MLP, all with one contract.

```python
core = ssmrl.cores.make("s5", features=128, num_layers=2, state_size=128)
carry = core.initialize_carry(batch_size)
params = core.init(key, carry, xs, resets)
carry, ys = core.apply(params, carry, xs, resets)                 # xs [T, B, F], resets [T, B]
carry, y = core.apply(params, carry, x, reset, method="step")     # x [B, F], reset [B]
```

``resets[t, b]`` True means ``xs[t, b]`` starts a new episode: the carry is replaced
by the initial (zero) carry before that input is consumed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ssmrl.cores.mlp import MLP
from ssmrl.cores.rnn import GRU, LSTM, LSTMCarry
from ssmrl.cores.s5 import S5

_CORES: dict[str, type[nn.Module]] = {"s5": S5, "gru": GRU, "lstm": LSTM, "mlp": MLP}


def names() -> list[str]:
    """Names accepted by `make`."""
    return sorted(_CORES)


def options(name: str) -> dict[str, Any]:
    """The options of core `name` and their defaults."""
    cls = _lookup(name)
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.name not in ("parent", "name") and f.default is not dataclasses.MISSING
    }


def make(name: str, **kwargs: Any) -> nn.Module:
    """Build a memory core by name; unknown names or options raise ValueError."""
    cls = _lookup(name)
    allowed = options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for core {name!r}; allowed: {sorted(allowed)}"
        )
    return cls(**kwargs)


def _lookup(name: str) -> type[nn.Module]:
    if name not in _CORES:
        raise ValueError(f"unknown core {name!r}; allowed: {names()}")
    return _CORES[name]


__all__ = ["GRU", "LSTM", "LSTMCarry", "MLP", "S5", "make", "names", "options"]
