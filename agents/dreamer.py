"""A DreamerV3-style agent: a world model on any memory core, with an actor and a critic
trained in imagination, jitted end to end with the envs and an on-device replay buffer.

```python
env, env_params = ssmrl.envs.make_for_agent("CartPole-v1", dreamer.WRAPPERS)
agent = ssmrl.agents.dreamer.make_agent(Config(), env, env_params)   # the `ssmrl.agent.Agent`
state = jax.jit(agent.init)(key)
state, metrics = jax.jit(agent.update)(state)     # num_steps env steps, then the owed updates
```

The world model is `ssmrl.worldmodel.WorldModel` whose backbone is ``core`` (S5 by
default; GRU gives the classic RSSM, MLP a memoryless control).

Acting and replay. Each env step writes one `Step` per env into the replay buffer (in the
state). The envs are stepped by `ssmrl.collect`, so every episode lies whole in the
replay, its terminal observation included (DreamerV3's reset step).

Training. After the env steps, when every env has ``sequence_length`` steps stored, the
update runs the gradient steps the train ratio owes (`ssmrl.replay.updates_due`; none are
owed for the steps before that). Each: the world-model loss on a replayed batch;
imagination of ``horizon`` steps with the actor from every replayed posterior state;
λ-returns over imagined rewards and continues; returns normalised by an EMA of their
5th-95th percentile range (at least 1); the actor trained by REINFORCE with an entropy
bonus; the critic (two-hot symlog bins) trained toward the λ-returns and toward a slow
(EMA) copy of itself, and (weight ``replay_value``) toward λ-returns along the replayed
sequences, whose real rewards and terminals are bootstrapped with the imagined returns.
Gradients do not flow from actor or critic into the world model.

Deviations from DreamerV3: REINFORCE also for continuous actions (DreamerV3 backpropagates
through the dynamics there); the actor is `ssmrl.nets.PolicyHead` (a plain categorical,
or a Gaussian with a state-independent std whose samples are clipped to the action
bounds only when sent to the env); imagined continues are the continue head's
probabilities, not flags (`ssmrl.returns.imagined_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from ssmrl import collect, cores, replay
from ssmrl.actions import ActionCodec, obs_size
from ssmrl.agent import Agent, WorldModelView
from ssmrl.config import OptimConfig, check_counts, check_range, check_whole_updates
from ssmrl.nets import MLP, PolicyHead
from ssmrl.replay import ReplayConfig
from ssmrl.returns import imagined_targets, percentile_scale, replayed_targets
from ssmrl.worldmodel import (
    Losses,
    WorldModel,
    WorldModelCarry,
    WorldModelConfig,
    flatten_time,
    symexp,
    symlog_bins,
    two_hot_decode,
    two_hot_nll,
)

RUN_LENGTH = "total_timesteps"
"""The setting that says how long a run is (`ssmrl.experiment.extendable`)."""

WRAPPERS = ("flatten", "episode_statistics")
"""The env wrappers Dreamer wants: flat observations and episode statistics (the previous
action and the is-first flag come from the agent's own bookkeeping)."""

CoreOptions = TypeVar("CoreOptions")


@dataclass(frozen=True)
class Config(Generic[CoreOptions]):
    """Dreamer hyperparameters; ``env`` names the task for the CLI (make_agent takes the env).

    ``core`` is the world model's backbone options (`ssmrl.cores.S5Options`, ...);
    ``Config[GRUOptions]`` types it for the CLI. The defaults are CPU-sized.
    """

    env: str = "CartPole-v1"
    """the task (`ssmrl.envs.make` names; `ssmrl envs` lists them)"""
    core: CoreOptions = field(
        default_factory=lambda: cores.S5Options(features=64, num_layers=1, state_size=32)
    )
    """the world model's backbone options (``--core NAME`` picks the core)"""
    latents: int = 16
    """categorical latent groups of the world model"""
    classes: int = 16
    """classes per latent group"""
    hidden: int = 128
    """width of the world model's, actor's and critic's hidden layers"""
    depth: int = 2
    """hidden layers of the encoder, decoder, heads, actor and critic"""
    terminal_weight: float = 1.0
    """weight of terminal rows in the world model's continue loss (DreamerV3: 1)"""
    replay: ReplayConfig = field(
        default_factory=lambda: ReplayConfig(
            capacity=20_000, sequence_length=32, batch_size=16, train_ratio=64.0
        )
    )
    """capacity per env, replayed sequences and the train ratio (replayed per env step)"""
    num_envs: int = 8
    """envs stepped in parallel"""
    num_steps: int = 16
    """env steps per env in each update, before its gradient steps"""
    horizon: int = 15
    """imagination horizon"""
    reward_scale: float = 1.0
    """multiplies the env's rewards where the world model learns them (logged returns are
    the env's): per-step rewards far below a reward bin's width (about 0.16 in symlog
    space) give the reward head little to learn from"""
    gamma: float = 0.997
    """discount (DreamerV3's horizon of 333 steps)"""
    lam: float = 0.95
    """λ of the λ-returns"""
    ent_coef: float = 3e-4
    """actor entropy bonus (on returns normalised to a range of about 1)"""
    return_low: float = 5.0
    """percentile of the imagined returns tracked as their low end"""
    return_high: float = 95.0
    """percentile of the imagined returns tracked as their high end"""
    return_decay: float = 0.99
    """EMA decay of the return percentiles"""
    slow_critic_decay: float = 0.98
    """EMA decay of the slow critic, once per gradient step"""
    slow_reg: float = 1.0
    """weight of the critic's loss toward the slow critic's values"""
    replay_value: float = 0.3
    """weight of the critic's loss on replayed sequences: λ-returns with the real rewards
    and terminals, bootstrapped with the imagined returns (DreamerV3: 0.3; 0: off)"""
    wm_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, max_grad_norm=1000.0, adam_eps=1e-8)
    )
    actor_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-5, max_grad_norm=100.0, adam_eps=1e-5)
    )
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-5, max_grad_norm=100.0, adam_eps=1e-5)
    )
    total_timesteps: int = 99_968
    """env steps in all: a whole number of updates of num_envs x num_steps (781 here)"""

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    def world_model(self) -> WorldModelConfig:
        """The world model's config (DreamerV3's defaults for what is not set here)."""
        return WorldModelConfig(
            core=self.core,
            latents=self.latents,
            classes=self.classes,
            hidden=self.hidden,
            depth=self.depth,
            terminal_weight=self.terminal_weight,
        )

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        check_counts(self, "num_envs", "num_steps", "horizon", "total_timesteps")
        check_whole_updates(self.total_timesteps, self.steps_per_update)
        check_range(self, ("gamma",), 0.0, 1.0, open_low=True)
        check_range(self, ("lam", "ent_coef", "return_decay", "slow_critic_decay"), 0.0, 1.0)
        check_range(self, ("reward_scale",), 0.0, 1e6, open_low=True)
        check_range(self, ("slow_reg", "replay_value"), 0.0, 1e6)
        if not 0.0 <= self.return_low < self.return_high <= 100.0:
            raise ValueError(
                "return_low and return_high must satisfy 0 <= low < high <= 100, got "
                f"{self.return_low} and {self.return_high}"
            )
        self.world_model().validate()
        self.replay.validate()
        for optim in (self.wm_optim, self.actor_optim, self.critic_optim):
            optim.validate()


class Step(NamedTuple):
    """One replayed row per env (leaves ``[E, ...]`` when added, ``[T, B, ...]`` sampled).

    | field       | shape | meaning                                                   |
    |-------------|-------|-----------------------------------------------------------|
    | obs         | [O]   | o_t, the observation acted on (or an episode's last one)  |
    | prev_action | [A]   | a_{t-1} as the world model reads it (one-hot if discrete) |
    | reward      | []    | r_t, the reward that came with o_t (0 at is_first)        |
    | cont        | []    | 0 where o_t is terminal, else 1                           |
    | is_first    | []    | o_t starts an episode                                     |
    """

    obs: jax.Array
    prev_action: jax.Array
    reward: jax.Array
    cont: jax.Array
    is_first: jax.Array


class ActCarry(NamedTuple):
    """The acting memory of ``E`` envs: the world model's carry and the last action ``[E, A]``
    as the world model reads it (so ``act`` can feed it back as the previous action)."""

    wm: WorldModelCarry
    action: jax.Array


class PolicyParams(NamedTuple):
    """What ``act`` needs: world-model and actor parameters."""

    wm: Any
    actor: Any


class Learner(NamedTuple):
    """Trained parameters, optimiser states and the return normaliser's EMA percentiles."""

    wm: TrainState
    actor: TrainState
    critic: TrainState
    slow_critic: Any
    return_low: jax.Array
    return_high: jax.Array


class State(NamedTuple):
    """Everything that carries from one update to the next (one seed; ``E`` envs)."""

    learner: Learner
    replay: replay.ReplayState
    envs: collect.Rows
    carry: ActCarry
    env_steps: jax.Array
    key: jax.Array


class TrainInfo(NamedTuple):
    """Scalars of one gradient step."""

    wm: Losses
    actor_loss: jax.Array
    critic_loss: jax.Array
    entropy: jax.Array
    imagined_return: jax.Array
    return_scale: jax.Array
    terminal_cont: jax.Array  # summed P(continue) over the batch's terminal rows
    terminals: jax.Array  # how many terminal rows the batch holds


class Metrics(NamedTuple):
    """Per-update scalars; losses are means over its gradient steps (0 when none ran)."""

    mean_return: jax.Array  # mean return of episodes that ended in this update (NaN if none)
    episodes: jax.Array
    train_steps: jax.Array
    wm_total: jax.Array  # the world model's loss and its parts (`ssmrl.worldmodel.Losses`)
    wm_decoder: jax.Array
    wm_reward: jax.Array
    wm_cont: jax.Array
    wm_dyn: jax.Array
    wm_rep: jax.Array
    actor_loss: jax.Array
    critic_loss: jax.Array
    entropy: jax.Array
    imagined_return: jax.Array
    return_scale: jax.Array
    terminal_cont: jax.Array  # mean P(continue) the model gives replayed terminal rows
    terminals: jax.Array  # replayed terminal rows those are over (0: terminal_cont is 0)


def make_agent(cfg: Config, env: Any, env_params: Any) -> Agent:
    """Dreamer on ``env`` as the `ssmrl.agent.Agent` contract (state: a `State`).

    ``env`` must give flat float observations; ``mean_return`` reads the
    `ssmrl.envs.wrappers.EpisodeStatistics` info (NaN without it).
    """
    cfg.validate()
    space = env.action_space(env_params)
    codec, obs_dim = ActionCodec.of(space), obs_size(env, env_params)
    act_dim = codec.size
    wm_cfg = cfg.world_model()
    model = WorldModel(wm_cfg, obs_dim)
    widths = (cfg.hidden,) * cfg.depth
    actor = PolicyHead.from_space(space, hidden=widths, activation=nn.silu, layer_norm=True)
    critic = MLP(widths, wm_cfg.bins, activation=nn.silu, layer_norm=True, out_scale=0.0)
    bins = symlog_bins(wm_cfg.bins, wm_cfg.bin_limit)
    feature_dim = cfg.core.features + cfg.latents * cfg.classes
    n_envs, rcfg = cfg.num_envs, cfg.replay

    def owed(env_steps):
        """Gradient steps the train ratio owes after ``env_steps`` env steps."""
        return replay.updates_due(env_steps, rcfg.train_ratio, rcfg.batch_steps)

    grad_steps = max(1, owed(cfg.total_timesteps))
    # Built once, so every state's TrainStates hold the same (static) optimisers.
    wm_tx, actor_tx, critic_tx = (
        optim.build(grad_steps) for optim in (cfg.wm_optim, cfg.actor_optim, cfg.critic_optim)
    )

    def value(params, features):
        """The critic's value ``[...]`` of features ``[..., F]``."""
        return symexp(two_hot_decode(critic.apply(params, features), bins))

    def initial_carry(rows: int) -> ActCarry:
        return ActCarry(model.initialize_carry(rows), jnp.zeros((rows, act_dim)))

    def act(params: PolicyParams, carry: ActCarry, obs, reset, key, greedy: bool = False):
        """obs ``[E, O]``, reset ``[E]`` -> (carry, env action ``[E]`` or ``[E, A]``); greedy
        takes latent and action modes."""
        key_z, key_a = jax.random.split(key)
        key_z = None if greedy else key_z
        wm_carry, features = model.apply(
            params.wm, carry.wm, obs, carry.action, reset, key_z, method="obs_step"
        )
        pi = actor.apply(params.actor, features)
        action = pi.mode() if greedy else pi.sample(seed=key_a)
        return ActCarry(wm_carry, codec.encode(action)), codec.to_env(action)

    def policy_params(state: State) -> PolicyParams:
        return PolicyParams(state.learner.wm.params, state.learner.actor.params)

    def init(key) -> State:
        key, key_wm, key_z, key_actor, key_critic, key_env = jax.random.split(key, 6)
        example = Step(
            obs=jnp.zeros(obs_dim),
            prev_action=jnp.zeros(act_dim),
            reward=jnp.zeros(()),
            cont=jnp.zeros(()),
            is_first=jnp.zeros((), bool),
        )
        seq = jax.tree.map(lambda x: x[None, None], example)  # [T = 1, B = 1, ...]
        wm_params = model.init(
            key_wm, model.initialize_carry(1), seq.obs, seq.prev_action, seq.is_first, key_z
        )
        features = jnp.zeros((1, feature_dim))
        critic_params = critic.init(key_critic, features)

        def train_state(module, params, tx):
            return TrainState.create(apply_fn=module.apply, params=params, tx=tx)

        learner = Learner(
            wm=train_state(model, wm_params, wm_tx),
            actor=train_state(actor, actor.init(key_actor, features), actor_tx),
            critic=train_state(critic, critic_params, critic_tx),
            slow_critic=critic_params,
            return_low=jnp.zeros(()),
            return_high=jnp.zeros(()),
        )
        state = State(
            learner=learner,
            replay=replay.init(rcfg, example, n_envs),
            envs=collect.reset(env, env_params, key_env, n_envs),
            carry=initial_carry(n_envs),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )
        # Strongly typed leaves, as update returns them, so that jit compiles update once.
        return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), state)

    def env_step(state: State, _) -> tuple[State, collect.Episodes]:
        key, key_act, key_env = jax.random.split(state.key, 3)
        rows = state.envs
        carry, action = act(policy_params(state), state.carry, rows.obs, rows.first, key_act)
        row = Step(
            obs=rows.obs,
            prev_action=state.carry.action,
            reward=rows.reward,
            cont=rows.cont,
            is_first=rows.first,
        )
        rows, episodes = collect.step(env, env_params, rows, action, key_env, cfg.reward_scale)
        state = State(
            learner=state.learner,
            replay=replay.add(state.replay, row),
            envs=rows,
            carry=carry,
            env_steps=state.env_steps + n_envs,
            key=key,
        )
        return state, episodes

    def train_step(learner: Learner, buffer: replay.ReplayState, key) -> tuple[Learner, TrainInfo]:
        """One gradient step of the world model, actor and critic on a replayed batch."""
        key_sample, key_wm, key_img = jax.random.split(key, 3)
        batch, valid = replay.sample(buffer, key_sample)
        wm_params, actor_params = learner.wm.params, learner.actor.params

        def wm_loss(params):
            carry = model.initialize_carry(rcfg.batch_size)
            # Step's fields are the loss's inputs obs, prev_action, reward, cont, is_first.
            losses, out = model.apply(params, carry, *batch, valid, key_wm, method="loss")
            return losses.total, (losses, out)

        (_, (losses, out)), grads = jax.value_and_grad(wm_loss, has_aux=True)(wm_params)
        start = jax.lax.stop_gradient(flatten_time(out.carries))  # [N = T * B]
        # How surely the continue head recognises the terminal observations it trains on.
        terminal = (batch.cont == 0) & valid
        seen_cont = model.apply(wm_params, out.features, method="continue_prob")

        def policy(features, key):
            return codec.encode(actor.apply(actor_params, features).sample(seed=key))

        img = model.apply(wm_params, policy, start, cfg.horizon, key_img, method="imagine")
        pred = model.apply(wm_params, img.features, method="predict")
        values = value(learner.critic.params, img.features)
        returns, weight = imagined_targets(
            pred.reward, pred.cont, flatten_time(batch.cont * valid), values, cfg.gamma, cfg.lam
        )
        norm = percentile_scale(
            returns,
            learner.return_low,
            learner.return_high,
            cfg.return_low,
            cfg.return_high,
            cfg.return_decay,
        )
        advantage = (returns - values[:-1]) / norm.scale
        features, w = img.features[:-1], weight
        slow_values = value(learner.slow_critic, features)
        # The replayed states are the imagination's starts; their imagined returns bootstrap
        # λ-returns along the real sequences, which see every real terminal.
        seq_shape = batch.cont.shape  # [T, B]
        replayed = img.features[0].reshape(*seq_shape, -1)
        replay_returns, replay_w = replayed_targets(
            batch.reward,
            batch.cont,
            batch.is_first,
            valid,
            returns[0].reshape(seq_shape),
            cfg.gamma,
            cfg.lam,
        )
        replay_slow = value(learner.slow_critic, replayed)

        def actor_loss(params):
            pi = actor.apply(params, features)
            entropy = pi.entropy()
            loss = -(pi.log_prob(codec.decode(img.actions)) * advantage + cfg.ent_coef * entropy)
            return jnp.mean(loss * w), jnp.mean(entropy)

        def critic_nll(params, features, targets, slow):
            logits = critic.apply(params, features)
            return two_hot_nll(logits, targets, bins) + cfg.slow_reg * two_hot_nll(
                logits, slow, bins
            )

        def critic_loss(params):
            imagined = jnp.mean(critic_nll(params, features, returns, slow_values) * w)
            real = critic_nll(params, replayed, replay_returns, replay_slow)
            return imagined + cfg.replay_value * jnp.mean(real * replay_w)

        (a_loss, entropy), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(actor_params)
        c_loss, c_grads = jax.value_and_grad(critic_loss)(learner.critic.params)
        critic_state = learner.critic.apply_gradients(grads=c_grads)
        learner = Learner(
            wm=learner.wm.apply_gradients(grads=grads),
            actor=learner.actor.apply_gradients(grads=a_grads),
            critic=critic_state,
            slow_critic=optax.incremental_update(
                critic_state.params, learner.slow_critic, 1.0 - cfg.slow_critic_decay
            ),
            return_low=norm.low,
            return_high=norm.high,
        )
        return learner, TrainInfo(
            wm=losses,
            actor_loss=a_loss,
            critic_loss=c_loss,
            entropy=entropy,
            imagined_return=jnp.mean(returns[0]),
            return_scale=norm.scale,
            terminal_cont=jnp.sum(jnp.where(terminal, seen_cont, 0.0)),
            terminals=jnp.sum(terminal).astype(jnp.float32),
        )

    def update(state: State) -> tuple[State, Metrics]:
        steps_before = state.env_steps
        state, episodes = jax.lax.scan(env_step, state, None, cfg.num_steps)
        due = owed(state.env_steps) - owed(steps_before)
        count = jnp.where(replay.can_sample(state.replay), due, 0)
        key, key_train = jax.random.split(state.key)

        def body(i, carry):
            learner, total = carry
            learner, info = train_step(learner, state.replay, jax.random.fold_in(key_train, i))
            return learner, jax.tree.map(jnp.add, total, info)

        shapes = jax.eval_shape(train_step, state.learner, state.replay, key_train)[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        learner, total = jax.lax.fori_loop(0, count, body, (state.learner, zeros))
        mean = jax.tree.map(lambda x: x / jnp.maximum(count, 1), total)
        n_episodes = episodes.ended.sum()
        sums = ("wm", "terminal_cont", "terminals")
        metrics = Metrics(
            mean_return=episodes.returns.sum() / jnp.where(n_episodes > 0, n_episodes, jnp.nan),
            episodes=n_episodes,
            train_steps=count,
            **{f"wm_{name}": x for name, x in mean.wm._asdict().items()},
            **{name: x for name, x in mean._asdict().items() if name not in sums},
            terminal_cont=total.terminal_cont / jnp.maximum(total.terminals, 1.0),
            terminals=total.terminals,
        )
        return state._replace(learner=learner, key=key), metrics

    return Agent(
        init=init,
        update=update,
        act=act,
        initial_carry=initial_carry,
        policy_params=policy_params,
        num_updates=cfg.num_updates,
        steps_per_update=cfg.steps_per_update,
        wrappers=WRAPPERS,
        memory_bytes=memory_estimate(cfg, env, env_params),
        world_model=WorldModelView(model, lambda state: state.learner.wm.params, act_dim),
        num_envs=n_envs,
        env_fields=("replay", "envs", "carry"),
    )


def memory_estimate(cfg: Config, env: Any, env_params: Any) -> int:
    """Rough bytes one seed's update needs besides its state (the replay buffer is in the
    state): the env steps, and for one gradient step the world model's activations over
    ``B x T`` rows and the imagined rollouts from all of them (each state's core carry and
    features, the heads', actor's and critic's activations), times 3 for gradients. A guess
    meant to catch sizes that are clearly too large, not to budget memory."""
    obs_dim = obs_size(env, env_params)
    act_dim = ActionCodec.of(env.action_space(env_params)).size
    wm_cfg = cfg.world_model()
    latent = cfg.latents * cfg.classes
    features = cfg.core.features + latent
    mlp = cfg.hidden * cfg.depth * 3  # Dense, LayerNorm and activation outputs
    rows = cfg.replay.batch_size * cfg.replay.sequence_length
    wm_row = wm_cfg.row_bytes(obs_dim, act_dim)
    img_floats = features + 2 * latent + 4 * mlp + 3 * wm_cfg.bins
    img_row = (cfg.horizon + 1) * (wm_cfg.carry_bytes() + 4 * img_floats)
    env_steps = cfg.num_steps * cfg.num_envs * 4 * (3 * obs_dim + 2 * act_dim + 8)
    return env_steps + 3 * rows * (wm_row + img_row)


def make_train(cfg: Config, env: Any, env_params: Any):
    """Pure ``train(key) -> (State, Metrics[num_updates])`` running every update."""
    agent = make_agent(cfg, env, env_params)

    def train(key):
        state = agent.init(key)
        return jax.lax.scan(lambda s, _: agent.update(s), state, None, agent.num_updates)

    return train
