"""Environment steps per second: ssmrl's POPGym tasks (jit + vmap) beside the popgym package.

    python scripts/bench_envs.py                                  # the POPGym suite
    python scripts/bench_envs.py --tasks RepeatFirstEasy MetaControl --json results/envs.json

Without ``--tasks`` the POPGym suite is timed; other tasks (meta, rooms, ``dmc/...``)
only when named. A named task whose optional dependency is missing, an unknown
name, or a missing reference ``popgym`` package stops the script with one line on
stderr (exit status 2).

ssmrl: ``--num-envs`` environments stepped together with uniformly random actions,
``--steps`` steps inside one compiled ``lax.scan`` (auto-reset included), called
``--repeats`` times after ahead-of-time compilation (compile time reported
separately); the fastest call counts, as other work on a shared machine only ever
slows a call down, so steps/s = num_envs * steps / seconds of that call (the
median is in the JSON). Discrete actions for the whole batch come
from one ``jax.random.randint`` call (other spaces: the space's own sampler per
env). Observations, rewards and done flags are folded into a checksum so that no
part of the step can be optimised away.

popgym: the reference gymnasium environment in this Python process, uniformly
random actions from its action space, reset when an episode ends, run for
``--ref-seconds`` seconds. ratio = ssmrl steps/s / popgym steps/s.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pkgutil
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from gymnax.environments import spaces

import ssmrl.envs.popgym
from ssmrl.envs import make


def popgym_tasks() -> list[str]:
    """Names of the POPGym suite's tasks (the ``TASKS`` of ``ssmrl.envs.popgym``'s modules)."""
    package = ssmrl.envs.popgym
    out: list[str] = []
    for info in pkgutil.iter_modules(package.__path__):
        out += getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "TASKS", {})
    return sorted(out)


def sample_actions(space, key: jax.Array, num_envs: int) -> jax.Array:
    """Uniformly random actions for ``num_envs`` envs."""
    if isinstance(space, spaces.Discrete):
        return jax.random.randint(key, (num_envs,), 0, space.n, jnp.int32)
    return jax.vmap(space.sample)(jax.random.split(key, num_envs))


def rollout_fn(env, params, num_envs: int, steps: int):
    """`(state, key) -> checksum` running `steps` vmapped random steps of `env`."""
    space = env.action_space(params)
    batch_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, key):
        state, checksum = carry
        key_act, key_step = jax.random.split(key)
        actions = sample_actions(space, key_act, num_envs)
        obs, state, reward, terminated, truncated, _ = batch_step(
            jax.random.split(key_step, num_envs), state, actions, params
        )
        checksum = checksum + obs.sum() + reward.sum() + (terminated | truncated).sum()
        return (state, checksum), None

    def run(state, key):
        init = (state, jnp.zeros((), jnp.float32))
        (_, checksum), _ = jax.lax.scan(body, init, jax.random.split(key, steps))
        return checksum

    return run


def bench_ssmrl(name: str, num_envs: int, steps: int, seed: int, repeats: int) -> dict:
    env, params = make(name)  # checked by `main` before any timing
    key_reset, key_run = jax.random.split(jax.random.key(seed))
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    _, state = reset(jax.random.split(key_reset, num_envs), params)
    start = time.perf_counter()
    compiled = jax.jit(rollout_fn(env, params, num_envs, steps)).lower(state, key_run).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, key_run))
        times.append(time.perf_counter() - start)
    seconds = min(times)
    return {
        "steps_per_s": num_envs * steps / seconds,
        "seconds": seconds,
        "seconds_median": statistics.median(times),
        "compile_s": compile_s,
    }


def bench_reference(name: str, seconds: float, seed: int) -> dict | None:
    """Random-action steps per second of popgym's `name`, or None if popgym lacks it."""
    import popgym.envs

    cls = getattr(popgym.envs, name, None)
    if cls is None:
        return None
    env = cls()
    env.reset(seed=seed)
    env.action_space.seed(seed)
    steps, episodes = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
            episodes += 1
    return {"steps_per_s": steps / elapsed, "steps": steps, "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the POPGym suite")
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the fastest counts")
    parser.add_argument("--ref-seconds", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    def stop(message: str) -> None:
        print(f"bench_envs.py: {message}", file=sys.stderr)
        raise SystemExit(2)

    if importlib.util.find_spec("popgym") is None:
        stop("the reference popgym package is not installed: pip install -e '.[dev]'")
    tasks = args.tasks or popgym_tasks()
    for name in tasks:
        try:
            make(name)
        except (ImportError, ValueError) as e:  # a missing optional extra or an unknown name
            stop(f"{name}: {str(e).splitlines()[0]}")
    device = jax.devices()[0]
    print(
        f"{device.platform} ({device.device_kind}), jax {jax.__version__}, "
        f"{args.num_envs} envs x {args.steps} steps; popgym {args.ref_seconds:g} s per task\n"
    )
    print("| task | ssmrl steps/s | compile s | popgym steps/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    results = []
    for name in tasks:
        ours = bench_ssmrl(name, args.num_envs, args.steps, args.seed, args.repeats)
        ref = bench_reference(name, args.ref_seconds, args.seed)
        ratio = ours["steps_per_s"] / ref["steps_per_s"] if ref else None
        results.append({"task": name, "ssmrl": ours, "popgym": ref, "ratio": ratio})
        ref_cell = f"{ref['steps_per_s']:,.0f}" if ref else "n/a"
        ratio_cell = f"{ratio:,.1f}x" if ratio else "n/a"
        print(
            f"| {name} | {ours['steps_per_s']:,.0f} | {ours['compile_s']:.1f} | "
            f"{ref_cell} | {ratio_cell} |",
            flush=True,
        )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "num_envs": args.num_envs,
            "steps": args.steps,
            "ref_seconds": args.ref_seconds,
            "seed": args.seed,
            "device": f"{device.platform} ({device.device_kind})",
            "jax": jax.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
        args.json.write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
