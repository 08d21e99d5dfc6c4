"""Model throughput against the machine's matmul peak, and KV-cache decoding.

Shape: the "tiny-OPD" model (D 256, 4 layers, 4 query /
2 kv heads of 64, F 768, V 32,768, tied; batch 8 x 256), float32.

Reports, as interleaved medians in one process (CPU timings are noisy, their
ratios are not):
  fwd_bwd_over_matmul: model FLOP/s of forward+backward of a next-token loss
    divided by the FLOP/s of a jitted 2048^3 float32 matmul (goal C1 >= 0.5).
  fwd_over_matmul: the same for the forward alone.
  decode_over_forward: one KV-cache decoding step (B 8, cache 256) divided by
    a full forward over 256 tokens (goal C7 <= 0.2).
  fwd_bwd_temp_mib: compiled temporary memory of forward+backward.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, print_result

from rock_jax import models

CFG = models.ModelConfig(
  model_type="qwen3",
  vocab_size=32768,
  hidden_size=256,
  intermediate_size=768,
  num_layers=4,
  num_heads=4,
  num_kv_heads=2,
  head_dim=64,
  qk_norm=True,
  tie_word_embeddings=True,
)


def forward_flops(cfg, batch, length):
  """Analytic matmul FLOPs of one forward (causal attention computed fully)."""
  d, h = cfg.hidden_size, cfg.head_dim
  per_token = (
    2
    * (
      d * (cfg.num_heads + 2 * cfg.num_kv_heads) * h  # q, k, v
      + cfg.num_heads * h * d  # o
      + 3 * d * cfg.intermediate_size
    )
    * cfg.num_layers
  )  # MLP
  per_token += 2 * d * cfg.vocab_size  # LM head
  attention = 4 * length * length * cfg.num_heads * h * cfg.num_layers
  return batch * (length * per_token + attention)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  cfg, b, t = CFG, args.batch, args.length

  params = models.init(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)

  def loss(p, x):
    logits = models.apply(cfg, p, x[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, x[:, 1:]
    ).mean()

  fwd_bwd = jax.jit(jax.value_and_grad(loss))
  forward = jax.jit(functools.partial(models.apply, cfg))

  cache = models.init_cache(cfg, b, t)
  _, cache = forward(params, tokens[:, : t - 1], cache=cache)
  decode = jax.jit(functools.partial(models.apply, cfg))
  last = tokens[:, t - 1 :]

  n = 2048
  a = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)

  times = interleaved_medians(
    {
      "matmul": lambda: matmul(a, a),
      "fwd_bwd": lambda: fwd_bwd(params, tokens),
      "forward": lambda: forward(params, tokens),
      "decode": lambda: decode(params, last, cache=cache),
    },
    repeats=args.repeats,
  )
  peak = 2 * n**3 / times["matmul"]
  fwd = forward_flops(cfg, b, t)
  fwd_bwd_flops = 3 * forward_flops(cfg, b, t - 1)
  memory = fwd_bwd.lower(params, tokens).compile().memory_analysis()
  result = {
    "benchmark": "model_step",
    "device": jax.devices()[0].device_kind,
    "matmul_gflops": round(peak / 1e9, 1),
    "fwd_bwd_over_matmul": round(fwd_bwd_flops / times["fwd_bwd"] / peak, 3),
    "fwd_over_matmul": round(fwd / times["forward"] / peak, 3),
    "decode_over_forward": round(times["decode"] / times["forward"], 4),
    "fwd_bwd_ms": round(1e3 * times["fwd_bwd"], 1),
    "fwd_bwd_temp_mib": round(memory.temp_size_in_bytes / 2**20, 1),
    "params": models.param_count(cfg),
  }
  print_result(result)


if __name__ == "__main__":
  main()
