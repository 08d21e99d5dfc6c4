"""Decode attention over a pool of KV slots: each row reads only its filled
pages.

Legend: N layers, b rows in this step, M pool slots, n pages per slot, C page
size (tokens), H query heads, K kv heads, G = H / K, h head dim.

The pool's keys are `[N, K, M, n, C, h]`: each slot holds one sequence
contiguously from position 0 (its prompt without padding, then its
completion), so a row is described by its slot and its length alone. Inside
the layers the pool is read-only: a row attends its slot's keys
`[0, length - 1)` and its own new key, and the new keys of all layers are
written once after the step (`write`), so the loop updates the pool in
place instead of copying a layer per step.

`ragged_attention` (plain JAX, every backend): the (row, page) pairs that
hold keys are listed and processed `b` at a time in a loop whose trip count
is the step's number of filled pages, gathering each page straight from the pool
and merging per-row softmax statistics; a row of length l reads
ceil((l - 1) / C) pages, whatever the pool's length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PoolStep(NamedTuple):
  """A decode step's view of the pool: read-only keys and values of every
  layer, and which slot each row reads.

  Attributes:
    k, v: `[N, K, M, n, C, h]`, all layers (a layer gathers its pages
      straight from them: slicing a layer out would copy it).
    slots_b: the slot each row reads.
    lengths_b: keys each row attends, its own new key (not yet in the pool)
      included: the pool's keys `[0, length - 1)`, then the new one.
  """

  k: jax.Array
  v: jax.Array
  slots_b: jax.Array
  lengths_b: jax.Array


def write(pool_NxKxMxnxCxh, new_Nxbxkxh, write_slots_b, lengths_b):
  """The pool with each row's new key (every layer) at position
  `length - 1` of its write slot; rows whose write slot is out of range
  (M: padding of a step's bucket) write nothing."""
  size = pool_NxKxMxnxCxh.shape[4]
  position_b = lengths_b - 1
  new = jnp.swapaxes(new_Nxbxkxh, 1, 2).astype(pool_NxKxMxnxCxh.dtype)
  return pool_NxKxMxnxCxh.at[
    :, :, write_slots_b, position_b // size, position_b % size
  ].set(new, mode="drop")


def _safe(m):
  # Rows that have seen no key keep -inf; subtracting 0 keeps exp() at 0.
  return jnp.where(jnp.isfinite(m), m, 0.0)


def ragged_attention(
  q_bxHxh, k_bxKxh, v_bxKxh, pool: PoolStep, layer, *, scale
):
  """One query per row over its slot's pool keys `[0, length - 1)` of
  `layer`, page by page, and its own new key.

  Returns `[b, H, h]` in q's dtype; accumulation is float32.
  """
  b, heads, dim = q_bxHxh.shape
  _, kv_heads, _, per_slot, size, _ = pool.k.shape
  q = q_bxHxh.reshape(b, kv_heads, heads // kv_heads, dim)
  # The row's own key first: every row has one, so the running max is
  # finite from the start.
  m = (
    jnp.einsum("bkgd,bkd->bkg", q, k_bxKxh, preferred_element_type=jnp.float32)
    * scale
  )
  total_l = jnp.ones_like(m)
  acc = jnp.broadcast_to(v_bxKxh.astype(jnp.float32)[:, :, None], q.shape)
  cached_b = pool.lengths_b - 1
  count_b = (cached_b + size - 1) // size
  ends_b = jnp.cumsum(count_b)

  def chunk(c, carry):
    m, total_l, acc = carry
    pair = c * b + jnp.arange(b)
    row = jnp.minimum(jnp.searchsorted(ends_b, pair, side="right"), b - 1)
    page = pair - (ends_b[row] - count_b[row])
    used = pair < ends_b[-1]
    page = jnp.where(used, page, 0)
    # [pairs, K, C, h], gathered from all layers' pool in one go.
    keys = pool.k[layer, :, pool.slots_b[row], page]
    values = pool.v[layer, :, pool.slots_b[row], page]
    s = jnp.einsum(
      "pkgd,pkcd->pkgc", q[row], keys, preferred_element_type=jnp.float32
    )
    key_c = page[:, None] * size + jnp.arange(size)[None]
    seen = used[:, None] & (key_c < cached_b[row][:, None])
    s = jnp.where(seen[:, None, None], s * scale, -jnp.inf)
    m_pair = jnp.max(s, axis=-1)
    p = jnp.exp(s - _safe(m_pair)[..., None])
    acc_pair = jnp.einsum(
      "pkgc,pkcd->pkgd",
      p.astype(values.dtype),
      values,
      preferred_element_type=jnp.float32,
    )
    m_new = m.at[row].max(m_pair)
    old = jnp.exp(m - m_new)
    new = jnp.exp(m_pair - m_new[row])
    total_l = old * total_l + jnp.zeros_like(total_l).at[row].add(
      new * jnp.sum(p, axis=-1)
    )
    acc = old[..., None] * acc + jnp.zeros_like(acc).at[row].add(
      new[..., None] * acc_pair
    )
    return m_new, total_l, acc

  trips = (ends_b[-1] + b - 1) // b
  _, total_l, acc = jax.lax.fori_loop(0, trips, chunk, (m, total_l, acc))
  out = acc / total_l[..., None]
  return out.reshape(b, heads, dim).astype(q_bxHxh.dtype)
