"""POPGym MMER table for PPO: tasks x memory cores, several seeds trained at once.

    python scripts/reproduce_popgym.py                    # CPU targets, configs/ppo_cpu.yaml
    python scripts/reproduce_popgym.py --tasks RepeatPreviousEasy --cores s5 gru --seeds 2
    python scripts/reproduce_popgym.py --paper            # the S5 paper's Hard-level table (GPU)

Each (task, core) pair is one run of ``ssmrl.driver.train`` with its seeds vmapped,
written to ``OUT/runs/TASK-CORE`` (metrics.jsonl, learning_curve.png, checkpoints/);
an interrupted reproduction continues where it stopped when run again with the same
settings. The table of MMER (max over updates of the mean episodic return, mean over
seeds, ± the standard deviation over seeds) goes to ``OUT/mmer.md`` and
``OUT/mmer.json``, and every task's curves, one line per core, to ``OUT/curves.png``.
The script ends by checking the targets that apply to what it ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ssmrl import configfile, envs, experiment
from ssmrl.configfile import ConfigError
from ssmrl.driver import METRICS_FILE
from ssmrl.metrics import mmer, nanmean, read_metrics, returns_matrix

CPU_TASKS = [
    "RepeatPreviousEasy",
    "RepeatFirstEasy",
    "CountRecallEasy",
    "AutoencodeEasy",
    "PositionOnlyCartPoleEasy",
]
PAPER_TASKS = [
    "PositionOnlyCartPoleHard",
    "NoisyPositionOnlyCartPoleHard",
    "PositionOnlyPendulumHard",
    "NoisyPositionOnlyPendulumHard",
    "RepeatPreviousHard",
]
# S5-PPO MMER at the Hard level as reported by the S5-in-RL paper (Lu et al., 2023).
PAPER_S5 = {
    "PositionOnlyCartPoleHard": 1.0,
    "NoisyPositionOnlyCartPoleHard": 0.28,
    "PositionOnlyPendulumHard": 0.79,
    "NoisyPositionOnlyPendulumHard": 0.55,
    "RepeatPreviousHard": 0.91,
}
ABOVE_MLP = ["RepeatPreviousEasy", "RepeatFirstEasy", "CountRecallEasy", "AutoencodeEasy"]
MARGIN = 0.1  # "clearly above": MMER higher by at least this much


def run_one(settings: experiment.Settings, task: str, core: str, out: Path) -> dict:
    """Train ``task`` with ``core`` for every seed; MMER per seed from the metrics file."""
    settings = experiment.with_core(settings, core)
    cfg = dataclasses.replace(settings.hparams, env=task)
    cfg.validate()
    run_dir = out / "runs" / f"{task}-{core}"
    print(f"\n{task} / {core}: {cfg.num_updates} updates x {settings.run.seeds} seeds")
    start = time.perf_counter()
    try:
        experiment.train(
            dataclasses.replace(settings, hparams=cfg), run_dir, resume=True, same_settings=True
        )
    except ConfigError as e:
        sys.exit(str(e))
    steps, returns = returns_matrix(read_metrics(run_dir / METRICS_FILE))
    per_seed = [mmer(returns[:, s]) for s in range(returns.shape[1])]
    return dict(
        task=task,
        core=core,
        mmer=mmer(returns),
        mmer_std=float(np.std(per_seed)),
        mmer_per_seed=per_seed,
        env_steps=int(steps[-1]),
        seeds=returns.shape[1],
        wall_s=time.perf_counter() - start,
        curve_steps=steps.tolist(),
        curve_mean=[None if math.isnan(v) else v for v in nanmean(returns, axis=1)],
    )


def table(results: list[dict], tasks: list[str], cores: list[str]) -> str:
    by = {(r["task"], r["core"]): r for r in results}
    paper = any(t in PAPER_S5 for t in tasks)
    head = ["task", *cores] + (["S5 (paper)"] if paper else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in tasks:
        cells = [task]
        for core in cores:
            r = by[(task, core)]
            cells.append(f"{r['mmer']:.3f} ± {r['mmer_std']:.3f}")
        if paper:
            cells.append(f"{PAPER_S5[task]:.2f}" if task in PAPER_S5 else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: list[dict]) -> list[tuple[str, bool]]:
    """The CPU targets that the finished runs allow checking: (description, met)."""
    by = {(r["task"], r["core"]): r["mmer"] for r in results}
    checks = []
    for task in ("RepeatPreviousEasy", "PositionOnlyCartPoleEasy"):
        if (task, "s5") in by:
            checks.append(
                (f"S5 on {task} >= 0.95 (MMER {by[task, 's5']:.3f})", by[task, "s5"] >= 0.95)
            )
    for core in ("lru", "transformer"):
        if ("RepeatPreviousEasy", core) in by:
            value = by["RepeatPreviousEasy", core]
            text = f"{core} on RepeatPreviousEasy >= 0.9 (MMER {value:.3f})"
            checks.append((text, value >= 0.9))
    for task in ABOVE_MLP:
        if (task, "s5") in by and (task, "mlp") in by:
            s5, mlp = by[task, "s5"], by[task, "mlp"]
            text = f"S5 above MLP by >= {MARGIN} on {task} ({s5:.3f} vs {mlp:.3f})"
            checks.append((text, s5 >= mlp + MARGIN))
    return checks


def plot(results: list[dict], tasks: list[str], cores: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    by = {(r["task"], r["core"]): r for r in results}
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, core in enumerate(cores):
            r = by[(task, core)]
            mean = np.array([np.nan if v is None else v for v in r["curve_mean"]])
            ax.plot(r["curve_steps"], mean, color=f"C{j}", label=core)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean episodic return")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="Hard tasks, paper preset, S5")
    parser.add_argument("--config", type=Path, help="YAML preset (default: by --paper)")
    parser.add_argument("--tasks", nargs="+", help="env names (default: by --paper)")
    parser.add_argument("--cores", nargs="+", help="core names (default: s5 mlp; --paper: s5)")
    parser.add_argument("--seeds", type=int, help="seeds per run (default: the preset's)")
    parser.add_argument("--total-timesteps", type=int, help="env steps per seed")
    parser.add_argument("--out", type=Path, default=Path("results/popgym"))
    args = parser.parse_args()

    preset = "ppo_popgym_paper.yaml" if args.paper else "ppo_cpu.yaml"
    config = args.config or Path(__file__).resolve().parents[1] / "configs" / preset
    tasks = args.tasks or (PAPER_TASKS if args.paper else CPU_TASKS)
    cores = args.cores or (["s5"] if args.paper else ["s5", "mlp"])
    try:
        overrides = {"total_timesteps": args.total_timesteps, "seeds": args.seeds}
        settings = experiment.load_settings("ppo", config, overrides)
        for task in tasks:
            envs.make(task)
    except (configfile.ConfigError, ValueError) as e:
        parser.error(str(e))

    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_one(settings, task, core, args.out) for task in tasks for core in cores]
    md = table(results, tasks, cores)
    (args.out / "mmer.md").write_text(md + "\n", encoding="utf-8")
    (args.out / "mmer.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot(results, tasks, cores, args.out / "curves.png")
    hp = settings.hparams
    print(
        f"\nMMER, {settings.run.seeds} seeds, {hp.total_timesteps:,} env steps each ({config.name})"
    )
    print(md)
    for text, met in targets(results):
        print(f"{'met    ' if met else 'NOT MET'}  {text}")
    print(f"\nwritten: {args.out / 'mmer.md'}, {args.out / 'mmer.json'}, {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
