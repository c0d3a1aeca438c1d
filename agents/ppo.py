"""Recurrent PPO whose policy and value share one memory core, jitted end to end with the envs.

```python
env, env_params = ssmrl.envs.make_for_agent("RepeatPreviousEasy", ppo.WRAPPERS)
train = ssmrl.agents.ppo.make_train(Config(), env, env_params)
state, metrics = jax.jit(train)(key)                   # jax.jit(jax.vmap(train))(keys): many seeds
agent = ssmrl.agents.ppo.make_agent(Config(), env, env_params)   # the `ssmrl.agent.Agent`
```

The rollout runs the core in step mode over ``num_envs`` environments for ``num_steps``
steps. The carry lives across rollouts; it is reset only through the is-first flags
(an observation returned together with ``terminated | truncated`` starts a new episode).
The carry at the start of each rollout is stored, and the update re-runs whole
sequences from it in sequence mode; minibatches split the env axis so every sequence
stays whole. Truncated episodes bootstrap from the value of
``info["final_observation"]``; terminated ones do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from ssmrl import cores
from ssmrl.agent import Agent
from ssmrl.config import OptimConfig, check_counts, check_range, check_whole_updates
from ssmrl.losses import clipped_surrogate, clipped_value_loss, normalize
from ssmrl.nets import PolicyHead, ValueHead
from ssmrl.returns import gae, next_values_from
from ssmrl.trial_info import TRIAL_EPISODE_DONE

RUN_LENGTH = "total_timesteps"
"""The setting that says how long a run is (`ssmrl.experiment.extendable`)."""

WRAPPERS = ("flatten", "previous_action_reward", "episode_statistics")
"""The env wrappers PPO wants (`ssmrl.envs.make_for_agent`): flat observations with the
previous action, reward and an is-first flag appended, and episode statistics."""


CoreOptions = TypeVar("CoreOptions")


@dataclass(frozen=True)
class Config(Generic[CoreOptions]):
    """PPO hyperparameters; ``env`` names the task for the CLI (make_train takes the env).

    ``core`` is the options dataclass of one memory core (`ssmrl.cores.S5Options`,
    `~ssmrl.cores.GRUOptions`, ...); ``Config[GRUOptions]`` types it for the CLI. The
    defaults solve RepeatPreviousEasy within 1M steps on a 2-core CPU (configs/ppo_cpu.yaml).
    """

    env: str = "RepeatPreviousEasy"
    core: CoreOptions = field(
        default_factory=lambda: cores.S5Options(features=128, num_layers=2, state_size=64)
    )
    """the memory core's options (``--core NAME`` picks the core)"""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    total_timesteps: int = 999_424  # 122 updates of 64 x 128 steps
    num_envs: int = 64
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    vf_clip_eps: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    head_width: int = 64
    # Meta environments: True makes each episode of a trial its own return (GAE stops
    # at every episode end inside a trial, info[TRIAL_EPISODE_DONE], whether the task
    # terminated or hit its time limit), while memory still spans the trial; False
    # lets returns flow across the episodes of a trial. A trial's end is terminal.
    episode_returns: bool = False
    # With episode_returns: the value of the next episode of the trial, discounted by
    # this factor, is added to the return of an episode that ends inside a trial (0: each
    # episode alone; 1 with gamma 1: the whole rest of the trial). Between the two, an
    # episode is also worth what it teaches about the next ones.
    next_episode_discount: float = 0.0

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        check_counts(
            self, "num_envs", "num_steps", "update_epochs", "num_minibatches", "head_width"
        )
        if self.num_envs % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} must divide num_envs={self.num_envs} "
                "(minibatches split the env axis)"
            )
        check_whole_updates(self.total_timesteps, self.steps_per_update)
        check_range(self, ("gamma", "gae_lambda", "next_episode_discount", "ent_coef"), 0.0, 1.0)
        check_range(self, ("clip_eps",), 0.0, 1.0, open_low=True)
        check_range(self, ("vf_clip_eps", "vf_coef"), 0.0, 1e6, open_low=True)
        cores.build(self.core)


class ActorCritic(nn.Module):
    """Memory core, then separate policy and value heads (`ssmrl.nets`).

    | call         | inputs                              | outputs                         |
    |--------------|-------------------------------------|---------------------------------|
    | ``__call__`` | carry, obs [T, B, O], resets [T, B] | carry, (dist params, v [T, B])  |
    | ``step``     | carry, obs [B, O], reset [B]        | carry, (dist params, v [B])     |

    Dist params are logits ``[..., n]`` (discrete) or a mean ``[..., n]`` (continuous,
    with a state-independent learned log standard deviation).
    """

    core: nn.Module
    action_space: Any
    head_width: int = 64

    def setup(self):
        self.policy = PolicyHead.from_space(self.action_space, hidden=(self.head_width,))
        self.value = ValueHead(hidden=(self.head_width,))

    def _heads(self, h):
        return self.policy.outputs(h), self.value(h)

    def __call__(self, carry, obs, resets):
        carry, h = self.core(carry, obs, resets)
        return carry, self._heads(h)

    def step(self, carry, obs, reset):
        carry, h = self.core.step(carry, obs, reset)
        return carry, self._heads(h)

    def distribution(self, dist_params) -> distrax.Distribution:
        return self.policy.distribution(dist_params)


class Transition(NamedTuple):
    """One rollout step per env; every field ``[T, B, ...]`` when stacked."""

    obs: jax.Array
    reset: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array  # the return ends here: no bootstrap
    truncated: jax.Array
    discount: jax.Array  # factor on gamma after this step (episode ends inside a trial)
    final_value: jax.Array
    episode_return: jax.Array
    returned_episode: jax.Array


class RunnerState(NamedTuple):
    """Everything that carries from one update to the next."""

    train_state: TrainState
    env_state: Any
    obs: jax.Array
    reset: jax.Array
    carry: Any
    key: jax.Array


class Metrics(NamedTuple):
    """Per-update scalars."""

    mean_return: jax.Array  # mean return of episodes that ended in this rollout (NaN if none)
    episodes: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array
    total_loss: jax.Array


class Parts(NamedTuple):
    """The pure pieces of PPO on one env (`make_agent` exposes them as an `Agent`).

    - ``init(key) -> RunnerState``
    - ``rollout(runner) -> (runner, Transition [T, B], start carry)``
    - ``evaluate(params, carry, batch) -> Evaluation`` re-runs whole sequences
    - ``update(runner) -> (runner, Metrics)``: one rollout and its optimisation
    - ``act(params, carry, obs [B, O], reset [B], key, greedy) -> (carry, action [B, ...])``
    """

    init: Any
    rollout: Any
    evaluate: Any
    update: Any
    act: Any
    network: ActorCritic
    core: nn.Module
    num_updates: int


class LossInfo(NamedTuple):
    """The parts of one minibatch's loss, scalars."""

    total: jax.Array
    policy: jax.Array
    value: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array


class Evaluation(NamedTuple):
    """Sequence-mode outputs for stored transitions, each ``[T, B]``."""

    log_prob: jax.Array
    entropy: jax.Array
    value: jax.Array


def make_parts(cfg: Config, env: Any, env_params: Any) -> Parts:
    """Build the pure init, rollout and update functions of PPO on ``env``.

    ``env`` must produce flat float observations. Episode returns are read from
    ``info["returned_episode"]`` and ``info["episode_return"]`` when the env is wrapped
    in `ssmrl.envs.wrappers.EpisodeStatistics`; otherwise ``mean_return`` is NaN.
    """
    cfg.validate()
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    core = cores.build(cfg.core)
    network = ActorCritic(core, env.action_space(env_params), cfg.head_width)
    tx = cfg.optim.build(cfg.num_updates * cfg.update_epochs * cfg.num_minibatches)
    n_envs, mb_envs = cfg.num_envs, cfg.num_envs // cfg.num_minibatches

    def init(key):
        key, key_net, key_env = jax.random.split(key, 3)
        carry = core.initialize_carry(n_envs)
        params = network.init(
            key_net, carry, jnp.zeros((1, n_envs, obs_dim)), jnp.ones((1, n_envs), bool)
        )
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        obs, env_state = jax.vmap(env.reset, (0, None))(
            jax.random.split(key_env, n_envs), env_params
        )
        return RunnerState(train_state, env_state, obs, jnp.ones(n_envs, bool), carry, key)

    def env_step(runner: RunnerState, _):
        params = runner.train_state.params
        key, key_act, key_env = jax.random.split(runner.key, 3)
        carry, (dist_params, value) = network.apply(
            params, runner.carry, runner.obs, runner.reset, method="step"
        )
        pi = network.apply(params, dist_params, method="distribution")
        action = pi.sample(seed=key_act)
        log_prob = pi.log_prob(action)
        obs, env_state, reward, terminated, truncated, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(key_env, n_envs), runner.env_state, action, env_params
        )

        # The value of the observation that ended a truncated episode, seen through the
        # same memory as the rest of that episode; masked out for every other step, and
        # not computed at all on steps where nothing was truncated (with one seed).
        def truncated_value():
            final_obs, no_reset = info["final_observation"], jnp.zeros(n_envs, bool)
            return network.apply(params, carry, final_obs, no_reset, method="step")[1][1]

        final_value = jax.lax.cond(truncated.any(), truncated_value, lambda: value)
        done = terminated | truncated
        discount = jnp.ones(n_envs)
        if cfg.episode_returns:
            if TRIAL_EPISODE_DONE not in info:
                raise ValueError(
                    "episode_returns=True needs a meta environment (one whose info reports "
                    f"{TRIAL_EPISODE_DONE!r}); this env does not"
                )
            inner_end = info[TRIAL_EPISODE_DONE] & ~done
            discount = jnp.where(inner_end, cfg.next_episode_discount, 1.0)
        transition = Transition(
            obs=runner.obs,
            reset=runner.reset,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=jnp.asarray(reward, jnp.float32),
            terminated=terminated,
            truncated=truncated,
            discount=discount,
            final_value=final_value,
            episode_return=info.get("episode_return", jnp.zeros(n_envs)),
            returned_episode=info.get("returned_episode", jnp.zeros(n_envs, bool)),
        )
        runner = runner._replace(env_state=env_state, obs=obs, reset=done, carry=carry, key=key)
        return runner, transition

    def rollout(runner: RunnerState):
        init_carry = runner.carry
        runner, traj = jax.lax.scan(env_step, runner, None, cfg.num_steps)
        return runner, traj, init_carry

    def evaluate(params, init_carry, batch: Transition) -> Evaluation:
        _, (dist_params, values) = network.apply(params, init_carry, batch.obs, batch.reset)
        pi = network.apply(params, dist_params, method="distribution")
        return Evaluation(pi.log_prob(batch.action), pi.entropy(), values)

    def loss_fn(params, init_carry, batch: Transition, advantages, targets):
        ev = evaluate(params, init_carry, batch)
        policy_loss, aux = clipped_surrogate(
            ev.log_prob, batch.log_prob, normalize(advantages), cfg.clip_eps
        )
        value_loss = clipped_value_loss(ev.value, batch.value, targets, cfg.vf_clip_eps)
        entropy = ev.entropy.mean()
        total = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        info = LossInfo(total, policy_loss, value_loss, entropy, aux.approx_kl, aux.clip_fraction)
        return total, info

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(runner: RunnerState):
        runner, traj, init_carry = rollout(runner)
        _, (_, last_value) = network.apply(
            runner.train_state.params, runner.carry, runner.obs, runner.reset, method="step"
        )
        next_values = next_values_from(traj.value, last_value, traj.final_value, traj.truncated)
        adv = gae(
            traj.reward,
            traj.value,
            next_values,
            traj.terminated,
            traj.truncated,
            cfg.gamma * traj.discount,
            cfg.gae_lambda,
        )

        def epoch(carry, key):
            train_state = carry
            perm = jax.random.permutation(key, n_envs).reshape(cfg.num_minibatches, mb_envs)

            def minibatch(train_state, idx):
                take = lambda x: jnp.take(x, idx, axis=1)  # noqa: E731  (env axis of [T, B, ...])
                mb_carry = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), init_carry)
                (_, info), grads = grad_fn(
                    train_state.params,
                    mb_carry,
                    jax.tree.map(take, traj),
                    take(adv.advantages),
                    take(adv.returns),
                )
                return train_state.apply_gradients(grads=grads), info

            return jax.lax.scan(minibatch, train_state, perm)

        key, key_epochs = jax.random.split(runner.key)
        train_state, losses = jax.lax.scan(
            epoch, runner.train_state, jax.random.split(key_epochs, cfg.update_epochs)
        )
        losses = jax.tree.map(jnp.mean, losses)
        episodes = traj.returned_episode.sum()
        metrics = Metrics(
            mean_return=traj.episode_return.sum() / jnp.where(episodes > 0, episodes, jnp.nan),
            episodes=episodes,
            policy_loss=losses.policy,
            value_loss=losses.value,
            entropy=losses.entropy,
            approx_kl=losses.approx_kl,
            clip_fraction=losses.clip_fraction,
            total_loss=losses.total,
        )
        return runner._replace(train_state=train_state, key=key), metrics

    def act(params, carry, obs, reset, key, greedy: bool = False):
        carry, (dist_params, _) = network.apply(params, carry, obs, reset, method="step")
        pi = network.apply(params, dist_params, method="distribution")
        return carry, (pi.mode() if greedy else pi.sample(seed=key))

    return Parts(init, rollout, evaluate, update, act, network, core, cfg.num_updates)


def make_agent(cfg: Config, env: Any, env_params: Any) -> Agent:
    """PPO on ``env`` as the `ssmrl.agent.Agent` contract (state: a `RunnerState`)."""
    parts = make_parts(cfg, env, env_params)
    return Agent(
        init=parts.init,
        update=parts.update,
        act=parts.act,
        initial_carry=parts.core.initialize_carry,
        policy_params=lambda runner: runner.train_state.params,
        num_updates=cfg.num_updates,
        steps_per_update=cfg.steps_per_update,
        wrappers=WRAPPERS,
        memory_bytes=memory_estimate(cfg, env, env_params),
        num_envs=cfg.num_envs,
        env_fields=("env_state", "obs", "reset", "carry"),
    )


def memory_estimate(cfg: Config, env: Any, env_params: Any) -> int:
    """Rough bytes one seed's update needs besides its state: the rollout, and the core's
    activations and gradients over one minibatch of whole sequences (about 16 floats per
    feature and 2 per state entry, per layer and step, and for attention cores 3 per score
    over the up to 2W keys a query's block spans; a guess meant to catch sizes that are
    clearly too large, not to budget memory)."""
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    rollout = cfg.num_steps * cfg.num_envs * (obs_dim + 16) * 4
    width = 16 * cfg.core.features + 2 * getattr(cfg.core, "state_size", 0)
    width += 3 * getattr(cfg.core, "num_heads", 0) * 2 * getattr(cfg.core, "window", 0)
    minibatch = cfg.num_steps * (cfg.num_envs // cfg.num_minibatches)
    return rollout + minibatch * cfg.core.num_layers * width * 4


def make_train(cfg: Config, env: Any, env_params: Any):
    """Pure ``train(key) -> (RunnerState, Metrics[num_updates])`` running every update."""
    agent = make_agent(cfg, env, env_params)

    def train(key):
        runner = agent.init(key)
        return jax.lax.scan(lambda r, _: agent.update(r), runner, None, agent.num_updates)

    return train
