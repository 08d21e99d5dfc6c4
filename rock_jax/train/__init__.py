"""Training from a config: `run(config, workdir=None) -> summary`.

Modules, in dependency order:
  session   `open(config)`: validation, mesh, data, both models by role
  progress  `Progress`: what a checkpoint holds beside the train state
  rock_set  the rock-set policy: `rock.Policy` from the config, static sets
  loop      `Loop`: sample, step, log, evaluate, checkpoint
  summary   summary.json and its lines for humans
  runner    `run`: session -> loop -> summary
  plan      per-device memory of a config, from shapes only
"""

from rock_jax.train.runner import run

__all__ = ["run"]
