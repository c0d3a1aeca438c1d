"""Evaluation rollouts of a trained policy: episode returns, and in-context adaptation curves.

Both run ``E`` environments in parallel, one episode (or one trial) per row, inside
one ``lax.while_loop`` that stops when every row has finished, and are jitted and
vmapped over seeds. The policy is an `ssmrl.agent.Agent`'s ``act(params, carry, obs,
reset, key, greedy) -> (carry, action)`` from its ``initial_carry(E)``; the memory is
reset only where the environment's ``terminated | truncated`` ended the previous step.

An adaptation curve needs an environment whose episodes are trials of several
episodes (`ssmrl.envs.meta`): its ``info`` reports the `ssmrl.trial_info` keys for each
episode within a trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssmrl.agent import Agent
from ssmrl.trial_info import TRIAL_EPISODE_DONE, TRIAL_EPISODE_INDEX, TRIAL_EPISODE_RETURN
from ssmrl.xla import compiler_options


class Loop(NamedTuple):
    """Loop state: one episode (trial) per batch row, ``[E, ...]``."""

    t: Any  # steps taken
    key: Any
    obs: Any
    state: Any  # env state
    carry: Any  # core carry
    reset: Any  # the previous step ended the row's episode (memory reset)
    done: Any  # the row's episode has ended
    stats: Any  # what the caller accumulates


def _rollout(agent, env, env_params, rows, greedy, accumulate, stats0):
    """``run(params, key) -> (stats, done [E])`` for one seed."""
    act, carry0 = agent.act, agent.initial_carry(rows)
    max_steps = getattr(env_params, "max_steps_in_episode", None) or 100_000

    def run(params, key):
        key, key_reset = jax.random.split(key)
        obs, state = jax.vmap(env.reset, (0, None))(jax.random.split(key_reset, rows), env_params)
        init = Loop(
            t=jnp.int32(0),
            key=key,
            obs=obs,
            state=state,
            carry=carry0,
            reset=jnp.ones(rows, bool),
            done=jnp.zeros(rows, bool),
            stats=stats0,
        )

        def cond(c: Loop):
            return (c.t <= max_steps) & ~c.done.all()

        def body(c: Loop):
            key, key_act, key_env = jax.random.split(c.key, 3)
            carry, action = act(params, c.carry, c.obs, c.reset, key_act, greedy)
            obs, state, reward, terminated, truncated, info = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(key_env, rows), c.state, action, env_params
            )
            live = ~c.done
            stats = accumulate(c.stats, live, jnp.asarray(reward, jnp.float32), info)
            end = terminated | truncated
            return Loop(c.t + 1, key, obs, state, carry, end, c.done | end, stats)

        out = jax.lax.while_loop(cond, body, init)
        return out.stats, out.done

    return run


def episode_returns(
    agent: Agent,
    env: Any,
    env_params: Any,
    episodes: int,
    greedy: bool = False,
    fast_compile: bool = False,
) -> Callable:
    """Jitted ``(params [S], keys [S]) -> (returns [S, E], finished [S, E])``, one episode per row.

    | argument | shape |
    |---|---|
    | ``agent`` | an `ssmrl.agent.Agent` (its ``act`` and ``initial_carry``) |
    | ``params``, ``keys`` | a leading seed axis ``S`` |
    """

    def accumulate(total, live, reward, info):
        return total + jnp.where(live, reward, 0.0)

    run = _rollout(agent, env, env_params, episodes, greedy, accumulate, jnp.zeros(episodes))
    return jax.jit(jax.vmap(run), compiler_options=compiler_options(fast_compile))


def trial_returns(
    agent: Agent,
    env: Any,
    env_params: Any,
    trials: int,
    greedy: bool = False,
    fast_compile: bool = False,
) -> Callable:
    """Jitted ``(params [S], keys [S]) -> (returns [S, E, K], finished [S, E, K])``.

    Row ``e`` plays one trial of ``K = env_params.episodes_per_trial`` episodes;
    ``returns[s, e, k]`` is the return of its episode ``k`` (as the environment
    scales it) and ``finished[s, e, k]`` whether that episode ended.
    """
    k = env_params.episodes_per_trial
    zeros = jnp.zeros((trials, k))

    def accumulate(stats, live, reward, info):
        sums, ended = stats
        hit = jnp.arange(k) == info[TRIAL_EPISODE_INDEX][:, None]
        hit = hit & (info[TRIAL_EPISODE_DONE] & live)[:, None]
        return sums + jnp.where(hit, info[TRIAL_EPISODE_RETURN][:, None], 0.0), ended | hit

    run = _rollout(agent, env, env_params, trials, greedy, accumulate, (zeros, zeros > 0))

    def stats_only(params, key):
        (sums, ended), _ = run(params, key)
        return sums, ended

    return jax.jit(jax.vmap(stats_only), compiler_options=compiler_options(fast_compile))


class Adaptation(NamedTuple):
    """An adaptation curve and the per-trial returns it summarizes."""

    curve: Curve
    returns: np.ndarray  # [S, E, K] return of episode k of trial e, seed s
    finished: np.ndarray  # [S, E, K] whether that episode ended


def adaptation(
    agent: Agent,
    env: Any,
    env_params: Any,
    trials: int,
    episodes_per_trial: int,
    params: Any,
    keys: jax.Array,
    greedy: bool = False,
) -> Adaptation:
    """Play ``trials`` (E) trials of ``episodes_per_trial`` (K) episodes per seed.

    | arg / result         | shape              |
    |----------------------|--------------------|
    | agent                | `ssmrl.agent.Agent` |
    | params, keys         | [S] (one per seed) |
    | curve.mean/std/count | [K]                |
    | returns, finished    | [S, E, K]          |

    The trial length may differ from the one ``env_params`` trained with (the
    environment's ``params_for`` rebuilds the params, keeping its projection seed pool).
    """
    env_params = env.params_for(
        episodes_per_trial,
        seed_pool_start=env_params.seed_pool_start,
        seed_pool_size=env_params.seed_pool_size,
    )
    run = trial_returns(agent, env, env_params, trials, greedy)
    returns, finished = (np.asarray(x) for x in run(params, keys))
    return Adaptation(summarize(returns, finished), returns, finished)


class Curve(NamedTuple):
    """Mean and spread of the return of each episode index within a trial."""

    mean: np.ndarray  # [K] mean over seeds and trials (NaN where none finished)
    std: np.ndarray  # [K] standard deviation over seeds and trials
    count: np.ndarray  # [K] finished episodes


def summarize(returns: Any, finished: Any) -> Curve:
    """`Curve` from ``returns, finished [..., K]``; unfinished episodes are left out."""
    r = np.asarray(returns, np.float64).reshape(-1, np.shape(returns)[-1])
    f = np.asarray(finished, bool).reshape(r.shape)
    count = f.sum(0)
    safe = np.maximum(count, 1)
    mean = np.where(f, r, 0.0).sum(0) / safe
    var = np.where(f, (r - mean) ** 2, 0.0).sum(0) / safe
    nan = count == 0
    return Curve(np.where(nan, np.nan, mean), np.where(nan, np.nan, np.sqrt(var)), count)


class Difference(NamedTuple):
    """Paired difference of two windows of episodes, over the trials that finished both."""

    mean: float  # mean over trials of (mean return in window b - mean return in window a)
    stderr: float  # its standard error (NaN with fewer than two trials)
    trials: int  # trials counted


def window_difference(returns: Any, finished: Any, a: slice, b: slice) -> Difference:
    """How much episodes ``b`` of a trial return above episodes ``a`` of the same trial.

    ``returns, finished [..., K]`` as from `trial_returns`; leading axes are trials.
    Comparing within each trial removes the spread between trials (some projections
    are easy, some hard), which dominates the standard error of each episode's mean.
    Trials with an unfinished episode in either window are left out.
    """
    r = np.asarray(returns, np.float64).reshape(-1, np.shape(returns)[-1])
    f = np.asarray(finished, bool).reshape(r.shape)
    if r[:, a].shape[1] == 0 or r[:, b].shape[1] == 0:
        raise ValueError(f"empty window of episodes: {a}, {b} of {r.shape[1]}")
    keep = f[:, a].all(1) & f[:, b].all(1)
    d = r[keep][:, b].mean(1) - r[keep][:, a].mean(1)
    n = int(keep.sum())
    if n == 0:
        return Difference(float("nan"), float("nan"), 0)
    stderr = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Difference(float(d.mean()), stderr, n)


class Transitions(NamedTuple):
    """Whether an episode is solved, given whether the episode before it was."""

    after_solved: float  # P(episode k solved | episode k-1 solved); NaN without such pairs
    after_failed: float  # P(episode k solved | episode k-1 not solved)
    solved: float  # fraction of the window's episodes solved
    pairs: int  # (k-1, k) pairs counted

    @property
    def mixing(self) -> float:
        """``after_solved - after_failed``: how much of the gap to the stationary rate is left
        after one more episode. Near 1 the success rate is still changing many episodes
        later; near 0 it settles within an episode or two."""
        return self.after_solved - self.after_failed


def transitions(returns: Any, finished: Any, threshold: float, window: slice) -> Transitions:
    """Success transitions between consecutive episodes of a trial.

    | arg       | shape / type | meaning                                              |
    |-----------|--------------|------------------------------------------------------|
    | returns   | [..., K]     | return of every episode (leading axes: trials)       |
    | finished  | [..., K]     | whether each episode finished                        |
    | threshold | float        | an episode returning at least this much is solved    |
    | window    | slice of K   | episodes k paired with k-1 (so not episode 0)        |

    Viewed as a two-state Markov chain, the success rate moves towards its stationary
    value ``after_failed / (after_failed + 1 - after_solved)`` by the factor ``mixing``
    per episode. Pairs with an unfinished episode are left out.
    """
    r = np.asarray(returns, np.float64).reshape(-1, np.shape(returns)[-1])
    f = np.asarray(finished, bool).reshape(r.shape)
    k = np.arange(r.shape[1])[window]
    if k.size == 0 or k[0] < 1:
        raise ValueError(f"window {window} must be non-empty and start after episode 0")
    now, before = r[:, k] >= threshold, r[:, k - 1] >= threshold
    keep = f[:, k] & f[:, k - 1]

    def rate(mask):
        n = (mask & keep).sum()
        return float((now & mask & keep).sum() / n) if n else float("nan")

    pairs = int(keep.sum())
    solved = float(now[keep].mean()) if pairs else float("nan")
    return Transitions(rate(before), rate(~before), solved, pairs)


def save_curves(curves: dict[str, Curve], path: str | os.PathLike, title: str = "") -> Path:
    """Write ``path`` (.png) and the same name with .json: one line per named curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, c) in enumerate(curves.items()):
        x = np.arange(1, len(c.mean) + 1)
        ax.plot(x, c.mean, color=f"C{i}", label=name, linewidth=2)
        ax.fill_between(x, c.mean - c.std, c.mean + c.std, color=f"C{i}", alpha=0.15)
    ax.set_xlabel("episode within the trial")
    ax.set_ylabel("mean episodic return")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=120)
    data = {
        name: {k: [None if np.isnan(v) else float(v) for v in getattr(c, k)] for k in c._fields}
        for name, c in curves.items()
    }
    path.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path
