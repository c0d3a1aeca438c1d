"""Training throughput over 1, 2, 4 ... devices: env steps/s and scaling efficiency.

    python scripts/bench_scaling.py                          # PPO and Dreamer, 1 2 4 devices
    python scripts/bench_scaling.py --agents ppo --devices 1 2 4 8 --num-envs 256
    python scripts/bench_scaling.py --report results/scaling.json   # the table again

Each agent's env batch is split over the devices as ``ssmrl train --devices N`` does
(`ssmrl.scale`), and a jitted chunk of ``--updates`` updates (the driver's own program)
is timed over ``--repeats`` calls after a warm-up call; compile time is reported apart.
On a machine with one CPU device the script forces as many host devices as the largest
count asked for (``XLA_FLAGS=--xla_force_host_platform_device_count``), so the
devices share the same cores: the figures then show the cost of splitting, not a
speed-up. Efficiency is ``steps/s(N) / (N * steps/s(1))``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def force_host_devices(count: int) -> None:
    """Let a CPU show ``count`` devices (before JAX starts; GPUs are not affected)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"


def settings(agent: str, num_envs: int, updates: int) -> dict:
    """Small CPU-sized settings of ``agent`` on CartPole-v1 with ``num_envs`` envs (Dreamer:
    8 gradient steps per update, so that a timed call stays short on a CPU)."""
    if agent == "ppo":
        return {
            "env": "CartPole-v1",
            "core": {"name": "s5", "features": 64, "num_layers": 1, "state_size": 32},
            "num_envs": num_envs,
            "num_steps": 32,
            "update_epochs": 2,
            "num_minibatches": 4,
            "total_timesteps": num_envs * 32 * updates,
        }
    return {
        "env": "CartPole-v1",
        "core": {"name": "s5", "features": 64, "num_layers": 1, "state_size": 32},
        "num_envs": num_envs,
        "num_steps": 16,
        "replay": {"capacity": 512, "sequence_length": 32, "batch_size": 8, "train_ratio": 2.0},
        "total_timesteps": num_envs * 16 * updates,
    }


def bench(agent_name: str, devices: int, args) -> dict:
    import jax
    import jax.numpy as jnp

    from ssmrl import driver, experiment, scale

    loaded = experiment.load_settings(
        agent_name, overrides=settings(agent_name, args.num_envs, args.updates)
    )
    agent = experiment.build(loaded).agent
    placement = scale.Placement.of(agent, devices) if devices > 1 else None
    init, run_chunk = driver.compiled(
        agent.init, agent.update, 10**9, args.updates, False, placement
    )
    runner = init(driver.seed_keys(0, 1))
    start = time.perf_counter()
    runner, _ = jax.block_until_ready(run_chunk(runner, jnp.int32(0)))  # compiles, then runs
    first_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        runner, _ = jax.block_until_ready(run_chunk(runner, jnp.int32(0)))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    steps = args.updates * agent.steps_per_update
    return {
        "agent": agent_name,
        "devices": devices,
        "num_envs": args.num_envs,
        "first_call_s": round(first_s, 2),
        "steps_per_s": round(steps / seconds, 1),
    }


def with_efficiency(rows: list[dict]) -> list[dict]:
    base = {r["agent"]: r["steps_per_s"] for r in rows if r["devices"] == 1}
    for r in rows:
        one = base.get(r["agent"])
        r["efficiency"] = round(r["steps_per_s"] / (r["devices"] * one), 3) if one else None
    return rows


def table(result: dict) -> str:
    lines = [
        f"device: {result['device']} ({result['device_count']} visible)",
        "",
        "| agent | devices | envs | env steps/s | efficiency | first call s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        eff = "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        lines.append(
            f"| {r['agent']} | {r['devices']} | {r['num_envs']} | {r['steps_per_s']:,.0f} | "
            f"{eff} | {r['first_call_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--agents", nargs="+", choices=["ppo", "dreamer"], default=["ppo", "dreamer"]
    )
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument(
        "--num-envs", type=int, default=64, help="envs per seed, split over devices"
    )
    parser.add_argument("--updates", type=int, default=4, help="updates per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("results/scaling.json"))
    parser.add_argument("--report", type=Path, help="print the table of a saved JSON and stop")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return
    bad = [n for n in args.devices if n < 1 or args.num_envs % n]
    if bad:
        sys.exit(f"--devices {bad}: each count must be >= 1 and divide --num-envs {args.num_envs}")
    force_host_devices(max(args.devices))
    import jax

    if max(args.devices) > jax.device_count():
        sys.exit(f"--devices {max(args.devices)}: only {jax.device_count()} device(s) visible")
    rows = []
    for agent_name in args.agents:
        for devices in args.devices:
            row = bench(agent_name, devices, args)
            rows.append(row)
            print(f"{agent_name} on {devices} device(s): {row['steps_per_s']:,.0f} env steps/s")
    result = {
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "settings": {a: settings(a, args.num_envs, args.updates) for a in args.agents},
        "rows": with_efficiency(rows),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
