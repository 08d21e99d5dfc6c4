"""Time of the OPD loss+grad, chunked versus naive (interleaved medians).

Shape: N = B·T = 8 x 256 = 2,048 tokens, D = E = 256, V = 32,768 (the
tiny-OPD vocabulary (model_step.py), so the naive path fits easily),
float32, reverse KL. Loss+grad is `jax.value_and_grad` of `reduce(divergence)`
with respect to the student hidden states and head; the naive path
materialises both [N, V] logits and calls `token_divergence`.

Keys of the JSON line:
  chunked_over_naive_time: median chunked / median naive (goal C6 <= 1.2).
  chunked_ms, naive_ms: the medians.
"""

import argparse

import jax
import jax.numpy as jnp
from _timing import interleaved_medians, print_result
from loss_memory import opd_loss

from rock_jax import losses


def random_inputs(batch, length, dim, vocab):
  """Hidden states, heads and an all-valid mask for `opd_loss`."""
  keys = jax.random.split(jax.random.key(0), 4)
  # Logits of O(1), like a trained model's, so softmaxes are not one-hot.
  scale = dim**-0.5
  return (
    jax.random.normal(keys[0], (batch, length, dim)),
    scale * jax.random.normal(keys[1], (dim, vocab)),
    jax.random.normal(keys[2], (batch, length, dim)),
    scale * jax.random.normal(keys[3], (dim, vocab)),
    jnp.ones((batch, length), bool),
  )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--vocab", type=int, default=32768)
  parser.add_argument(
    "--chunk_size", type=int, default=losses.DEFAULT_CHUNK_SIZE
  )
  args = parser.parse_args()
  batch, length, dim = 8, 256, 256
  inputs = random_inputs(batch, length, dim, args.vocab)
  chunked, naive = (
    jax.jit(jax.value_and_grad(opd_loss(path, args.chunk_size), (0, 1)))
    for path in ("chunked", "naive")
  )
  times = interleaved_medians(
    {"chunked": lambda: chunked(*inputs), "naive": lambda: naive(*inputs)},
    repeats=args.repeats,
  )
  print_result(
    {
      "benchmark": "loss_speed",
      "device": jax.devices()[0].device_kind,
      "N": batch * length,
      "V": args.vocab,
      "chunk_size": args.chunk_size,
      "chunked_over_naive_time": round(times["chunked"] / times["naive"], 3),
      "chunked_ms": round(1e3 * times["chunked"], 1),
      "naive_ms": round(1e3 * times["naive"], 1),
    }
  )


if __name__ == "__main__":
  main()
