"""rock_jax: on-policy distillation with Rock-Token-aware weighting.

The package in two layers. The library takes arrays, model folders and
files, and never reads a config; the application reads an ml_collections
config and is built from the library (tests/test_architecture.py keeps
imports flowing that way).

Library, in dependency order:
  storage       local paths and gs:// URLs: reads, atomic writes, mirrors
  sharding      logical axes, rule presets, meshes, NamedShardings
  models        the decoder (Qwen3, Llama, Qwen2, Qwen3-MoE), its attention
                kernels (`models.kernels`), Hugging Face folders (`models.hf`)
  sampler       `Sampling`, `generate` -> `Rollout`, the slot-pool decode loop
  losses        per-token divergences, the chunked custom-VJP path, reduce
  data          TFDS datasets, tokenizers, prompts, verifiers, the embedded task
  rock          the Rock-Token tracker, `Selection`, `Policy`, token weights,
                lists, snapshots, the set a run weights (`rock.rock_set`)
  opd           the OPD step: `OPDBatch`, `StepConfig`, `TrainState`, optim
  checkpoint    orbax save/restore, preemption
  metrics       (sum, count) metrics, JSONL/TensorBoard, progress bar
  evaluate      greedy accuracy on a split, graded by verifiers
  embedded      the embedded task's own teacher and student, trained, cached
  analysis      the paper's analyses and the report writer

Application (reads the config):
  config        every key and preset, validation, process start-up
  train         `run(config)`: session -> loop -> summary; `run_spec` (the run,
                read once); the memory planners
  study         `pipeline.run(config)`: a run's analyses; `reproduce`

Public names that change keep a deprecated alias for one minor release
(`deprecated`, `MOVED_MODULES`; CHANGELOG.md).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"
# Deprecated names are removed in the next minor release (CHANGELOG.md).
_REMOVED_IN = "0.2.0"

# Modules that moved, by their old name; importing the old name warns and
# gives the new module until _REMOVED_IN.
MOVED_MODULES = {
  "rock_jax.rollout": "rock_jax.sampler.rollout",
  "rock_jax.sampling": "rock_jax.sampler.sampling",
  "rock_jax.slot_pool": "rock_jax.sampler.slot_pool",
  "rock_jax.rock_lists": "rock_jax.rock.lists",
  "rock_jax.snapshots": "rock_jax.rock.snapshots",
  "rock_jax.train_step": "rock_jax.opd.train_step",
  "rock_jax.train_state": "rock_jax.opd.train_state",
  "rock_jax.optim": "rock_jax.opd.optim",
  "rock_jax.models.decode": "rock_jax.models.kernels.ragged",
  "rock_jax.models.splash": "rock_jax.models.kernels.splash",
  "rock_jax.data.embedded_sft": "rock_jax.embedded.sft",
  "rock_jax.data.embedded_models": "rock_jax.embedded.models",
}


def deprecated(old: str, new: str, stacklevel: int = 2) -> None:
  """Warns that `old` is deprecated and `new` replaces it.

  `stacklevel` counts as `warnings.warn`'s does, from the function that
  calls this one (2: that function's caller, the code that used the old
  name; `warnings` itself skips the import machinery's frames).
  """
  warnings.warn(
    f"{old} is deprecated and will be removed in rock_jax {_REMOVED_IN}; "
    f"use {new}",
    DeprecationWarning,
    stacklevel=stacklevel + 1,
  )


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports an old module name as its new module, with a warning."""

  def find_spec(self, name, path=None, target=None):
    if name not in MOVED_MODULES:
      return None
    return importlib.util.spec_from_loader(name, self)

  def create_module(self, spec):
    new = MOVED_MODULES[spec.name]
    deprecated(spec.name, new)
    return importlib.import_module(new)

  def exec_module(self, module):
    pass


# First, so that a stale file of the old name elsewhere on the path (an
# earlier install) is never imported instead.
sys.meta_path.insert(0, _MovedModule())
