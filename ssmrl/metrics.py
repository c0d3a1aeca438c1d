"""Training metrics: POPGym's MMER score, a JSON-lines log, and the learning-curve plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def mmer(mean_returns: Any) -> float:
    """POPGym's max-mean episodic return of ``mean_returns [U, S]`` (updates x seeds).

    Per seed, the largest mean episodic return of any update (updates in which no
    episode ended are NaN and ignored); then the mean over seeds. NaN when some seed
    never finished an episode. A 1-D input is one seed.
    """
    r = np.asarray(mean_returns, np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2:
        raise ValueError(f"mean_returns must be [updates, seeds], got shape {r.shape}")
    if r.size == 0 or np.isnan(r).all(axis=0).any():
        return math.nan
    return float(np.nanmax(r, axis=0).mean())


def nanmean(x: Any, axis: int | None = None) -> Any:
    """Mean over the non-NaN entries; NaN (without a warning) where there are none."""
    x = np.asarray(x, np.float64)
    count = np.sum(~np.isnan(x), axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _jsonable(value: Any) -> Any:
    """Plain JSON values; NaN and infinities become null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Append-only JSON-lines file: one object per `write`, flushed at once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; [] when it does not exist.

    A last line cut short (a run killed mid-write) is skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate(path: str | os.PathLike, last_update: int) -> list[dict[str, Any]]:
    """Drop the records after ``last_update`` from a metrics file; return those kept."""
    path = Path(path)
    records = [r for r in read_metrics(path) if r.get("update", 0) <= last_update]
    if path.exists():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            "".join(json.dumps(r, allow_nan=False) + "\n" for r in records), encoding="utf-8"
        )
        tmp.replace(path)
    return records


def returns_matrix(
    records: Sequence[Mapping[str, Any]], key: str = "mean_return"
) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps [U], values [U, S])`` of metric ``key`` per seed (``KEY_per_seed``)
    from metrics records (null -> NaN)."""
    steps = np.array([r["env_steps"] for r in records], np.int64)
    rows = [[math.nan if v is None else v for v in r[f"{key}_per_seed"]] for r in records]
    return steps, np.array(rows, np.float64).reshape(len(records), -1)


def last_episodes_mean(records: Sequence[Mapping[str, Any]], n: int = 20) -> np.ndarray:
    """Per seed, the mean return of the last ``n`` episodes of a run, from its records.

    Reads ``mean_return_per_seed`` and ``episodes_per_seed`` (update means and counts):
    walking back from the last update, whole updates count with their episodes until
    the one that reaches ``n``, which counts with the episodes still missing at its
    mean. NaN for a seed with fewer than ``n`` episodes in all.

    | argument | shape                           | result |
    |----------|---------------------------------|--------|
    | records  | U records, lists of S per seed  | [S]    |
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not records:
        return np.zeros(0)
    if any("episodes_per_seed" not in r for r in records):
        raise ValueError("records without episodes_per_seed: this agent does not count episodes")
    _, returns = returns_matrix(records)
    counts = np.array([r["episodes_per_seed"] for r in records], np.float64)
    counts = counts.reshape(returns.shape)
    out = np.full(returns.shape[1], np.nan)
    for seed in range(returns.shape[1]):
        total, seen = 0.0, 0.0
        for mean, count in zip(returns[::-1, seed], counts[::-1, seed], strict=True):
            if count <= 0:
                continue
            take = min(count, n - seen)
            total, seen = total + take * mean, seen + take
            if seen >= n:
                out[seed] = total / n
                break
    return out


def plot_learning_curve(
    env_steps: Any,
    mean_returns: Any,
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "mean episodic return",
) -> Path:
    """Save mean episodic return (or another metric, ``ylabel``) against env steps: each
    seed faint, their mean bold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.asarray(env_steps)
    returns = np.asarray(mean_returns, np.float64).reshape(len(steps), -1)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for seed in range(returns.shape[1]):
        ok = ~np.isnan(returns[:, seed])
        ax.plot(steps[ok], returns[ok, seed], color="C0", alpha=0.25, linewidth=1)
    mean = nanmean(returns, axis=1)
    ok = ~np.isnan(mean)
    label = f"mean of {returns.shape[1]} seeds" if returns.shape[1] > 1 else None
    ax.plot(steps[ok], mean[ok], color="C0", linewidth=2.2, label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if label:
        ax.legend(loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
