"""The ``info`` keys of environments whose episodes are trials of several episodes.

`ssmrl.envs.meta` writes them (and re-exports these names); agents and
`ssmrl.evaluation` read them. They live in the core library so that readers need not
import an environment module.
"""

TRIAL_EPISODE_DONE = "trial_episode_done"
"""bool: an episode of the trial ended on this step (by termination or time limit)."""
TRIAL_EPISODE_TERMINATED = "trial_episode_terminated"
"""bool: that episode ended by the task's termination, not its time limit."""
TRIAL_EPISODE_INDEX = "trial_episode_index"
"""int32: the index within the trial of the episode this step belongs to."""
TRIAL_EPISODE_RETURN = "trial_episode_return"
"""float32: that episode's (scaled) return so far; its whole return where it ended."""
