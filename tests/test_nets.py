"""ssmrl.nets: shapes, distributions against float64 hand computations, init, PPO's old heads."""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from ssmrl.linalg import orthogonal_init
from ssmrl.nets import MLP, PolicyHead, ValueHead

F = 7
KEY = jax.random.PRNGKey(0)


def features(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (*shape, F))


def shapes(params):
    return jax.tree.map(jnp.shape, params)


def f64(x):
    return np.asarray(x, np.float64)


def dense(p, x):
    return x @ f64(p["kernel"]) + f64(p["bias"])


def gelu(x):  # flax's default nn.gelu is the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("batch", [(5,), (3, 5)])
def test_output_shapes_for_any_leading_batch(batch):
    x = features(batch)
    mlp = MLP((16, 8), out=4)
    assert mlp.apply(mlp.init(KEY, x), x).shape == (*batch, 4)
    features_only = MLP((16, 8))
    assert features_only.apply(features_only.init(KEY, x), x).shape == (*batch, 8)
    value = ValueHead(hidden=(16,))
    assert value.apply(value.init(KEY, x), x).shape == batch

    discrete = PolicyHead.from_space(spaces.Discrete(3), hidden=(16,))
    pi = discrete.apply(discrete.init(KEY, x), x)
    assert isinstance(pi, distrax.Categorical)
    assert pi.batch_shape == batch and pi.logits.shape == (*batch, 3)
    sample = pi.sample(seed=KEY)
    assert sample.shape == batch and jnp.issubdtype(sample.dtype, jnp.integer)
    assert pi.log_prob(sample).shape == batch and pi.entropy().shape == batch

    continuous = PolicyHead.from_space(spaces.Box(-1.0, 1.0, (2,)), hidden=(16,))
    pi = continuous.apply(continuous.init(KEY, x), x)
    assert isinstance(pi, distrax.MultivariateNormalDiag)
    assert pi.batch_shape == batch and pi.event_shape == (2,)
    sample = pi.sample(seed=KEY)
    assert sample.shape == (*batch, 2)
    assert pi.log_prob(sample).shape == batch and pi.entropy().shape == batch


def test_time_batch_equals_flat_batch():
    x = features((4, 6))
    for module in (
        MLP((16,), out=3, layer_norm=True),
        ValueHead(hidden=(16, 16)),
        PolicyHead(3, hidden=(16,)),
    ):
        params = module.init(KEY, x)
        method = "outputs" if isinstance(module, PolicyHead) else None
        whole = module.apply(params, x, method=method)
        flat = module.apply(params, x.reshape(24, F), method=method).reshape(whole.shape)
        np.testing.assert_allclose(whole, flat, rtol=1e-6, atol=1e-6)


def test_categorical_logits_and_probabilities_by_hand():
    x = features((5,), seed=1)
    head = PolicyHead(4, hidden=(16,), out_scale=1.0)
    params = head.init(KEY, x)
    p = params["params"]
    logits = dense(p["layers_2"], gelu(dense(p["layers_0"], f64(x))))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        head.apply(params, x, method="outputs"), logits, rtol=1e-5, atol=1e-5
    )
    pi = head.apply(params, x)
    # distrax keeps the logits normalised (log-softmax).
    np.testing.assert_allclose(pi.logits, np.log(probs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pi.probs, probs, rtol=1e-5, atol=1e-6)
    actions = jnp.array([0, 1, 2, 3, 1])
    np.testing.assert_allclose(
        pi.log_prob(actions), np.log(probs[np.arange(5), actions]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(pi.entropy(), -(probs * np.log(probs)).sum(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pi.mode(), probs.argmax(-1))


def test_gaussian_mean_std_and_log_prob_by_hand():
    x = features((2, 5), seed=2)
    head = PolicyHead.from_space(spaces.Box(-2.0, 2.0, (3,)), hidden=(16,), out_scale=1.0)
    params = head.init(KEY, x)
    assert head.continuous and head.action_dim == 3
    np.testing.assert_array_equal(params["params"]["log_std"], np.zeros(3))  # std 1 at init
    log_std = np.array([-0.5, 0.0, 0.7])
    params = jax.tree.map(lambda a: a, params)
    params["params"]["log_std"] = jnp.asarray(log_std, jnp.float32)
    p = params["params"]
    mean = dense(p["layers_2"], gelu(dense(p["layers_0"], f64(x))))
    std = np.exp(log_std)

    pi = head.apply(params, x)
    np.testing.assert_allclose(pi.mean(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pi.stddev(), np.broadcast_to(std, mean.shape), rtol=1e-6)
    np.testing.assert_allclose(pi.mode(), mean, rtol=1e-5, atol=1e-5)
    actions = np.random.default_rng(0).normal(size=(2, 5, 3))
    z = (actions - mean) / std
    log_prob = (-0.5 * z**2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(pi.log_prob(jnp.asarray(actions, jnp.float32)), log_prob, rtol=1e-5)
    entropy = (0.5 * np.log(2 * np.pi * np.e) + log_std).sum()
    np.testing.assert_allclose(pi.entropy(), np.full((2, 5), entropy), rtol=1e-5)
    # The std is state-independent: the same for every input.
    other = head.apply(params, features((2, 5), seed=3))
    np.testing.assert_array_equal(other.stddev(), pi.stddev())


def test_value_head_by_hand():
    x = features((3, 4), seed=4)
    head = ValueHead(hidden=(16,))
    params = head.init(KEY, x)
    p = params["params"]
    expected = dense(p["layers_2"], gelu(dense(p["layers_0"], f64(x))))[..., 0]
    np.testing.assert_allclose(head.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0])
def test_output_kernel_is_orthogonal_with_the_given_scale(scale):
    x = features((5,))
    params = MLP((32,), out=4, out_scale=scale).init(KEY, x)["params"]
    kernel = f64(params["layers_2"]["kernel"])  # [32, 4]: orthonormal columns times scale
    np.testing.assert_allclose(kernel.T @ kernel, scale**2 * np.eye(4), atol=1e-5 * scale**2)
    np.testing.assert_array_equal(params["layers_2"]["bias"], np.zeros(4))


def test_policy_out_scale_gives_small_logits_and_a_near_uniform_policy():
    x = features((64,), seed=5)
    small = PolicyHead(6)  # default out_scale 0.01
    big = PolicyHead(6, out_scale=1.0)
    small_logits = small.apply(small.init(KEY, x), x, method="outputs")
    big_logits = big.apply(big.init(KEY, x), x, method="outputs")
    # Same hidden layer (same key and path), output kernel scaled by 0.01.
    np.testing.assert_allclose(small_logits, 0.01 * big_logits, rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(big_logits).max()) > 0.3
    assert float(jnp.abs(small_logits).max()) < 0.1
    probs = small.apply(small.init(KEY, x), x).probs
    np.testing.assert_allclose(probs, np.full((64, 6), 1 / 6), atol=0.02)
    # A zero scale gives a zero output layer (DreamerV3's critic and reward heads start there).
    zero = ValueHead(out_scale=0.0)
    np.testing.assert_array_equal(zero.apply(zero.init(KEY, x), x), np.zeros(64))


def test_layer_norm_changes_the_params_tree_and_normalises():
    x = features((5,))
    plain = MLP((16, 8), out=3)
    normed = MLP((16, 8), out=3, layer_norm=True, activation=nn.silu)
    assert shapes(plain.init(KEY, x)) == {
        "params": {
            "layers_0": {"kernel": (F, 16), "bias": (16,)},
            "layers_2": {"kernel": (16, 8), "bias": (8,)},
            "layers_4": {"kernel": (8, 3), "bias": (3,)},
        }
    }
    params = normed.init(KEY, x)
    assert shapes(params) == {
        "params": {
            "layers_0": {"kernel": (F, 16), "bias": (16,)},
            "layers_1": {"scale": (16,), "bias": (16,)},
            "layers_3": {"kernel": (16, 8), "bias": (8,)},
            "layers_4": {"scale": (8,), "bias": (8,)},
            "layers_6": {"kernel": (8, 3), "bias": (3,)},
        }
    }
    # Dense -> LayerNorm -> SiLU per layer, by hand in float64.
    p = params["params"]

    def block(h, d, n):
        h = dense(p[d], h)
        h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
        h = h * f64(p[n]["scale"]) + f64(p[n]["bias"])
        return h / (1 + np.exp(-h))

    h = block(block(f64(x), "layers_0", "layers_1"), "layers_3", "layers_4")
    np.testing.assert_allclose(normed.apply(params, x), dense(p["layers_6"], h), atol=1e-4)
    # The policy and value heads take the option too.
    assert set(PolicyHead(2, layer_norm=True).init(KEY, x)["params"]) == {
        "layers_0",
        "layers_1",
        "layers_3",
    }
    assert set(ValueHead(layer_norm=True).init(KEY, x)["params"]) == {
        "layers_0",
        "layers_1",
        "layers_3",
    }


def test_from_space_rejects_other_spaces():
    with pytest.raises(ValueError, match="1-D Box"):
        PolicyHead.from_space(spaces.Box(-1.0, 1.0, (2, 2)))
    with pytest.raises(ValueError, match="Dict"):
        PolicyHead.from_space(spaces.Dict({"a": spaces.Discrete(2)}))
    head = PolicyHead.from_space(spaces.Discrete(5), hidden=(8,), name="policy")
    assert (head.action_dim, head.continuous, tuple(head.hidden)) == (5, False, (8,))


class _OldHeads(nn.Module):
    """PPO's ActorCritic heads as they were before ssmrl.nets (nn.Sequential, top-level log_std)."""

    action_dim: int
    continuous: bool
    head_width: int = 64

    def setup(self):
        def head(out, scale):
            return nn.Sequential(
                [
                    nn.Dense(self.head_width),
                    nn.gelu,
                    nn.Dense(out, kernel_init=orthogonal_init(scale)),
                ]
            )

        self.policy = head(self.action_dim, 0.01)
        self.value = head(1, 1.0)
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))

    def __call__(self, h):
        return self.policy(h), self.value(h)[..., 0]

    def distribution(self, dist_params):
        if self.continuous:
            return distrax.MultivariateNormalDiag(dist_params, jnp.exp(self.log_std))
        return distrax.Categorical(logits=dist_params)


class _NewHeads(nn.Module):
    action_space: spaces.Discrete | spaces.Box
    head_width: int = 64

    def setup(self):
        self.policy = PolicyHead.from_space(self.action_space, hidden=(self.head_width,))
        self.value = ValueHead(hidden=(self.head_width,))

    def __call__(self, h):
        return self.policy.outputs(h), self.value(h)

    def distribution(self, dist_params):
        return self.policy.distribution(dist_params)


@pytest.mark.parametrize("space", [spaces.Discrete(4), spaces.Box(-1.0, 1.0, (2,))])
def test_reproduces_ppos_previous_heads_exactly(space):
    x = features((3, 5), seed=6)
    continuous = isinstance(space, spaces.Box)
    old = _OldHeads(2 if continuous else 4, continuous)
    new = _NewHeads(space)
    old_params, new_params = old.init(KEY, x), new.init(KEY, x)
    # Same paths for every Dense layer, hence the same initial values from the same key;
    # only log_std moves from the top level into the policy head.
    old_p, new_p = old_params["params"], dict(new_params["params"])
    if continuous:
        new_p["policy"] = dict(new_p["policy"])
        np.testing.assert_array_equal(new_p["policy"].pop("log_std"), old_p["log_std"])
        old_p = {k: v for k, v in old_p.items() if k != "log_std"}
    jax.tree.map(np.testing.assert_array_equal, old_p, new_p)
    (old_out, old_v), (new_out, new_v) = old.apply(old_params, x), new.apply(new_params, x)
    np.testing.assert_array_equal(new_out, old_out)
    np.testing.assert_array_equal(new_v, old_v)
    old_pi = old.apply(old_params, old_out, method="distribution")
    new_pi = new.apply(new_params, new_out, method="distribution")
    sample = old_pi.sample(seed=KEY)
    np.testing.assert_array_equal(new_pi.sample(seed=KEY), sample)
    np.testing.assert_array_equal(new_pi.log_prob(sample), old_pi.log_prob(sample))
    np.testing.assert_array_equal(new_pi.entropy(), old_pi.entropy())


def test_jit_vmap_and_gradients_reach_log_std():
    x = features((4, 3))
    head = PolicyHead(2, continuous=True, hidden=(8,))
    keys = jax.random.split(KEY, 3)
    params = jax.jit(jax.vmap(head.init, in_axes=(0, None)))(keys, x)
    assert params["params"]["layers_0"]["kernel"].shape == (3, F, 8)
    actions = jnp.zeros((4, 3, 2))

    def loss(p):
        return -head.apply(p, x).log_prob(actions).mean()

    grads = jax.jit(jax.vmap(jax.grad(loss)))(params)
    assert grads["params"]["log_std"].shape == (3, 2)
    assert float(jnp.abs(grads["params"]["log_std"]).sum()) > 0
