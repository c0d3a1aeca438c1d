"""Forward and forward+backward time of the memory cores over sequence length.

    python scripts/bench_cores.py                       # T in {128, 1024, 4096}, B=64, width 256
    python scripts/bench_cores.py --lengths 128 --json results/cores.json

Times are medians over ``--repeats`` runs after one compiling call (whose time is
reported separately). The sequence includes episode resets (p=0.01), as in training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import ssmrl.cores as cores


def variants(width: int, state_size: int, layers: int) -> dict[str, tuple[str, dict]]:
    """Variant name -> (core, options). The LRU keeps ``state_size // 2`` complex states,
    the size of S5's carry (S5 keeps one state of each conjugate pair). The transformer
    has heads of 64 that together span the width, and a window of 128 steps."""
    s5 = dict(features=width, state_size=state_size, num_layers=layers)
    return {
        "s5-associative": ("s5", dict(s5, scan="associative")),
        "s5-sequential": ("s5", dict(s5, scan="sequential")),
        "lru": ("lru", dict(features=width, state_size=state_size // 2, num_layers=layers)),
        "gru": ("gru", dict(features=width, num_layers=layers)),
        "lstm": ("lstm", dict(features=width, num_layers=layers)),
        "transformer": (
            "transformer",
            dict(
                features=width,
                num_layers=layers,
                num_heads=max(1, width // 64),
                head_size=64,
                window=128,
            ),
        ),
    }


def time_call(fn, args, repeats: int) -> tuple[float, float]:
    """(seconds of the first, compiling call; median seconds of the next `repeats`)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs)


def bench_one(name, options, t, batch, in_features, repeats, key):
    core = cores.make(name, **options)
    key_x, key_r, key_p = jax.random.split(key, 3)
    xs = jax.random.normal(key_x, (t, batch, in_features))
    resets = jax.random.bernoulli(key_r, 0.01, (t, batch))
    carry = core.initialize_carry(batch)
    params = jax.jit(core.init)(key_p, carry, xs[:1], resets[:1])

    forward = jax.jit(lambda p, x, r: core.apply(p, carry, x, r)[1])

    def loss(p, x, r):
        return jnp.mean(core.apply(p, carry, x, r)[1] ** 2)

    backward = jax.jit(jax.value_and_grad(loss))
    fwd_compile, fwd = time_call(forward, (params, xs, resets), repeats)
    bwd_compile, bwd = time_call(backward, (params, xs, resets), repeats)
    return dict(
        core=name,
        options={k: v for k, v in options.items()},
        T=t,
        B=batch,
        forward_ms=1e3 * fwd,
        forward_backward_ms=1e3 * bwd,
        forward_compile_s=fwd_compile,
        forward_backward_compile_s=bwd_compile,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=256, help="core features (all cores)")
    parser.add_argument("--state-size", type=int, default=256, help="S5 state size P (LRU: P/2)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--in-features", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", nargs="+", default=None, help="subset of variant names")
    parser.add_argument("--json", type=Path, default=Path("results/bench_cores.json"))
    args = parser.parse_args()

    table = variants(args.width, args.state_size, args.layers)
    chosen = args.cores or list(table)
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        parser.error(f"unknown core variant(s) {unknown}; allowed: {sorted(table)}")

    backend = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    print(
        f"backend: {backend}; B={args.batch}, width={args.width}, S5 P={args.state_size}, "
        f"layers={args.layers}; median of {args.repeats} runs\n"
    )
    header = "| core | T | forward ms | fwd+bwd ms | compile fwd s | compile fwd+bwd s |"
    print(header)
    print("|" + "---|" * 6)
    rows = []
    key = jax.random.PRNGKey(0)
    for t in args.lengths:
        for variant in chosen:
            name, options = table[variant]
            row = dict(
                bench_one(name, options, t, args.batch, args.in_features, args.repeats, key),
                variant=variant,
            )
            rows.append(row)
            print(
                f"| {variant} | {t} | {row['forward_ms']:.1f} | {row['forward_backward_ms']:.1f} "
                f"| {row['forward_compile_s']:.2f} | {row['forward_backward_compile_s']:.2f} |",
                flush=True,
            )
    ratios = {}
    for t in args.lengths:
        by = {r["variant"]: r for r in rows if r["T"] == t}
        if "s5-associative" in by and "s5-sequential" in by:
            ratios[t] = {
                k: by["s5-associative"][k] / by["s5-sequential"][k]
                for k in ("forward_ms", "forward_backward_ms")
            }
    if ratios:
        print("\nassociative / sequential time ratio (>1: sequential faster)")
        for t, r in ratios.items():
            print(
                f"  T={t}: forward {r['forward_ms']:.2f}x, fwd+bwd {r['forward_backward_ms']:.2f}x"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            dict(
                backend=backend,
                args=vars(args) | {"json": str(args.json)},
                rows=rows,
                associative_over_sequential=ratios,
            ),
            indent=2,
        )
    )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
