"""A training run's log: ``metrics.jsonl``, the learning curve, TensorBoard scalars and
the progress bar (`ssmrl.driver` writes through them between chunks)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from ssmrl.metrics import MetricsWriter, nanmean, plot_learning_curve, returns_matrix, truncate

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "learning_curve.png"


class Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} steps/s" if speed else "- steps/s", style="progress.data.speed")


def progress(console: Console, label: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(
            "{task.completed:,.0f}/{task.total:,.0f} steps", table_column=Column(no_wrap=True)
        ),
        Rate(table_column=Column(no_wrap=True)),
        TextColumn(f"{label} {{task.fields[ret]}}", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(),
        console=console,
    )


def tensorboard(log_dir: Path, console: Console):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        console.print(
            "[yellow]TensorBoard logging unavailable: tensorboardX is not installed "
            "(pip install tensorboardX); continuing without it"
        )
        return None
    return SummaryWriter(str(log_dir))


def format_value(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def records(
    metrics: Mapping[str, np.ndarray],
    rows: int,
    done: int,
    steps_per_update: int,
    wall_s: float,
    headline: str = "mean_return",
) -> list[dict[str, Any]]:
    """One log record per update of a chunk: the headline metric (and, where the agent
    counts them, ended episodes) per seed, other metrics seed-averaged."""
    out = []
    for j in range(rows):
        update = done + j + 1
        per_seed = metrics[headline][j].reshape(-1)
        record = {
            "update": update,
            "env_steps": update * steps_per_update,
            headline: float(nanmean(per_seed)),
            f"{headline}_per_seed": per_seed,
            **{k: float(np.mean(v[j])) for k, v in metrics.items() if k != headline},
        }
        if "episodes" in metrics:
            record["episodes_per_seed"] = metrics["episodes"][j].reshape(-1)
        out.append({**record, "wall_s": round(wall_s, 3)})
    return out


class Log:
    """Where a run's metrics go: metrics.jsonl, the learning curve, TensorBoard; of a
    multi-process run, only process 0 writes them (``primary``)."""

    def __init__(
        self,
        run_dir: Path,
        tensorboard_on: bool,
        done: int,
        console: Console,
        headline: str,
        primary: bool = True,
    ):
        self.path, self.plot_path, self.name = (
            run_dir / METRICS_FILE,
            run_dir / PLOT_FILE,
            run_dir.name,
        )
        self.headline, self.primary = headline, primary
        records = truncate(self.path, done) if primary else []
        steps, values = returns_matrix(records, headline) if records else ([], [])
        self.steps, self.returns = list(steps), list(values)
        finite = [r[headline] for r in records if r[headline] is not None]
        self.last_return = finite[-1] if finite else None
        self.writer = MetricsWriter(self.path) if primary else None
        on = tensorboard_on and primary
        self.tb = tensorboard(run_dir / "tensorboard", console) if on else None

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if self.writer is not None:
                self.writer.write(record)
            self.steps.append(record["env_steps"])
            self.returns.append(record[f"{self.headline}_per_seed"])
            if self.tb is not None:
                for k, v in record.items():
                    if isinstance(v, float) and math.isfinite(v):
                        self.tb.add_scalar(f"train/{k}", v, record["env_steps"])
            if math.isfinite(record[self.headline]):
                self.last_return = record[self.headline]

    def plot(self) -> None:
        if self.steps and self.primary:
            label = "mean episodic return" if self.headline == "mean_return" else self.headline
            plot_learning_curve(self.steps, self.returns, self.plot_path, self.name, label)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.tb is not None:
            self.tb.close()
