"""Run by tests/test_scale.py in a subprocess with 4 forced host devices: tiny PPO and
Dreamer runs on 4 (or 2) devices and on 1, a 4-device checkpoint resumed on 1, and the
refusals. Prints one JSON object of the largest parameter differences."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from ssmrl import experiment
from ssmrl.configfile import ConfigError

PPO = {
    "env": "CartPole-v1",
    "core": {"name": "s5", "features": 8, "num_layers": 1, "state_size": 4},
    "num_envs": 8,
    "num_steps": 8,
    "update_epochs": 1,
    "num_minibatches": 2,
    "head_width": 8,
    "total_timesteps": 128,
    "seeds": 2,
    "chunk": 1,
    "checkpoint_every": 1,
    "fast_compile": True,
}
DREAMER = {
    "env": "CartPole-v1",
    "core": {"name": "gru", "features": 8, "num_layers": 1},
    "latents": 4,
    "classes": 4,
    "hidden": 16,
    "depth": 1,
    "replay": {"capacity": 64, "sequence_length": 8, "batch_size": 4, "train_ratio": 8.0},
    "num_envs": 4,
    "num_steps": 8,
    "horizon": 3,
    "total_timesteps": 96,
    "seeds": 1,
    "chunk": 1,
    "fast_compile": True,
}


def train(agent: str, settings: dict, run_dir: Path, devices: int, resume: bool = False):
    loaded = experiment.load_settings(agent, overrides={**settings, "devices": devices})
    return experiment.train(loaded, run_dir, resume=resume)[0]


def params_gap(a, b) -> float:
    """The largest absolute difference between two states' float leaves."""
    gaps = [
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if np.issubdtype(np.asarray(x).dtype, np.floating) and np.asarray(x).size
    ]
    return max(gaps)


def main(out: Path) -> None:
    result = {"devices": jax.device_count()}
    ppo_4 = train("ppo", PPO, out / "ppo4", 4)
    ppo_1 = train("ppo", PPO, out / "ppo1", 1)
    obs = ppo_4.state.obs  # [S, E, O]: each device holds 2 of the 8 envs
    result["ppo_obs_shard"] = list(obs.addressable_shards[0].data.shape)
    result["ppo_gap"] = params_gap(ppo_4.state.train_state.params, ppo_1.state.train_state.params)

    # The 4-device run, trained further on 1 device, against the 1-device run as long.
    longer = {**PPO, "total_timesteps": 256}
    on_one = train("ppo", longer, out / "ppo4", 1, resume=True)
    straight = train("ppo", longer, out / "ppo1-long", 1)
    result["ppo_resumed_gap"] = params_gap(
        on_one.state.train_state.params, straight.state.train_state.params
    )
    # How far two more updates move the parameters: the scale the gaps are small against.
    result["ppo_step"] = params_gap(
        straight.state.train_state.params, ppo_1.state.train_state.params
    )
    restored = experiment.restore(out / "ppo4")
    result["restored_update"] = restored.update

    dreamer_2 = train("dreamer", DREAMER, out / "dreamer2", 2)
    dreamer_1 = train("dreamer", DREAMER, out / "dreamer1", 1)
    result["dreamer_gap"] = params_gap(dreamer_2.state.learner, dreamer_1.state.learner)
    result["dreamer_replay_gap"] = params_gap(dreamer_2.state.replay, dreamer_1.state.replay)

    try:
        train(
            "ppo",
            {**PPO, "num_envs": 6, "num_minibatches": 1, "total_timesteps": 96},
            out / "odd",
            4,
        )
        result["odd"] = None
    except ConfigError as e:
        result["odd"] = str(e)
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
