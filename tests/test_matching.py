"""World-model parameter counts and width matching across backbones."""

from __future__ import annotations

import dataclasses

import pytest

from ssmrl import cores
from ssmrl.matching import matched_width, param_count, with_core
from ssmrl.worldmodel import WorldModelConfig

S5 = WorldModelConfig(
    core=cores.S5Options(features=16, num_layers=1, state_size=8),
    latents=4,
    classes=4,
    hidden=16,
    depth=1,
)


def test_param_count_grows_with_the_width_and_counts_every_leaf():
    small = param_count(with_core(S5, "mlp", features=8), 6, 3)
    large = param_count(with_core(S5, "mlp", features=9), 6, 3)
    # One more backbone feature adds a row to the prior's and heads' first layers, and
    # more to the MLP core itself: the count grows strictly.
    assert large > small > 0


@pytest.mark.parametrize("name", ["gru", "lstm", "mlp"])
def test_matched_width_is_the_closest_width(name):
    target = param_count(S5, 6, 3)
    chosen, count = matched_width(S5, name, 6, 3)
    width = chosen.core.features
    assert cores.name_of(chosen.core) == name and count == param_count(chosen, 6, 3)
    assert abs(count - target) <= 0.1 * target
    for other in (width - 1, width + 1):
        neighbour = param_count(with_core(S5, name, features=other), 6, 3)
        assert abs(count - target) <= abs(neighbour - target)
    assert chosen.latents == S5.latents and chosen.hidden == S5.hidden  # the rest is kept


def test_matched_width_refuses_a_size_out_of_reach():
    with pytest.raises(ValueError, match="no width in 4..5"):
        matched_width(S5, "gru", 6, 3, widths=(4, 5))


def test_matched_width_gives_a_transformer_of_any_width():
    """The transformer's heads (num_heads x head_size) are options of their own, so every
    width is a valid transformer and the bisection may stop at an odd one."""
    reference = dataclasses.replace(
        S5, core=cores.S5Options(features=48, num_layers=1, state_size=32)
    )
    target = param_count(reference, 6, 3)
    chosen, count = matched_width(reference, "transformer", 6, 3)
    width = chosen.core.features
    assert cores.name_of(chosen.core) == "transformer" and abs(count - target) <= 0.1 * target
    assert (
        chosen.core.num_layers == 1
        and chosen.core.num_heads == cores.TransformerOptions().num_heads
    )
    for other in (width - 1, width + 1):
        neighbour = param_count(with_core(reference, "transformer", features=other), 6, 3)
        assert abs(count - target) <= abs(neighbour - target)


def test_matched_width_keeps_the_options_it_is_given():
    """An option that changes the size (the LRU's state) is matched with it set."""
    plain, _ = matched_width(S5, "lru", 6, 3)
    chosen, count = matched_width(S5, "lru", 6, 3, options={"state_size": 4})
    assert chosen.core.state_size == 4 and count == param_count(chosen, 6, 3)
    assert chosen.core.features > plain.core.features  # less state, so wider
    gru, _ = matched_width(S5, "gru", 6, 3, options={"chrono_steps": 64})
    assert gru.core.chrono_steps == 64
