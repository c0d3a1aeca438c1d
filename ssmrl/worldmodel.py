"""A DreamerV3-style world model whose backbone is any memory core (S4WM / R2I factorisation).

```python
model = WorldModel(WorldModelConfig(core=cores.GRUOptions(features=256)), obs_dim=O)
carry = model.initialize_carry(B)
params = model.init(key, carry, obs, prev_action, is_first, key)      # all submodules
def loss_fn(p):
    losses, out = model.apply(
        p, carry, obs, prev_action, reward, cont, is_first, valid, key, method="loss"
    )
    return losses.total, (losses, out)
(_, (losses, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
start = flatten_time(out.carries)                                      # [T * B, ...] starts
traj = model.apply(params, policy_fn, start, horizon, key, method="imagine")
carry, features = model.apply(params, carry, o, a, first, key, method="obs_step")  # acting
```

The posterior ``q(z_t | o_t)`` reads the observation alone, so every posterior sample of
a replayed sequence is drawn at once; the backbone then runs as one sequence call
(``core.carries``) over the inputs ``[z_{t-1}, a_{t-1}]``, giving ``h_t``; the prior
``p(z_t | h_t)`` and the heads (decoder, reward, continue on ``[h_t, z_t]``) are per step.
At ``is_first[t]`` the previous latent and action are zeroed and the core is reset.

Latents are ``L`` groups of ``C`` classes. Every latent ``logits`` array here is the log of
the probabilities after the uniform mix, so samples, modes and KLs read it directly.
Observations are regressed in symlog space; rewards are two-hot symlog bins.

Data layout the loss expects (time-major, one row per observation):

| arg         | shape     | meaning                                                     |
|-------------|-----------|-------------------------------------------------------------|
| obs         | [T, B, O] | o_t                                                         |
| prev_action | [T, B, A] | a_{t-1}, one-hot if discrete (zeroed by the model at is_first) |
| reward      | [T, B]    | r_t, the reward that came with o_t                          |
| cont        | [T, B]    | 1 - terminal: 0 where o_t is a terminal observation         |
| is_first    | [T, B]    | o_t starts an episode                                       |
| valid       | [T, B]    | 1 where the step counts in the losses (padding: 0)          |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssmrl import cores
from ssmrl.nets import MLP

CoreOptions = TypeVar("CoreOptions")


def symlog(x: jax.Array) -> jax.Array:
    """``sign(x) * log(1 + |x|)``, elementwise; the inverse of :func:`symexp`."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """``sign(x) * (exp(|x|) - 1)``, elementwise; the inverse of :func:`symlog`."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symlog_bins(num: int = 255, limit: float = 20.0) -> jax.Array:
    """``num`` evenly spaced bin centres over ``[-limit, limit]`` (symlog space), ``[num]``."""
    return jnp.linspace(-limit, limit, num)


def two_hot(x: jax.Array, bins: jax.Array) -> jax.Array:
    """Two-hot encoding: ``x`` split between its two neighbouring bins, linearly.

    | arg    | shape     | meaning                                             |
    |--------|-----------|-----------------------------------------------------|
    | x      | [...]     | values; clipped to ``[bins[0], bins[-1]]``          |
    | bins   | [K]       | increasing bin centres, K >= 2                      |
    | return | [..., K]  | weights, two non-zero, sum 1, ``weights @ bins == x`` |
    """
    x = jnp.clip(x, bins[0], bins[-1])
    below = jnp.clip(jnp.sum(bins <= x[..., None], -1) - 1, 0, bins.shape[0] - 2)
    lo, hi = bins[below], bins[below + 1]
    w_hi = (x - lo) / (hi - lo)
    k = bins.shape[0]
    return (
        jax.nn.one_hot(below, k) * (1.0 - w_hi)[..., None]
        + jax.nn.one_hot(below + 1, k) * w_hi[..., None]
    )


def two_hot_decode(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """The expected bin value under ``softmax(logits)``: ``[..., K]`` -> ``[...]``.

    Given probabilities ``p``, pass ``jnp.log(p)``; ``two_hot_decode(log(two_hot(x)))``
    returns ``x`` for ``x`` within the bins.
    """
    return jnp.sum(jax.nn.softmax(logits, -1) * bins, -1)


def two_hot_nll(logits: jax.Array, x: jax.Array, bins: jax.Array) -> jax.Array:
    """Cross-entropy of bin ``logits [..., K]`` against the two-hot encoding of
    ``symlog(x) [...]`` on ``bins [K]``: the reward head's and a two-hot critic's loss ``[...]``."""
    return -jnp.sum(two_hot(symlog(x), bins) * jax.nn.log_softmax(logits, -1), -1)


def unimix_probs(logits: jax.Array, mix: float) -> jax.Array:
    """``(1 - mix) * softmax(logits) + mix / C`` over the last axis ``[..., C]``."""
    return (1.0 - mix) * jax.nn.softmax(logits, -1) + mix / logits.shape[-1]


def straight_through_sample(key: jax.Array | None, probs: jax.Array) -> jax.Array:
    """A one-hot sample whose gradient is the identity with respect to ``probs``.

    ``probs [..., C]`` -> ``[..., C]``: ``one_hot(s) + (probs - stop_gradient(probs))``
    with ``s ~ Categorical(probs)``, or ``s = argmax(probs)`` (the mode) when ``key`` is
    None. The bracket is exactly zero, so the values are exactly one-hot.
    """
    if key is None:
        index = jnp.argmax(probs, -1)
    else:
        index = jax.random.categorical(key, jnp.log(probs), -1)
    return jax.nn.one_hot(index, probs.shape[-1]) + (probs - jax.lax.stop_gradient(probs))


def kl_categorical(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """``KL(p || q)`` of ``L`` independent categoricals, summed over groups.

    ``p_logits``, ``q_logits [..., L, C]`` (unnormalised) -> ``[...]``.
    """
    log_p = jax.nn.log_softmax(p_logits, -1)
    log_q = jax.nn.log_softmax(q_logits, -1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), (-2, -1))


class KLBalance(NamedTuple):
    """The two KL terms of :func:`kl_balance_loss`, each ``[...]``, already scaled."""

    dyn: jax.Array
    rep: jax.Array


def kl_balance_loss(
    post_logits: jax.Array,
    prior_logits: jax.Array,
    free_nats: float = 1.0,
    dyn_scale: float = 0.5,
    rep_scale: float = 0.1,
) -> KLBalance:
    """DreamerV3's KL balancing with free nats, per step.

    ``dyn = dyn_scale * max(free_nats, KL(sg(post) || prior))`` trains the prior;
    ``rep = rep_scale * max(free_nats, KL(post || sg(prior)))`` trains the posterior.
    Below ``free_nats`` a term is constant, so its gradient is zero.

    | arg          | shape        |
    |--------------|--------------|
    | post_logits  | [..., L, C]  |
    | prior_logits | [..., L, C]  |
    | return       | KLBalance of two [...] arrays |
    """
    sg = jax.lax.stop_gradient
    dyn = jnp.maximum(free_nats, kl_categorical(sg(post_logits), prior_logits))
    rep = jnp.maximum(free_nats, kl_categorical(post_logits, sg(prior_logits)))
    return KLBalance(dyn_scale * dyn, rep_scale * rep)


@dataclass(frozen=True)
class WorldModelConfig(Generic[CoreOptions]):
    """World-model hyperparameters; ``core`` is a memory core's options (`ssmrl.cores`)."""

    core: CoreOptions = field(
        default_factory=lambda: cores.S5Options(features=256, num_layers=2, state_size=128)
    )
    """the backbone's options (S5, GRU, LSTM or MLP)"""
    latents: int = 32
    """number L of categorical latent groups"""
    classes: int = 32
    """number C of classes per latent group"""
    hidden: int = 256
    """width of the encoder's, prior's and heads' hidden layers"""
    depth: int = 2
    """hidden layers of the encoder, decoder, reward and continue MLPs (the prior has one)"""
    unimix: float = 0.01
    """uniform mix on the latent probabilities"""
    free_nats: float = 1.0
    """KL values below this are clipped up to it (no gradient there)"""
    dyn_scale: float = 0.5
    """scale of the dynamics loss KL(sg(post) || prior)"""
    rep_scale: float = 0.1
    """scale of the representation loss KL(post || sg(prior))"""
    terminal_weight: float = 1.0
    """weight of terminal rows in the continue loss (DreamerV3: 1); above 1 the head
    flags states near a termination sooner, where terminals are rare in the data"""
    bins: int = 255
    """number of two-hot reward bins"""
    bin_limit: float = 20.0
    """the reward bins span [-bin_limit, bin_limit] in symlog space"""

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option) if a value is impossible."""
        cores.name_of(self.core)
        self.core.validate()
        for name in ("latents", "classes", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {self.unimix}")
        for name in ("free_nats", "dyn_scale", "rep_scale", "terminal_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if not self.bin_limit > 0.0:
            raise ValueError(f"bin_limit must be > 0, got {self.bin_limit}")

    def carry_bytes(self) -> int:
        """Bytes of one row of the core's carry."""
        carry = jax.eval_shape(lambda: cores.build(self.core).initialize_carry(1))
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(carry))

    def row_bytes(self, obs_dim: int, act_dim: int) -> int:
        """Rough bytes of the world model's activations for one training row: the core's
        carry, inputs and reconstructions, latents, the backbone's layers and the MLPs'
        Dense, LayerNorm and activation outputs (a guess for memory estimates)."""
        latent, mlp = self.latents * self.classes, self.hidden * self.depth * 3
        backbone = 16 * self.core.features * self.core.num_layers
        floats = 3 * obs_dim + act_dim + 4 * latent + backbone + 4 * mlp + self.bins
        return self.carry_bytes() + 4 * floats


class WorldModelCarry(NamedTuple):
    """The world model's state after a step (leaves ``[B, ...]``, or ``[T, B, ...]``).

    | field | shape       | meaning                                              |
    |-------|-------------|------------------------------------------------------|
    | core  | pytree      | the backbone core's carry                            |
    | z     | [B, L, C]   | the last latent (posterior sample, or prior sample when imagining) |
    | h     | [B, H]      | the last backbone output; ``features_of`` = [h, z]   |
    """

    core: Any
    z: jax.Array
    h: jax.Array


class Observation(NamedTuple):
    """What :meth:`WorldModel.observe` returns (``F = H + L * C``).

    | field        | shape              | meaning                                      |
    |--------------|--------------------|----------------------------------------------|
    | post_logits  | [T, B, L, C]       | q(z_t given o_t)                             |
    | post         | [T, B, L, C]       | z_t, straight-through one-hot samples of it  |
    | prior_logits | [T, B, L, C]       | p(z_t given h_t)                             |
    | features     | [T, B, F]          | [h_t, z_t]                                   |
    | carries      | leaves [T, B, ...] | carries[t]: the state after step t           |
    | carry        | leaves [B, ...]    | carries[T - 1], for the next chunk           |
    """

    post_logits: jax.Array
    post: jax.Array
    prior_logits: jax.Array
    features: jax.Array
    carries: WorldModelCarry
    carry: WorldModelCarry


class Heads(NamedTuple):
    """Raw head outputs on features ``[..., F]``: the observation in symlog space
    ``[..., O]``, reward bin logits ``[..., K]`` (two-hot symlog), continue logits ``[...]``."""

    obs: jax.Array
    reward_logits: jax.Array
    cont_logits: jax.Array


class Prediction(NamedTuple):
    """Decoded head outputs: observation ``[..., O]``, reward ``[...]``, P(continue) ``[...]``."""

    obs: jax.Array
    reward: jax.Array
    cont: jax.Array


class Losses(NamedTuple):
    """Scalar world-model losses; ``total`` is the sum of the other five."""

    total: jax.Array
    decoder: jax.Array
    reward: jax.Array
    cont: jax.Array
    dyn: jax.Array
    rep: jax.Array


class Imagination(NamedTuple):
    """An imagined rollout of ``H`` steps from ``N`` start states.

    | field    | shape           | meaning                                          |
    |----------|-----------------|--------------------------------------------------|
    | features | [H + 1, N, F]   | features[0]: the start states'; then the prior's |
    | actions  | [H, N, A]       | actions[i]: taken in state i                     |
    | carry    | leaves [N, ...] | the state after the last step                    |
    """

    features: jax.Array
    actions: jax.Array
    carry: WorldModelCarry


def features_of(carry: WorldModelCarry) -> jax.Array:
    """``[h, flatten(z)]``: ``[..., H + L * C]``."""
    z = carry.z.reshape(*carry.z.shape[:-2], -1)
    return jnp.concatenate([carry.h, z], -1)


def flatten_time(tree: Any) -> Any:
    """Merge the two leading axes of every leaf, ``[T, B, ...] -> [T * B, ...]``."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def _zero_where(first: jax.Array, x: jax.Array) -> jax.Array:
    """``x [B, ...]`` (or ``[T, B, ...]``) with the rows where ``first`` is True zeroed."""
    return jnp.where(first.reshape(*first.shape, *(1,) * (x.ndim - first.ndim)), 0.0, x)


class WorldModel(nn.Module):
    """Encoder, posterior, backbone core, prior and heads (see the module docstring).

    | method    | inputs                                                      | returns            |
    |-----------|-------------------------------------------------------------|--------------------|
    | __call__  | carry, obs, prev_action, is_first, key                      | Observation, Heads |
    | observe   | carry, obs, prev_action, is_first, key                      | Observation        |
    | obs_step  | carry, obs [B,O], prev_action [B,A], is_first [B], key      | carry, [B,F]       |
    | img_step  | carry, action [B,A], key                                    | carry, [B,F], z    |
    | imagine   | policy_fn, start carry [N], horizon H, key                  | Imagination        |
    | open_loop | start carry [N], actions [H,N,A], key                       | [H,N,F]            |
    | heads     | features [...,F]                                            | Heads              |
    | predict   | features [...,F]                                            | Prediction         |
    | continue_prob | features [...,F]                                        | [...]              |
    | loss      | carry, obs, prev_action, reward, cont, is_first, valid, key | (below)            |

    Sequence inputs are obs ``[T,B,O]``, prev_action ``[T,B,A]``, is_first ``[T,B]``
    (module docstring); ``z [B,L,C]`` is the prior sample, also the new carry's ``z``;
    ``loss`` returns ``(Losses, Observation)``.
    A ``key`` of None takes modes instead of samples (imagine's ``policy_fn`` still gets
    keys). ``observe`` draws step ``t``'s latent with ``jax.random.split(key, T)[t]``,
    so ``obs_step`` calls with those keys reproduce it. Initialise with the default
    method (``model.init(key, carry, obs, prev_action, is_first, key)``) to create
    every parameter.
    """

    config: WorldModelConfig
    obs_dim: int

    def setup(self):
        c = self.config
        c.validate()
        widths = (c.hidden,) * c.depth
        block = dict(layer_norm=True, activation=nn.silu)
        self.core = cores.build(c.core)
        self.encoder = MLP(widths, c.latents * c.classes, **block)
        self.prior_net = MLP((c.hidden,), c.latents * c.classes, **block)
        self.decoder = MLP(widths, self.obs_dim, **block)
        self.reward_net = MLP(widths, c.bins, out_scale=0.0, **block)
        self.cont_net = MLP(widths, 1, **block)

    @nn.nowrap
    def initialize_carry(self, batch_size: int) -> WorldModelCarry:
        """The zero state: the core's initial carry, ``z`` and ``h`` zeros."""
        c = self.config
        return WorldModelCarry(
            cores.build(c.core).initialize_carry(batch_size),
            jnp.zeros((batch_size, c.latents, c.classes)),
            jnp.zeros((batch_size, c.core.features)),
        )

    def _latent_logits(self, net: nn.Module, x: jax.Array) -> jax.Array:
        c = self.config
        raw = net(x).reshape(*x.shape[:-1], c.latents, c.classes)
        return jnp.log(unimix_probs(raw, c.unimix))

    def posterior(self, obs: jax.Array) -> jax.Array:
        """``q(z | o)`` logits: obs ``[..., O]`` -> ``[..., L, C]``."""
        return self._latent_logits(self.encoder, symlog(obs))

    def prior(self, h: jax.Array) -> jax.Array:
        """``p(z | h)`` logits: h ``[..., H]`` -> ``[..., L, C]``."""
        return self._latent_logits(self.prior_net, h)

    def _backbone_input(self, z_prev, prev_action, is_first):
        """``[z_{t-1}, a_{t-1}]``, zeroed where ``is_first``: ``[..., L * C + A]``."""
        z_prev = z_prev.reshape(*z_prev.shape[:-2], -1)
        return _zero_where(is_first, jnp.concatenate([z_prev, prev_action], -1))

    def observe(self, carry, obs, prev_action, is_first, key) -> Observation:
        """Posterior, backbone and prior over a sequence; shapes in the class table."""
        post_logits = self.posterior(obs)
        probs = jax.nn.softmax(post_logits, -1)
        if key is None:
            post = straight_through_sample(None, probs)
        else:
            post = jax.vmap(straight_through_sample)(jax.random.split(key, obs.shape[0]), probs)
        z_prev = jnp.concatenate([carry.z[None], post[:-1]], 0)
        x = self._backbone_input(z_prev, prev_action, is_first)
        core_carries, h = self.core.carries(carry.core, x, is_first)
        carries = WorldModelCarry(core_carries, post, h)
        return Observation(
            post_logits,
            post,
            self.prior(h),
            features_of(carries),
            carries,
            jax.tree.map(lambda c: c[-1], carries),
        )

    def obs_step(self, carry, obs, prev_action, is_first, key):
        """One observed step (acting in an environment); ``observe``'s step ``t``."""
        post = straight_through_sample(key, jax.nn.softmax(self.posterior(obs), -1))
        x = self._backbone_input(carry.z, prev_action, is_first)
        core_carry, h = self.core.step(carry.core, x, is_first)
        carry = WorldModelCarry(core_carry, post, h)
        return carry, features_of(carry)

    def img_step(self, carry, action, key):
        """One imagined step: the backbone consumes ``[z, action]``; ``z'`` ~ the prior."""
        no_reset = jnp.zeros(action.shape[:-1], bool)
        x = self._backbone_input(carry.z, action, no_reset)
        core_carry, h = self.core.step(carry.core, x, no_reset)
        z = straight_through_sample(key, jax.nn.softmax(self.prior(h), -1))
        carry = WorldModelCarry(core_carry, z, h)
        return carry, features_of(carry), z

    def _scan_img(self, body: Callable, start: WorldModelCarry, xs: Any):
        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
        return scan(self, start, xs)

    def imagine(
        self,
        policy_fn: Callable[[jax.Array, jax.Array], jax.Array],
        start: WorldModelCarry,
        horizon: int,
        key: jax.Array,
    ) -> Imagination:
        """Roll the prior for ``horizon`` steps, acting with ``policy_fn(features [N, F], key)
        -> action [N, A]`` in every state but the last."""

        def body(model, carry, key):
            key, key_a = jax.random.split(key)
            action = policy_fn(features_of(carry), key_a)
            carry, features, _ = model.img_step(carry, action, key)
            return carry, (features, action)

        carry, (features, actions) = self._scan_img(body, start, jax.random.split(key, horizon))
        return Imagination(jnp.concatenate([features_of(start)[None], features]), actions, carry)

    def open_loop(self, start: WorldModelCarry, actions: jax.Array, key) -> jax.Array:
        """Features ``[H, N, F]`` after each of the given actions ``[H, N, A]``, from the prior.

        From ``observe``'s ``carries[t]`` and ``actions[i] = a_{t+i}``, ``features[i]``
        predicts step ``t + 1 + i``. ``key`` None takes prior modes.
        """

        def body(model, carry, inputs):
            action, key = inputs
            carry, features, _ = model.img_step(carry, action, key)
            return carry, features

        keys = None if key is None else jax.random.split(key, actions.shape[0])
        return self._scan_img(body, start, (actions, keys))[1]

    def heads(self, features: jax.Array) -> Heads:
        """Decoder, reward and continue heads on features ``[..., F]``."""
        return Heads(
            self.decoder(features), self.reward_net(features), self.cont_net(features)[..., 0]
        )

    def continue_prob(self, features: jax.Array) -> jax.Array:
        """P(continue) ``[...]`` of features ``[..., F]``: the continue head alone."""
        return jax.nn.sigmoid(self.cont_net(features)[..., 0])

    def predict(self, features: jax.Array) -> Prediction:
        """The heads decoded: observation, reward (two-hot expectation, symexp), P(continue)."""
        heads = self.heads(features)
        bins = symlog_bins(self.config.bins, self.config.bin_limit)
        return Prediction(
            symexp(heads.obs),
            symexp(two_hot_decode(heads.reward_logits, bins)),
            jax.nn.sigmoid(heads.cont_logits),
        )

    def __call__(self, carry, obs, prev_action, is_first, key) -> tuple[Observation, Heads]:
        out = self.observe(carry, obs, prev_action, is_first, key)
        return out, self.heads(out.features)

    def loss(
        self, carry, obs, prev_action, reward, cont, is_first, valid, key
    ) -> tuple[Losses, Observation]:
        """World-model losses averaged over the valid steps (layout in the module docstring).

        decoder: symlog-space squared error summed over observation dims; reward: two-hot
        cross-entropy on symlog(r); cont: Bernoulli cross-entropy, terminal rows weighted
        by ``terminal_weight``; dyn, rep:
        :func:`kl_balance_loss`.
        """
        c = self.config
        out, heads = self(carry, obs, prev_action, is_first, key)
        weight = valid.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(weight), 1.0)

        def mean(x):
            return jnp.sum(x * weight) / count

        bins = symlog_bins(c.bins, c.bin_limit)
        reward_nll = two_hot_nll(heads.reward_logits, reward, bins)
        logit = heads.cont_logits
        # Bernoulli negative log-likelihood from logits: softplus(l) - y * l.
        cont_nll = jax.nn.softplus(logit) - cont * logit
        cont_nll = cont_nll * jnp.where(cont == 0, c.terminal_weight, 1.0)
        kl = kl_balance_loss(
            out.post_logits, out.prior_logits, c.free_nats, c.dyn_scale, c.rep_scale
        )
        parts = (
            mean(jnp.sum((heads.obs - symlog(obs)) ** 2, -1)),
            mean(reward_nll),
            mean(cont_nll),
            mean(kl.dyn),
            mean(kl.rep),
        )
        return Losses(sum(parts), *parts), out
