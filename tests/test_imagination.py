"""Imagination-horizon metrics against hand counts and NumPy; open-loop predictions on a
tiny world model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssmrl import cores
from ssmrl.imagination import (
    Sequences,
    cell_correct,
    copy_last,
    episode_inputs,
    horizon_errors,
    horizon_report,
    marginal,
    measure,
    open_loop_predictions,
    plot,
    summarise,
)
from ssmrl.worldmodel import WorldModel, WorldModelConfig, features_of, straight_through_sample

rng = np.random.default_rng(0)


def one_hot_cells(classes_idx, classes):
    """``[..., cells]`` class indices -> ``[..., cells * classes]`` float32."""
    x = np.eye(classes, dtype=np.float32)[classes_idx]
    return x.reshape(*classes_idx.shape[:-1], -1)


def test_cell_correct_by_hand():
    target = one_hot_cells(np.array([[0, 2, 1]]), 3)
    pred = np.array([[0.9, 0.1, 0.0, 0.2, 0.5, 0.3, 0.0, 0.6, 0.4]], np.float32)
    np.testing.assert_array_equal(cell_correct(pred, target, 3), [[True, False, True]])
    with pytest.raises(ValueError, match="whole number of 4-class cells"):
        cell_correct(pred, target, 4)


def test_a_perfect_prediction_has_no_error_and_full_accuracy():
    target = one_hot_cells(rng.integers(0, 4, (5, 3, 6)), 4)
    seen = rng.random((5, 3, 6)) < 0.5
    errors = horizon_errors(target, target, 4, seen, target[..., 0], target[..., 0])
    np.testing.assert_array_equal(errors.mse, 0.0)
    for acc in (errors.accuracy, errors.accuracy_seen, errors.accuracy_unseen):
        np.testing.assert_array_equal(acc, 1.0)
    np.testing.assert_array_equal(errors.reward_accuracy, 1.0)


def test_horizon_errors_match_a_numpy_loop():
    h, n, cells, k = 4, 5, 3, 3
    target_idx = rng.integers(0, k, (h, n, cells))
    target = one_hot_cells(target_idx, k)
    pred = rng.normal(size=target.shape).astype(np.float32)
    seen = rng.random((h, n, cells)) < 0.4
    seen[0] = False  # a step with no seen cell: NaN there
    reward, reward_pred = rng.random((h, n)), rng.random((h, n))
    errors = horizon_errors(pred, target, k, seen, reward_pred, reward, reward_tolerance=0.25)
    for i in range(h):
        right, right_seen, right_unseen = [], [], []
        for b in range(n):
            for c in range(cells):
                ok = np.argmax(pred[i, b, c * k : (c + 1) * k]) == target_idx[i, b, c]
                right.append(ok)
                (right_seen if seen[i, b, c] else right_unseen).append(ok)
        np.testing.assert_allclose(errors.accuracy[i], np.mean(right), rtol=1e-6)
        if right_seen:
            np.testing.assert_allclose(errors.accuracy_seen[i], np.mean(right_seen), rtol=1e-6)
        else:
            assert np.isnan(errors.accuracy_seen[i])
        np.testing.assert_allclose(errors.accuracy_unseen[i], np.mean(right_unseen), rtol=1e-6)
        np.testing.assert_allclose(
            errors.mse[i], np.mean((pred[i].astype(np.float64) - target[i]) ** 2), rtol=1e-5
        )
        hits = np.abs(reward_pred[i] - reward[i]) <= 0.25
        np.testing.assert_allclose(errors.reward_accuracy[i], hits.mean(), rtol=1e-6)
    no_reward = horizon_errors(pred, target, k)
    assert np.isnan(no_reward.reward_accuracy).all() and np.isnan(no_reward.accuracy_seen).all()
    np.testing.assert_allclose(no_reward.accuracy_unseen, errors.accuracy)
    with pytest.raises(ValueError, match="seen must be"):
        horizon_errors(pred, target, k, seen[:, :, :2])


def test_copy_last_baseline_against_a_hand_count():
    # One episode, 2 cells of 3 classes. The last context frame is (0, 1); the next three
    # frames are (0, 1), (0, 2), (1, 2): copy-last gets 2/2, 1/2, 0/2 cells right.
    frames = np.array([[[0, 1]], [[0, 1]], [[0, 2]], [[1, 2]]])
    obs = one_hot_cells(frames, 3)
    pred = copy_last(obs[0], 3)
    assert pred.shape == (3, 1, 6)
    errors = horizon_errors(pred, obs[1:], 3)
    np.testing.assert_allclose(errors.accuracy, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(errors.mse, [0.0, 2 / 6, 4 / 6])


def test_marginal_is_the_class_frequency_of_each_cell():
    frames = np.array([[[0, 1], [0, 2]], [[0, 2], [1, 2]]])  # [T=2, N=2, cells=2]
    freq = marginal(one_hot_cells(frames, 3))
    np.testing.assert_allclose(freq, [0.75, 0.25, 0.0, 0.0, 0.25, 0.75])
    pred = jnp.broadcast_to(freq, (2, 2, 6))
    np.testing.assert_allclose(horizon_errors(pred, one_hot_cells(frames, 3), 3).accuracy, 0.75)


def test_horizon_report_picks_rows_and_scores_the_baselines():
    h, n, cells, k = 6, 4, 3, 3
    target = one_hot_cells(rng.integers(0, k, (h, n, cells)), k)
    pred = rng.normal(size=target.shape).astype(np.float32)
    last = one_hot_cells(rng.integers(0, k, (n, cells)), k)
    freq = marginal(target)
    out = horizon_report(pred, target, last, freq, k, (1, 4, 6))
    full = horizon_errors(pred, target, k)
    np.testing.assert_allclose(out.model.accuracy, full.accuracy[np.array([0, 3, 5])])
    copy = horizon_errors(copy_last(last, h), target, k)
    np.testing.assert_allclose(out.copy_last.mse, copy.mse[np.array([0, 3, 5])])
    flat = horizon_errors(np.broadcast_to(freq, target.shape), target, k)
    np.testing.assert_allclose(out.marginal.accuracy, flat.accuracy[np.array([0, 3, 5])])
    assert out.horizons == (1, 4, 6) and np.isnan(out.copy_last.reward_accuracy).all()
    with pytest.raises(ValueError, match="horizons must lie in 1..6"):
        horizon_report(pred, target, last, freq, k, (0, 7))


T, N, OBS, A = 7, 2, 6, 3


@pytest.fixture(scope="module")
def tiny_model():
    config = WorldModelConfig(
        core=cores.GRUOptions(features=8, num_layers=1), latents=2, classes=3, hidden=8, depth=1
    )
    model = WorldModel(config, obs_dim=OBS)
    carry = model.initialize_carry(N)
    obs = jnp.asarray(rng.normal(size=(T, N, OBS)), jnp.float32)
    prev_action = jax.nn.one_hot(rng.integers(0, A, (T, N)), A)
    is_first = jnp.zeros((T, N), bool).at[0].set(True)
    params = model.init(jax.random.PRNGKey(0), carry, obs, prev_action, is_first, None)
    return model, params, obs, prev_action, is_first


def test_open_loop_reads_only_the_context_and_the_true_actions(tiny_model):
    model, params, obs, prev_action, is_first = tiny_model
    predict = jax.jit(open_loop_predictions, static_argnums=(0, 5, 6))
    pred = predict(model, params, obs, prev_action, is_first, 3, 4)
    assert pred.obs.shape == (4, N, OBS) and pred.reward.shape == (4, N)
    assert np.isfinite(pred.obs).all()
    # Observations after the context do not matter; the actions taken there do.
    later_obs = obs.at[3:].set(5.0)
    np.testing.assert_array_equal(
        predict(model, params, later_obs, prev_action, is_first, 3, 4).obs, pred.obs
    )
    other_actions = prev_action.at[4].set(jnp.roll(prev_action[4], 1, -1))
    moved = predict(model, params, obs, other_actions, is_first, 3, 4).obs
    np.testing.assert_array_equal(moved[0], pred.obs[0])  # o_3 follows a_2 = prev_action[3]
    assert not np.allclose(moved[1], pred.obs[1])
    # Step 0 is the prior after o_0..o_2 and action a_2, decoded.
    out = model.apply(
        params,
        model.initialize_carry(N),
        obs[:3],
        prev_action[:3],
        is_first[:3],
        None,
        method="observe",
    )
    _, features, _ = model.apply(params, out.carry, prev_action[3], None, method="img_step")
    first = model.apply(params, features, method="predict")
    np.testing.assert_allclose(pred.obs[0], first.obs, rtol=1e-5, atol=1e-6)


def test_open_loop_rejects_a_context_and_horizon_longer_than_the_data(tiny_model):
    model, params, obs, prev_action, is_first = tiny_model
    with pytest.raises(ValueError, match="exceeds the 7 steps"):
        open_loop_predictions(model, params, obs, prev_action, is_first, 4, 4)
    with pytest.raises(ValueError, match=">= 1"):
        open_loop_predictions(model, params, obs, prev_action, is_first, 0, 4)


def test_episode_inputs_shift_actions_and_end_episodes_by_hand():
    # Two columns: one episode of 4 rows; an episode of 2 rows followed by one of 2 rows.
    action = jnp.array([[1, 0], [2, 1], [0, 2], [1, 1]])
    is_first = jnp.array([[1, 1], [0, 0], [0, 1], [0, 0]], bool)
    obs = jnp.arange(8.0).reshape(4, 2, 1)
    seq = episode_inputs(obs, action, jnp.ones((4, 2)), is_first, action_size=3)
    want_prev = np.zeros((4, 2, 3))
    want_prev[1, 0, 1] = want_prev[2, 0, 2] = want_prev[3, 0, 0] = 1.0
    want_prev[1, 1, 0] = want_prev[3, 1, 2] = 1.0  # row 2 of column 1 starts an episode
    np.testing.assert_array_equal(seq.prev_action, want_prev)
    np.testing.assert_array_equal(seq.cont, [[1, 1], [1, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(seq.obs, obs)
    with pytest.raises(ValueError, match="action_size"):
        episode_inputs(obs, action, jnp.ones((4, 2)), is_first)


def test_imagining_with_the_true_posteriors_reconstructs(tiny_model):
    # Replace each imagined latent by the posterior mode of the true observation: the
    # imagined features then equal what observing the whole sequence gives.
    model, params, obs, prev_action, is_first = tiny_model
    out = model.apply(
        params, model.initialize_carry(N), obs, prev_action, is_first, None, method="observe"
    )
    context = 3
    carry = jax.tree.map(lambda c: c[context - 1], out.carries)
    for t in range(context, T):
        carry, _, _ = model.apply(params, carry, prev_action[t], None, method="img_step")
        post = model.apply(params, obs[t], method="posterior")
        carry = carry._replace(z=straight_through_sample(None, jax.nn.softmax(post, -1)))
        np.testing.assert_allclose(features_of(carry), out.features[t], rtol=1e-5, atol=1e-6)


def test_measure_scores_each_seed_beside_the_baselines(tiny_model):
    model, params, obs, prev_action, is_first = tiny_model
    cells = jnp.asarray(rng.integers(0, 3, (T, N, 2)))
    one_hot = jax.nn.one_hot(cells, 3).reshape(T, N, OBS)
    seq = Sequences(one_hot, prev_action, jnp.zeros((T, N)), jnp.ones((T, N)), is_first)
    seeds = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params)
    measured = measure(model, seeds, seq, context=3, horizons=(1, 4), classes=3)
    assert len(measured.reports) == 2 and measured.steps_per_s > 0
    for s, report in enumerate(measured.reports):
        one = jax.tree.map(lambda x, s=s: x[s], seeds)
        pred = open_loop_predictions(model, one, one_hot, prev_action, is_first, 3, 4)
        want = horizon_errors(pred.obs, one_hot[3:7], 3)
        np.testing.assert_allclose(report.model.accuracy, want.accuracy[jnp.array([0, 3])])
        np.testing.assert_allclose(report.model.mse, want.mse[jnp.array([0, 3])], rtol=1e-6)
    copy = horizon_errors(copy_last(one_hot[2], 4), one_hot[3:7], 3)
    np.testing.assert_allclose(
        measured.reports[0].copy_last.accuracy, np.asarray(copy.accuracy)[[0, 3]]
    )
    data = summarise(measured)
    assert data["horizons"] == [1, 4] and len(data["model_per_seed"]) == 2
    mean = np.mean([r.model.accuracy for r in measured.reports], 0)
    np.testing.assert_allclose(data["model"]["accuracy"], mean)
    assert data["model"]["reward_accuracy"] == [None, None]
    with pytest.raises(ValueError, match="must fit"):
        measure(model, seeds, seq, context=4, horizons=(4,), classes=3)


def test_plot_writes_a_png(tmp_path):
    errors = {"accuracy": [0.9, None], "mse": [0.1, 0.2]}
    data = {"horizons": [1, 8], "model": errors, "copy_last": errors, "marginal": errors}
    path = plot(data, tmp_path / "imagination.png", "title")
    assert path.read_bytes()[:4] == b"\x89PNG"
