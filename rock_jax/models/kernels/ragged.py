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
  pair_row_p: jax.Array
  pair_page_p: jax.Array


def pool_step(k, v, slots_b, lengths_b) -> PoolStep:
  """A `PoolStep` with its (row, page) work list built once for all layers:
  pair p reads page `pair_page_p[p]` of row `pair_row_p[p]`'s slot, rows in
  order, `b * n` entries of which the first sum(ceil((length - 1) / C))
  are real."""
  per_slot, size = k.shape[3], k.shape[4]
  rows = slots_b.shape[0]
  count_b = (lengths_b - 1 + size - 1) // size
  row_p = jnp.repeat(
    jnp.arange(rows), count_b, total_repeat_length=rows * per_slot
  )
  start_b = jnp.cumsum(count_b) - count_b
  page_p = jnp.arange(rows * per_slot) - start_b[row_p]
  return PoolStep(k, v, slots_b, lengths_b, row_p, page_p)


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
  kv_heads, size = pool.k.shape[1], pool.k.shape[4]
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
  total = jnp.sum((cached_b + size - 1) // size)

  def chunk(c, carry):
    m, total_l, acc = carry
    pair = c * b + jnp.arange(b)
    row = jax.lax.dynamic_slice_in_dim(pool.pair_row_p, c * b, b)
    used = pair < total
    page = jnp.where(
      used, jax.lax.dynamic_slice_in_dim(pool.pair_page_p, c * b, b), 0
    )
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

  trips = (total + b - 1) // b
  _, total_l, acc = jax.lax.fori_loop(0, trips, chunk, (m, total_l, acc))
  out = acc / total_l[..., None]
  return out.reshape(b, heads, dim).astype(q_bxHxh.dtype)
