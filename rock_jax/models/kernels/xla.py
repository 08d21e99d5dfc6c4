"""XLA's own attention under the mask built in full: `[B, H, L, S]` scores.

The reference, and the decode path (L = 1, where the scores are linear in S
anyway).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rock_jax.models.kernels import Kernel, visible


def xla_attention(
  q_BxLxHxh, k_BxSxKxh, v_BxSxKxh, q_slot_L, kv_valid_BxS, *, scale
):
  """The dense reference: XLA's attention under the mask built in full."""
  slots_S = jnp.arange(k_BxSxKxh.shape[1])
  mask_BxLxS = visible(q_slot_L, slots_S, kv_valid_BxS)
  return jax.nn.dot_product_attention(
    q_BxLxHxh, k_BxSxKxh, v_BxSxKxh, mask=mask_BxLxS[:, None], scale=scale
  )


def _attend(q, k, v, q_slot_L, kv_valid_BxS, *, scale, **_):
  return xla_attention(q, k, v, q_slot_L, kv_valid_BxS, scale=scale)


KERNEL = Kernel(_attend)
