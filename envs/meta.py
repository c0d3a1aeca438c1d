"""Meta-RL with random projections: each trial is a control task the agent must identify.

At the start of every trial the environment draws a base task uniformly from its
set, a random projection of that task's observation and a random mapping of the
agent's action to the task's action. All three stay fixed for the trial's
``episodes_per_trial`` episodes, so the only way to do well is to work them out
from experience within the trial: in-context reinforcement learning.

- **Observation** ``[W x (obs_size), episode_start (1)]``: the task's observation
  ``x``, each entry with finite bounds mapped from ``[low, high]`` to ``[-1, 1]``
  (``normalize``; unbounded entries are left as they are), zero-padded to the
  largest observation in the set, times a random matrix ``W [obs_size, d_max]``
  whose columns past the task's size ``d`` are zero.
  ``projection="gaussian"``: entries ``N(0, 1 / d)``; ``"orthogonal"``: ``W`` has
  orthonormal columns (``obs_size >= d``) or rows. ``episode_start`` is 1.0 on the
  first observation of every episode within the trial, 0.0 otherwise.
- **Action**: when every task is discrete, ``Discrete(n_max)`` and the task receives
  ``perm[a] mod n`` for a random permutation ``perm`` of ``n_max`` actions (a
  plain permutation when the task has ``n_max`` actions; the identity with
  ``permute_actions=False``). Otherwise the action is
  ``Box(-1, 1, (action_size,))``; a random ``N(0, 1 / action_size)`` matrix maps it
  to ``u``; a continuous task receives ``clip(u, -1, 1)`` rescaled to its bounds, a
  discrete one ``argmax(u[:n])``.
- **Reward**: the task's reward times its scale (``reward_scales``; by default one
  over the largest episode return, from `STEP_REWARD_BOUNDS` (1 for ``dmc/`` tasks)
  times the episode length or `EPISODE_REWARD_BOUNDS`, so an episode's return is
  O(1); 1 for tasks in neither).
- **Episodes and trials**: an episode that ends inside a trial resets the task's
  state but not the task or projections, and is not an episode end for the agent.
  The last step of a trial is ``terminated``, however its last episode ended (by the
  task's termination or its time limit), and nothing is ever ``truncated``: the number
  of episodes in a trial is part of the meta-task, and the agent can count them through
  the ``episode_start`` flag, so nothing follows a trial's end to bootstrap from.
  Memory is reset only at trial starts (the is-first flag of
  ``ssmrl.envs.wrappers.PreviousActionReward``).
- ``info`` (keys named by the constants below, from `ssmrl.trial_info`):
  `TRIAL_EPISODE_DONE` (an episode of the trial ended on this step, by termination or
  time limit), `TRIAL_EPISODE_TERMINATED` (it ended by the task's termination),
  `TRIAL_EPISODE_INDEX` (its index in the trial) and `TRIAL_EPISODE_RETURN` (its scaled
  return): the per-episode return boundaries and the in-context adaptation curve.

``MetaParams.seed_pool_size > 0`` draws the projections from a finite pool of seeds
``seed_pool_start .. seed_pool_start + seed_pool_size - 1`` (e.g. train on one
pool, evaluate on a disjoint one); 0 draws fresh projections every trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ssmrl.envs.dmc import PAPER_HELD_OUT_TASKS, PAPER_TRAIN_TASKS
from ssmrl.envs.dmc import PREFIX as DMC_PREFIX
from ssmrl.envs.popgym import task
from ssmrl.envs.registry import make
from ssmrl.linalg import orthonormal
from ssmrl.trial_info import (
    TRIAL_EPISODE_DONE,
    TRIAL_EPISODE_INDEX,
    TRIAL_EPISODE_RETURN,
    TRIAL_EPISODE_TERMINATED,
)

__all__ = [
    "HELD_OUT",
    "TRIAL_EPISODE_DONE",
    "TRIAL_EPISODE_INDEX",
    "TRIAL_EPISODE_RETURN",
    "TRIAL_EPISODE_TERMINATED",
    "MetaEnv",
    "MetaParams",
    "MetaState",
]

# Largest |reward| of one step; the default scale is 1 / (bound * episode length).
STEP_REWARD_BOUNDS = {
    "CartPole-v1": 1.0,
    "Acrobot-v1": 1.0,
    "MountainCar-v0": 1.0,
    "Pendulum-v1": 16.2736044,  # largest cost: pi^2 + 0.1 * 8^2 + 0.001 * 2^2
    "Reacher-misc": 1.0,  # exp(-distance^2)
    "PointRobot-misc": 1.0,  # 1 per step inside the goal
}
# Largest |return| of an episode, for tasks whose reward is mostly paid at the goal.
EPISODE_REWARD_BOUNDS = {"MountainCarContinuous-v0": 100.0}
UNBOUNDED = 1e6
"""Observation bounds at or beyond this magnitude count as no bound (no rescaling)."""
TRAIN_TASKS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "Reacher-misc")
HELD_OUT_TASKS = ("MountainCar-v0", "MountainCarContinuous-v0", "PointRobot-misc")

HELD_OUT = {
    "ProjectedCartPole": "ProjectedCartPoleHeldOut",
    "MetaControl": "MetaControlHeldOut",
    "MetaDMC": "MetaDMCHeldOut",
}
"""Registered meta environment -> its held-out counterpart (same spaces)."""


@struct.dataclass
class MetaState(environment.EnvState):
    task: jax.Array  # int32 index into the task set
    obs_proj: jax.Array  # [obs_size, d_max]
    act_proj: jax.Array  # [out_max, action_size] (continuous or mixed sets)
    act_perm: jax.Array  # [n_max] int32 (all-discrete sets)
    base: tuple  # every task's env state; only the trial's task is stepped
    start_key: jax.Array  # the key of the trial's first reset (reused by repeat_start)
    episode: jax.Array  # int32 index of the current episode within the trial
    episode_return: jax.Array  # scaled return of the current episode so far
    time: int  # steps taken in the trial


@struct.dataclass
class MetaParams(environment.EnvParams):
    base: tuple = ()  # each task's params
    episodes_per_trial: int = 16
    seed_pool_start: int = 0
    seed_pool_size: int = 0
    max_steps_in_episode: int = 1  # longest possible trial; a loop bound, not a limit


def _reward_scale(name: str, params: Any, given: Mapping[str, float]) -> float:
    if name in given:
        return float(given[name])
    if name in STEP_REWARD_BOUNDS or name.startswith(DMC_PREFIX):  # DM Control pays [0, 1]
        return 1.0 / (STEP_REWARD_BOUNDS.get(name, 1.0) * params.max_steps_in_episode)
    return 1.0 / EPISODE_REWARD_BOUNDS.get(name, 1.0)


def _obs_scale(space: Any, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(center, half_range)`` per observation entry; ``(0, 1)`` where unbounded."""
    low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).reshape(-1)
    high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).reshape(-1)
    bounded = normalize & (np.abs(low) < UNBOUNDED) & (np.abs(high) < UNBOUNDED) & (high > low)
    center = np.where(bounded, (high + low) / 2, 0.0).astype(np.float32)
    half = np.where(bounded, (high - low) / 2, 1.0).astype(np.float32)
    return center, half


def _is_discrete(space: Any) -> bool:
    return isinstance(space, spaces.Discrete)


class MetaEnv(environment.Environment[MetaState, MetaParams]):
    """Trials of ``episodes_per_trial`` episodes of a randomly projected task from a set.

    Args:
        tasks: names for `ssmrl.envs.make` (gymnax ids or POPGym tasks with flat
            observations); at least one, no repeats.
        obs_size: size of the projected observation.
        action_size: size of the agent's continuous action (default: the largest
            task action size or count); ignored when every task is discrete.
        projection: ``"gaussian"`` or ``"orthogonal"`` observation projections.
        reward_scales: per-task reward multipliers replacing the defaults.
        episode_steps: replaces every task's ``max_steps_in_episode`` when given.
        episodes_per_trial: default of ``MetaParams.episodes_per_trial``.
        repeat_start: every episode of a trial starts from the trial's first initial
            state (the task's reset with the same key), as in the S5 paper's projected
            CartPole; with deterministic dynamics, an episode can then be improved on
            by remembering the ones before it. False: a fresh reset each episode.
        normalize: map each observation entry with finite bounds (both below
            `UNBOUNDED`) from ``[low, high]`` to ``[-1, 1]`` before projecting, so that
            a task's units do not decide which entries the projection drowns out.
        permute_actions: draw a random permutation of the actions of an all-discrete
            set each trial; False passes the agent's action through unchanged.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        obs_size: int = 12,
        action_size: int | None = None,
        projection: str = "gaussian",
        reward_scales: Mapping[str, float] | None = None,
        episode_steps: int | None = None,
        episodes_per_trial: int = 16,
        repeat_start: bool = False,
        normalize: bool = True,
        permute_actions: bool = True,
    ):
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct names, at least one; got {list(tasks)}")
        if projection not in ("gaussian", "orthogonal"):
            raise ValueError(f"projection must be 'gaussian' or 'orthogonal', got {projection!r}")
        if min(obs_size, episodes_per_trial, 1 if episode_steps is None else episode_steps) < 1:
            raise ValueError("obs_size, episodes_per_trial and episode_steps must be >= 1")
        self.tasks, self.obs_size, self.projection = tasks, obs_size, projection
        self.episodes_per_trial, self.repeat_start = episodes_per_trial, repeat_start
        self.permute_actions = permute_actions
        self.envs, base_params = [], []
        for name in tasks:
            env, params = make(name)
            if episode_steps is not None:
                params = params.replace(max_steps_in_episode=episode_steps)
            shape = env.observation_space(params).shape
            if len(shape) != 1:
                raise ValueError(f"{name}: observations must be flat vectors, got shape {shape}")
            if not (
                _is_discrete(env.action_space(params)) or len(env.action_space(params).shape) == 1
            ):
                raise ValueError(f"{name}: actions must be Discrete or a 1-D Box")
            self.envs.append(env)
            base_params.append(params)
        self.base_params = tuple(base_params)
        self.scales = tuple(
            _reward_scale(name, p, reward_scales or {})
            for name, p in zip(tasks, base_params, strict=True)
        )
        act_spaces = [e.action_space(p) for e, p in zip(self.envs, base_params, strict=True)]
        self.obs_dims = [
            e.observation_space(p).shape[0] for e, p in zip(self.envs, base_params, strict=True)
        ]
        self.d_max = max(self.obs_dims)
        self.discrete = all(_is_discrete(s) for s in act_spaces)
        self.out_sizes = [s.n if _is_discrete(s) else s.shape[0] for s in act_spaces]
        self.n_max = max(s.n for s in act_spaces) if self.discrete else 0
        self.out_max = max(self.out_sizes)
        self.action_size = self.n_max if self.discrete else (action_size or self.out_max)
        if self.action_size < 1:
            raise ValueError(f"action_size must be >= 1, got {self.action_size}")
        self._act_spaces = act_spaces
        self._obs_scales = [
            _obs_scale(e.observation_space(p), normalize)
            for e, p in zip(self.envs, base_params, strict=True)
        ]

    @property
    def name(self) -> str:
        return f"Meta[{','.join(self.tasks)}]"

    @property
    def num_actions(self) -> int:
        return self.action_size

    @property
    def default_params(self) -> MetaParams:
        return self.params_for(self.episodes_per_trial)

    def params_for(self, episodes_per_trial: int, **changes: Any) -> MetaParams:
        """Params with ``episodes_per_trial`` (and ``max_steps_in_episode`` to match)."""
        longest = max(p.max_steps_in_episode for p in self.base_params)
        return MetaParams(
            base=self.base_params,
            episodes_per_trial=episodes_per_trial,
            max_steps_in_episode=episodes_per_trial * longest,
            **changes,
        )

    def observation_space(self, params: MetaParams) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_size + 1,), jnp.float32)

    def action_space(self, params: MetaParams | None = None) -> spaces.Space:
        if self.discrete:
            return spaces.Discrete(self.n_max)
        return spaces.Box(-1.0, 1.0, (self.action_size,), jnp.float32)

    def _projections(self, key: jax.Array, task: jax.Array, params: MetaParams):
        # With a pool, the projection key depends only on the seed drawn from it.
        key, key_pick = jax.random.split(key)
        seed = params.seed_pool_start + jax.random.randint(
            key_pick, (), 0, jnp.maximum(params.seed_pool_size, 1)
        )
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        pool_key = jax.random.fold_in(jax.random.key(0) if typed else jax.random.PRNGKey(0), seed)
        key = jax.lax.select(jnp.asarray(params.seed_pool_size) > 0, pool_key, key)
        key_obs, key_act, key_perm = jax.random.split(key, 3)
        d = jnp.asarray(self.obs_dims)[task]
        columns = jnp.arange(self.d_max) < d
        if self.projection == "gaussian":
            w = jax.random.normal(key_obs, (self.obs_size, self.d_max)) / jnp.sqrt(d)
        else:
            w = orthonormal(key_obs, self.obs_size, self.d_max)
        obs_proj = jnp.where(columns, w, 0.0)
        act_proj = jax.random.normal(key_act, (self.out_max, self.action_size))
        act_proj = act_proj / jnp.sqrt(self.action_size)
        act_perm = jnp.arange(max(self.n_max, 1))
        if self.permute_actions:
            act_perm = jax.random.permutation(key_perm, act_perm)
        return obs_proj, act_proj, act_perm

    def _task_action(self, i: int, action: jax.Array, state: MetaState) -> jax.Array:
        space, n = self._act_spaces[i], self.out_sizes[i]
        if self.discrete:
            a = jnp.clip(jnp.asarray(action).astype(jnp.int32), 0, self.n_max - 1)
            return state.act_perm[a] % n
        a = jnp.clip(jnp.nan_to_num(jnp.asarray(action, jnp.float32)), -1.0, 1.0)
        u = state.act_proj[:n] @ a
        if _is_discrete(space):
            return jnp.argmax(u).astype(jnp.int32)
        low, high = jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32)
        return low + (jnp.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    def _flat_obs(self, i: int, obs: jax.Array) -> jax.Array:
        center, half = self._obs_scales[i]
        obs = (jnp.asarray(obs, jnp.float32).reshape(-1) - center) / half
        return jnp.pad(obs, (0, self.d_max - obs.shape[0]))

    def _obs(self, state: MetaState, raw: jax.Array, start: jax.Array) -> jax.Array:
        return jnp.concatenate([state.obs_proj @ raw, start.astype(jnp.float32)[None]])

    def _reset_keys(self, key: jax.Array) -> jax.Array:
        return jax.random.split(key, len(self.tasks))

    def reset_env(self, key: jax.Array, params: MetaParams) -> tuple[jax.Array, MetaState]:
        key_task, key_proj, key_base = jax.random.split(key, 3)
        task = jax.random.randint(key_task, (), 0, len(self.tasks))
        obs_proj, act_proj, act_perm = self._projections(key_proj, task, params)
        keys = self._reset_keys(key_base)
        resets = [e.reset_env(k, p) for e, k, p in zip(self.envs, keys, params.base, strict=True)]
        raw = jnp.stack([self._flat_obs(i, o) for i, (o, _) in enumerate(resets)])[task]
        state = MetaState(
            task=task,
            obs_proj=obs_proj,
            act_proj=act_proj,
            act_perm=act_perm,
            base=tuple(s for _, s in resets),
            start_key=key_base,
            episode=jnp.int32(0),
            episode_return=jnp.float32(0.0),
            time=0,
        )
        return self._obs(state, raw, jnp.bool_(True)), state

    def step_env(
        self, key: jax.Array, state: MetaState, action: jax.Array, params: MetaParams
    ) -> tuple[jax.Array, MetaState, jax.Array, jax.Array, dict[str, Any]]:
        key_step, key_reset = jax.random.split(key)
        reset_keys = self._reset_keys(state.start_key) if self.repeat_start else None

        def branch(i: int):
            def run(base: tuple):
                env, p = self.envs[i], params.base[i]
                a = self._task_action(i, action, state)
                obs, s, reward, terminated, _ = env.step_env(key_step, base[i], a, p)
                truncated = env.is_truncated(s, p)
                k = key_reset if reset_keys is None else reset_keys[i]
                obs_reset, s_reset = env.reset_env(k, p)
                stepped = base[:i] + (s,) + base[i + 1 :]
                reset = base[:i] + (s_reset,) + base[i + 1 :]
                reward = jnp.asarray(reward, jnp.float32).reshape(()) * self.scales[i]
                ended = (jnp.asarray(terminated, bool), jnp.asarray(truncated, bool))
                return (
                    self._flat_obs(i, obs),
                    stepped,
                    self._flat_obs(i, obs_reset),
                    reset,
                    reward,
                    *ended,
                )

            return run

        branches = [branch(i) for i in range(len(self.tasks))]
        obs, stepped, obs_reset, reset, reward, terminated, truncated = jax.lax.switch(
            state.task, branches, state.base
        )
        episode_done = terminated | truncated
        last = state.episode >= params.episodes_per_trial - 1
        next_episode = episode_done & ~last
        base = jax.tree.map(lambda r, s: jnp.where(next_episode, r, s), reset, stepped)
        raw = jnp.where(next_episode, obs_reset, obs)
        episode_return = state.episode_return + reward
        info = {
            TRIAL_EPISODE_DONE: episode_done,
            TRIAL_EPISODE_TERMINATED: terminated,
            TRIAL_EPISODE_INDEX: state.episode,
            TRIAL_EPISODE_RETURN: episode_return,
        }
        state = state.replace(
            base=base,
            episode=state.episode + next_episode.astype(jnp.int32),
            episode_return=jnp.where(episode_done, 0.0, episode_return),
            time=state.time + 1,
        )
        trial_end = episode_done & last
        return self._obs(state, raw, next_episode), state, reward, trial_end, info

    def is_truncated(self, state: MetaState, params: MetaParams) -> jax.Array:
        return jnp.bool_(False)  # a trial ends by its episode count: terminated

    def is_terminated(self, state: MetaState, params: MetaParams) -> jax.Array:
        return jnp.bool_(False)


# The projected CartPole layout its training and held-out sets share.
_PROJECTED_CARTPOLE = dict(
    obs_size=4, projection="orthogonal", repeat_start=True, permute_actions=False
)

TASKS = {
    # The S5 paper's randomly projected CartPole: position-only CartPole (200 steps),
    # an orthogonal projection to 4 numbers, the agent's actions passed through as they
    # are, every episode of a 16-episode trial starting from the same state.
    "ProjectedCartPole": task(MetaEnv, tasks=("PositionOnlyCartPoleEasy",), **_PROJECTED_CARTPOLE),
    # Held out: the full-state CartPole (velocities seen, positions mixed in), same spaces.
    "ProjectedCartPoleHeldOut": task(
        MetaEnv, tasks=("CartPole-v1",), episode_steps=200, **_PROJECTED_CARTPOLE
    ),
    # Train and held-out sets share the agent's spaces (13 observations, 3 actions).
    "MetaControl": task(MetaEnv, tasks=TRAIN_TASKS, action_size=3, episode_steps=200),
    "MetaControlHeldOut": task(MetaEnv, tasks=HELD_OUT_TASKS, action_size=3, episode_steps=200),
    # The S5 paper's DM Control sets through MuJoCo Playground (optional: ssmrl[dmc]).
    "MetaDMC": task(MetaEnv, tasks=PAPER_TRAIN_TASKS, action_size=2),
    "MetaDMCHeldOut": task(MetaEnv, tasks=PAPER_HELD_OUT_TASKS, action_size=2),
}
