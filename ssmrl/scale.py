"""Training over several devices and hosts: the env batch split across a one-axis mesh.

The driver vmaps an agent over seeds, so every state leaf is ``[S, ...]``. The leaves an
agent names as per-env (`ssmrl.agent.Agent`'s ``env_fields``, with the env axis
``[S, E, ...]`` right after the seeds) are split along ``E`` over the mesh's devices;
every other leaf (parameters, optimiser states, keys, counters) is replicated. XLA's
partitioner then runs each device's envs where they live, and turns every mean over the
env batch (the losses, hence the gradients) into a mean across the mesh, so all devices
apply the same averaged update to the same replicated parameters. The program is the
one-device program; only the order of float sums changes. Over several hosts, each
process calls `initialize` first and then sees every device of the run.

```python
placement = scale.Placement.of(agent, scale.device_count(run.devices))  # 0: every device
state_shardings, replicated = placement.shardings(jax.eval_shape(init_seeds, keys))
```
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssmrl.agent import Agent

AXIS = "envs"
"""The name of the mesh's one axis."""


CLUSTER_FLAGS = ("--coordinator", "--num-processes", "--process-id")
"""The command-line flags of a multi-process run (`initialize`)."""


def split_cluster_flags(args: list[str]) -> tuple[list[str], dict]:
    """``args`` without `CLUSTER_FLAGS` (``--flag value`` or ``--flag=value``), and their
    values as `initialize` keywords; `ValueError` for a missing or non-integer value."""
    rest, found = [], {}
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name not in CLUSTER_FLAGS:
            rest.append(args[i])
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"{name} needs a value")
            value, i = args[i + 1], i + 1
        key = name[2:].replace("-", "_")
        if key != "coordinator":
            if not value.lstrip("-").isdigit():
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            value = int(value)
        found[key] = value
        i += 1
    return rest, found


def cluster_tasks() -> int:
    """How many tasks the cluster's variables say this job has (SLURM, Open MPI; 1 if none)."""
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join a multi-process run through `jax.distributed.initialize`: with the three
    settings given, or from the cluster's variables (SLURM, Open MPI) when they name more
    than one task. Must run before JAX first touches a device; returns whether it joined.

    Every process then sees every device of the run (`jax.devices()`), so the mesh spans
    the hosts; each steps the envs its own devices hold.
    """
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "a multi-process run needs all of --coordinator, --num-processes "
            "and --process-id (or none, on a SLURM or Open MPI cluster)"
        )
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process-id must lie in [0, num-processes), got {process_id} of {num_processes}"
            )
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return True
    if cluster_tasks() > 1:
        jax.distributed.initialize()
        return True
    return False


def device_count(requested: int) -> int:
    """The devices a run uses: ``requested``, or every device for 0 (`ValueError` when
    there are fewer)."""
    available = jax.device_count()
    if requested < 0:
        raise ValueError(f"devices must be >= 0 (0: all {available}), got {requested}")
    if requested > available:
        raise ValueError(f"devices={requested} but only {available} device(s) are visible")
    return requested or available


class Placement(NamedTuple):
    """Where a run's seeds-batched state lives: ``devices`` devices, the leaves of
    ``env_fields`` whose second axis has ``num_envs`` entries split along it (hashable,
    so compiled programs can be cached per placement)."""

    devices: int
    num_envs: int
    env_fields: tuple[str, ...]

    @classmethod
    def of(cls, agent: Agent, devices: int) -> Placement:
        """The placement of ``agent`` on ``devices`` devices; `ValueError` unless its env
        batch splits evenly over them."""
        if devices > 1 and (not agent.env_fields or agent.num_envs < 1):
            raise ValueError(
                f"devices={devices}: this agent keeps no env batch to split; use --devices 1"
            )
        if devices > 1 and agent.num_envs % devices:
            raise ValueError(
                f"num_envs={agent.num_envs} does not divide over devices={devices}; use a "
                f"multiple of {devices} envs or a divisor of {agent.num_envs} devices"
            )
        return cls(devices, agent.num_envs, tuple(agent.env_fields))

    def mesh(self) -> Mesh:
        """A one-axis mesh (`AXIS`) over the first ``devices`` devices."""
        return Mesh(np.asarray(jax.devices()[: self.devices]), (AXIS,))

    def shardings(self, state: Any) -> tuple[Any, NamedSharding]:
        """``(state shardings, replicated)`` for a seeds-batched state (arrays or shapes
        ``[S, ...]``, a NamedTuple): leaves of ``env_fields`` whose second axis is the
        env batch are split along it, everything else is replicated."""
        device_mesh = self.mesh()
        whole = NamedSharding(device_mesh, PartitionSpec())
        split = NamedSharding(device_mesh, PartitionSpec(None, AXIS))

        def leaf(x):
            return split if len(x.shape) >= 2 and x.shape[1] == self.num_envs else whole

        unknown = set(self.env_fields) - set(state._fields)
        if unknown:
            raise ValueError(f"env_fields {sorted(unknown)} are not fields of {type(state)}")
        fields = {
            name: jax.tree.map(leaf if name in self.env_fields else lambda _: whole, value)
            for name, value in state._asdict().items()
        }
        return type(state)(**fields), whole
