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
never replaces the previous checkpoint.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def _empty(x: Any) -> bool:
    return math.prod(np.shape(x)) == 0


def _stored(state: Any) -> Any:
    """``state`` with every leaf that holds no elements replaced by None."""
    return jax.tree.map(lambda x: None if _empty(x) else x, state)


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

    def save(self, update: int, state: Any) -> Path:
        """Save ``state`` as the checkpoint of ``update``; returns its directory."""
        self._manager.save(
            update,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_stored(state)),
                meta=ocp.args.JsonSave({"update": int(update)}),
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
        out = self._manager.restore(
            update,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_stored(template)), meta=ocp.args.JsonRestore()
            ),
        )
        leaves, treedef = jax.tree.flatten(template)
        stored = jax.tree.leaves(out.state, is_leaf=lambda x: x is None)
        leaves = [
            jnp.zeros(t.shape, t.dtype) if _empty(t) else x
            for t, x in zip(leaves, stored, strict=True)
        ]
        return jax.tree.unflatten(treedef, leaves), int(out.meta["update"])

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
