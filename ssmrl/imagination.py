"""How far a world model imagines: open-loop predictions after a context, and their errors.

```python
pred = open_loop_predictions(model, params, obs, prev_action, is_first, context=C, horizon=H)
target = obs[C : C + H]
errors = horizon_errors(pred.obs, target, classes=8, seen=seen[C : C + H])
copy = horizon_errors(copy_last(obs[C - 1], H), target, classes=8)
flat = horizon_errors(jnp.broadcast_to(marginal(train_obs), target.shape), target, classes=8)
```

The world model reads ``C`` context steps through its posterior (`WorldModel.observe`),
then rolls its prior ``H`` steps given the true actions (`WorldModel.open_loop`); step
``i`` of the result predicts observation ``C + i``. Observations made of one-hot cells
(``O = cells x classes``, as the memory-rooms tasks give) are also scored per cell: a
cell is right when its largest predicted entry is the true class. ``seen`` marks the
cells whose content the context showed, so the error splits into recalled and new.

Two baselines need no model: the per-cell marginal (every cell's class frequencies over
a dataset, the best constant guess) and copy-last-frame (the last context observation,
repeated).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssmrl.worldmodel import Prediction, WorldModel


def check_scripted(env: Any) -> None:
    """ValueError (one line) unless ``env`` gives scripted episodes
    (``env.scripted_episodes(key, params, episodes)``, as the memory-rooms tasks do)."""
    if not callable(getattr(env, "scripted_episodes", None)):
        raise ValueError(
            f"{getattr(env, 'name', env)!r} has no scripted episodes; only the memory-rooms "
            "tasks have them (TwoRoomsRecall, FourRoomsRecall, ...)"
        )


class Sequences(NamedTuple):
    """World-model inputs of whole episodes (`WorldModel.loss`'s layout), time-major.

    | field       | shape     | meaning                                              |
    |-------------|-----------|------------------------------------------------------|
    | obs         | [T, N, O] | o_t                                                  |
    | prev_action | [T, N, A] | a_{t-1}, one-hot if discrete; zero where is_first    |
    | reward      | [T, N]    | r_t, the reward that came with o_t                   |
    | cont        | [T, N]    | 0 on an episode's last row (terminal), else 1        |
    | is_first    | [T, N]    | o_t starts an episode                                |
    """

    obs: jax.Array
    prev_action: jax.Array
    reward: jax.Array
    cont: jax.Array
    is_first: jax.Array


def episode_inputs(
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    is_first: jax.Array,
    action_size: int | None = None,
) -> Sequences:
    """`Sequences` from rows of whole episodes that each end in a terminal observation.

    ``action[t]`` is the action taken after ``obs[t]`` (``[T, N]`` int, one-hot encoded to
    ``action_size`` classes, or ``[T, N, A]`` float); it becomes ``prev_action[t + 1]``.
    An episode's last row is the row before the next ``is_first`` or the last row.
    """
    if action.ndim == 2:
        if action_size is None:
            raise ValueError("integer actions need action_size")
        action = jax.nn.one_hot(action, action_size)
    action = action.astype(jnp.float32)
    shifted = jnp.concatenate([jnp.zeros_like(action[:1]), action[:-1]])
    prev_action = jnp.where(is_first[..., None], 0.0, shifted)
    last = jnp.concatenate([is_first[1:], jnp.ones_like(is_first[:1])])
    return Sequences(
        obs.astype(jnp.float32),
        prev_action,
        reward.astype(jnp.float32),
        1.0 - last.astype(jnp.float32),
        is_first.astype(bool),
    )


class HorizonErrors(NamedTuple):
    """Errors per imagination step ``[H]``; NaN where a split has no cells.

    | field           | meaning                                                     |
    |-----------------|-------------------------------------------------------------|
    | mse             | mean squared error over episodes and observation entries    |
    | accuracy        | share of cells whose predicted class is right               |
    | accuracy_seen   | the same over cells marked seen                             |
    | accuracy_unseen | the same over cells not marked seen                         |
    | reward_accuracy | share of steps whose reward is predicted within a tolerance |
    """

    mse: jax.Array
    accuracy: jax.Array
    accuracy_seen: jax.Array
    accuracy_unseen: jax.Array
    reward_accuracy: jax.Array


def cell_correct(pred: jax.Array, target: jax.Array, classes: int) -> jax.Array:
    """Per cell, whether the predicted class (largest entry) is the target's.

    | arg    | shape                    |
    |--------|--------------------------|
    | pred   | [..., cells * classes]   |
    | target | [..., cells * classes]   |
    | result | [..., cells] bool        |
    """
    size = pred.shape[-1]
    if size % classes:
        raise ValueError(f"observation size {size} is not a whole number of {classes}-class cells")

    def cells(x):
        return x.reshape(*x.shape[:-1], size // classes, classes)

    return jnp.argmax(cells(pred), -1) == jnp.argmax(cells(target), -1)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x [H, ...]`` over all but the first axis where ``mask``; NaN where none."""
    axes = tuple(range(1, x.ndim))
    count = jnp.sum(mask, axes)
    return jnp.where(count > 0, jnp.sum(jnp.where(mask, x, 0.0), axes) / count, jnp.nan)


def horizon_errors(
    pred: jax.Array,
    target: jax.Array,
    classes: int,
    seen: jax.Array | None = None,
    reward_pred: jax.Array | None = None,
    reward: jax.Array | None = None,
    reward_tolerance: float = 0.1,
) -> HorizonErrors:
    """Errors of predictions at each imagination step.

    | arg                 | shape                 |
    |---------------------|-----------------------|
    | pred, target        | [H, N, cells*classes] |
    | seen                | [H, N, cells] bool    |
    | reward_pred, reward | [H, N]                |
    | result fields       | [H]                   |

    Without ``seen`` every cell counts as unseen; without rewards ``reward_accuracy``
    is NaN. A reward counts as right when it lies within ``reward_tolerance`` of the true one.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must both be [H, N, O], got {pred.shape}, {target.shape}"
        )
    correct = cell_correct(pred, target, classes).astype(jnp.float32)
    seen = jnp.zeros(correct.shape, bool) if seen is None else jnp.asarray(seen, bool)
    if seen.shape != correct.shape:
        raise ValueError(f"seen must be [H, N, cells] = {correct.shape}, got {seen.shape}")
    everywhere = jnp.ones(correct.shape, bool)
    if reward_pred is None or reward is None:
        reward_accuracy = jnp.full(pred.shape[:1], jnp.nan)
    else:
        hit = jnp.abs(reward_pred - reward) <= reward_tolerance
        reward_accuracy = jnp.mean(hit.astype(jnp.float32), 1)
    return HorizonErrors(
        mse=jnp.mean((pred - target) ** 2, (1, 2)),
        accuracy=_masked_mean(correct, everywhere),
        accuracy_seen=_masked_mean(correct, seen),
        accuracy_unseen=_masked_mean(correct, ~seen),
        reward_accuracy=reward_accuracy,
    )


class HorizonReport(NamedTuple):
    """Errors at chosen imagination horizons (``h`` is step ``h - 1`` of the rollout) of
    the model and of the two baselines; every field of the errors is ``[len(horizons)]``."""

    horizons: tuple[int, ...]
    model: HorizonErrors
    copy_last: HorizonErrors
    marginal: HorizonErrors


def horizon_report(
    pred: jax.Array,
    target: jax.Array,
    last_context: jax.Array,
    frequencies: jax.Array,
    classes: int,
    horizons: tuple[int, ...],
    seen: jax.Array | None = None,
    reward_pred: jax.Array | None = None,
    reward: jax.Array | None = None,
) -> HorizonReport:
    """The model's errors beside copy-last-frame and the marginal, at ``horizons``.

    | arg          | shape                  | meaning                                  |
    |--------------|------------------------|------------------------------------------|
    | pred, target | [H, N, O]              | imagined and true observations C .. C+H-1 |
    | last_context | [N, O]                 | observation C - 1 (copy-last's guess)    |
    | frequencies  | [O]                    | `marginal` of a dataset                  |
    | seen         | [H, N, cells]          | optional, as in `horizon_errors`         |
    | reward_pred, reward | [H, N]          | optional; the baselines get no reward    |

    Horizons are whole numbers in ``1 .. H``.
    """
    steps = pred.shape[0]
    if not horizons or any(not 1 <= h <= steps for h in horizons):
        raise ValueError(f"horizons must lie in 1..{steps}, got {list(horizons)}")
    rows = jnp.asarray([h - 1 for h in horizons])

    def at(errors: HorizonErrors) -> HorizonErrors:
        return jax.tree.map(lambda x: x[rows], errors)

    flat = jnp.broadcast_to(frequencies, target.shape)
    return HorizonReport(
        tuple(horizons),
        at(horizon_errors(pred, target, classes, seen, reward_pred, reward)),
        at(horizon_errors(copy_last(last_context, steps), target, classes, seen)),
        at(horizon_errors(flat, target, classes, seen)),
    )


def marginal(obs: jax.Array) -> jax.Array:
    """The per-entry mean of a dataset's observations ``[..., O] -> [O]``: for one-hot cells,
    each cell's class frequencies (the marginal predictor)."""
    return jnp.mean(obs.reshape(-1, obs.shape[-1]), 0)


def copy_last(last_obs: jax.Array, horizon: int) -> jax.Array:
    """The copy-last-frame predictor: ``last_obs [N, O]`` repeated, ``[H, N, O]``."""
    return jnp.broadcast_to(last_obs, (horizon, *last_obs.shape))


def open_loop_predictions(
    model: WorldModel,
    params: Any,
    obs: jax.Array,
    prev_action: jax.Array,
    is_first: jax.Array,
    context: int,
    horizon: int,
    key: jax.Array | None = None,
) -> Prediction:
    """Observe ``context`` steps, then imagine ``horizon`` steps given the true actions.

    | arg         | shape                       | meaning                          |
    |-------------|-----------------------------|----------------------------------|
    | obs         | [T, N, O], T >= C + H       | o_t                              |
    | prev_action | [T, N, A]                   | a_{t-1} (one-hot if discrete)    |
    | is_first    | [T, N]                      | episode starts                   |
    | result      | obs [H, N, O], reward [H, N]| step i predicts o_{C+i}, r_{C+i} |

    ``key`` None takes latent modes throughout (deterministic).
    """
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1, got {context} and {horizon}")
    if context + horizon > obs.shape[0]:
        raise ValueError(
            f"context {context} + horizon {horizon} exceeds the {obs.shape[0]} steps given"
        )
    key_obs, key_img = (None, None) if key is None else jax.random.split(key)
    carry = model.initialize_carry(obs.shape[1])
    seen = model.apply(
        params,
        carry,
        obs[:context],
        prev_action[:context],
        is_first[:context],
        key_obs,
        method="observe",
    )
    # From the carry after o_{C-1}, action a_{C-1+i} = prev_action[C+i] leads to o_{C+i}.
    actions = prev_action[context : context + horizon]
    features = model.apply(params, seen.carry, actions, key_img, method="open_loop")
    return model.apply(params, features, method="predict")


class Measured(NamedTuple):
    """What `measure` found: the report of each seed's model (the baselines are the same
    for every seed), and the speed of the open-loop imagination (compilation aside)."""

    reports: list[HorizonReport]
    steps_per_s: float
    compile_s: float


def measure(
    model: WorldModel,
    params: Any,
    seq: Sequences,
    context: int,
    horizons: tuple[int, ...],
    classes: int,
    seen: jax.Array | None = None,
    reward: bool = False,
) -> Measured:
    """Observe ``context`` steps of ``seq``, imagine ``max(horizons)`` steps open-loop with
    the true actions (latent modes), and score the imagined observations at ``horizons``.

    | arg    | shape                                | meaning                          |
    |--------|--------------------------------------|----------------------------------|
    | params | leaves [S, ...]                      | S seeds' world-model parameters  |
    | seq    | `Sequences`, [T, N, ...]             | whole episodes, T >= C + H       |
    | seen   | [T, N, cells] bool                   | cells the context showed         |

    ``reward`` True also scores the predicted rewards. ``steps_per_s`` counts imagined
    steps (episodes x horizon) per second of the second call of the compiled rollout.
    """
    import time

    steps = max(horizons)
    if context < 1 or context + steps > seq.obs.shape[0]:
        raise ValueError(
            f"context {context} + horizon {steps} must fit in the {seq.obs.shape[0]} steps given"
        )

    @jax.jit
    def observe(params):
        carry = model.initialize_carry(seq.obs.shape[1])
        inputs = (seq.obs[:context], seq.prev_action[:context], seq.is_first[:context])
        return model.apply(params, carry, *inputs, None, method="observe").carry

    @jax.jit
    def imagine(params, carry):
        actions = seq.prev_action[context : context + steps]
        features = model.apply(params, carry, actions, None, method="open_loop")
        return model.apply(params, features, method="predict")

    target = seq.obs[context : context + steps]
    window = None if seen is None else seen[context : context + steps]
    true_reward = seq.reward[context : context + steps] if reward else None
    frequencies = marginal(seq.obs)
    reports, compile_s, per_call = [], 0.0, 0.0
    for s in range(jax.tree.leaves(params)[0].shape[0]):
        one = jax.tree.map(lambda x, s=s: x[s], params)
        carry = observe(one)
        start = time.perf_counter()
        pred = jax.block_until_ready(imagine(one, carry))
        if s == 0:  # the first call compiles; time a second one
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            pred = jax.block_until_ready(imagine(one, carry))
            per_call = time.perf_counter() - start
        report = horizon_report(
            pred.obs,
            target,
            seq.obs[context - 1],
            frequencies,
            classes,
            horizons,
            window,
            pred.reward if reward else None,
            true_reward,
        )
        reports.append(jax.device_get(report))
    return Measured(reports, seq.obs.shape[1] * steps / max(per_call, 1e-9), compile_s)


def _listed(errors: HorizonErrors) -> dict[str, list[float | None]]:
    """Errors as JSON lists (NaN -> None)."""
    import math

    return {
        name: [None if not math.isfinite(v) else float(v) for v in values]
        for name, values in errors._asdict().items()
    }


def summarise(measured: Measured) -> dict[str, Any]:
    """``measured`` as JSON-ready data: per horizon, the model's errors averaged over seeds
    (``model``) and per seed (``model_per_seed``), the two baselines, and the speed."""
    import numpy as np

    reports = measured.reports
    fields = HorizonErrors._fields

    def mean(name):
        rows = np.stack([np.asarray(getattr(r.model, name), np.float64) for r in reports])
        return np.nanmean(rows, 0) if np.isfinite(rows).any() else rows[0]

    first = reports[0]
    return {
        "horizons": list(first.horizons),
        "model": _listed(HorizonErrors(*(mean(name) for name in fields))),
        "model_per_seed": [_listed(r.model) for r in reports],
        "copy_last": _listed(first.copy_last),
        "marginal": _listed(first.marginal),
        "imagination_steps_per_s": measured.steps_per_s,
        "compile_s": measured.compile_s,
    }


def plot(summary: dict[str, Any], path: Any, title: str = "") -> Any:
    """Cell accuracy and MSE against the imagination horizon, the model beside the
    baselines, from `summarise`'s data; returns the path written."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    horizons = summary["horizons"]
    lines = (("model", "C0", "world model"), ("copy_last", "C1", "copy last frame"))
    lines += (("marginal", "C2", "per-cell marginal"),)
    for i, (metric, label) in enumerate((("accuracy", "cell accuracy"), ("mse", "MSE"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, colour, name in lines:
            values = [float("nan") if v is None else v for v in summary[key][metric]]
            ax.plot(horizons, values, "o-", color=colour, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("imagination horizon (steps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
