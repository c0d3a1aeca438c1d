"""Shared helpers for checking ssmrl's POPGym tasks against the reference package."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def reference_random_returns(name: str, episodes: int, seed: int = 0) -> np.ndarray:
    """Returns of `episodes` uniformly random episodes of the reference popgym task `name`."""
    import popgym.envs

    env = getattr(popgym.envs, name)()
    env.action_space.seed(seed)
    out = np.zeros(episodes)
    for i in range(episodes):
        env.reset(seed=seed + i)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out[i] += reward
            done = terminated or truncated
    return out


def jax_random_returns(env, params, episodes: int, key: jax.Array, max_steps: int) -> np.ndarray:
    """Returns of the first episode of `episodes` parallel uniformly random rollouts.

    `max_steps` must be at least the longest possible episode; a rollout whose
    episode has not ended by then raises an AssertionError.
    """

    def one(key):
        key, key_reset = jax.random.split(key)
        _, state = env.reset(key_reset, params)

        def body(carry, key):
            state, ret, alive = carry
            key_act, key_step = jax.random.split(key)
            action = env.action_space(params).sample(key_act)
            _, state, reward, terminated, truncated, _ = env.step(key_step, state, action, params)
            ret = ret + jnp.where(alive, reward, 0.0)
            alive = alive & ~(terminated | truncated)
            return (state, ret, alive), None

        init = (state, jnp.zeros(()), jnp.ones((), bool))
        (_, ret, alive), _ = jax.lax.scan(body, init, jax.random.split(key, max_steps))
        return ret, alive

    rets, alive = jax.jit(jax.vmap(one))(jax.random.split(key, episodes))
    assert not bool(alive.any()), "some episodes did not end within max_steps"
    return np.asarray(rets, dtype=np.float64)


def assert_means_match(ours: np.ndarray, ref: np.ndarray, z: float = 4.0) -> None:
    """Two-sample check that the mean returns agree within `z` standard errors."""
    se = np.sqrt(ours.var(ddof=1) / len(ours) + ref.var(ddof=1) / len(ref)) + 1e-9
    diff = abs(ours.mean() - ref.mean())
    assert diff <= z * se, f"mean {ours.mean():.4f} vs reference {ref.mean():.4f} (se {se:.4f})"
