"""Training from a config: `run(config, workdir=None) -> summary`.

Modules, in dependency order:
  run_spec       `build(config)`: the run read once (pipeline, rock
                 weighting, optimizer, loss) and the step settings from it
  widths         each role's prompt width: configured, or measured from data
  session        `open(config)`: validation, mesh, data, both models by role
  progress       `Progress`: what a checkpoint holds beside the train state
  pipeline       rollouts and teacher scores ahead of the update
  loop           `Loop`: sample, step, log, evaluate, checkpoint
  summary        summary.json and its lines for humans
  runner         `run`: session -> loop -> summary
  plan           per-device memory of a config, from shapes only
  compiled_plan  the same from the compiled train step and rollout
  model_source   a model folder, or a run's export or checkpoint step
  evaluation     one model's accuracy and pass@k on a split, written out
  generation     one model's completions for prompts or a chat
"""

from rock_jax.train.runner import run

__all__ = ["run"]
