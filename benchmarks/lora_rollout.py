"""LoRA rollouts: adapters merged into the weights, or applied per step.

A LoRA student's rollouts can fold its adapters into a copy of the kernels
they adapt once per weight sync (`lora.merge`, then plain decode steps), or
run the two thin adapter matmuls inside every decode step
(`student.lora.rollout`). Both are timed on the same prompts, with the same
random adapters (B nonzero), interleaved, merge included in "merged" (in
lockstep the weights change before every rollout).

Models: the tiny-OPD shape (model_step.py) and the embedded task's student
(hidden 64, 2 layers, V 337); rank 16 on every projection, float32.

Keys of the JSON line:
  <model>_merged_over_applied: rollout time, merged / applied (< 1: merging
    is faster).
  <model>_merged_over_plain, <model>_applied_over_plain: each against the
    base model's rollout without adapters.
"""

import argparse

import jax
import numpy as np
from _timing import interleaved_medians, print_result
from model_step import CFG

from rock_jax import models
from rock_jax.models import lora
from rock_jax.sampler import rollout

EMBEDDED = models.ModelConfig(
  model_type="qwen3",
  vocab_size=337,
  hidden_size=64,
  intermediate_size=176,
  num_layers=2,
  num_heads=4,
  num_kv_heads=4,
  head_dim=16,
  qk_norm=True,
  tie_word_embeddings=True,
)


def _times(cfg, args):
  spec = lora.LoraSpec(
    rank=args.rank, alpha=2.0 * args.rank, targets=lora.TARGETS
  )
  adapted = cfg.replace(lora=spec)
  params = models.init(adapted, jax.random.key(0))
  # Nonzero B, as after training (a fresh B is zero).
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: (
      0.01 * jax.random.normal(jax.random.key(1), x.shape, x.dtype)
      if path[-1].key.endswith("_lora_b")
      else x
    ),
    params,
  )
  base = lora.split(params)[0]
  prompts = np.asarray(
    jax.random.randint(
      jax.random.key(2), (args.batch, args.prompt), 0, cfg.vocab_size
    )
  )
  mask = np.ones_like(prompts, bool)

  def run(model_cfg, weights):
    return rollout.generate(
      model_cfg,
      weights,
      prompts,
      mask,
      jax.random.key(3),
      args.new,
      "temperature",
      stop_token_ids=(),
      crop=False,
    ).tokens

  return interleaved_medians(
    {
      "merged": lambda: run(cfg, lora.merge(params, spec=spec)),
      "applied": lambda: run(adapted, params),
      "plain": lambda: run(cfg, base),
    },
    repeats=args.repeats,
  )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--new", type=int, default=128)
  parser.add_argument("--rank", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  result = {
    "benchmark": "lora_rollout",
    "device": jax.devices()[0].device_kind,
    "rank": args.rank,
  }
  for name, cfg in (("tiny_opd", CFG), ("embedded", EMBEDDED)):
    t = _times(cfg, args)
    result[f"{name}_merged_over_applied"] = round(t["merged"] / t["applied"], 3)
    result[f"{name}_merged_over_plain"] = round(t["merged"] / t["plain"], 3)
    result[f"{name}_applied_over_plain"] = round(t["applied"] / t["plain"], 3)
    result[f"{name}_applied_ms"] = round(1e3 * t["applied"], 1)
  print_result(result)


if __name__ == "__main__":
  main()
