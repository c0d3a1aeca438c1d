"""Checks shared by the options dataclasses' ``validate`` methods."""

from __future__ import annotations

from typing import Any


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
