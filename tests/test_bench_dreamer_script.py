"""Tests for scripts/bench_dreamer.py: equal parameter counts and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from ssmrl import cores
from ssmrl.worldmodel import WorldModel, WorldModelConfig

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_dreamer.py"
_spec = importlib.util.spec_from_file_location("bench_dreamer", _SCRIPT)
bench_dreamer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_dreamer)

_S5 = WorldModelConfig(
    core=cores.S5Options(features=64, num_layers=1, state_size=32),
    latents=16,
    classes=16,
    hidden=128,
    depth=2,
)


def _count(config: WorldModelConfig, obs_dim: int = 4, act_dim: int = 2) -> int:
    """Parameters of the world model, from the shapes ``init`` would create."""
    model = WorldModel(config, obs_dim=obs_dim)
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(
        model.init,
        key,
        model.initialize_carry(2),
        jnp.zeros((3, 2, obs_dim)),
        jnp.zeros((3, 2, act_dim)),
        jnp.zeros((3, 2), bool),
        key,
    )
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def test_every_other_core_matches_the_s5_parameter_count_within_ten_percent():
    target = _count(_S5)
    others = ("lru", "gru", "lstm", "transformer", "mlp")
    assert set(bench_dreamer.VARIANTS) == {"s5-associative", "s5-sequential", *others}
    matched = bench_dreamer.matched_options(_S5, obs_dim=4, act_dim=2, variants=others)
    assert sorted(matched) == sorted(others)
    for name in others:
        assert isinstance(matched[name].config.core, cores.options_class(name))
    for variant in matched.values():
        count = _count(variant.config)
        assert count == variant.params
        assert abs(count - target) <= 0.1 * target, (variant.name, count, target)
        # The rest of the world model is the S5 one's; only the backbone width moved.
        assert variant.config.hidden == _S5.hidden and variant.config.latents == _S5.latents
        assert variant.config.core.num_layers == 1
        assert variant.config.core.features != _S5.core.features


def test_an_impossible_match_is_a_one_line_error():
    # A GRU of width 8 or 9 leaves the world model about 15% below the S5 one.
    with pytest.raises(ValueError, match="gru: no width in 8..9") as err:
        bench_dreamer.matched_options(_S5, variants=("gru",), widths=(8, 9))
    assert "\n" not in str(err.value)


def test_a_tiny_benchmark_run_gives_finite_positive_throughputs():
    # A small world model keeps compilation short; the code path is the benchmark's.
    config = WorldModelConfig(
        core=cores.MLPOptions(features=16, num_layers=1),
        latents=4,
        classes=4,
        hidden=32,
        depth=1,
        bins=16,
    )
    variant = bench_dreamer.Variant("mlp", config, _count(config))
    result = bench_dreamer.bench_variant(
        variant, lengths=(8,), batch=2, repeats=1, horizon=3, key=jax.random.PRNGKey(0)
    )
    assert [t.length for t in result.train] == [8]
    train = result.train[0]
    assert math.isfinite(train.sequences_per_s) and train.sequences_per_s > 0
    assert train.compile_s > 0
    assert result.imagine.starts == 16 and result.imagine.horizon == 3
    assert math.isfinite(result.imagine.steps_per_s) and result.imagine.steps_per_s > 0
    records = bench_dreamer.rows([result])
    assert records[0]["imagined_steps_per_s"] == result.imagine.steps_per_s
    assert "| mlp |" in bench_dreamer.markdown_table(records)
