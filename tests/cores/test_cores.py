"""Every memory core against plain NumPy float64 loops, and the contract's invariants."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import textwrap
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmrl.cores as cores
from tests.cores import reference

F, B = 5, 3  # input width differs from the core width on purpose
S5_BASE = dict(features=8, num_layers=2, state_size=8, blocks=2)
LRU_BASE = dict(features=8, num_layers=2, state_size=4)
# The window (5) is shorter than the longest test sequence (64), so it slides.
TRANSFORMER_BASE = dict(features=8, num_layers=2, num_heads=2, head_size=4, window=5, mlp_ratio=2)
CASES = {
    "s5-associative": ("s5", dict(S5_BASE, scan="associative")),
    "s5-sequential": ("s5", dict(S5_BASE, scan="sequential")),
    "s5-variant": (
        "s5",
        dict(
            features=6,
            num_layers=1,
            state_size=6,
            conj_sym=False,
            discretization="bilinear",
            prenorm=False,
            mixing="full_glu",
            clip_eigs=True,
            scan="associative",
        ),
    ),
    "s5-input-decay": ("s5", dict(S5_BASE, input_decay=True, scan="sequential")),
    # One scan mode keeps the suite fast: S5's cases test both, and test_lru.py that the
    # LRU's associative and sequential forms agree.
    "lru": ("lru", dict(LRU_BASE, scan="sequential")),
    "lru-variant": (
        "lru",
        dict(
            LRU_BASE,
            r_min=0.0,
            r_max=1.0,
            max_phase=2 * math.pi,
            prenorm=False,
            mixing="full_glu",
            scan="sequential",
        ),
    ),
    "gru": ("gru", dict(features=8, num_layers=2)),
    "lstm": ("lstm", dict(features=8, num_layers=2)),
    "mlp": ("mlp", dict(features=8, num_layers=2)),
    "transformer": ("transformer", TRANSFORMER_BASE),
}


class Case:
    """A core, its params, and jitted sequence/step calls shared by all tests."""

    def __init__(self, case: str):
        self.name, self.options = CASES[case]
        self.core = cores.make(self.name, **self.options)
        key = jax.random.PRNGKey(0)
        xs, resets = jnp.zeros((2, B, F)), jnp.zeros((2, B), bool)
        self.params = self.core.init(key, self.core.initialize_carry(B), xs, resets)
        self.seq = jax.jit(self.core.apply)
        self.step = jax.jit(partial(self.core.apply, method="step"))
        self.carries = jax.jit(partial(self.core.apply, method="carries"))

    def carry(self, seed: int, batch: int = B):
        """A random non-zero carry of the right structure."""
        zero = self.core.initialize_carry(batch)
        leaves, tree = jax.tree.flatten(zero)
        keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
        new = []
        for k, leaf in zip(keys, leaves, strict=True):
            if leaf.dtype == bool:
                new.append(jax.random.bernoulli(k, 0.7, leaf.shape))
            elif jnp.iscomplexobj(leaf):
                kr, ki = jax.random.split(k)
                z = jax.random.normal(kr, leaf.shape) + 1j * jax.random.normal(ki, leaf.shape)
                new.append((0.5 * z).astype(leaf.dtype))
            else:
                new.append(0.5 * jax.random.normal(k, leaf.shape, leaf.dtype))
        return jax.tree.unflatten(tree, new)

    def reference(self, carry, xs, resets):
        xs, resets = np.asarray(xs, np.float64), np.asarray(resets)
        if self.name in ("s5", "lru", "transformer"):
            cfg = dict(cores.options(self.name), **self.options)
            return getattr(reference, self.name)(self.params, cfg, carry, xs, resets)
        layers = self.options["num_layers"]
        if self.name == "gru":
            return reference.gru(self.params, layers, carry, xs, resets)
        if self.name == "lstm":
            return reference.lstm(self.params, layers, carry, xs, resets)
        return carry, reference.mlp(self.params, layers, xs)


@cache
def get(case: str) -> Case:
    return Case(case)


def data(seed: int, t: int, p_reset: float, batch: int = B):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(t, batch, F)).astype(np.float32)
    resets = rng.random((t, batch)) < p_reset
    return jnp.asarray(xs), jnp.asarray(resets)


def assert_trees_close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if np.asarray(x).dtype == bool:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("t", [1, 2, 7, 64])
@pytest.mark.parametrize("p_reset", [0.0, 0.2, 1.0])
def test_sequence_matches_numpy_reference(case, t, p_reset):
    c = get(case)
    xs, resets = data(t, t, p_reset)
    if p_reset > 0:
        resets = resets.at[0, 0].set(True).at[-1, 1].set(True)
    carry = c.carry(t)
    new_carry, ys = c.seq(c.params, carry, xs, resets)
    ref_carry, ref_ys = c.reference(carry, xs, resets)
    assert ys.shape == (t, B, c.options["features"])
    np.testing.assert_allclose(np.asarray(ys), ref_ys, rtol=2e-4, atol=2e-4)
    assert_trees_close(new_carry, ref_carry, 2e-4)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("t", [1, 2, 7, 64])
def test_step_calls_match_sequence_and_carries(case, t):
    c = get(case)
    xs, resets = data(100 + t, t, 0.2)
    resets = resets.at[0, 0].set(True).at[-1, 1].set(True)
    carry = c.carry(1)
    want_carry, want = c.seq(c.params, carry, xs, resets)
    carries, carries_ys = c.carries(c.params, carry, xs, resets)
    np.testing.assert_allclose(np.asarray(carries_ys), np.asarray(want), rtol=1e-5, atol=1e-5)
    ys = []
    for i in range(t):
        carry, y = c.step(c.params, carry, xs[i], resets[i])
        assert_trees_close(at(carries, i), carry, 1e-5)  # carries[i]: after i + 1 steps
        ys.append(y)
    np.testing.assert_allclose(np.stack(ys), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert_trees_close(carry, want_carry, 1e-5)


def test_associative_equals_sequential():
    assoc, seq = get("s5-associative"), get("s5-sequential")
    for t in (1, 64):
        xs, resets = data(7, t, 0.2)
        carry = assoc.carry(3)
        ca, ya = assoc.seq(assoc.params, carry, xs, resets)
        cs, ys = seq.seq(assoc.params, carry, xs, resets)
        np.testing.assert_allclose(np.asarray(ya), np.asarray(ys), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(ca), np.asarray(cs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_chunked_equals_whole(case):
    c = get(case)
    xs, resets = data(11, 64, 0.1)
    carry = c.carry(2)
    want_carry, want = c.seq(c.params, carry, xs, resets)
    ys = []
    for lo, hi in [(0, 5), (5, 7), (7, 64)]:
        carry, y = c.seq(c.params, carry, xs[lo:hi], resets[lo:hi])
        ys.append(y)
    np.testing.assert_allclose(np.concatenate(ys), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert_trees_close(carry, want_carry, 1e-5)


@pytest.mark.parametrize("case", CASES)
def test_each_batch_row_alone(case):
    c = get(case)
    xs, resets = data(12, 7, 0.3)
    carry = c.carry(4)
    _, want = c.seq(c.params, carry, xs, resets)
    for b in range(B):
        row_carry = jax.tree.map(lambda x, b=b: x[b : b + 1], carry)
        _, y = c.seq(c.params, row_carry, xs[:, b : b + 1], resets[:, b : b + 1])
        np.testing.assert_allclose(np.asarray(y[:, 0]), np.asarray(want[:, b]), atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_reset_isolation(case):
    c = get(case)
    t_reset = 9
    xs, resets = data(13, 64, 0.0)
    resets = resets.at[t_reset].set(True).at[30, 0].set(True)
    carry = c.carry(5)
    _, ys = c.seq(c.params, carry, xs, resets)
    noise = jax.random.normal(jax.random.PRNGKey(1), xs[:t_reset].shape) * 10
    _, ys2 = c.seq(c.params, c.carry(6), xs.at[:t_reset].add(noise), resets)
    assert np.array_equal(np.asarray(ys[t_reset:]), np.asarray(ys2[t_reset:]))

    weights = jax.random.normal(jax.random.PRNGKey(2), ys[t_reset:].shape)

    def later(xs, carry):
        return jnp.sum(c.core.apply(c.params, carry, xs, resets)[1][t_reset:] * weights)

    g_xs, g_carry = jax.jit(jax.grad(later, argnums=(0, 1), allow_int=True))(xs, carry)
    assert np.all(np.asarray(g_xs[:t_reset]) == 0)
    # Boolean leaves (the transformer's `valid`) have no gradient (dtype float0).
    floats = [g for g in jax.tree.leaves(g_carry) if g.dtype != jax.dtypes.float0]
    assert floats and all(np.all(np.asarray(g) == 0) for g in floats)
    assert np.any(np.asarray(g_xs[t_reset:]) != 0)


@pytest.mark.parametrize("case", ["s5-associative", "lru", "gru", "lstm", "transformer"])
def test_carry_matters_without_reset(case):
    c = get(case)
    xs, resets = data(14, 7, 0.0)
    _, ys = c.seq(c.params, c.carry(7), xs, resets)
    _, ys2 = c.seq(c.params, c.carry(8), xs, resets)
    assert np.abs(np.asarray(ys - ys2)).max() > 1e-4


@pytest.mark.parametrize("case", ["s5-associative", "gru"])
def test_jit_matches_eager(case):
    c = get(case)
    xs, resets = data(15, 7, 0.3)
    carry = c.carry(9)
    eager = c.core.apply(c.params, carry, xs, resets)
    assert_trees_close(eager, c.seq(c.params, carry, xs, resets), 1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=12 * B, max_size=12 * B), st.integers(0, 1000))
def test_s5_random_reset_patterns(flags, seed):
    c = get("s5-associative")
    xs, _ = data(seed, 12, 0.0)
    resets = jnp.asarray(np.array(flags).reshape(12, B))
    carry = c.carry(seed)
    new_carry, ys = c.seq(c.params, carry, xs, resets)
    ref_carry, ref_ys = c.reference(carry, xs, resets)
    np.testing.assert_allclose(np.asarray(ys), ref_ys, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(new_carry), ref_carry, rtol=2e-4, atol=2e-4)


def test_unknown_names_and_options():
    assert cores.names() == ["gru", "lru", "lstm", "mlp", "s5", "transformer"]
    allowed = "allowed: \\['gru', 'lru', 'lstm', 'mlp', 's5', 'transformer'\\]"
    with pytest.raises(ValueError, match=allowed):
        cores.make("mamba")
    with pytest.raises(ValueError, match="state_size"):
        cores.make("s5", state_sise=64)
    with pytest.raises(ValueError, match="blocks=3 must divide state_size=64"):
        cores.make("s5", state_size=64, blocks=3)
    with pytest.raises(ValueError, match="even"):
        cores.make("s5", state_size=6, blocks=2)
    with pytest.raises(ValueError, match="scan must be one of"):
        cores.make("s5", scan="parallel")
    with pytest.raises(ValueError, match="discretization"):
        cores.make("s5", discretization="euler")


def at(tree, t: int):
    """Index every leaf of a pytree at time ``t``."""
    return jax.tree.map(lambda x: x[t], tree)


@pytest.mark.parametrize("case", CASES)
def test_carries_shape_and_structure(case):
    c = get(case)
    xs, resets = data(220, 7, 0.3)
    carry = c.core.initialize_carry(B)
    carries, ys = c.carries(c.params, carry, xs, resets)
    assert jax.tree.structure(carries) == jax.tree.structure(carry)
    for seq, one in zip(jax.tree.leaves(carries), jax.tree.leaves(carry), strict=True):
        assert seq.shape == (7, *one.shape) and seq.dtype == one.dtype
    assert ys.shape == (7, B, c.options["features"])
    layers = c.options["num_layers"]
    if c.name == "s5":
        p = c.options["state_size"] // (2 if c.options.get("conj_sym", True) else 1)
        assert carries.shape == (7, B, layers, p) and carries.dtype == jnp.complex64
    elif c.name == "lru":
        p = c.options["state_size"]
        assert carries.shape == (7, B, layers, p) and carries.dtype == jnp.complex64
    elif c.name == "lstm":
        assert isinstance(carries, cores.LSTMCarry)
        assert carries.cell.shape == carries.hidden.shape == (7, B, layers, 8)
    elif c.name == "gru":
        assert carries.shape == (7, B, layers, 8)
    elif c.name == "transformer":
        o = c.options
        assert isinstance(carries, cores.TransformerCarry)
        kv = (7, B, layers, o["window"], o["num_heads"], o["head_size"])
        assert carries.keys.shape == carries.values.shape == kv
        assert carries.keys.dtype == jnp.float32 and carries.valid.dtype == bool
        assert carries.valid.shape == (7, B, o["window"])
    else:
        assert carries.shape == (7, B, 0)


def _s5_layer_paths(i: int, *extra: str) -> set[str]:
    names = ["B", "C", "D", "lambda_im", "lambda_re", "log_step"]
    names += ["mix_gate/bias", "mix_gate/kernel", "norm/bias", "norm/scale"]
    names += [f"{e}/{k}" for e in extra for k in ("bias", "kernel")]
    return {f"layers_{i}/{n}" for n in names}


def _lru_layer_paths(i: int, *extra: str) -> set[str]:
    names = ["B_im", "B_re", "C_im", "C_re", "D", "gamma_log", "nu_log", "theta_log"]
    names += ["mix_gate/bias", "mix_gate/kernel", "norm/bias", "norm/scale"]
    names += [f"{e}/{k}" for e in extra for k in ("bias", "kernel")]
    return {f"layers_{i}/{n}" for n in names}


def _transformer_layer_paths(i: int) -> set[str]:
    names = ["attention_norm/bias", "attention_norm/scale", "mlp_norm/bias", "mlp_norm/scale"]
    names += [
        f"{d}/{k}" for d in ("qkv", "out", "mlp_hidden", "mlp_out") for k in ("bias", "kernel")
    ]
    return {f"layers_{i}/{n}" for n in names}


ENCODER = {"encoder/bias", "encoder/kernel"}
FINAL_NORM = {"norm/bias", "norm/scale"}
PARAM_PATHS = {
    "s5-associative": ENCODER | _s5_layer_paths(0) | _s5_layer_paths(1),
    "s5-sequential": ENCODER | _s5_layer_paths(0) | _s5_layer_paths(1),
    "s5-variant": ENCODER | _s5_layer_paths(0, "mix_value"),
    "s5-input-decay": ENCODER | _s5_layer_paths(0, "decay") | _s5_layer_paths(1, "decay"),
    "lru": ENCODER | _lru_layer_paths(0) | _lru_layer_paths(1),
    "lru-variant": ENCODER | _lru_layer_paths(0, "mix_value") | _lru_layer_paths(1, "mix_value"),
    "gru": {f"layer{i}_{k}" for i in (0, 1) for k in ("wi", "wh", "b", "bhn")},
    "lstm": {f"layer{i}_{k}" for i in (0, 1) for k in ("wi", "wh", "b")},
    "mlp": {f"Dense_{i}/{k}" for i in (0, 1) for k in ("bias", "kernel")},
    "transformer": ENCODER | FINAL_NORM | _transformer_layer_paths(0) | _transformer_layer_paths(1),
}


@pytest.mark.parametrize("case", CASES)
def test_param_tree_is_unchanged(case):
    """Checkpoints and `reference` read params by these names."""
    c = get(case)
    paths = {
        "/".join(k.key for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(c.params["params"])[0]
    }
    assert paths == PARAM_PATHS[case]
    assert set(c.params) == {"params"}
    if c.name == "s5":
        layer = c.params["params"]["layers_0"]
        p = c.options["state_size"] // (2 if c.options.get("conj_sym", True) else 1)
        assert layer["lambda_re"].shape == (p,)
        assert layer["B"].shape == (p, c.options["features"], 2)
        assert c.params["params"]["encoder"]["kernel"].shape == (F, c.options["features"])
    if c.name == "lru":
        layer = c.params["params"]["layers_0"]
        n, h = c.options["state_size"], c.options["features"]
        assert layer["nu_log"].shape == layer["theta_log"].shape == layer["gamma_log"].shape == (n,)
        assert layer["B_re"].shape == layer["B_im"].shape == (n, h)
        assert layer["C_re"].shape == layer["C_im"].shape == (h, n)
    if c.name == "transformer":
        layer, o = c.params["params"]["layers_0"], c.options
        width = o["num_heads"] * o["head_size"]
        assert layer["qkv"]["kernel"].shape == (o["features"], 3 * width)
        assert layer["out"]["kernel"].shape == (width, o["features"])
        hidden = o.get("mlp_ratio", 4) * o["features"]
        assert layer["mlp_hidden"]["kernel"].shape == (o["features"], hidden)


DEFAULTS = {
    "s5": dict(
        features=128,
        num_layers=2,
        state_size=128,
        blocks=1,
        conj_sym=True,
        discretization="zoh",
        dt_min=0.001,
        dt_max=0.1,
        clip_eigs=False,
        prenorm=True,
        mixing="half_glu",
        scan="auto",
        input_decay=False,
    ),
    "lru": dict(
        features=128,
        num_layers=2,
        state_size=64,
        r_min=0.0,
        r_max=1.0,
        max_phase=2 * math.pi,
        prenorm=True,
        mixing="half_glu",
        scan="auto",
    ),
    "gru": dict(features=128, num_layers=1, chrono_steps=0),
    "lstm": dict(features=128, num_layers=1),
    "mlp": dict(features=128, num_layers=2),
    "transformer": dict(
        features=128,
        num_layers=2,
        num_heads=4,
        head_size=32,
        window=64,
        mlp_ratio=4,
        rotary_base=10000.0,
    ),
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_registry_round_trip(name):
    cls = cores.options_class(name)
    assert cores.options(name) == DEFAULTS[name]
    assert cores.name_of(cls()) == name
    small = cls(features=4)
    core = cores.build(small)
    assert core.options == small and core == cores.make(name, features=4)
    assert type(core) is type(cores.make(name))
    assert cores.make(name).options == cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.features = 8


def test_registry_lookups_fail_by_name():
    assert cores.names() == sorted(DEFAULTS)
    allowed = "allowed: \\['gru', 'lru', 'lstm', 'mlp', 's5', 'transformer'\\]"
    with pytest.raises(ValueError, match=allowed):
        cores.options_class("mamba")
    with pytest.raises(ValueError, match="S5Options"):
        cores.name_of(dict(features=8))
    with pytest.raises(ValueError, match="already registered"):
        cores.register("s5", cores.S5, cores.S5Options)


def test_gru_chrono_init_spreads_the_update_gate_memory():
    """Update-gate biases log(U[1, T - 1]) give keep fractions u / (1 + u), memories of
    2 to T steps; the other gates' biases stay zero and the cell is the reference's."""
    steps, width = 200, 128
    core = cores.make("gru", features=width, num_layers=2, chrono_steps=steps)
    xs, resets = data(0, 7, 0.2)
    params = jax.jit(core.init)(jax.random.PRNGKey(1), core.initialize_carry(B), xs, resets)
    for i in range(2):
        r, z, n = np.split(np.asarray(params["params"][f"layer{i}_b"]), 3)
        assert not r.any() and not n.any()
        memory = 1 / (1 - 1 / (1 + np.exp(-z)))  # 1 / (fraction forgotten per step)
        assert memory.min() >= 2 - 1e-4 and memory.max() <= steps + 1e-3
        # Uniform on [2, T]: a quarter of the units below the first quartile.
        assert abs(np.mean(memory < 2 + (steps - 2) / 4) - 0.25) < 0.1
    assert not np.asarray(get("gru").params["params"]["layer0_b"]).any()  # chrono_steps=0
    carry = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (B, 2, width))
    got = jax.jit(core.apply)(params, carry, xs, resets)
    want = reference.gru(params, 2, carry, np.asarray(xs, np.float64), np.asarray(resets))
    assert_trees_close(got, want, 1e-4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (cores.S5Options(scan="parallel"), "scan must be one of \\('associative'"),
        (cores.S5Options(mixing="glu"), "mixing must be one of"),
        (cores.S5Options(discretization="euler"), "discretization must be one of"),
        (cores.S5Options(features=0), "features must be >= 1"),
        (cores.S5Options(dt_min=0.5, dt_max=0.1), "dt_min <= dt_max"),
        (cores.S5Options(state_size=64, blocks=3), "blocks=3 must divide state_size=64"),
        (cores.S5Options(state_size=6, blocks=2), "even blocks"),
        (cores.GRUOptions(num_layers=0), "num_layers must be >= 1"),
        (cores.GRUOptions(chrono_steps=1), "chrono_steps must be 0 or >= 2"),
        (cores.LSTMOptions(features=0), "features must be >= 1"),
        (cores.MLPOptions(num_layers=0), "num_layers must be >= 1"),
    ],
)
def test_validate_and_build_reject_bad_options(options, match):
    with pytest.raises(ValueError, match=match) as err:
        options.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        cores.build(options)
    cores.build(dataclasses.replace(options, **cores.options(cores.name_of(options))))


def field_docstrings(cls) -> dict[str, str]:
    """The string literal right under each annotated field of a dataclass's source, the
    nearest class in the MRO that documents the field winning."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        docs |= {
            a.target.id: b.value.value
            for a, b in zip(body, body[1:], strict=False)
            if isinstance(a, ast.AnnAssign)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
        }
    return docs


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_option_is_documented_in_help(name, capsys):
    cls = cores.options_class(name)
    docs = field_docstrings(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    with pytest.raises(SystemExit):
        tyro.cli(cls, args=["--help"])
    shown = re.sub(r"[\s│]", "", capsys.readouterr().out)
    for field_name, doc in docs.items():
        if field_name != "name":  # chosen by --core NAME, not a flag of its own
            assert re.sub(r"\s", "", doc) in shown
