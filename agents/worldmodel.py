"""Offline world-model training on scripted episodes: ``ssmrl train worldmodel``.

```python
env, env_params = ssmrl.envs.make_for_agent("TwoRoomsRecall", worldmodel.WRAPPERS)
trainer = ssmrl.agents.worldmodel.make_agent(Config(), env, env_params)  # an `ssmrl.agent.Agent`
state = jax.jit(trainer.init)(key)
state, metrics = jax.jit(trainer.update)(state)   # fresh episodes, one gradient step
```

Only the world model (`ssmrl.worldmodel.WorldModel`, the module Dreamer trains) learns
here; there is no policy. Every update rolls out ``batch_size`` fresh episodes of the
env's scripted policy (``env.scripted_episodes``, which the memory-rooms tasks have),
whole and time-major, and takes one gradient step of the world-model loss over them,
the backbone running as one sequence call per episode. Fresh episodes each update
mean the model never sees an episode twice, so its training loss is also its loss on
unseen episodes. The data depend only on the seed's key: a resumed run draws the same
episodes as one that never stopped.

Through the agent contract the driver logs the losses (headline ``wm_total``) and
checkpoints the parameters; ``act`` is None, so ``ssmrl eval`` points to
``ssmrl imagine``, which reads the model through ``Agent.world_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from ssmrl import cores
from ssmrl.actions import ActionCodec, obs_size
from ssmrl.agent import Agent, WorldModelView
from ssmrl.config import OptimConfig, check_counts
from ssmrl.imagination import check_scripted, episode_inputs
from ssmrl.worldmodel import WorldModel, WorldModelConfig

RUN_LENGTH = "updates"
"""The setting that says how long a run is (`ssmrl.experiment.extendable`)."""

WRAPPERS = ()
"""No wrappers: the trainer calls the env's own ``scripted_episodes``."""

CoreOptions = TypeVar("CoreOptions")


@dataclass(frozen=True)
class Config(Generic[CoreOptions]):
    """Offline world-model hyperparameters; ``env`` names a task with scripted episodes."""

    env: str = "TwoRoomsRecall"
    """a task with a scripted policy (the memory-rooms tasks: `ssmrl envs`)"""
    core: CoreOptions = field(
        default_factory=lambda: cores.S5Options(features=128, num_layers=2, state_size=64)
    )
    """the world model's backbone options (``--core NAME`` picks the core)"""
    latents: int = 16
    """categorical latent groups"""
    classes: int = 16
    """classes per latent group"""
    hidden: int = 256
    """width of the encoder's, prior's and heads' hidden layers"""
    depth: int = 2
    """hidden layers of the encoder, decoder and heads"""
    batch_size: int = 16
    """fresh episodes per update (one gradient step over them)"""
    updates: int = 2000
    """updates (gradient steps) in the whole run"""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-4, max_grad_norm=1000.0, adam_eps=1e-8)
    )

    def world_model(self) -> WorldModelConfig:
        """The world model's config (DreamerV3's defaults for what is not set here)."""
        return WorldModelConfig(
            core=self.core,
            latents=self.latents,
            classes=self.classes,
            hidden=self.hidden,
            depth=self.depth,
        )

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        check_counts(self, "batch_size", "updates")
        self.world_model().validate()
        self.optim.validate()


def check_env(env: Any, env_params: Any) -> None:
    """ValueError (one line) unless ``env`` can give scripted episodes."""
    check_scripted(env)


class State(NamedTuple):
    """One seed's trainer state: the world model's parameters and optimiser, and the key
    the next update's episodes and latent samples are drawn from."""

    wm: TrainState
    key: jax.Array


class Metrics(NamedTuple):
    """Scalars of one update: the world-model losses (`ssmrl.worldmodel.Losses`)."""

    wm_total: jax.Array
    wm_decoder: jax.Array
    wm_reward: jax.Array
    wm_cont: jax.Array
    wm_dyn: jax.Array
    wm_rep: jax.Array


def make_agent(cfg: Config, env: Any, env_params: Any) -> Agent:
    """The offline trainer on ``env`` as the `ssmrl.agent.Agent` contract (state: `State`)."""
    cfg.validate()
    check_env(env, env_params)
    act_dim = ActionCodec.of(env.action_space(env_params)).size
    obs_dim = obs_size(env, env_params)
    model = WorldModel(cfg.world_model(), obs_dim)

    def episodes(key):
        data = env.scripted_episodes(key, env_params, cfg.batch_size)
        return episode_inputs(data.obs, data.action, data.reward, data.is_first, act_dim)

    shapes = jax.eval_shape(episodes, jax.random.PRNGKey(0))  # leaves [T, B, ...]
    rows = shapes.obs.shape[0]

    def loss(params, seq, key):
        carry = model.initialize_carry(cfg.batch_size)
        valid = jnp.ones_like(seq.reward)
        losses, _ = model.apply(params, carry, *seq, valid, key, method="loss")
        return losses.total, losses

    tx = cfg.optim.build(cfg.updates)

    def init(key) -> State:
        key, key_params, key_z = jax.random.split(key, 3)
        seq = jax.tree.map(lambda x: jnp.zeros((1, 1, *x.shape[2:]), x.dtype), shapes)
        params = model.init(
            key_params, model.initialize_carry(1), seq.obs, seq.prev_action, seq.is_first, key_z
        )
        return State(TrainState.create(apply_fn=model.apply, params=params, tx=tx), key)

    def update(state: State) -> tuple[State, Metrics]:
        key, key_data, key_z = jax.random.split(state.key, 3)
        seq = episodes(key_data)
        grads, losses = jax.grad(loss, has_aux=True)(state.wm.params, seq, key_z)
        metrics = Metrics(**{f"wm_{k}": v for k, v in losses._asdict().items()})
        return State(state.wm.apply_gradients(grads=grads), key), metrics

    return Agent(
        init=init,
        update=update,
        act=None,
        initial_carry=None,
        policy_params=None,
        num_updates=cfg.updates,
        steps_per_update=cfg.batch_size * rows,
        wrappers=WRAPPERS,
        memory_bytes=memory_estimate(cfg, obs_dim, act_dim, rows),
        headline="wm_total",
        world_model=WorldModelView(model, lambda state: state.wm.params, act_dim),
    )


def memory_estimate(cfg: Config, obs_dim: int, act_dim: int, rows: int) -> int:
    """Rough bytes one update needs: the episodes, and the world model's activations over
    ``batch_size x rows`` steps (every core carry kept by the sequence call, the encoder's,
    decoder's and heads' activations), times 3 for gradients. A guess meant to catch sizes
    that are clearly too large, not to budget memory."""
    row = cfg.world_model().row_bytes(obs_dim, act_dim)
    return 3 * cfg.batch_size * rows * row
