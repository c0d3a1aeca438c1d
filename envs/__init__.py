"""Environments for ssmrl: the POPGym suite in JAX, wrappers, and a registry.

Every environment follows the gymnax 1.0 API::

    env, env_params = ssmrl.envs.make("RepeatPreviousEasy")
    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)
"""

from ssmrl.envs.registry import aliases, make, names

__all__ = ["aliases", "make", "names"]
