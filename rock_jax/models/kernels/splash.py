"""Causal grouped-query self-attention through the Pallas TPU splash kernel.

Legend: B batch, L length, H query heads, K kv heads (H a multiple of K,
query head n reads kv head n // (H / K)), h head dim; Lp the length padded
for the kernel.

Mask: query l of row b attends key s iff `s <= l and kv_valid_BxL[b, s]`.
The causal part is the kernel's lazy `CausalMask` (whole blocks above the
diagonal are skipped); padding is expressed as splash `SegmentIds`, with
segment `kv_valid` for queries and keys alike, so a real query sees only
real keys and a padding query only padding keys. Every row therefore keeps
at least its diagonal and the softmax is never empty. Outputs at padding
queries are don't-care and are returned as zeros. Rows may be padded
anywhere (left, right or both).

The kernel applies no softmax scale, so q is scaled here; it has a custom
VJP with its own backward kernels, so the whole call is differentiable in
q, k and v. It takes one row `[heads, length, head_dim]` and is vmapped
over the batch.

Block sizes: the kernel tiles query and key lengths in blocks that must be
multiples of 128 (the TPU lane width; key blocks index lanes and the
backward kernel also puts query blocks there), must divide the length and
must not exceed it. The length is padded up to a multiple of 128, and the
block is the largest multiple of 128 that is at most `block_size` (rounded
down to a multiple of 128, at least 128) and divides the padded length;
one block serves the forward, dq and dkv kernels. Padded positions are
padding (segment 0) and are sliced off the output.

A Pallas call cannot be partitioned by XLA, so with a `Sharder` the call
runs under `jax.shard_map`: each device runs the kernel on its own rows and
heads. The length and head-dim axes must be unsharded, and query heads and
kv heads split over the same mesh axes so each shard keeps whole GQA groups.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from rock_jax.models.kernels import Kernel, check_backend
from rock_jax.sharding import BATCH, HEAD_DIM, HEADS, KV_HEADS, LENGTH

# TPU lane width: the granule of every splash block size.
LANES = 128


def block_plan(length: int, block_size: int) -> tuple[int, int]:
  """(padded length, block) for a sequence of `length` under `block_size`.

  The padded length is the next multiple of 128; the block is the largest
  multiple of 128 that is at most `block_size` and divides it, so padding
  stays under 128 positions instead of growing to almost a whole block.
  """
  if length < 1 or block_size < 1:
    raise ValueError(
      f"splash needs length and block_size >= 1, got {length=}, {block_size=}"
    )
  padded = -(-length // LANES) * LANES
  cap = max(LANES, min(block_size, padded) // LANES * LANES)
  block = next(b for b in range(cap, 0, -LANES) if padded % b == 0)
  return padded, block


def _kernel(num_heads: int, length: int, block: int, interpret: bool):
  """The splash kernel for one row of `num_heads` causal heads of `length`.

  Built anew in every trace and not cached: under a trace (`nn.scan` traces
  the layer twice) its mask arrays are that trace's values, and a cached
  kernel would carry them into the next one. The enclosing jit caches the
  compiled program, so only its first trace pays for the mask preprocessing.
  """
  mask = sa.MultiHeadMask([sa.CausalMask((length, length))] * num_heads)
  sizes = sa.BlockSizes(
    block_q=block,
    block_kv=block,
    block_kv_compute=block,
    block_q_dkv=block,
    block_kv_dkv=block,
    block_kv_dkv_compute=block,
    block_q_dq=block,
    block_kv_dq=block,
  )
  return sa.make_splash_mha(
    mask,
    block_sizes=sizes,
    head_shards=1,
    q_seq_shards=1,
    interpret=interpret,
  )


def _local_attention(
  q_BxLxHxh,
  k_BxLxKxh,
  v_BxLxKxh,
  kv_valid_BxL,
  *,
  scale,
  block_size,
  interpret,
):
  """Splash attention on arrays that are whole along length (one shard)."""
  length, num_heads = q_BxLxHxh.shape[1], q_BxLxHxh.shape[2]
  padded, block = block_plan(length, block_size)
  valid_BxL = kv_valid_BxL.astype(bool)

  def pad_length(x):
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, padded - length)
    return jnp.pad(x, widths)

  # Scale in float32: a bfloat16 product would first round the scale itself.
  q_BxLxHxh = (q_BxLxHxh.astype(jnp.float32) * scale).astype(q_BxLxHxh.dtype)
  q_BxHxLpxh, k_BxKxLpxh, v_BxKxLpxh = (
    jnp.swapaxes(pad_length(x), 1, 2) for x in (q_BxLxHxh, k_BxLxKxh, v_BxLxKxh)
  )
  segment_BxLp = pad_length(valid_BxL.astype(jnp.int32))
  kernel = _kernel(num_heads, padded, block, interpret)
  out_BxHxLpxh = jax.vmap(kernel)(
    q_BxHxLpxh,
    k_BxKxLpxh,
    v_BxKxLpxh,
    sa.SegmentIds(segment_BxLp, segment_BxLp),
  )
  out_BxLxHxh = jnp.swapaxes(out_BxHxLpxh, 1, 2)[:, :length]
  return jnp.where(valid_BxL[:, :, None, None], out_BxLxHxh, 0)


def _shard_specs(sharder, q_shape, k_shape):
  """shard_map specs for q, k/v and kv_valid; raises on layouts splash
  cannot run shard-locally."""
  q_spec = sharder.spec((BATCH, LENGTH, HEADS, HEAD_DIM), q_shape)
  kv_spec = sharder.spec((BATCH, LENGTH, KV_HEADS, HEAD_DIM), k_shape)
  valid_spec = sharder.spec((BATCH, LENGTH), q_shape[:2])
  rules = dict(sharder.rules)
  if any(spec[1] is not None for spec in (q_spec, kv_spec, valid_spec)):
    raise ValueError(
      f"splash attention needs the length axis unsharded (each shard runs the "
      f"kernel on whole rows), but the sharding rule {LENGTH!r} -> "
      f"{rules.get(LENGTH)!r} splits it; map {LENGTH!r} to None"
    )
  if q_spec[3] is not None or kv_spec[3] is not None:
    raise ValueError(
      f"splash attention needs the head dim unsharded, but the sharding rule "
      f"{HEAD_DIM!r} -> {rules.get(HEAD_DIM)!r} splits it; map it to None"
    )
  if q_spec[2] != kv_spec[2]:
    raise ValueError(
      f"splash attention with GQA needs query heads and kv heads split over "
      f"the same mesh axes so each shard holds whole groups; got {HEADS!r} "
      f"(H={q_shape[2]}) over {q_spec[2]!r} and {KV_HEADS!r} (K={k_shape[2]}) "
      f"over {kv_spec[2]!r}; use rules that shard both alike (or neither)"
    )
  if not q_spec[0] == kv_spec[0] == valid_spec[0]:
    raise ValueError(
      f"splash attention: batch split differently for q ({q_spec[0]!r}), "
      f"k/v ({kv_spec[0]!r}) and kv_valid ({valid_spec[0]!r})"
    )
  return q_spec, kv_spec, valid_spec


def splash_attention(
  q_BxLxHxh,
  k_BxLxKxh,
  v_BxLxKxh,
  kv_valid_BxL,
  *,
  scale: float,
  block_size: int = 512,
  interpret: bool = False,
  sharder=None,
) -> jax.Array:
  """Causal GQA self-attention with padding, through splash attention.

  Query l of row b attends key s iff `s <= l and kv_valid_BxL[b, s]`, with
  softmax(scale * q.k); returns [B, L, H, h] in q's dtype, zeros at padding
  queries. `block_size` caps the kernel's blocks (see the module docstring);
  `interpret` runs the kernel in the Pallas interpreter (any backend, slow);
  with a `Sharder` the kernel runs per shard under `jax.shard_map`.
  """
  check_backend("splash", "tpu", interpret=interpret)
  num_heads, num_kv_heads = q_BxLxHxh.shape[2], k_BxLxKxh.shape[2]
  if num_heads % num_kv_heads:
    raise ValueError(
      f"splash attention: {num_heads} query heads are not a multiple of "
      f"{num_kv_heads} kv heads"
    )
  local = functools.partial(
    _local_attention, scale=scale, block_size=block_size, interpret=interpret
  )
  if sharder is None:
    return local(q_BxLxHxh, k_BxLxKxh, v_BxLxKxh, kv_valid_BxL)
  q_spec, kv_spec, valid_spec = _shard_specs(
    sharder, q_BxLxHxh.shape, k_BxLxKxh.shape
  )
  # The Pallas call carries no varying-manual-axes annotations to check.
  sharded = jax.shard_map(
    local,
    mesh=sharder.mesh,
    in_specs=(q_spec, kv_spec, kv_spec, valid_spec),
    out_specs=q_spec,
    check_vma=False,
  )
  return sharded(q_BxLxHxh, k_BxLxKxh, v_BxLxKxh, kv_valid_BxL)


def _attend(q, k, v, q_slot_L, kv_valid_BxS, **kwargs):
  return splash_attention(q, k, v, kv_valid_BxS, **kwargs)


KERNEL = Kernel(_attend, backend="tpu", takes_cache=False)
