"""Checkpoints of a whole training-state pytree and its update counter, with orbax.

```python
with Checkpointer(run_dir / "checkpoints") as ckpt:
    ckpt.save(update, runner)                              # any pytree of arrays
    runner, update = ckpt.restore(jax.eval_shape(init, key))   # a template gives the structure
```

Every leaf round-trips exactly, complex64 (the S5 carry) and typed PRNG keys included.
Leaves with no elements (the MLP core's ``[B, 0]`` carry), which orbax cannot write,
are left out of the files and rebuilt from the template on restore.
Saves are synchronous, and orbax commits each one atomically, so an interrupted save
never replaces the previous checkpoint. Each checkpoint also holds a small JSON record
(``meta``: the update counter and, when given, the run's resolved settings), readable
without the arrays. A checkpoint that cannot be read (a damaged file, arrays whose
shapes differ from the template) raises `CheckpointError` with a one-line reason;
`Checkpointer.restore_newest` falls back to the newest readable one.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint could not be read; the message is one line naming it and the reason."""


def _reason(error: BaseException, limit: int = 240) -> str:
    """The innermost cause's first line (orbax wraps tensorstore errors), shortened."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).strip().splitlines()[:1]) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet_orbax_leftovers() -> None:
    """After a failed read, orbax leaves read coroutines that complain when Python exits
    ("Exception ignored in ..."); drop those reports, and only those."""
    previous = sys.unraisablehook
    if getattr(previous, "_ssmrl_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        if "Event loop is closed" in str(unraisable.exc_value):  # their loop's late callbacks
            return
        previous(unraisable)

    hook._ssmrl_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _settle(seconds: float = 0.5) -> None:
    """Let orbax's abandoned concurrent reads finish and be collected now. Left alone,
    their finalisers run inside whatever Python does next, and when that is CPython
    3.11 building an AST (``inspect.getsource``), it fails with "AST constructor
    recursion depth mismatch"."""
    for _ in range(int(seconds / 0.05)):
        time.sleep(0.05)
        gc.collect()


def _empty(x: Any) -> bool:
    return math.prod(np.shape(x)) == 0


def _stored(state: Any) -> Any:
    """``state`` with every leaf that holds no elements replaced by None."""
    return jax.tree.map(lambda x: None if _empty(x) else x, state)


def _target(template: Any) -> Any:
    """``template`` as shapes with shardings: its own, or the first local device's. A
    checkpoint saved over other devices (another count, other hosts) is read into them."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        if x is None:
            return None
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding or device)

    return jax.tree.map(leaf, template)


class Checkpointer:
    """Numbered checkpoints (by update) in one directory, keeping the newest ``max_to_keep``."""

    def __init__(
        self, directory: str | os.PathLike, max_to_keep: int | None = 2, create: bool = True
    ):
        self.directory = Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoints in {self.directory}")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
            ),
        )

    @property
    def latest(self) -> int | None:
        """The update counter of the newest checkpoint; None when there is none."""
        return self._manager.latest_step()

    def updates(self) -> list[int]:
        """Update counters of every checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, update: int, state: Any, config: Any = None) -> Path:
        """Save ``state`` as the checkpoint of ``update`` (with ``config``, any JSON-able
        record of the settings, in its meta); returns its directory."""
        meta = {"update": int(update)} | ({"config": config} if config is not None else {})
        self._manager.save(
            update,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_stored(state)), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return self.directory / str(update)

    def restore(self, template: Any, update: int | None = None) -> tuple[Any, int]:
        """``(state, update)`` of checkpoint ``update`` (default: the newest).

        ``template`` is a pytree like the saved one (arrays or ``jax.ShapeDtypeStruct``,
        e.g. ``jax.eval_shape(init, key)``); the restored state has its structure.
        """
        update = self.latest if update is None else update
        if update is None:
            raise FileNotFoundError(f"no checkpoints in {self.directory}")
        try:
            out = self._manager.restore(
                update,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_target(_stored(template))),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # orbax and tensorstore raise many kinds; all mean "unreadable"
            _quiet_orbax_leftovers()
            _settle()
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} is unreadable: {_reason(e)}"
            ) from None
        leaves, treedef = jax.tree.flatten(template)
        stored = jax.tree.leaves(out.state, is_leaf=lambda x: x is None)
        leaves = [
            jnp.zeros(t.shape, t.dtype) if _empty(t) else x
            for t, x in zip(leaves, stored, strict=True)
        ]
        return jax.tree.unflatten(treedef, leaves), int(out.meta["update"])

    def meta(self, update: int) -> dict[str, Any]:
        """The JSON record saved with checkpoint ``update`` (`CheckpointError` if unreadable)."""
        try:
            out = self._manager.restore(
                update, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} is unreadable: {_reason(e)}"
            ) from None
        return dict(out.meta)

    def restore_newest(
        self, template: Any, check_meta: Callable[[int, dict], None] | None = None
    ) -> tuple[Any, int, list[str]]:
        """``(state, update, skipped)``: the newest checkpoint that can be read, and one
        line per newer one that could not. `CheckpointError` if none can be read.

        ``check_meta(update, meta)`` runs on each checkpoint's JSON record before its
        arrays are read; what it raises stops the search.
        """
        skipped = []
        for update in reversed(self.updates()):
            try:
                if check_meta is not None:
                    check_meta(update, self.meta(update))
                state, update = self.restore(template, update)
            except CheckpointError as e:
                skipped.append(str(e))
                continue
            return state, update, skipped
        if not skipped:
            raise FileNotFoundError(f"no checkpoints in {self.directory}")
        more = f" (and {len(skipped) - 1} older checkpoint(s) too)" if len(skipped) > 1 else ""
        raise CheckpointError(skipped[0] + more)

    def reload(self) -> None:
        """Read the list of checkpoints on disk again (after moving some away)."""
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
