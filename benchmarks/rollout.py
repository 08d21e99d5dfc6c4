"""Rollout speed: KV-cache decoding against recomputation and memory bandwidth.

Model: the tiny-OPD shape (see model_step.py), float32.

Keys of the JSON line (interleaved medians in one process):
  kv_over_recompute: one decode step with the KV cache (B 8, cache 256)
    divided by a full forward over the 256-token sequence (goal <= 0.2).
  tokens_per_s: generated tokens per second of `rollout.generate`
    (B 8, prompt 64, 192 new tokens, greedy, no stop).
  bandwidth_fraction: bytes a decode step must read (weights + the whole
    cache) per second, as a fraction of a measured read bandwidth (a jitted
    sum over 64 MiB).
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians, print_result
from model_step import CFG

from rock_jax import models
from rock_jax.sampler import rollout


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--new", type=int, default=192)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  cfg, b = CFG, args.batch
  total = args.prompt + args.new

  params = models.init(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (b, total), 0, cfg.vocab_size)
  apply = jax.jit(functools.partial(models.apply, cfg))
  cache = models.init_cache(cfg, b, total)
  _, cache = apply(params, tokens[:, :-1], cache=cache)
  last = tokens[:, -1:]

  prompts = np.asarray(tokens[:, : args.prompt])
  prompt_mask = np.ones_like(prompts, bool)
  generate = functools.partial(
    rollout.generate,
    cfg,
    params,
    prompts,
    prompt_mask,
    jax.random.key(2),
    args.new,
    stop_token_ids=(),
    crop=False,
  )

  big = jnp.ones((16 * 2**20,), jnp.float32)
  read = jax.jit(jnp.sum)

  times = interleaved_medians(
    {
      "decode": lambda: apply(params, last, cache=cache),
      "recompute": lambda: apply(params, tokens),
      "generate": lambda: generate().tokens,
      "read": lambda: read(big),
    },
    repeats=args.repeats,
  )

  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  cache_bytes = cache.k_NxBxSxKxh.nbytes + cache.v_NxBxSxKxh.nbytes
  bandwidth = big.nbytes / times["read"]
  result = {
    "benchmark": "rollout",
    "device": jax.devices()[0].device_kind,
    "kv_over_recompute": round(times["decode"] / times["recompute"], 4),
    "tokens_per_s": round(b * args.new / times["generate"], 1),
    "bandwidth_fraction": round(
      (param_bytes + cache_bytes) / times["decode"] / bandwidth, 3
    ),
    "decode_step_ms": round(1e3 * times["decode"], 2),
    "read_gb_per_s": round(bandwidth / 1e9, 1),
  }
  print_result(result)


if __name__ == "__main__":
  main()
