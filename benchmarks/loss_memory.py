"""Compiled temporary memory of the OPD loss+grad, chunked versus naive.

Shape: N = B·T = 8 x 256 = 2,048 tokens, D = E = 256,
V = 151,936 (the Qwen vocabulary), float32, reverse KL, default chunk size.
Loss+grad is `jax.value_and_grad` of `reduce(divergence)` with respect to the
student hidden states and head. Only compiled, never run: the numbers are
deterministic.

Keys of the JSON line:
  chunked_over_NV: temp bytes of the chunked path / one fp32 [N, V] array
    (goal C3 <= 0.65).
  naive_over_NV: the same for `token_divergence` on materialised logits.
  chunked_growth_over_NV: temp(N = 4,096) - temp(N = 2,048) of the chunked
    path / one fp32 [2,048, V] array (goal C4 <= 0.15).
  chunked_large_buffers: array shapes in the compiled chunked program with
    at least N·V/4 elements (goal C5: 0).
"""

import argparse
import math
import re

import jax
import jax.numpy as jnp
from _timing import print_result

from rock_jax import losses


def opd_loss(path, chunk_size=losses.DEFAULT_CHUNK_SIZE):
  """Mean reverse-KL loss of the "chunked" or the "naive" path.

  The naive path materialises both [N, V] logits and calls `token_divergence`.
  """

  def loss(h_s, w_s, h_t, w_t, mask):
    if path == "chunked":
      per_token = losses.chunked_token_divergence(
        h_s, w_s, h_t, w_t, chunk_size=chunk_size
      )
    else:
      per_token = losses.token_divergence(h_s @ w_s, h_t @ w_t)
    return losses.reduce(per_token, mask)[0]

  return loss


def compiled_loss_grad(path, batch, length, dim, vocab, chunk_size):
  """The compiled value_and_grad of the loss for abstract inputs."""
  f32 = jnp.float32
  args = (
    jax.ShapeDtypeStruct((batch, length, dim), f32),
    jax.ShapeDtypeStruct((dim, vocab), f32),
    jax.ShapeDtypeStruct((batch, length, dim), f32),
    jax.ShapeDtypeStruct((dim, vocab), f32),
    jax.ShapeDtypeStruct((batch, length), jnp.bool_),
  )
  step = jax.value_and_grad(opd_loss(path, chunk_size), argnums=(0, 1))
  return jax.jit(step).lower(*args).compile()


def large_buffers(compiled, min_elements):
  """Distinct array shapes in the HLO with at least `min_elements` elements."""
  shapes = set(
    re.findall(r"\b(?:f32|bf16|f16|s32)\[([\d,]+)\]", compiled.as_text())
  )
  return sorted(
    s for s in shapes if math.prod(int(d) for d in s.split(",")) >= min_elements
  )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument(
    "--chunk_size", type=int, default=losses.DEFAULT_CHUNK_SIZE
  )
  args = parser.parse_args()
  batch, length, dim, vocab = 8, 256, 256, 151936
  nv_bytes = batch * length * vocab * 4

  def temp(path, length):
    compiled = compiled_loss_grad(
      path, batch, length, dim, vocab, args.chunk_size
    )
    return compiled, compiled.memory_analysis().temp_size_in_bytes

  chunked, chunked_temp = temp("chunked", length)
  _, naive_temp = temp("naive", length)
  _, chunked_temp_2n = temp("chunked", 2 * length)
  big = large_buffers(chunked, batch * length * vocab // 4)
  print_result(
    {
      "benchmark": "loss_memory",
      "N": batch * length,
      "V": vocab,
      "chunk_size": args.chunk_size,
      "chunked_over_NV": round(chunked_temp / nv_bytes, 3),
      "naive_over_NV": round(naive_temp / nv_bytes, 3),
      "chunked_growth_over_NV": round(
        (chunked_temp_2n - chunked_temp) / nv_bytes, 3
      ),
      "chunked_large_buffers": len(big),
      "chunked_temp_mib": round(chunked_temp / 2**20, 1),
      "naive_temp_mib": round(naive_temp / 2**20, 1),
    }
  )


if __name__ == "__main__":
  main()
