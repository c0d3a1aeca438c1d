"""What the cores' options dataclasses share: checks for ``validate``, and the options of
a plain stack of layers (GRU, LSTM, MLP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tyro


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_positive(options: Any, *names: str) -> None:
    """Raise ValueError unless every named integer option is at least 1."""
    for name in names:
        value = getattr(options, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class StackOptions:
    """Options of a stack of ``num_layers`` layers of width ``features``; a core's options
    class derives from it and sets its ``name`` (and other defaults)."""

    name: tyro.conf.Suppress[str] = ""
    """The core's registered name (the ``core.name`` of YAML files and flags)."""
    features: int = 128
    """Width H of every layer (an LSTM's hidden and cell state), and the output width."""
    num_layers: int = 1
    """Number L of stacked layers."""

    def validate(self) -> None:
        """Raise ValueError if a size is below 1."""
        check_positive(self, "features", "num_layers")
