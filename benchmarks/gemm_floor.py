"""The matmul-rate floor at a model's own matmul shapes.

`train_step.py`'s floor divides a phase's FLOPs by the rate of one 2048^3
matmul. A small model never runs a matmul that large: at D 64 its
projections are [3072, 64] x [64, 192] and a decode step's are [32, 64] x
[64, 192], which this machine runs at a fraction of the 2048^3 rate. This
module lists the matmuls a phase runs (the FLOPs `train_step.py` counts, one
matmul per einsum at its real shape), times each distinct shape alone, and
sums: the time the phase's matmuls take with nothing else around them.
`ceiling` = that time's FLOP rate over the 2048^3 rate is then the most
`step_over_matmul` a step of these shapes could report.

A shape is timed as up to 32 products inside one compiled loop (each on its
own operand and added to an accumulator, so none is hoisted or dropped),
interleaved medians: per-call dispatch is not counted, the loop's own step
and the operand's read are.
"""

import collections

import jax
import jax.numpy as jnp
from _timing import interleaved_medians

# One matmul: (batch, M, K, N); a phase is a Counter of them (counts may be
# fractional: causal attention counts half).
Gemm = tuple[int, int, int, int]
Gemms = collections.Counter
LOOP = 32


def forward_gemms(cfg, rows: int, length: int, head: bool = True) -> Gemms:
  """The matmuls of one forward over `rows` x `length` tokens: the q/k/v/o
  projections, SwiGLU's three, scores and values per head (at half: the
  causal half a kernel must compute) and the LM head."""
  m, d, h = rows * length, cfg.hidden_size, cfg.head_dim
  out = collections.Counter()
  per_layer = [
    ((1, m, d, cfg.num_heads * h), 1),
    ((1, m, d, cfg.num_kv_heads * h), 2),
    ((1, m, cfg.num_heads * h, d), 1),
    ((1, m, d, cfg.intermediate_size), 2),
    ((1, m, cfg.intermediate_size, d), 1),
    ((rows * cfg.num_heads, length, h, length), 0.5),
    ((rows * cfg.num_heads, length, length, h), 0.5),
  ]
  for gemm, n in per_layer:
    out[gemm] += n * cfg.num_layers
  if head:
    out[(1, m, d, cfg.vocab_size)] += 1
  return out


def backward_gemms(forward: Gemms) -> Gemms:
  """Each forward product's two backward products (input and weight
  gradients): [M, K] x [K, N] gives [M, N] x [N, K] and [K, M] x [M, N]."""
  out = collections.Counter()
  for (b, m, k, n), count in forward.items():
    out[(b, m, n, k)] += count
    out[(b, k, m, n)] += count
  return out


def decode_gemms(cfg, rows: int, prompt: int, new: int) -> Gemms:
  """The rollout's matmuls: prefill of the prompt, then one token per row
  at a time against a cache of `prompt + i` keys, all of them (timed at the
  mean context, the count scaled to the exact sum: the products are linear
  in the context)."""
  out = forward_gemms(cfg, rows, prompt)
  mean = prompt + (new - 1) / 2
  context = round(mean)
  for (b, m, k, n), count in forward_gemms(cfg, rows, 1).items():
    if b > 1:  # attention: one query against the whole cache
      k, n = (k, context) if n == 1 else (context, n)
      count = 2 * count * mean / context
    out[(b, m, k, n)] += count * new
  return out


def flops(gemms: Gemms) -> int:
  return sum(2 * b * m * k * n * c for (b, m, k, n), c in gemms.items())


def _loops(shape: Gemm) -> int:
  """Products per timing: LOOP, fewer for a left operand so large that LOOP
  copies would pass 64 MiB (one such product is long enough to time)."""
  b, m, k, _ = shape
  return max(1, min(LOOP, 2**26 // (4 * b * m * k)))


def _looped(shape: Gemm):
  b, m, k, n = shape
  # A fresh left operand per product: XLA hoists a loop-invariant one.
  xs = jax.random.normal(
    jax.random.key(0), (_loops(shape), b, m, k), jnp.float32
  )
  w = jax.random.normal(jax.random.key(1), (b, k, n), jnp.float32)

  @jax.jit
  def run(xs, w):
    body = lambda acc, x: (acc + jnp.matmul(x, w), None)
    return jax.lax.scan(body, jnp.zeros((b, m, n), xs.dtype), xs)[0]

  return lambda: run(xs, w)


def seconds(phases: dict[str, Gemms], repeats: int = 5) -> dict[str, float]:
  """Each phase's matmul-only seconds: every distinct shape timed alone
  (interleaved medians of `repeats`), times its count, summed."""
  shapes = sorted(set().union(*phases.values()))
  t = interleaved_medians(
    {shape: _looped(shape) for shape in shapes}, repeats=repeats
  )
  return {
    name: sum(t[shape] / _loops(shape) * c for shape, c in gemms.items())
    for name, gemms in phases.items()
  }
