"""MoE dispatch: one sparse block, "dense" (all experts) vs "ragged" (sorted).

Times a jitted `rock_jax.models.layers.MoE` forward over T tokens (D 256,
F 128 per expert, float32) for a small and a large expert count, as
interleaved medians in one process, and checks that both dispatches agree.
Prints one JSON line last: per (E, A) the two medians in milliseconds and
`ragged_over_dense` (< 1: sorting pays off). On XLA:CPU `ragged_dot` is
expanded rather than run as a grouped GEMM, so "ragged" loses here even at
E/A = 8 (see the module docstring of `rock_jax.models.layers`); run on an
accelerator for the numbers that matter.
"""

import argparse

import jax
import numpy as np
from _timing import interleaved_medians, print_result

from rock_jax import models
from rock_jax.models.layers import MoE


def _block(cfg, tokens):
  module = MoE(cfg)
  x = jax.random.normal(jax.random.key(0), (1, tokens, cfg.hidden_size))
  params = module.init(jax.random.key(1), x)
  return {
    dispatch: (
      jax.jit(MoE(cfg.replace(moe_dispatch=dispatch)).apply),
      params,
      x,
    )
    for dispatch in ("dense", "ragged")
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--tokens", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  result = {"tokens": args.tokens, "backend": jax.default_backend()}
  for experts, active in ((8, 2), (64, 8)):
    cfg = models.ModelConfig(
      model_type="qwen3_moe",
      vocab_size=8,
      hidden_size=256,
      intermediate_size=8,
      num_layers=1,
      num_heads=1,
      num_kv_heads=1,
      head_dim=8,
      num_experts=experts,
      num_experts_per_tok=active,
      moe_intermediate_size=128,
    )
    runs = _block(cfg, args.tokens)
    outs = {name: fn(params, x) for name, (fn, params, x) in runs.items()}
    np.testing.assert_allclose(
      outs["ragged"], outs["dense"], rtol=1e-4, atol=1e-5
    )
    times = interleaved_medians(
      {
        name: (lambda f=fn, p=params, x=x: f(p, x))
        for name, (fn, params, x) in runs.items()
      },
      repeats=args.repeats,
    )
    result[f"E{experts}_A{active}"] = {
      "dense_ms": round(1e3 * times["dense"], 2),
      "ragged_ms": round(1e3 * times["ragged"], 2),
      "ragged_over_dense": round(times["ragged"] / times["dense"], 2),
    }
  print_result(result)


if __name__ == "__main__":
  main()
