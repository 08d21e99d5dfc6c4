"""Flash-style attention in plain JAX: memory linear in length, any backend.

A running max and sum over key blocks in the forward, a custom VJP that
recomputes each tile from the saved log-sum-exp in the backward, and key
blocks wholly above the causal diagonal skipped.

Legend (tiles): nq / nk query / key blocks, G = H / K query heads per kv
head.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rock_jax.models.kernels import Kernel, visible


def _blocks(x, size, axis=1):
  """Pads `axis` to a multiple of `size` and splits it into [n, size] at
  the front: [B, n*size, ...] -> [n, B, size, ...]."""
  pad = -x.shape[axis] % size
  if pad:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    x = jnp.pad(x, widths)
  shape = x.shape[:axis] + (x.shape[axis] // size, size) + x.shape[axis + 1 :]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _unblock(x, length, axis=1):
  """The inverse of `_blocks`, dropping the padding."""
  x = jnp.moveaxis(x, 0, axis)
  shape = x.shape[:axis] + (-1,) + x.shape[axis + 2 :]
  return jax.lax.slice_in_dim(x.reshape(shape), 0, length, axis=axis)


class _Tiles:
  """q/k/v (and their slots) split into blocks, with per-block key ranges.

  q: [nq, B, Q, K, G, h]; k, v: [nk, B, C, K, h]; q slots [nq, Q] (padding
  queries at slot -1 see nothing); kv validity [nk, B, C] (padding keys
  invalid). `hi_nq[i]`: key blocks 0..hi-1 hold everything query block i can
  see; `lo_nk[j]`: query blocks before lo cannot see key block j.
  """

  def __init__(self, q, k, v, q_slot_L, kv_valid_BxS, block_q, block_kv):
    b, length, heads, dim = q.shape
    kv_heads = k.shape[2]
    self.shape = q.shape
    self.q = _blocks(
      q.reshape(b, length, kv_heads, heads // kv_heads, dim), block_q
    )
    self.k, self.v = _blocks(k, block_kv), _blocks(v, block_kv)
    slot = jnp.pad(
      q_slot_L.astype(jnp.int32), (0, -length % block_q), constant_values=-1
    )
    self.q_slot = slot.reshape(-1, block_q)
    self.kv_valid = _blocks(kv_valid_BxS.astype(bool), block_kv)
    self.kv_slot = jnp.arange(self.k.shape[0] * block_kv).reshape(-1, block_kv)
    last_nq = jnp.max(self.q_slot, axis=1)
    self.hi_nq = jnp.clip(last_nq // block_kv + 1, 0, self.k.shape[0])
    # Slots grow along the queries, so the first block that reaches a key
    # block's first slot is a sorted search.
    self.lo_nk = jnp.searchsorted(last_nq, self.kv_slot[:, 0], side="left")

  def scores(self, i, j, q_i, scale):
    """float32 [B, K, G, Q, C] scores of tile (i, j), masked to -inf."""
    s = jnp.einsum(
      "bqkgd,bckd->bkgqc", q_i, self.k[j], preferred_element_type=jnp.float32
    )
    seen = visible(self.q_slot[i], self.kv_slot[j], self.kv_valid[j])
    return jnp.where(seen[:, None, None], s * scale, -jnp.inf)


def _safe(m):
  # Rows that have seen no key yet keep -inf; subtracting 0 instead keeps
  # exp() at 0 rather than NaN.
  return jnp.where(jnp.isfinite(m), m, 0.0)


def _forward(tiles: _Tiles, scale):
  """Output [nq, B, Q, K, G, h] (float32) and log-sum-exp [nq, B, K, G, Q]."""

  def query_block(args):
    i, q_i = args
    b, q_len, kv_heads, groups, dim = q_i.shape
    m = jnp.full((b, kv_heads, groups, q_len), -jnp.inf, jnp.float32)
    acc = jnp.zeros((b, kv_heads, groups, q_len, dim), jnp.float32)

    def key_block(j, carry):
      m, total, acc = carry
      s = tiles.scores(i, j, q_i, scale)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.exp(s - _safe(m_new)[..., None])
      alpha = jnp.exp(m - _safe(m_new))
      total = alpha * total + jnp.sum(p, axis=-1)
      pv = jnp.einsum(
        "bkgqc,bckd->bkgqd",
        p.astype(tiles.v.dtype),
        tiles.v[j],
        preferred_element_type=jnp.float32,
      )
      return m_new, total, alpha[..., None] * acc + pv

    m, total, acc = jax.lax.fori_loop(
      0, tiles.hi_nq[i], key_block, (m, jnp.zeros_like(m), acc)
    )
    out = acc / jnp.where(total > 0, total, 1.0)[..., None]
    lse = jnp.where(total > 0, _safe(m) + jnp.log(total), -jnp.inf)
    return jnp.einsum("bkgqd->bqkgd", out), lse

  ids = jnp.arange(tiles.q.shape[0])
  return jax.lax.map(query_block, (ids, tiles.q))


def _backward(tiles: _Tiles, scale, out, lse, d_out):
  """Gradients (float32) of q [nq, B, Q, K, G, h], k and v [nk, B, C, K, h]."""
  # D_i = rowsum(dO * O), the softmax backward's correction per query.
  delta = jnp.einsum("nbqkgd,nbqkgd->nbkgq", d_out, out)
  d_out = d_out.astype(tiles.q.dtype)

  def key_block(j, carry):
    dq, dk, dv = carry

    def query_block(i, inner):
      dq, dk_j, dv_j = inner
      q_i = tiles.q[i]
      p = jnp.exp(tiles.scores(i, j, q_i, scale) - _safe(lse[i])[..., None])
      dv_j += jnp.einsum(
        "bkgqc,bqkgd->bckd",
        p.astype(d_out.dtype),
        d_out[i],
        preferred_element_type=jnp.float32,
      )
      dp = jnp.einsum(
        "bqkgd,bckd->bkgqc",
        d_out[i],
        tiles.v[j],
        preferred_element_type=jnp.float32,
      )
      ds = (p * (dp - delta[i][..., None]) * scale).astype(q_i.dtype)
      dk_j += jnp.einsum(
        "bkgqc,bqkgd->bckd", ds, q_i, preferred_element_type=jnp.float32
      )
      dq = dq.at[i].add(
        jnp.einsum(
          "bkgqc,bckd->bqkgd",
          ds,
          tiles.k[j],
          preferred_element_type=jnp.float32,
        )
      )
      return dq, dk_j, dv_j

    zeros = jnp.zeros(tiles.k.shape[1:], jnp.float32)
    dq, dk_j, dv_j = jax.lax.fori_loop(
      tiles.lo_nk[j], tiles.q.shape[0], query_block, (dq, zeros, zeros)
    )
    return dq, dk.at[j].set(dk_j), dv.at[j].set(dv_j)

  zeros = lambda x: jnp.zeros(x.shape, jnp.float32)
  init = (zeros(tiles.q), zeros(tiles.k), zeros(tiles.v))
  return jax.lax.fori_loop(0, tiles.k.shape[0], key_block, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _blockwise(q, k, v, q_slot_L, kv_valid_BxS, scale, block_q, block_kv):
  return _blockwise_fwd(
    q, k, v, q_slot_L, kv_valid_BxS, scale, block_q, block_kv
  )[0]


def _blockwise_fwd(q, k, v, q_slot_L, kv_valid_BxS, scale, block_q, block_kv):
  tiles = _Tiles(q, k, v, q_slot_L, kv_valid_BxS, block_q, block_kv)
  out, lse = _forward(tiles, scale)
  result = _unblock(out, q.shape[1]).reshape(q.shape).astype(q.dtype)
  return result, (q, k, v, q_slot_L, kv_valid_BxS, out, lse)


def _blockwise_bwd(scale, block_q, block_kv, residuals, d_result):
  q, k, v, q_slot_L, kv_valid_BxS, out, lse = residuals
  tiles = _Tiles(q, k, v, q_slot_L, kv_valid_BxS, block_q, block_kv)
  b, length, heads, dim = q.shape
  d_out = d_result.reshape(b, length, k.shape[2], -1, dim).astype(jnp.float32)
  dq, dk, dv = _backward(tiles, scale, out, lse, _blocks(d_out, block_q))
  dq = _unblock(dq, length).reshape(q.shape).astype(q.dtype)
  dk = _unblock(dk, k.shape[1]).astype(k.dtype)
  dv = _unblock(dv, v.shape[1]).astype(v.dtype)
  return dq, dk, dv, None, None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def blockwise_attention(
  q_BxLxHxh,
  k_BxSxKxh,
  v_BxSxKxh,
  q_slot_L,
  kv_valid_BxS,
  *,
  scale,
  block_q=512,
  block_kv=512,
):
  """Flash-style attention in plain JAX: memory linear in L and S.

  Tiles of `block_q` queries by `block_kv` keys (clipped to the lengths;
  lengths need not be multiples) with a running max and sum; the backward
  recomputes each tile from the saved log-sum-exp. Accumulation is float32
  whatever the input dtype.
  """
  block_q = min(block_q, q_BxLxHxh.shape[1])
  block_kv = min(block_kv, k_BxSxKxh.shape[1])
  return _blockwise(
    q_BxLxHxh,
    k_BxSxKxh,
    v_BxSxKxh,
    jnp.asarray(q_slot_L),
    kv_valid_BxS,
    float(scale),
    int(block_q),
    int(block_kv),
  )


def _attend(q, k, v, q_slot_L, kv_valid_BxS, *, scale, block_size, **_):
  return blockwise_attention(
    q,
    k,
    v,
    q_slot_L,
    kv_valid_BxS,
    scale=scale,
    block_q=block_size,
    block_kv=block_size,
  )


KERNEL = Kernel(_attend)
