"""Training driver: many seeds at once in jitted chunks of updates, with logs and checkpoints.

```python
agent = ssmrl.agents.ppo.make_agent(cfg, env, env_params)       # an ssmrl.agent.Agent
summary = ssmrl.driver.train(agent, run_dir="runs/demo", run=RunConfig(seeds=4))
print(summary.mmer, summary.plot)
```

The driver knows agents only through the `ssmrl.agent.Agent` contract: ``init(key) ->
runner`` and ``update(runner) -> (runner, metrics)``, where ``metrics`` is a NamedTuple
(or dict) of scalars with a ``mean_return`` entry (NaN when no episode ended in that
update), or the agent's other ``headline`` metric, with ``num_updates`` and
``steps_per_update``. Seeds are vmapped;
``chunk`` updates run as one jitted ``lax.scan``, and between chunks the driver writes
``metrics.jsonl`` (one line per update), updates the progress bar, checkpoints, and
redraws ``learning_curve.png``. Continuing a run from its last checkpoint gives the
same parameters, bit for bit, as a run that never stopped.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from ssmrl import configfile, runlog, scale
from ssmrl.agent import Agent
from ssmrl.checkpoint import Checkpointer, CheckpointError
from ssmrl.configfile import ConfigError
from ssmrl.metrics import mmer
from ssmrl.runlog import METRICS_FILE, PLOT_FILE, Log, format_value, records
from ssmrl.xla import compiler_options

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "unreadable-checkpoints"
RESUMABLE = (
    "chunk",
    "checkpoint_every",
    "keep_checkpoints",
    "tensorboard",
    "fast_compile",
    "devices",
)
"""Run settings that may change when a run is resumed (they do not change what is trained;
other device counts change the order of float sums only)."""


@dataclass(frozen=True)
class RunConfig:
    """How a training run is driven: seeds, chunking, checkpoints and logging."""

    seed: int = 0
    """seed i of a run trains with the key fold_in(PRNGKey(seed), i)"""
    seeds: int = 1
    """number of seeds trained at once (vmapped)"""
    chunk: int = 10
    """updates per jitted call; logging, progress and checkpoints happen between calls"""
    checkpoint_every: int = 100
    """checkpoint after the chunk passing each multiple of this many updates (0: at the end only)"""
    keep_checkpoints: int = 2
    """number of newest checkpoints kept"""
    tensorboard: bool = False
    """also write TensorBoard scalars into the run directory (needs tensorboardX)"""
    fast_compile: bool = False
    """compile with XLA's backend optimisations off: a quicker start, slower updates"""
    devices: int = 0
    """devices the env batch is split over (`ssmrl.scale`; 0: every device)"""

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        for name in ("seeds", "chunk", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.devices < 0:
            raise ValueError(f"devices must be >= 0 (0: every device), got {self.devices}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")


class Summary(NamedTuple):
    """What a finished run leaves behind."""

    run_dir: Path
    updates: int
    env_steps: int
    mmer: float  # POPGym's max-mean episodic return over the whole run, mean over seeds
    final: float  # mean over seeds of the last (finite) headline metric logged
    headline: str  # the agent's headline metric: mean_return, or e.g. a loss
    plot: Path | None
    checkpoint: Path | None
    state: Any  # the final runner state, leading axis = seeds


class NonFiniteError(RuntimeError):
    """A loss became NaN or infinite; the run stopped without saving that state."""


def seed_keys(seed: int, seeds: int) -> jax.Array:
    """PRNG keys ``[seeds, 2]``; seed i's key does not depend on how many seeds run."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(seeds))


@functools.lru_cache(maxsize=16)
def compiled(
    init: Callable,
    update: Callable,
    num_updates: int,
    chunk: int,
    fast_compile: bool = False,
    placement: scale.Placement | None = None,
):
    """``(init [seeds] -> runner, run_chunk(runner, start) -> (runner, metrics [chunk, seeds]))``.

    Both are jitted and cached per argument tuple, so runs that share an agent share
    compiled code. Steps of the last chunk past ``num_updates`` are skipped by a
    ``lax.cond``, so every chunk runs the same compiled program. ``placement`` splits the
    runner's env batch over several devices (`ssmrl.scale`); without it, everything runs
    on the default device.
    """
    update_seeds = jax.vmap(update)

    def run_chunk(runner, start):
        metrics_shape = jax.eval_shape(update_seeds, runner)[1]

        def skip(runner):
            return runner, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)

        def body(runner, i):
            return jax.lax.cond(start + i < num_updates, update_seeds, skip, runner)

        return jax.lax.scan(body, runner, jnp.arange(chunk))

    options = compiler_options(fast_compile)
    if placement is None:
        return (
            jax.jit(jax.vmap(init), compiler_options=options),
            jax.jit(run_chunk, compiler_options=options),
        )
    state, whole = placement.shardings(jax.eval_shape(jax.vmap(init), seed_keys(0, 1)))
    return (
        jax.jit(jax.vmap(init), out_shardings=state, compiler_options=options),
        jax.jit(
            run_chunk,
            in_shardings=(state, whole),
            out_shardings=(state, whole),
            compiler_options=options,
        ),
    )


def _as_dict(metrics: Any) -> dict[str, np.ndarray]:
    metrics = jax.device_get(metrics)
    items = metrics._asdict() if hasattr(metrics, "_asdict") else dict(metrics)
    return {k: np.asarray(v) for k, v in items.items()}


def _first_non_finite(metrics: Mapping[str, np.ndarray]) -> tuple[int, str, int] | None:
    """``(row, name, seed)`` of the first non-finite float metric, ``mean_return`` aside."""
    worst = None
    for name, value in metrics.items():
        if name == "mean_return" or not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value.reshape(value.shape[0], -1))
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            seed = int(np.argmax(bad[row]))
            if worst is None or row < worst[0]:
                worst = (row, name, seed)
    return worst


class RunError(ConfigError):
    """What stops a run before it starts (one line): its directory, checkpoints or size."""


def device_memory() -> int | None:
    """Bytes the default device can hold: an accelerator's limit, or the host's available
    memory for the CPU backend; None when unknown."""
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(agent: Agent, init_seeds: Callable, keys: jax.Array) -> None:
    """`RunError` when the seeds' state plus the agent's estimate of its update's working
    set (``agent.memory_bytes``, per seed) clearly exceeds the device's memory."""
    state = jax.eval_shape(init_seeds, keys)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    work_bytes = len(keys) * agent.memory_bytes
    limit = device_memory()
    if limit is not None and state_bytes + work_bytes > limit:
        gib = 2.0**30
        raise RunError(
            f"the run needs about {(state_bytes + work_bytes) / gib:.1f} GiB (state "
            f"{state_bytes / gib:.1f}, updates {work_bytes / gib:.1f}) but the "
            f"{jax.local_devices()[0].platform} device has {limit / gib:.1f} GiB; use fewer envs, "
            "steps or seeds"
        )


def _holds_a_run(run_dir: Path) -> bool:
    metrics = run_dir / METRICS_FILE
    return (run_dir / CONFIG_FILE).exists() or (metrics.exists() and metrics.stat().st_size > 0)


def same_settings_as(
    config: Mapping | None, run_dir: Path, may_differ: tuple[str, ...] = ()
) -> Callable[[int, dict], None]:
    """A ``check_meta`` for `Checkpointer.restore_newest`: `RunError` when a checkpoint was
    saved with other settings than ``config`` (`RESUMABLE` ones and ``may_differ`` aside;
    equal NaNs are equal), which happens when a run's config.yaml is edited. A key the
    checkpoint does not record is a setting added to ssmrl after it was saved: it does
    not count."""

    def check(update: int, meta: dict) -> None:
        saved = meta.get("config")
        if saved is None or config is None:
            return
        recorded = configfile.flat(saved)
        keys_changed = [
            k
            for k in configfile.changed(saved, config)
            if k not in RESUMABLE and k not in may_differ and k in recorded
        ]
        if keys_changed:
            raise RunError(
                f"{run_dir}: checkpoint {update} was saved with other settings than "
                f"{CONFIG_FILE} now holds ({', '.join(keys_changed)}); was it edited? "
                "Restore those settings or start a new run"
            )

    return check


def _start(
    ckpt: Checkpointer, init_seeds, keys, resume: bool, config, console, may_differ=()
) -> tuple:
    """``(runner [seeds], updates done)``: the newest readable checkpoint's state, or a
    fresh one. Refuses to start over where checkpoints exist (`FileExistsError`), and to
    resume a checkpoint saved with other settings than ``config`` (`RunError`;
    `RESUMABLE` run settings and ``may_differ`` aside)."""
    run_dir = ckpt.directory.parent
    if not resume:
        if ckpt.latest is not None:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints; pass resume=True or use a new run_dir"
            )
        return init_seeds(keys), 0
    if ckpt.latest is None:  # and nothing of a run there: `train` checked
        return init_seeds(keys), 0

    try:
        template = jax.eval_shape(init_seeds, keys)
        check = same_settings_as(config, run_dir, may_differ)
        runner, done, skipped = ckpt.restore_newest(template, check)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    if skipped:
        aside = run_dir / UNREADABLE_DIR
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            for update in [u for u in ckpt.updates() if u > done]:
                shutil.move(ckpt.directory / str(update), aside / str(update))
        ckpt.reload()
        console.print(
            f"[yellow]{'; '.join(skipped)}. Moved to {aside}; resuming from the older "
            f"checkpoint {done} instead."
        )
    console.print(f"Resuming {run_dir} from update {done}")
    return runner, done


def _remove_new_run(run_dir: Path, created: bool, console) -> None:
    """Remove what a run that stopped before its first checkpoint wrote."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        for name in (CONFIG_FILE, METRICS_FILE, PLOT_FILE, CHECKPOINT_DIR, "tensorboard"):
            path = run_dir / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
    console.print(f"[yellow]Nothing was checkpointed; removed what the run wrote in {run_dir}")


def _chunk_metrics(metrics: Any, done: int, chunk: int, num_updates: int) -> dict:
    """The chunk's metrics as arrays, without the rows skipped past ``num_updates``."""
    return {k: v[: min(chunk, num_updates - done)] for k, v in _as_dict(metrics).items()}


def _non_finite(metrics: Mapping[str, np.ndarray], bad: tuple, done: int, ckpt) -> NonFiniteError:
    row, name, seed = bad
    value = metrics[name][row].reshape(-1)[seed]
    kept = (
        f"the last good checkpoint is update {ckpt.latest} in {ckpt.directory}"
        if ckpt.latest is not None
        else "no checkpoint was saved"
    )
    return NonFiniteError(
        f"{name} is {value} at update {done + row + 1} (seed {seed}); "
        f"stopped without saving that state; {kept}"
    )


def train(
    agent: Agent,
    *,
    run_dir: str | os.PathLike,
    run: RunConfig = RunConfig(),
    config: Mapping[str, Any] | None = None,
    resume: bool = False,
    console: Console | None = None,
    resume_command: str | None = None,
    on_chunk: Callable[[int, Any], None] | None = None,
    may_differ: tuple[str, ...] = (),
) -> Summary:
    """Train ``run.seeds`` seeds of ``agent`` for ``agent.num_updates`` updates into ``run_dir``.

    Args:
        agent: an `ssmrl.agent.Agent`; only ``init``, ``update``, ``num_updates``,
            ``steps_per_update``, ``memory_bytes`` and ``headline`` are used here.
        run_dir: created if needed; ``config`` (the resolved config) is written there
            as ``config.yaml`` when the run starts.
        resume: continue from the newest readable checkpoint in ``run_dir`` (newer,
            unreadable ones are moved to ``unreadable-checkpoints/``); metrics logged
            after it are dropped. A directory that holds no run starts from scratch; one
            that holds a run but no checkpoint is refused.
        console: where the progress bar and messages go (default: stderr).
        resume_command: the command that continues this run, shown on Ctrl-C.
        on_chunk: called as ``on_chunk(updates_done, runner)`` after every chunk.
        may_differ: config keys besides `RESUMABLE` that may differ from a checkpoint's
            (a run's length, where nothing trained depends on it: `ssmrl.experiment`).

    Before compiling, a run whose state and ``agent.memory_bytes`` clearly exceed the
    device's memory is refused; a fresh run that stops (error or Ctrl-C) before its first
    checkpoint removes what it wrote. Checkpoints record ``config``, and resuming one saved
    with other settings (`RESUMABLE` ones aside) is refused.

    Raises:
        RunError: (a `ConfigError`, one line) a run too large, a file in the way of
            ``run_dir``, nothing to resume from, no readable checkpoint, or a checkpoint
            saved with other settings.
        FileExistsError: ``run_dir`` holds checkpoints and ``resume`` is False.
        NonFiniteError: a float metric other than ``mean_return`` (e.g. a loss) was NaN
            or infinite; nothing after the previous checkpoint is saved.
        KeyboardInterrupt: re-raised after the last completed chunk is checkpointed.
    """
    run.validate()
    primary = jax.process_index() == 0  # of a multi-process run, only process 0 writes
    console = (console or Console(stderr=True, soft_wrap=True)) if primary else Console(quiet=True)
    run_dir = Path(run_dir)
    num_updates, steps_per_update = agent.num_updates, agent.steps_per_update
    chunk = min(run.chunk, num_updates)
    try:
        # Every device by default; an agent without an env batch (the world-model
        # trainer) runs on one unless told otherwise.
        devices = scale.device_count(run.devices) if run.devices or agent.env_fields else 1
        placement = scale.Placement.of(agent, devices) if devices > 1 else None
    except ValueError as e:
        raise RunError(str(e)) from None
    init_seeds, run_chunk = compiled(
        agent.init, agent.update, num_updates, chunk, run.fast_compile, placement
    )
    keys = seed_keys(run.seed, run.seeds)
    check_memory(agent, init_seeds, keys)
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists() and not parent.is_dir():
            raise RunError(f"run directory {run_dir}: {parent} is a file")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_command = resume_command or f"resume from {run_dir / CHECKPOINT_DIR}"

    checkpoints = run_dir / CHECKPOINT_DIR
    if resume and _holds_a_run(run_dir):
        if not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            raise RunError(
                f"{run_dir}: nothing to resume from (no checkpoint in {checkpoints}); its "
                "files are left as they are: start the run over in a new directory"
            )
    ckpt = Checkpointer(checkpoints, max_to_keep=run.keep_checkpoints)
    try:
        runner, done = _start(ckpt, init_seeds, keys, resume, config, console, may_differ)
        if placement is not None:  # a restored state arrives as the checkpoint holds it
            runner = jax.device_put(runner, placement.shardings(runner)[0])
    except BaseException:
        ckpt.close()
        if created and primary:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    fresh = done == 0
    if config is not None and primary:  # on resume too: the run goes on with these settings
        configfile.write_yaml(config, run_dir / CONFIG_FILE)
    headline = agent.headline
    label = "return" if headline == "mean_return" else headline
    log = Log(run_dir, run.tensorboard, done, console, headline, primary)

    def save(update: int) -> Path:
        if ckpt.latest != update:
            ckpt.save(update, runner, config)
        log.plot()
        return ckpt.directory / str(update)

    progress = runlog.progress(console, label)
    task = progress.add_task(
        "compiling" if done < num_updates else "done",
        total=num_updates * steps_per_update,
        completed=done * steps_per_update,
    )
    progress.update(task, ret=format_value(log.last_return))
    start_time, start_done = time.perf_counter(), done
    try:
        with progress:
            while done < num_updates:
                new_runner, metrics = run_chunk(runner, jnp.int32(done))
                metrics = _chunk_metrics(metrics, done, chunk, num_updates)
                bad = _first_non_finite(metrics)
                rows = len(metrics[headline]) if bad is None else bad[0] + 1
                wall_s = time.perf_counter() - start_time
                log.write(records(metrics, rows, done, steps_per_update, wall_s, headline))
                if bad is not None:
                    log.plot()
                    raise _non_finite(metrics, bad, done, ckpt)
                previous, runner, done = done, new_runner, done + rows
                progress.update(
                    task,
                    description="training",
                    completed=done * steps_per_update,
                    ret=format_value(log.last_return),
                )
                every = run.checkpoint_every
                if every and done // every > previous // every and done < num_updates:
                    save(done)
                    if not console.is_terminal:
                        rate = (done - start_done) * steps_per_update
                        rate /= max(time.perf_counter() - start_time, 1e-9)
                        console.print(
                            f"update {done}/{num_updates}  {done * steps_per_update:,} steps  "
                            f"{label} {format_value(log.last_return)}  {rate:,.0f} steps/s"
                        )
                if on_chunk is not None:
                    on_chunk(done, runner)
        checkpoint = save(done)
    except KeyboardInterrupt:
        if done > 0:
            path = save(done)
            console.print(
                f"[yellow]Interrupted: saved update {done} of {num_updates} in {path}. "
                f"To continue: {resume_command}"
            )
        else:
            console.print("[yellow]Interrupted before the first chunk finished; nothing saved.")
        raise
    finally:
        log.close()
        saved_any = ckpt.latest is not None
        ckpt.close()
        if fresh and not saved_any and primary:  # stopped before any checkpoint
            _remove_new_run(run_dir, created, console)

    elapsed = time.perf_counter() - start_time
    if done > start_done:
        steps = (done - start_done) * steps_per_update * run.seeds
        console.print(
            f"Ran updates {start_done + 1}-{done} of {num_updates} ({run.seeds} seed"
            f"{'s' if run.seeds > 1 else ''}) in {elapsed:.1f} s: "
            f"{steps / max(elapsed, 1e-9):,.0f} env steps/s over all seeds, compilation included"
        )
    episodic = headline == "mean_return" and log.returns
    score = mmer(np.array(log.returns)) if episodic else math.nan
    return Summary(
        run_dir=run_dir,
        updates=done,
        env_steps=done * steps_per_update,
        mmer=score,
        final=float(log.last_return) if log.last_return is not None else math.nan,
        headline=headline,
        plot=log.plot_path if log.plot_path.exists() else None,
        checkpoint=checkpoint,
        state=runner,
    )
