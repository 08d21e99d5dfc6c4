"""The public API, listed: a removed or renamed name fails here.

A public name that changes keeps a deprecated alias for one minor release
(CHANGELOG.md); the aliases are checked to warn and to resolve to the new
name.
"""

import importlib
import sys
import warnings

import numpy as np
import pytest

import rock_jax

PUBLIC = {
  "rock_jax.losses": [
    "CROSS_KINDS",
    "CrossTerms",
    "DEFAULT_CHUNK_SIZE",
    "DIVERGENCES",
    "GROUPS",
    "NORMALIZERS",
    "TeacherLogProbs",
    "chunked_token_divergence",
    "cross_terms",
    "importance_weights",
    "reduce",
    "span_logprob",
    "teacher_log_probs",
    "token_divergence",
  ],
  "rock_jax.rock": [
    "ALIGNMENTS",
    "Policy",
    "RockState",
    "SOURCES",
    "Selection",
    "improvement",
    "init",
    "lists",
    "maybe_refresh",
    "mean_loss",
    "mean_loss_all",
    "refresh",
    "rock_ids",
    "rock_mask",
    "rock_score",
    "rock_set",
    "snapshots",
    "token_weights",
    "update",
  ],
  "rock_jax.rock.lists": [
    "check_vocab",
    "detection",
    "frequency_matched_control",
    "load_rock_json",
  ],
  "rock_jax.rock.snapshots": ["load", "paths", "save"],
  "rock_jax.rock.rock_set": ["RockSet", "protected_ids"],
  "rock_jax.models": [
    "KVCache",
    "ModelConfig",
    "POOL_LOGICAL",
    "PoolStep",
    "active_param_count",
    "apply",
    "cache_shardings",
    "decode_step",
    "hf",
    "hidden_states",
    "init",
    "init_adapters",
    "init_cache",
    "lm_head",
    "lora",
    "param_count",
    "param_logical_axes",
    "param_shapes",
    "param_shardings",
    "peft_adapter",
  ],
  "rock_jax.models.hf": ["load", "load_config", "save"],
  "rock_jax.models.lora": [
    "LoraSpec",
    "TARGETS",
    "combine",
    "merge",
    "split",
  ],
  "rock_jax.models.peft_adapter": ["load", "read_spec", "save"],
  "rock_jax.models.attention": ["IMPLS", "KERNELS", "attend", "check"],
  "rock_jax.sampler": [
    "DEFAULT_BUCKETS",
    "DEFAULT_PAGE_SIZE",
    "Rollout",
    "RolloutStats",
    "SAMPLERS",
    "Sampling",
    "bucket",
    "check_page_size",
    "generate",
    "get_sampling",
    "lower",
  ],
  "rock_jax.opd": [
    "OPDBatch",
    "StepConfig",
    "TeacherScores",
    "TrainState",
    "batch",
    "batch_from_rollout",
    "make_train_step",
    "optim",
    "train_state",
    "train_step",
  ],
  "rock_jax.embedded": ["SFTSpec", "prepare", "train_sft", "training_record"],
  "rock_jax.train": ["run"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_public_names_exist(module):
  found = importlib.import_module(module)
  missing = [name for name in PUBLIC[module] if not hasattr(found, name)]
  assert not missing, f"{module} lost {missing}"


def test_every_listed_name_of_a_face_is_in_its_all():
  # A package's __all__ is its face: nothing listed there goes missing
  # from this test's list unnoticed.
  for module, names in PUBLIC.items():
    listed = getattr(importlib.import_module(module), "__all__", None)
    if listed is not None:
      assert set(listed) <= set(names), (module, set(listed) - set(names))


@pytest.mark.parametrize("old", sorted(rock_jax.MOVED_MODULES))
def test_a_moved_module_imports_under_its_old_name_with_a_warning(old):
  new = rock_jax.MOVED_MODULES[old]
  sys.modules.pop(old, None)
  with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .*{new}"):
    module = importlib.import_module(old)
  assert module is importlib.import_module(new)


def test_maybe_refresh_warns_and_keeps_its_old_keyword_form():
  from rock_jax import rock

  state = rock.init(8)
  ids = np.array([[1, 2, 2, 5]])
  loss = np.array([[1.0, 3.0, 3.0, 0.5]], np.float32)
  for _ in range(2):
    state = rock.update(state, ids, loss, np.ones_like(ids, bool))
  with pytest.warns(DeprecationWarning, match="rock.refresh"):
    old = rock.maybe_refresh(state, warmup_steps=2, refresh_every=1, k=2)
  new = rock.refresh(
    state, rock.Selection(k=2), warmup_steps=2, refresh_every=1
  )
  np.testing.assert_array_equal(old.rock_mask_V, new.rock_mask_V)
  assert np.asarray(old.rock_mask_V).sum() == 2
  # Its own rule: without a static set, refresh_every=0 never selects.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    kept = rock.maybe_refresh(state, warmup_steps=2, refresh_every=0)
  assert not np.asarray(kept.rock_mask_V).any()
