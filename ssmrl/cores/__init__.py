"""Memory cores: S5, LRU, GRU, LSTM, Transformer and a memoryless MLP, all with one contract.

```python
core = ssmrl.cores.make("s5", features=128, num_layers=2, state_size=128)
core = ssmrl.cores.build(ssmrl.cores.S5Options(features=128))     # the same, from options
carry = core.initialize_carry(batch_size)
params = core.init(key, carry, xs, resets)
carry, ys = core.apply(params, carry, xs, resets)                 # xs [T, B, F], resets [T, B]
carry, y = core.apply(params, carry, x, reset, method="step")     # x [B, F], reset [B]
carries, ys = core.apply(params, carry, xs, resets, method="carries")
```

``resets[t, b]`` True means ``xs[t, b]`` starts a new episode: the carry is replaced
by the initial (zero) carry before that input is consumed.

``carries`` has the carry's pytree structure with a leading time axis on every leaf
(``[T, B, ...]``): ``carries[t]`` is the carry after consuming ``xs[t]``, what ``t + 1``
step calls return, and ``carries[T - 1]`` is the sequence call's carry.

Each core is a flax module with one field, ``options``, a frozen dataclass of its
options with ``validate()``. Adding a core is one file (the module and its options
dataclass) and one `register` line below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ssmrl.cores.lru import LRU, LRUOptions
from ssmrl.cores.mlp import MLP, MLPOptions
from ssmrl.cores.rnn import GRU, LSTM, GRUOptions, LSTMCarry, LSTMOptions
from ssmrl.cores.s5 import S5, S5Options
from ssmrl.cores.transformer import Transformer, TransformerCarry, TransformerOptions

_MODULES: dict[str, type[nn.Module]] = {}
_OPTIONS: dict[str, type] = {}


def register(name: str, module: type[nn.Module], options_cls: type) -> None:
    """Make core ``name`` available: ``module(options=options_cls(...))`` builds it.

    ``options_cls`` is a frozen dataclass whose fields all have defaults, whose ``name``
    field defaults to ``name`` (it is ``core.name`` in YAML files), and which has
    ``validate()``; each options class belongs to one core.
    """
    if name in _MODULES or options_cls in _OPTIONS.values():
        raise ValueError(f"core {name!r} or options {options_cls.__name__} already registered")
    if options_cls().name != name:
        raise ValueError(f"{options_cls.__name__}.name must default to {name!r}")
    _MODULES[name] = module
    _OPTIONS[name] = options_cls


register("s5", S5, S5Options)
register("lru", LRU, LRUOptions)
register("gru", GRU, GRUOptions)
register("lstm", LSTM, LSTMOptions)
register("mlp", MLP, MLPOptions)
register("transformer", Transformer, TransformerOptions)


def names() -> list[str]:
    """Names of the registered cores, sorted."""
    return sorted(_MODULES)


def options_class(name: str) -> type:
    """The options dataclass of core ``name``; ValueError naming the cores if unknown."""
    if name not in _OPTIONS:
        raise ValueError(f"unknown core {name!r}; allowed: {names()}")
    return _OPTIONS[name]


def name_of(options: Any) -> str:
    """The name of the core whose options class ``options`` is an instance of."""
    for name, cls in _OPTIONS.items():
        if type(options) is cls:
            return name
    raise ValueError(
        f"{type(options).__name__} is not a core's options; "
        f"allowed: {sorted(cls.__name__ for cls in _OPTIONS.values())}"
    )


def build(options: Any) -> nn.Module:
    """Validate ``options`` (ValueError if invalid), then build its core's module."""
    name = name_of(options)
    if options.name != name:
        raise ValueError(f"name: {type(options).__name__} is core {name!r}, not {options.name!r}")
    options.validate()
    return _MODULES[name](options=options)


def options(name: str) -> dict[str, Any]:
    """The options of core ``name`` and their defaults (its ``name`` aside)."""
    out = dataclasses.asdict(options_class(name)())
    del out["name"]
    return out


def convert(options: Any, name: str) -> Any:
    """Core ``name``'s options, taking the values of the options it shares with ``options``
    (e.g. ``features`` and ``num_layers`` from S5 to GRU) and its defaults for the rest."""
    cls = options_class(name)
    if type(options) is cls:
        return options
    shared = {f.name for f in dataclasses.fields(cls)} & set(dataclasses.asdict(options))
    shared.discard("name")
    return cls(**{k: getattr(options, k) for k in shared})


def make(name: str, **kwargs: Any) -> nn.Module:
    """Build core ``name`` from keyword options; unknown names or options raise ValueError."""
    allowed = options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for core {name!r}; allowed: {sorted(allowed)}"
        )
    return build(options_class(name)(**kwargs))


__all__ = [
    "GRU",
    "LRU",
    "LSTM",
    "MLP",
    "S5",
    "GRUOptions",
    "LRUOptions",
    "LSTMCarry",
    "LSTMOptions",
    "MLPOptions",
    "S5Options",
    "Transformer",
    "TransformerCarry",
    "TransformerOptions",
    "build",
    "convert",
    "make",
    "name_of",
    "names",
    "options",
    "options_class",
    "register",
]
