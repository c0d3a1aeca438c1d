"""PPO training throughput and compile time for each memory core.

    python scripts/bench_ppo.py                         # the config below, all cores
    python scripts/bench_ppo.py --cores s5-sequential gru --updates 8 --json results/ppo.json

Config (the one widely quoted for recurrent JAX PPO on POPGym): RepeatPreviousEasy,
64 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4; S5 256 wide with 128 states
and 2 layers; the LRU alike with 64 complex states (the size of S5's carry); GRU 256
wide; the transformer 256 wide with 2 layers of 4 heads of 64 and a window of 128
steps. Each core's whole update (rollout, GAE, every epoch and minibatch) is one jitted
``lax.scan`` over ``--updates`` updates; compile time is the ahead-of-time
``lower().compile()`` of that program, and throughput is env steps per second of wall
time over ``--repeats`` further calls, compile excluded. Every figure is absolute and
measured on the machine that runs the script; none is compared with a figure from
another machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax

from ssmrl import envs
from ssmrl.agents import ppo
from ssmrl.config import OptimConfig
from ssmrl.cores import (
    GRUOptions,
    LRUOptions,
    LSTMOptions,
    MLPOptions,
    S5Options,
    TransformerOptions,
)

CORES = {
    "s5-associative": S5Options(features=256, num_layers=2, state_size=128, scan="associative"),
    "s5-sequential": S5Options(features=256, num_layers=2, state_size=128, scan="sequential"),
    "lru": LRUOptions(features=256, num_layers=2, state_size=64),
    "gru": GRUOptions(features=256, num_layers=1),
    "lstm": LSTMOptions(features=256, num_layers=1),
    "mlp": MLPOptions(features=256, num_layers=1),
    "transformer": TransformerOptions(
        features=256, num_layers=2, num_heads=4, head_size=64, window=128
    ),
}


def bench(name: str, args) -> dict:
    cfg = ppo.Config(
        env=args.env,
        core=CORES[name],
        optim=OptimConfig(lr=2.5e-4),
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        update_epochs=4,
        num_minibatches=4,
        total_timesteps=args.num_envs * args.num_steps * args.updates,
    )
    env, env_params = envs.make_for_agent(cfg.env, ppo.WRAPPERS)
    agent = ppo.make_agent(cfg, env, env_params)

    def updates(runner):
        return jax.lax.scan(lambda r, _: agent.update(r), runner, None, args.updates)

    runner = jax.jit(agent.init)(jax.random.PRNGKey(0))
    start = time.perf_counter()
    compiled = jax.jit(updates).lower(runner).compile()
    compile_s = time.perf_counter() - start
    runner, _ = jax.block_until_ready(compiled(runner))  # warm-up call
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        runner, metrics = jax.block_until_ready(compiled(runner))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    steps = cfg.steps_per_update * args.updates
    return dict(
        core=name,
        compile_s=compile_s,
        seconds_per_update=seconds / args.updates,
        steps_per_s=steps / seconds,
        final_loss=float(metrics.total_loss[-1]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=list(CORES), choices=list(CORES))
    parser.add_argument("--env", default="RepeatPreviousEasy")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--updates", type=int, default=4, help="updates per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        envs.make(args.env)
    except ValueError as e:  # an unknown name or a missing optional extra
        parser.error(str(e).splitlines()[0])

    device = jax.devices()[0]
    print(f"backend {jax.default_backend()} ({device.device_kind}), env {args.env}")
    print(f"{args.num_envs} envs x {args.num_steps} steps, 4 epochs x 4 minibatches\n")
    header = f"{'core':<16}{'compile s':>10}{'s/update':>10}{'steps/s':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.cores:
        row = bench(name, args)
        rows.append(row)
        print(
            f"{name:<16}{row['compile_s']:>10.1f}{row['seconds_per_update']:>10.3f}"
            f"{row['steps_per_s']:>10.0f}",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(backend=jax.default_backend(), device=device.device_kind, **vars(args))
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in meta.items()}
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


if __name__ == "__main__":
    main()
