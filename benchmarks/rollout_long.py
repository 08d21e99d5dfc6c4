"""Rollouts at reasoning lengths: the slot-pool engine against the static loop.

Model: D 256, 4 layers, 4 query / 2 KV heads of 64, vocabulary 4,096, float32
(4 KiB of KV per token), so that KV reads matter. 16 prompts of 64 tokens,
budget 4,096 new tokens, temperature 1 with an eos logit bias that makes the
completion lengths geometric with mean near 512 (1/8 of the budget): most
stop early, a few run long.

The static loop (`tests/rollout_reference.py`, the loop before the pool)
decodes every row until the last one stops, attending over the whole
preallocated cache; `rollout.generate` decodes only the live rows, reading
their filled pages.

Keys of the JSON line (interleaved medians in one process):
  speedup_vs_static: static loop time / engine time, same prompts and key
    (goal >= 2.5 on CPU); speedup_slots_8: the same with a pool of 8 slots
    for the 16 sequences.
  identical: the engine's tokens equal the static loop's.
  useful_fraction: generated tokens / row-steps computed (static: every row
    at every step).
  kv_read_over_ideal: KV positions read by decode attention / the sum over
    rows and steps of each row's filled length.
  length_median / length_mean / length_max: completion lengths.
The static loop takes about 10 minutes per run on a 2-core CPU, hence one
timed repeat by default (`--repeats`).
"""

import argparse
import os
import sys

import jax
import numpy as np
from _timing import interleaved_medians, print_result

from rock_jax import models
from rock_jax.sampler import rollout

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import rollout_reference  # noqa: E402

CFG = models.ModelConfig(
  model_type="qwen3",
  vocab_size=4096,
  hidden_size=256,
  intermediate_size=768,
  num_layers=4,
  num_heads=4,
  num_kv_heads=2,
  head_dim=64,
  qk_norm=True,
  tie_word_embeddings=True,
  max_position_embeddings=8192,
)
EOS = 1


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--new", type=int, default=4096)
  parser.add_argument("--mean", type=float, default=512)
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  cfg = CFG

  params = models.init(cfg, jax.random.key(0))
  prompts = np.asarray(
    jax.random.randint(
      jax.random.key(1), (args.prompts, args.prompt_len), 2, cfg.vocab_size
    )
  )
  mask = np.ones_like(prompts, bool)
  # The random model's logits are nearly flat, so eos has probability
  # e^b / (e^b + V - 1) per step: lengths are geometric with that mean.
  bias = np.zeros(cfg.vocab_size, np.float32)
  bias[EOS] = np.log((cfg.vocab_size - 1) / (args.mean - 1))
  common = dict(stop_token_ids=(EOS,), logit_bias_V=bias)
  key = jax.random.key(2)

  def engine(slots):
    return rollout.generate(
      cfg,
      params,
      prompts,
      mask,
      key,
      args.new,
      "temperature",
      crop=False,
      slots=slots,
      return_stats=True,
      **common,
    )

  def static():
    return rollout_reference.generate(
      cfg, params, prompts, mask, key, args.new, "temperature", **common
    )

  (pool, stats), (ref, steps) = engine(None), static()
  engine(8)
  times = interleaved_medians(
    {
      "static": lambda: static()[0].tokens,
      "engine": lambda: engine(None)[0].tokens,
      "slots_8": lambda: engine(8)[0].tokens,
    },
    repeats=args.repeats,
    warmup=0,  # the two calls above compiled both
  )
  lengths = np.asarray(pool.lengths)
  stats = jax.device_get(stats)
  sequences, cache = len(lengths), args.prompt_len + args.new
  result = {
    "benchmark": "rollout_long",
    "device": jax.devices()[0].device_kind,
    "speedup_vs_static": round(times["static"] / times["engine"], 2),
    "speedup_slots_8": round(times["static"] / times["slots_8"], 2),
    "identical": bool(
      np.array_equal(np.asarray(pool.tokens), np.asarray(ref.tokens))
    ),
    "useful_fraction": round(lengths.sum() / int(stats.row_steps), 3),
    "useful_fraction_static": round(
      lengths.sum() / (int(steps) * sequences), 3
    ),
    "kv_read_over_ideal": round(int(stats.kv_read) / int(stats.kv_filled), 2),
    "kv_read_over_ideal_static": round(
      int(steps) * sequences * cache / int(stats.kv_filled), 2
    ),
    "length_median": float(np.median(lengths)),
    "length_mean": round(float(lengths.mean()), 1),
    "length_max": int(lengths.max()),
    "engine_s": round(times["engine"], 2),
    "static_s": round(times["static"], 2),
  }
  print_result(result)


if __name__ == "__main__":
  main()
