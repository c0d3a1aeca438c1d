"""The on-device replay buffer against a plain NumPy record of every step written."""

from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import replay
from ssmrl.checkpoint import Checkpointer
from ssmrl.replay import ReplayConfig

E, C, T, B = 3, 8, 4, 64
CFG = ReplayConfig(capacity=C, sequence_length=T, batch_size=B, train_ratio=32.0)


class Step(NamedTuple):
    obs: jax.Array  # [E, 2]: (env, time) of the step, so every step is recognisable
    action: jax.Array  # [E] int32
    reward: jax.Array  # [E]
    cont: jax.Array  # [E]
    is_first: jax.Array  # [E] bool


EXAMPLE = Step(
    obs=jnp.zeros(2),
    action=jnp.zeros((), jnp.int32),
    reward=jnp.zeros(()),
    cont=jnp.zeros(()),
    is_first=jnp.zeros((), bool),
)


def make_step(t: int, offset: float = 0.0) -> Step:
    """Step t of every env, all fields derived from (env, t); episodes start every 3 steps
    in env 0, every 2 in env 1, never after the first in env 2."""
    envs = np.arange(E)
    first = np.array([t % 3 == 0, t % 2 == 0, t == 0])
    return Step(
        obs=jnp.asarray(np.stack([envs, np.full(E, t)], -1) + offset, jnp.float32),
        action=jnp.asarray(envs * 100 + t, jnp.int32),
        reward=jnp.asarray(envs + 0.5 * t, jnp.float32),
        cont=jnp.asarray(1.0 - (t % 5 == 4), jnp.float32) * jnp.ones(E),
        is_first=jnp.asarray(first),
    )


def reference(steps: list[Step]) -> dict[str, np.ndarray]:
    """Every field of every step written, as NumPy arrays [E, n, ...]."""
    return {
        name: np.stack([np.asarray(getattr(s, name)) for s in steps], axis=1)
        for name in Step._fields
    }


init = jax.jit(replay.init, static_argnums=(0, 2))
add = jax.jit(replay.add)
sample = jax.jit(replay.sample)
size = jax.jit(replay.size)
can_sample = jax.jit(replay.can_sample)


def filled(n: int, offset: float = 0.0) -> tuple[replay.ReplayState, list[Step]]:
    state = init(CFG, EXAMPLE, E)
    steps = [make_step(t, offset) for t in range(n)]
    for step in steps:
        state = add(state, step)
    return state, steps


def check_sequences(batch: Step, valid: np.ndarray, ref: dict, first_kept: int) -> set:
    """Every valid sequence is T consecutive written steps of one env, equal to the record;
    returns the (env, start) pairs seen. ``first_kept``: the oldest step still stored."""
    obs = np.asarray(batch.obs)
    n = ref["obs"].shape[1]
    seen = set()
    for b in range(B):
        env, start = int(obs[0, b, 0]), int(obs[0, b, 1])
        length = int(valid[:, b].sum())
        assert valid[:length, b].all() and not valid[length:, b].any()
        assert first_kept <= start and start + length <= n
        ts = np.arange(start, start + length)
        for name in Step._fields:
            got = np.asarray(getattr(batch, name))[:length, b]
            want = ref[name][env, ts]
            if name == "is_first":
                assert got[0], "a sampled sequence starts with fresh memory"
                got, want = got[1:], want[1:]
            np.testing.assert_array_equal(got, want, err_msg=name)
        seen.add((env, start))
    return seen


def test_sampled_sequences_are_written_steps_of_one_env():
    state, steps = filled(6)
    ref = reference(steps)
    assert int(size(state)) == 6 and bool(can_sample(state))
    seen = set()
    for i in range(3):
        batch, valid = sample(state, jax.random.key(i))
        assert batch.obs.shape == (T, B, 2) and batch.action.shape == (T, B)
        assert batch.action.dtype == jnp.int32 and valid.shape == (T, B)
        assert np.asarray(valid).all()
        seen |= check_sequences(batch, np.asarray(valid), ref, first_kept=0)
    # uniform over the stored (env, start) pairs: all 3 x 3 of them turn up
    assert seen == {(e, s) for e in range(E) for s in range(6 - T + 1)}


def test_inner_episode_starts_are_kept_and_stored_flags_unchanged():
    state, steps = filled(6)
    batch, _ = sample(state, jax.random.key(0))
    is_first, obs = np.asarray(batch.is_first), np.asarray(batch.obs)
    assert is_first[0].all()
    env1 = obs[0, :, 0] == 1  # env 1 starts an episode at every even step
    assert env1.any()
    np.testing.assert_array_equal(is_first[1:, env1], obs[1:, env1, 1] % 2 == 0)
    stored = np.asarray(state.buffer.experience.step.is_first)
    np.testing.assert_array_equal(stored[:, :6], reference(steps)["is_first"])


def test_ring_buffer_overwrites_the_oldest_steps():
    n = 2 * C + 3
    state, steps = filled(n)
    ref = reference(steps)
    assert int(size(state)) == C and bool(can_sample(state))
    stored = np.asarray(state.buffer.experience.step.obs)[..., 1]
    np.testing.assert_array_equal(np.sort(stored, axis=1), np.tile(np.arange(n - C, n), (E, 1)))
    seen = set()
    for i in range(3):
        batch, valid = sample(state, jax.random.key(i))
        assert np.asarray(valid).all()
        seen |= check_sequences(batch, np.asarray(valid), ref, first_kept=n - C)
    # no sequence across the seam between the newest and the oldest step
    assert seen == {(e, s) for e in range(E) for s in range(n - C, n - T + 1)}


def test_never_written_steps_are_masked():
    state, steps = filled(2)
    assert int(size(state)) == 2 and not bool(can_sample(state))
    batch, valid = sample(state, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(valid), np.arange(T)[:, None] < 2 * np.ones(B))
    check_sequences(batch, np.asarray(valid), reference(steps), first_kept=0)
    empty = init(CFG, EXAMPLE, E)
    assert int(size(empty)) == 0 and not np.asarray(sample(empty, jax.random.key(0))[1]).any()


def test_jit_and_vmap_over_seeds_give_independent_buffers():
    """Two seeds written with different data in one vmapped program hold exactly what
    two separate buffers hold, and sample the same with the same keys."""
    keys = jax.random.split(jax.random.key(7), 2)

    @jax.jit
    def run(keys):
        def one(key, offset):
            state = replay.init(CFG, EXAMPLE, E)
            for t in range(5):
                state = replay.add(state, make_step(t, offset))
            return state, replay.sample(state, key)

        return jax.vmap(one)(keys, jnp.array([0.0, 0.25]))

    states, (batches, valids) = run(keys)
    for seed, offset in enumerate((0.0, 0.25)):
        single, _ = filled(5, offset)
        mine = jax.tree.map(lambda x, seed=seed: x[seed], states)
        jax.tree.map(np.testing.assert_array_equal, mine, single)
        batch, valid = sample(single, keys[seed])
        np.testing.assert_array_equal(batches.obs[seed], batch.obs)
        np.testing.assert_array_equal(valids[seed], valid)
        assert (np.asarray(batch.obs) % 1 == offset).all()


def test_state_round_trips_through_a_checkpoint(tmp_path):
    state, _ = filled(C + 2)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(5, state)
        restored, update = ckpt.restore(jax.eval_shape(lambda: replay.init(CFG, EXAMPLE, E)))
    assert update == 5 and restored.config == CFG
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    key = jax.random.key(3)
    jax.tree.map(np.testing.assert_array_equal, sample(restored, key), sample(state, key))


def test_dict_steps_and_storage_dtypes():
    example = {"obs": jnp.zeros(2, jnp.uint8), "is_first": jnp.zeros((), jnp.int32)}
    cfg = ReplayConfig(capacity=4, sequence_length=2, batch_size=3)
    state = replay.init(cfg, example, 2)
    assert state.buffer.experience.step["is_first"].dtype == jnp.bool_
    step = {"obs": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "is_first": jnp.array([0, 1])}
    state = replay.add(replay.add(state, step), step)
    batch, valid = replay.sample(state, jax.random.key(0))
    assert batch["obs"].dtype == jnp.uint8 and batch["obs"].shape == (2, 3, 2)
    assert np.asarray(valid).all() and np.asarray(batch["is_first"][0]).all()
    with pytest.raises(ValueError, match=r"\['obs'\] has shape \(2, 3\), expected \(2, 2\)"):
        replay.add(state, {"obs": jnp.zeros((2, 3)), "is_first": jnp.zeros(2, bool)})
    with pytest.raises(ValueError, match="is_first"):
        replay.init(cfg, {"obs": jnp.zeros(2)}, 2)


def test_nbytes_counts_the_whole_buffer():
    per_step = 2 * 4 + 4 + 4 + 4 + 1 + 1  # obs, action, reward, cont, is_first, written
    assert replay.nbytes(CFG, EXAMPLE, E) == C * E * per_step + 5
    state = init(CFG, EXAMPLE, E)
    assert replay.nbytes(CFG, EXAMPLE, E) == sum(x.nbytes for x in jax.tree.leaves(state))
    big = ReplayConfig(capacity=1_000_000)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), EXAMPLE)
    assert replay.nbytes(big, shapes, 64) == 1_000_000 * 64 * per_step + 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capacity", 0),
        ("sequence_length", 9),
        ("batch_size", 2.0),
        ("train_ratio", 0.0),
        ("train_ratio", float("nan")),
    ],
)
def test_config_validation_names_the_setting(field, value):
    bad = ReplayConfig(**{**CFG.__dict__, field: value})
    with pytest.raises(ValueError, match=field):
        bad.validate()


def test_updates_due_keeps_the_train_ratio_exactly():
    for ratio, batch_steps in ((512.0, 16 * 64), (32.0, 256), (1000.0, 1024), (0.5, 3)):
        rate = Fraction(ratio) / batch_steps
        steps = np.array([0, 1, 7, 1023, 1024, 99_991, 2**30, 2**31 - 1])
        want = [int(n * rate) for n in steps]
        want = [w if w < 2**31 else None for w in want]
        got_int = [replay.updates_due(int(n), ratio, batch_steps) for n in steps]
        got_jit = jax.jit(replay.updates_due, static_argnums=(1, 2))(steps, ratio, batch_steps)
        for n, w, gi, gj in zip(steps, want, got_int, np.asarray(got_jit), strict=True):
            if w is not None:
                assert gi == w and gj == w, (ratio, batch_steps, n)
    # with 64 envs per iteration and ratio 512 over B x T = 1024: 32 updates per iteration
    due = [replay.updates_due(64 * i, 512.0, 1024) for i in range(4)]
    assert np.diff(due).tolist() == [32, 32, 32]
