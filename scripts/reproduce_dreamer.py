"""Dreamer's learning proof: CartPole-v1 and RepeatPreviousEasy with several backbones.

    python scripts/reproduce_dreamer.py                              # both tasks, their cores
    python scripts/reproduce_dreamer.py --tasks cartpole --cores s5 --seeds 3
    python scripts/reproduce_dreamer.py --tasks repeat_previous --set replay.train_ratio=16
    python scripts/reproduce_dreamer.py --tasks cartpole --summarise   # runs as they are
    python scripts/reproduce_dreamer.py --report docs/results/dreamer_cartpole.json

Each task trains from its preset in ``configs/dreamer/`` with every core named (seeds
vmapped) in ``OUT/runs/ENV-CORE``; rerunning with the same settings continues or
reuses those runs. Per core and seed the script reads the run's metrics: the mean
return of the last 20 episodes (`ssmrl.metrics.last_episodes_mean`) and the MMER (max
over updates of the mean episodic return), both over the updates that end within the
task's step budget (100k, 500k). ``OUT/TASK.json`` holds the settings, the
figures, the curves and the checks (small enough to keep under ``docs/results/``, and
what ``--report`` turns back into the markdown tables of ``docs/dreamer.md``);
``OUT/TASK.png`` draws the curves. ``--set KEY=VALUE`` overrides a preset setting with
the keys and checks of a YAML file.

The checks: on CartPole-v1 the S5 backbone's last-20-episode mean reaches 400 within
100k env steps for at least 2 of 3 seeds; on RepeatPreviousEasy the S5 backbone's MMER
reaches 0.8 within 500k env steps and lies at least 0.3 above the MLP backbone's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmrl import configfile, experiment
from ssmrl.configfile import ConfigError
from ssmrl.driver import METRICS_FILE
from ssmrl.metrics import last_episodes_mean, mmer, nanmean, read_metrics, returns_matrix

ROOT = Path(__file__).resolve().parents[1]
LAST = 20  # episodes in the "last episodes" mean


@dataclass(frozen=True)
class Task:
    preset: str
    cores: tuple[str, ...]
    seeds: int
    max_steps: int  # the figures read the updates up to this many env steps per seed


CARTPOLE_RETURN, CARTPOLE_STEPS, CARTPOLE_SEEDS = 400.0, 100_000, 2
REPEAT_MMER, REPEAT_STEPS, REPEAT_ABOVE_MLP = 0.8, 500_000, 0.3
TASKS = {
    "cartpole": Task("configs/dreamer/cartpole.yaml", ("s5", "gru"), 3, CARTPOLE_STEPS),
    "repeat_previous": Task(
        "configs/dreamer/repeat_previous.yaml", ("s5", "mlp", "gru"), 1, REPEAT_STEPS
    ),
}


def run_core(
    settings: experiment.Settings, core: str, out: Path, max_steps: int, train: bool = True
) -> dict:
    """Train (or continue) one core in ``OUT/runs/ENV-CORE``; its figures from the metrics
    of the updates that end within ``max_steps`` env steps (``train`` False: only those)."""
    resolved = experiment.with_core(settings, core)
    cfg = resolved.hparams
    print(f"\n{cfg.env} / {core}: {cfg.num_updates} updates x {settings.run.seeds} seeds")
    run_dir = out / "runs" / f"{cfg.env}-{core}"
    start = time.perf_counter()
    if train:
        try:
            experiment.train(resolved, run_dir, resume=True, same_settings=True)
        except ConfigError as e:
            sys.exit(str(e))
    elif not (run_dir / METRICS_FILE).is_file():
        sys.exit(f"{run_dir}: no {METRICS_FILE} to summarise")
    records = [r for r in read_metrics(run_dir / METRICS_FILE) if r["env_steps"] <= max_steps]
    if not records:
        sys.exit(f"{run_dir}: no update ends within {max_steps:,} env steps")
    steps, returns = returns_matrix(records)
    return dict(
        core=core,
        env_steps=int(steps[-1]),
        seeds=returns.shape[1],
        last_mean_per_seed=_floats(last_episodes_mean(records, LAST)),
        mmer=mmer(returns),
        mmer_per_seed=[mmer(returns[:, s]) for s in range(returns.shape[1])],
        wall_s=round(time.perf_counter() - start, 1),
        train_wall_s=records[-1]["wall_s"],
        curve_steps=steps.tolist(),
        curve_mean=_floats(nanmean(returns, axis=1)),
    )


def _floats(x) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in np.asarray(x, np.float64)]


def checks(task: str, results: dict[str, dict]) -> list[tuple[str, bool]]:
    """The task's proof checks that the cores run allow: (description, met)."""
    out = []
    s5 = results.get("s5")
    if task == "cartpole" and s5 is not None:
        last = [v if v is not None else -math.inf for v in s5["last_mean_per_seed"]]
        good = sum(v >= CARTPOLE_RETURN for v in last)
        text = ", ".join("-" if v == -math.inf else f"{v:.0f}" for v in last)
        out.append(
            (
                f"S5: last-{LAST}-episode mean >= {CARTPOLE_RETURN:.0f} for >= {CARTPOLE_SEEDS} "
                f"seeds within {CARTPOLE_STEPS:,} env steps ({good} of {len(last)}: {text}; "
                f"{s5['env_steps']:,} steps)",
                good >= CARTPOLE_SEEDS and s5["env_steps"] <= CARTPOLE_STEPS,
            )
        )
    if task == "repeat_previous" and s5 is not None:
        out.append(
            (
                f"S5: MMER >= {REPEAT_MMER} within {REPEAT_STEPS:,} env steps "
                f"({s5['mmer']:.3f} in {s5['env_steps']:,})",
                s5["mmer"] >= REPEAT_MMER and s5["env_steps"] <= REPEAT_STEPS,
            )
        )
        if "mlp" in results:
            mlp = results["mlp"]["mmer"]
            out.append(
                (
                    f"S5 MMER >= MLP's + {REPEAT_ABOVE_MLP} ({s5['mmer']:.3f} vs {mlp:.3f})",
                    s5["mmer"] >= mlp + REPEAT_ABOVE_MLP,
                )
            )
    return out


def report(summary: dict) -> str:
    """Markdown: per core, the last-episodes mean per seed, the MMER, steps and time."""
    head = f"| core | last {LAST} episodes, per seed | MMER | env steps | train s |"
    lines = [head, "|---|---|---|---|---|"]
    for core, r in summary["results"].items():
        last = ", ".join("-" if v is None else f"{v:.3g}" for v in r["last_mean_per_seed"])
        mmer_cell = f"{r['mmer']:.3g} ({', '.join(f'{v:.3g}' for v in r['mmer_per_seed'])})"
        lines.append(
            f"| {core} | {last} | {mmer_cell} | {r['env_steps']:,} | {r['train_wall_s']:.0f} |"
        )
    lines.append("")
    lines += [f"- {'met' if met else 'NOT MET'}: {text}" for text, met in summary["checks"]]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, (core, r) in enumerate(summary["results"].items()):
        mean = np.array([np.nan if v is None else v for v in r["curve_mean"]])
        ax.plot(r["curve_steps"], mean, color=f"C{j}", label=f"{core} ({r['seeds']} seeds)")
    ax.set_title(f"Dreamer on {summary['env']}", fontsize=10)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episodic return")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--cores", nargs="+", help="backbones (default: the task's)")
    parser.add_argument("--seeds", type=int, help="seeds per core (default: the task's)")
    parser.add_argument("--total-timesteps", type=int, help="env steps per seed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting (YAML keys, e.g. replay.train_ratio=16)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/dreamer"))
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="write the summaries of the runs in OUT/runs as they are, without training",
    )
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print the tables of saved TASK.json files"
    )
    args = parser.parse_args()
    if args.report:
        for path in args.report:
            print(f"## {path}\n\n{report(json.loads(path.read_text(encoding='utf-8')))}\n")
        return
    loaded = {}
    try:
        for name in args.tasks:
            task = TASKS[name]
            overrides = configfile.parse_overrides(args.set)
            overrides |= {
                "total_timesteps": args.total_timesteps,
                "seeds": args.seeds or task.seeds,
            }
            loaded[name] = experiment.load_settings("dreamer", ROOT / task.preset, overrides)
    except ConfigError as e:
        parser.error(str(e))

    args.out.mkdir(parents=True, exist_ok=True)
    for name, settings in loaded.items():
        cores = args.cores or TASKS[name].cores
        results = {
            core: run_core(settings, core, args.out, TASKS[name].max_steps, not args.summarise)
            for core in cores
        }
        summary = {
            "task": name,
            "env": settings.hparams.env,
            "config": TASKS[name].preset,
            "overrides": args.set,
            "seeds": settings.run.seeds,
            "total_timesteps": settings.hparams.total_timesteps,
            "settings": configfile.to_dict(settings),
            "results": results,
            "checks": checks(name, results),
        }
        (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        plot(summary, args.out / f"{name}.png")
        print(f"\nDreamer on {summary['env']}:\n{report(summary)}")
        print(f"written: {args.out / (name + '.json')}, {args.out / (name + '.png')}")


if __name__ == "__main__":
    main()
