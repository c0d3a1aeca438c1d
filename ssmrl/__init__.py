"""ssmrl: reinforcement learning with state-space-model memory, in JAX."""

__version__ = "0.1.0"
