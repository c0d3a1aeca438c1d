"""Tests for ssmrl.config: the core config hands each core only the options it has."""

from __future__ import annotations

import pytest

from ssmrl.config import CoreConfig


def test_core_config_passes_s5_options_and_drops_them_for_other_cores():
    cfg = CoreConfig(features=8, state_size=4, input_decay=True, dt_min=0.01, dt_max=1.0)
    s5 = cfg.build()
    assert (s5.options.features, s5.options.state_size, s5.options.input_decay) == (8, 4, True)
    assert (s5.options.dt_min, s5.options.dt_max) == (0.01, 1.0)
    gru = CoreConfig(name="gru", features=8, dt_max=1.0).build()
    assert gru.options.features == 8 and not hasattr(gru.options, "dt_max")


def test_core_config_rejects_a_bad_timescale_range():
    with pytest.raises(ValueError, match="dt_min"):
        CoreConfig(dt_min=0.5, dt_max=0.1).build()
