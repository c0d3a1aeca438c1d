"""Imagination face-off: world models with each backbone at equal size, per horizon.

    python scripts/imagination_faceoff.py                          # S5 and GRU on TwoRoomsRecall
    python scripts/imagination_faceoff.py --cores s5 gru lstm mlp --updates 4000
    python scripts/imagination_faceoff.py --cores s5 gru gru:chrono_steps=256 lru transformer
    python scripts/imagination_faceoff.py --set core.state_size=128 --out results/wm-n128
    python scripts/imagination_faceoff.py --report docs/results/imagination_two_rooms.json

Every core named trains a world model from ``configs/worldmodel/two_rooms.yaml`` (env and
settings changeable with ``--env`` and ``--set``) in ``OUT/runs/ENV-CORE``; rerunning with
the same settings continues or reuses those runs. A core named ``NAME:KEY=VALUE,...`` is
core NAME with those options set (values read as YAML), trained in
``OUT/runs/ENV-NAME-KEYVALUE...``, so one core can appear with several options. The S5
model's parameter count is the reference: every other core gets the width whose world
model is closest to it (`ssmrl.matching.matched_width`, within 10%). Each trained model is
then measured as ``ssmrl imagine`` does (`ssmrl.experiment.imagine`: ``--context`` steps
observed, open-loop imagination with the true actions, on fresh episodes), and the script
prints cell accuracy per horizon side by side with the copy-last-frame and marginal
baselines, writes ``OUT/ENV.json`` (what ``--report`` prints again) and checks the bars:

- every core reaches 95% cell accuracy at horizons up to 8;
- S5 reaches 90% at horizon 128;
- S5's error (1 - accuracy) at horizon 128 is at most half each GRU's;
- every core beats both baselines at every horizon.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from ssmrl import configfile, experiment
from ssmrl.configfile import ConfigError
from ssmrl.matching import matched_width, param_count

ROOT = Path(__file__).resolve().parents[1]
PRESET = "configs/worldmodel/two_rooms.yaml"
SHORT, SHORT_ACCURACY, LONG, LONG_ACCURACY, ERROR_RATIO = 8, 0.95, 128, 0.90, 0.5


def parse_core(spec: str) -> tuple[str, dict]:
    """``"gru:chrono_steps=256,num_layers=1"`` -> ``("gru", {"chrono_steps": 256, ...})``."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, text = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise ConfigError(
                f"core {spec!r}: expected NAME:KEY=VALUE,..., e.g. gru:chrono_steps=256"
            )
        options[key] = yaml.safe_load(text)
    if name == "s5" and options:
        raise ConfigError("core s5 is the reference; change it with --set core.KEY=VALUE")
    if "features" in options:
        raise ConfigError(f"core {spec!r}: the width (features) is matched to S5's, not set")
    return name, options


def run_name(env: str, spec: str) -> str:
    """The run directory's name: ``ENV-NAME`` and each option as ``-KEYVALUE``."""
    name, options = parse_core(spec)
    return "-".join([env, name, *(f"{k}{v}" for k, v in options.items())])


def core_settings(settings: experiment.Settings, spec: str, obs_dim: int, act_dim: int):
    """``(settings with core spec, parameter count)``: S5 as given, others width-matched to it."""
    reference = settings.hparams.world_model()
    name, options = parse_core(spec)
    if name == "s5":
        return settings, param_count(reference, obs_dim, act_dim)
    resolved = experiment.with_core(settings, name)
    try:
        chosen, count = matched_width(reference, name, obs_dim, act_dim, options=options)
    except TypeError as e:  # an option the core does not have
        raise ConfigError(f"core {spec!r}: {e}") from None
    return replace(resolved, hparams=replace(resolved.hparams, core=chosen.core)), count


def run_core(settings, core: str, out: Path, args) -> dict:
    """Train (or continue) one core, then measure its imagination."""
    from ssmrl import envs

    env, env_params = envs.make(settings.hparams.env)
    obs_dim = env.observation_space(env_params).shape[0]
    act_dim = env.action_space(env_params).n
    try:
        resolved, count = core_settings(settings, core, obs_dim, act_dim)
    except ValueError as e:  # a ConfigError, or no width within 10%
        sys.exit(str(e))
    run_dir = out / "runs" / run_name(resolved.hparams.env, core)
    print(
        f"\n{resolved.hparams.env} / {core}: {count:,} parameters, width "
        f"{resolved.hparams.core.features}, {resolved.hparams.updates} updates"
    )
    start = time.perf_counter()
    try:
        experiment.train(resolved, run_dir, resume=True, same_settings=True)
        run = experiment.restore(run_dir)
        result = experiment.imagine(
            run, args.context, tuple(args.horizons), args.episodes, args.seed
        )
    except ConfigError as e:
        sys.exit(str(e))
    return {
        **result,
        "params": count,
        "features": resolved.hparams.core.features,
        "settings": configfile.to_dict(resolved),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def checks(results: dict[str, dict]) -> list[tuple[str, bool]]:
    """The face-off's bars that the cores run allow: (description, met)."""
    out = []
    first = next(iter(results.values()))
    horizons = first["horizons"]

    def accuracy(core: str, h: int) -> float:
        value = results[core]["model"]["accuracy"][horizons.index(h)]
        return float("nan") if value is None else value

    for core in results:
        short = [accuracy(core, h) for h in horizons if h <= SHORT]
        out.append(
            (
                f"{core}: accuracy >= {SHORT_ACCURACY} at horizons <= {SHORT} "
                f"({', '.join(f'{a:.3f}' for a in short)})",
                bool(short) and min(short) >= SHORT_ACCURACY,
            )
        )
        copy, flat = first["copy_last"]["accuracy"], first["marginal"]["accuracy"]
        model = [accuracy(core, h) for h in horizons]
        out.append(
            (
                f"{core}: beats copy-last and marginal at every horizon",
                all(m > max(c, f) for m, c, f in zip(model, copy, flat, strict=True)),
            )
        )
    if "s5" in results and LONG in horizons:
        a = accuracy("s5", LONG)
        out.append(
            (f"s5: accuracy >= {LONG_ACCURACY} at horizon {LONG} ({a:.3f})", a >= LONG_ACCURACY)
        )
        for core in (c for c in results if c.partition(":")[0] == "gru"):
            e_s5, e_gru = 1 - a, 1 - accuracy(core, LONG)
            out.append(
                (
                    f"s5 error at {LONG} <= {ERROR_RATIO} x {core}'s ({e_s5:.3f} vs {e_gru:.3f})",
                    e_s5 <= ERROR_RATIO * e_gru,
                )
            )
    return out


def report(summary: dict) -> str:
    """Markdown tables: cell accuracy per horizon (cores and baselines), then the checks."""
    results = summary["results"]
    first = next(iter(results.values()))
    cores = list(results)
    lines = [
        f"{summary['env']}, context {first['context']}, {first['episodes']} fresh episodes; "
        "cell accuracy (MSE) per imagination horizon",
        "",
        "| horizon | "
        + " | ".join(f"{c} ({results[c]['params']:,} params)" for c in cores)
        + " | copy last | marginal |",
        "|---|" + "---|" * (len(cores) + 2),
    ]

    def cell(errors: dict, i: int) -> str:
        a, m = errors["accuracy"][i], errors["mse"][i]
        return "-" if a is None else f"{a:.3f} ({m:.4f})"

    for i, h in enumerate(first["horizons"]):
        row = [cell(results[c]["model"], i) for c in cores]
        row += [cell(first["copy_last"], i), cell(first["marginal"], i)]
        lines.append(f"| {h} | " + " | ".join(row) + " |")
    lines += ["", "| core | width | updates | imagined steps/s | wall s |", "|---|---|---|---|---|"]
    for c in cores:
        r = results[c]
        lines.append(
            f"| {c} | {r['features']} | {r['update']} | "
            f"{r['imagination_steps_per_s']:,.0f} | {r['wall_s']} |"
        )
    lines += ["", "checks:"]
    lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in summary["checks"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=None, help="task (default: the preset's)")
    parser.add_argument(
        "--cores",
        nargs="+",
        default=["s5", "gru"],
        help="cores, each NAME or NAME:KEY=VALUE,... (e.g. gru:chrono_steps=256); s5 is needed",
    )
    parser.add_argument("--updates", type=int, default=None, help="training updates per core")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128])
    parser.add_argument("--episodes", type=int, default=256, help="fresh episodes measured on")
    parser.add_argument("--seed", type=int, default=12345, help="seed of those episodes")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting (YAML keys, e.g. core.state_size=128)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/imagination"))
    parser.add_argument("--report", type=Path, nargs="+", help="print saved OUT/ENV.json files")
    args = parser.parse_args(argv)
    if args.report:
        for path in args.report:
            print(report(json.loads(path.read_text())))
        return 0
    if "s5" not in args.cores:
        parser.error("--cores must include s5 (the reference size)")
    try:
        for core in args.cores:
            parse_core(core)
        overrides = configfile.parse_overrides(args.set)
        overrides.update(
            {
                k: v
                for k, v in (("env", args.env), ("updates", args.updates), ("seeds", args.seeds))
                if v is not None
            }
        )
        settings = experiment.load_settings("worldmodel", ROOT / PRESET, overrides)
    except ConfigError as e:
        parser.error(str(e))
    order = ["s5"] + [c for c in args.cores if c != "s5"]
    results = {core: run_core(settings, core, args.out, args) for core in order}
    summary = {"env": settings.hparams.env, "results": results}
    summary["checks"] = checks(results)
    path = args.out / f"{settings.hparams.env}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print("\n" + report(summary))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
