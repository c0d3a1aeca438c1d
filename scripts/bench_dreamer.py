"""Training and imagination throughput of the Dreamer world model per backbone core.

    python scripts/bench_dreamer.py                          # T in {64, 256}, B=16, all variants
    python scripts/bench_dreamer.py --lengths 64 --variants s5-sequential gru
    python scripts/bench_dreamer.py --json results/dreamer.json --out-md results/dreamer.md

The world model is CartPole-sized, as in configs/dreamer/cartpole.yaml: an S5 backbone
(features 64, one layer, state size 32), 16 x 16 latents, hidden width 128, depth 2,
4 observation dims and 2 actions. The S5 world model's parameter count is the target:
every other backbone (LRU, GRU, LSTM, Transformer, MLP) takes the options it shares with
the S5 core (layers; the LRU also its state size), its own defaults for the
rest, and the width whose whole world model comes closest to that count; every variant
must lie within 10% of it.

Training: one jitted world-model gradient step (the loss, its gradient and an Adam
update) on random sequences [T, B, ...] with episode starts (p=0.02, and every row at
t=0); sequences/s = B / median step seconds. Imagination: one jitted ``imagine`` of
``--horizon`` steps from the N = T * B states that a loss call at the smallest T
observes, sampling actions from a fixed random linear map of the features to action
logits; imagined steps/s = N * horizon / median seconds. Medians are over ``--repeats``
calls after one compiling call, whose time (compile seconds) is reported separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ssmrl.cores as cores
from ssmrl.config import OptimConfig
from ssmrl.matching import matched_width, param_count, with_core
from ssmrl.worldmodel import WorldModel, WorldModelCarry, WorldModelConfig, flatten_time

VARIANTS = ("s5-associative", "s5-sequential", "lru", "gru", "lstm", "transformer", "mlp")
OBS_DIM = 4
ACT_DIM = 2
TOLERANCE = 0.1
RESET_PROB = 0.02
WM_OPTIM = OptimConfig(lr=1e-4, max_grad_norm=1000.0, adam_eps=1e-8)


class Variant(NamedTuple):
    """A benchmarked world model: its variant name, config and parameter count."""

    name: str
    config: WorldModelConfig
    params: int


class Batch(NamedTuple):
    """Random replay data in the loss's layout (``ssmrl.worldmodel``), leaves ``[T, B, ...]``."""

    obs: jax.Array
    prev_action: jax.Array
    reward: jax.Array
    cont: jax.Array
    is_first: jax.Array
    valid: jax.Array


class TrainState(NamedTuple):
    """World-model parameters and Adam state."""

    params: Any
    opt_state: Any


class Timing(NamedTuple):
    """Seconds of the first (compiling) call and median seconds of the calls after it."""

    compile_s: float
    median_s: float


class TrainResult(NamedTuple):
    """World-model training throughput at sequence length ``length``."""

    length: int
    batch: int
    compile_s: float
    step_s: float
    sequences_per_s: float


class ImagineResult(NamedTuple):
    """Imagination throughput from ``starts`` states over ``horizon`` steps."""

    length: int
    starts: int
    horizon: int
    compile_s: float
    rollout_s: float
    steps_per_s: float


class VariantResult(NamedTuple):
    """Every measurement of one variant: training per length, imagination once."""

    variant: Variant
    train: list[TrainResult]
    imagine: ImagineResult


def base_config(
    features: int = 64,
    num_layers: int = 1,
    state_size: int = 32,
    latents: int = 16,
    classes: int = 16,
    hidden: int = 128,
    depth: int = 2,
) -> WorldModelConfig:
    """The S5 world model whose parameter count the other variants match."""
    core = cores.S5Options(features=features, num_layers=num_layers, state_size=state_size)
    return WorldModelConfig(core=core, latents=latents, classes=classes, hidden=hidden, depth=depth)


def matched_options(
    config: WorldModelConfig | None = None,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    variants: Sequence[str] = VARIANTS,
    tolerance: float = TOLERANCE,
    widths: tuple[int, int] = (8, 1024),
) -> dict[str, Variant]:
    """The world model of each variant, other cores' widths matched to the S5 parameter count.

    ``config`` (default :func:`base_config`) has S5 core options and sets the target; the
    S5 variants take its scan mode from their name; every other core keeps its
    ``num_layers`` and gets the ``features`` in ``widths`` closest to the target. Raises
    ValueError (one line) if a variant is unknown or lies outside ``±tolerance``.
    """
    config = base_config() if config is None else config
    if not isinstance(config.core, cores.S5Options):
        raise ValueError(f"the target config needs S5 core options, got {config.core}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; allowed: {list(VARIANTS)}")
    out = {}
    for name in variants:
        if name.startswith("s5-"):
            chosen = with_core(config, "s5", scan=name.removeprefix("s5-"))
            params = param_count(chosen, obs_dim, act_dim)
        else:
            chosen, params = matched_width(config, name, obs_dim, act_dim, tolerance, widths)
        out[name] = Variant(name, chosen, params)
    return out


def random_batch(key: jax.Array, length: int, batch: int, obs_dim: int, act_dim: int) -> Batch:
    """Random sequences ``[length, batch, ...]``: episode starts with p=0.02, all at t=0.

    Drawn on the host (a numpy generator seeded by ``key``), so no sampling is compiled.
    """
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    shape = (length, batch)
    is_first = rng.random(shape) < RESET_PROB
    is_first[0] = True
    batch_data = Batch(
        obs=rng.standard_normal((*shape, obs_dim), np.float32),
        prev_action=np.eye(act_dim, dtype=np.float32)[rng.integers(0, act_dim, shape)],
        reward=rng.standard_normal(shape, np.float32),
        cont=(rng.random(shape) < 0.99).astype(np.float32),
        is_first=is_first,
        valid=np.ones(shape, np.float32),
    )
    return jax.device_put(batch_data)


def time_calls(fn: Callable[[], Any], repeats: int) -> Timing:
    """Time ``fn()`` (which returns arrays) once including compilation, then ``repeats`` times."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return Timing(compile_s, statistics.median(runs))


def bench_variant(
    variant: Variant,
    lengths: Sequence[int],
    batch: int,
    repeats: int,
    horizon: int,
    key: jax.Array,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
) -> VariantResult:
    """Training throughput at every length and imagination throughput from the states of
    the smallest length, for one variant's world model."""
    model = WorldModel(variant.config, obs_dim=obs_dim)
    optimizer = WM_OPTIM.build(1)
    carry = model.initialize_carry(batch)
    width = variant.config.core.features + variant.config.latents * variant.config.classes

    def loss_fn(params, data: Batch, key):
        losses, out = model.apply(
            params,
            carry,
            data.obs,
            data.prev_action,
            data.reward,
            data.cont,
            data.is_first,
            data.valid,
            key,
            method="loss",
        )
        return losses.total, out

    @jax.jit
    def prepare(key, data: Batch) -> tuple[TrainState, WorldModelCarry, jax.Array]:
        """Initial training state, the imagination's start states and policy weights."""
        key, key_i = jax.random.split(key)
        key, key_s = jax.random.split(key)
        key, key_w = jax.random.split(key)
        params = model.init(key_i, carry, data.obs, data.prev_action, data.is_first, key_i)
        start = flatten_time(loss_fn(params, data, key_s)[1].carries)
        weights = jax.random.normal(key_w, (width, act_dim)) / jnp.sqrt(width)
        return TrainState(params, optimizer.init(params)), start, weights

    @jax.jit
    def train_step(state: TrainState, data: Batch, key) -> tuple[TrainState, jax.Array]:
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, data, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), loss

    def policy(weights, features, key):
        return jax.nn.one_hot(jax.random.categorical(key, features @ weights), act_dim)

    @jax.jit
    def imagine(params, weights, start, key):
        policy_fn = functools.partial(policy, weights)
        traj = model.apply(params, policy_fn, start, horizon, key, method="imagine")
        return traj.features

    shortest = min(lengths)
    key, key_d = jax.random.split(key)
    key, key_p = jax.random.split(key)
    state, start, weights = prepare(key_p, random_batch(key_d, shortest, batch, obs_dim, act_dim))
    train = []
    for length in lengths:
        key, key_d = jax.random.split(key)
        key, key_s = jax.random.split(key)
        data = random_batch(key_d, length, batch, obs_dim, act_dim)
        timing = time_calls(functools.partial(train_step, state, data, key_s), repeats)
        train.append(
            TrainResult(length, batch, timing.compile_s, timing.median_s, batch / timing.median_s)
        )

    key, key_m = jax.random.split(key)
    timing = time_calls(functools.partial(imagine, state.params, weights, start, key_m), repeats)
    starts = shortest * batch
    imagined = ImagineResult(
        shortest,
        starts,
        horizon,
        timing.compile_s,
        timing.median_s,
        starts * horizon / timing.median_s,
    )
    return VariantResult(variant, train, imagined)


def rows(results: Sequence[VariantResult]) -> list[dict[str, Any]]:
    """One record per (variant, length); imagination fields only where it was measured."""
    out = []
    for result in results:
        variant = result.variant
        for train in result.train:
            imagined = result.imagine
            imagine = dict(
                imagine_starts=imagined.starts,
                imagine_horizon=imagined.horizon,
                imagine_compile_s=imagined.compile_s,
                imagine_ms=1e3 * imagined.rollout_s,
                imagined_steps_per_s=imagined.steps_per_s,
            )
            if train.length != imagined.length:
                imagine = dict.fromkeys(imagine)
            out.append(
                dict(
                    variant=variant.name,
                    core=dataclasses.asdict(variant.config.core),
                    params=variant.params,
                    T=train.length,
                    B=train.batch,
                    train_compile_s=train.compile_s,
                    train_step_ms=1e3 * train.step_s,
                    sequences_per_s=train.sequences_per_s,
                    **imagine,
                )
            )
    return out


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The records as a markdown table."""
    lines = [
        "| variant | params | T | compile s | sequences/s | imagination compile s "
        "| imagined steps/s |",
        "|" + "---|" * 7,
    ]

    def show(value, spec):
        return "-" if value is None else format(value, spec)

    for r in records:
        lines.append(
            f"| {r['variant']} | {r['params']} | {r['T']} | {r['train_compile_s']:.2f} "
            f"| {r['sequences_per_s']:.1f} | {show(r['imagine_compile_s'], '.2f')} "
            f"| {show(r['imagined_steps_per_s'], '.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("results/bench_dreamer.json"))
    parser.add_argument("--out-md", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    for name in ("batch", "repeats", "horizon"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if min(args.lengths) < 1:
        parser.error(f"--lengths must be >= 1, got {args.lengths}")

    config = base_config()
    try:
        chosen = matched_options(config, variants=args.variants)
    except ValueError as err:
        raise SystemExit(f"bench_dreamer: error: {err}") from None
    target = param_count(config, OBS_DIM, ACT_DIM)
    device = jax.devices()[0]
    print(
        f"device: {device.platform} ({device.device_kind}); jax {jax.__version__}; "
        f"B={args.batch}, horizon={args.horizon}; median of {args.repeats} calls"
    )
    print(f"S5 world model: {target} parameters; every variant within {TOLERANCE:.0%}:")
    for v in chosen.values():
        print(
            f"  {v.name}: features={v.config.core.features}, num_layers="
            f"{v.config.core.num_layers}, {v.params} ({v.params / target - 1:+.2%})"
        )
    print()

    key = jax.random.PRNGKey(args.seed)
    results = []
    for v in chosen.values():
        key, key_b = jax.random.split(key)
        results.append(
            bench_variant(v, args.lengths, args.batch, args.repeats, args.horizon, key_b)
        )
        print(f"measured {v.name}", flush=True)
    records = rows(results)
    table = markdown_table(records)
    print()
    print(table)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {
        "json": str(args.json),
        "out_md": None if args.out_md is None else str(args.out_md),
        "obs_dim": OBS_DIM,
        "act_dim": ACT_DIM,
        "reset_prob": RESET_PROB,
        "world_model": dataclasses.asdict(config),
    }
    args.json.write_text(
        json.dumps(
            dict(
                device=dict(platform=device.platform, device_kind=device.device_kind),
                jax_version=jax.__version__,
                settings=settings,
                target_params=target,
                params={v.name: v.params for v in chosen.values()},
                records=records,
            ),
            indent=2,
        )
    )
    print(f"\nwrote {args.json}")
    if args.out_md is not None:
        args.out_md.parent.mkdir(parents=True, exist_ok=True)
        args.out_md.write_text(table + "\n")
        print(f"wrote {args.out_md}")


if __name__ == "__main__":
    main()
