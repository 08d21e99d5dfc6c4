"""cuDNN's fused attention through `jax.nn.dot_product_attention`.

`is_causal` and sequence lengths describe right padding only, so each row's
valid run is rotated to the front first and the output rotated back. Needs
each row's valid keys to be one contiguous run, which left-padded prompts
followed by a completion are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rock_jax.models.kernels import Kernel

# cuDNN's fused attention takes 16-bit inputs only.
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def aligned_attention(
  q_BxLxHxh, k_BxLxKxh, v_BxLxKxh, kv_valid_BxL, *, scale, implementation
):
  """Causal self-attention through `jax.nn.dot_product_attention`'s lengths.

  Each row is rotated left by its first valid position, so its valid run
  starts at 0 and `is_causal` plus `key_value_seq_lengths` describe exactly
  the keys it may see; the output is rotated back.
  """
  length = q_BxLxHxh.shape[1]
  valid = kv_valid_BxL.astype(bool)
  start_B = jnp.argmax(valid, axis=1).astype(jnp.int32)
  count_B = jnp.sum(valid, axis=1, dtype=jnp.int32)
  ids_L = jnp.arange(length, dtype=jnp.int32)
  forward_BxL = (ids_L[None] + start_B[:, None]) % length

  def rotate(x, ids_BxL):
    return jnp.take_along_axis(x, ids_BxL[:, :, None, None], axis=1)

  q, k, v = (rotate(x, forward_BxL) for x in (q_BxLxHxh, k_BxLxKxh, v_BxLxKxh))
  out = jax.nn.dot_product_attention(
    q,
    k,
    v,
    scale=scale,
    is_causal=True,
    query_seq_lengths=count_B,
    key_value_seq_lengths=count_B,
    implementation=implementation,
  )
  backward_BxL = (ids_L[None] - start_B[:, None]) % length
  return rotate(out, backward_BxL)


def _attend(q, k, v, q_slot_L, kv_valid_BxS, *, scale, **_):
  return aligned_attention(
    q, k, v, kv_valid_BxS, scale=scale, implementation="cudnn"
  )


KERNEL = Kernel(_attend, backend="gpu", takes_cache=False, dtypes=CUDNN_DTYPES)
