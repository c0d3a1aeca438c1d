"""The POPGym suite as gymnax 1.0 environments.

Each module in this package implements one task family and exposes two dicts
that the registry collects:

- ``TASKS``: POPGym name (e.g. ``"RepeatPreviousEasy"``) -> zero-argument factory
  returning ``(env, env_params)``.
- ``ALIASES``: older name (e.g. ``"StatelessCartPoleEasy"``) -> POPGym name.
"""
