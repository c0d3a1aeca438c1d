"""ssmrl.actions: env actions to and from the float vectors of a world model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from ssmrl.actions import ActionCodec, obs_size


def test_discrete_actions_are_one_hot_classes():
    codec = ActionCodec.of(spaces.Discrete(3))
    assert (codec.size, codec.discrete) == (3, True)
    vectors = codec.encode(jnp.asarray([[2, 0]]))
    np.testing.assert_array_equal(vectors, [[[0, 0, 1], [1, 0, 0]]])
    assert vectors.dtype == jnp.float32
    np.testing.assert_array_equal(codec.decode(jnp.asarray([[0.1, 0.7, 0.2]])), [1])
    assert codec.to_env(jnp.asarray([1.0, 2.0])).dtype == jnp.int32


def test_box_actions_are_their_own_vectors_clipped_for_the_env():
    codec = ActionCodec.of(spaces.Box(-1.0, 2.0, (2,)))
    assert (codec.size, codec.discrete) == (2, False)
    action = jnp.asarray([[-3, 5]])
    np.testing.assert_array_equal(codec.encode(action), [[-3.0, 5.0]])
    np.testing.assert_array_equal(codec.decode(codec.encode(action)), [[-3.0, 5.0]])
    np.testing.assert_array_equal(codec.to_env(jnp.asarray([[-3.0, 0.5]])), [[-1.0, 0.5]])


def test_other_spaces_are_refused_in_one_line_and_obs_size_flattens():
    with pytest.raises(ValueError, match="Discrete or a 1-D Box space, got Box of shape") as err:
        ActionCodec.of(spaces.Box(0.0, 1.0, (2, 2)))
    assert "\n" not in str(err.value)

    class Env:
        def observation_space(self, params):
            return spaces.Box(0.0, 1.0, (3, 4))

    assert obs_size(Env(), None) == 12
