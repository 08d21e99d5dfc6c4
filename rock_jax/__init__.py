"""rock_jax: on-policy distillation with Rock-Token-aware weighting.

The package in two layers. The library takes arrays, model folders and
files, and never reads a config; the application reads an ml_collections
config and is built from the library (tests/test_architecture.py keeps
imports flowing that way).

Library, in dependency order:
  storage       local paths and gs:// URLs: reads, atomic writes, mirrors
  sharding      logical axes, rule presets, meshes, NamedShardings
  models        the decoder (Qwen3, Llama, Qwen2, Qwen3-MoE); `models.hf`
  sampling      `Sampling(temperature, top_k, top_p)` and presets
  rollout       `generate` -> `Rollout`: prompts, buckets, checks
  slot_pool     its compiled decode loop over a pool of KV slots
  losses        per-token divergences, the chunked custom-VJP path, reduce
  rock          the Rock-Token tracker, `Selection`, `Policy`, token weights
  rock_lists    rock.json lists, frequency-matched controls, detection
  snapshots     tracker snapshots on disk
  optim         clipping + AdamW + warm-up/cosine schedule
  train_state   `TrainState`: what a run checkpoints
  train_step    the jitted OPD step: teacher scoring, weighted KL, update
  checkpoint    orbax save/restore, preemption
  metrics       (sum, count) metrics, JSONL/TensorBoard, progress bar
  evaluate      greedy accuracy on a split, graded by verifiers
  data          TFDS datasets, tokenizers, prompts, the embedded task
  analysis      the paper's analyses and the report writer

Application (reads the config):
  config        every key and preset, validation, process start-up
  train         `run(config)`: session -> loop -> summary; the planner
  study         `pipeline.run(config)`: a run's analyses; `reproduce`
"""

__version__ = "0.1.0"
