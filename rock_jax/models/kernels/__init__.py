"""Attention kernels, one file each, dispatched by name from
`rock_jax.models.attention.KERNELS`.

Legend: B batch, L query length, S key length, H query heads, K kv heads,
h head dim; Q / C a tile's queries / keys.

Every kernel takes the same description of what a query may see: query l
sits at key slot `q_slot_L[l]` and attends key s iff `s <= q_slot_L[l] and
kv_valid_BxS[b, s]` (causality plus per-key padding, no dense `[B, L, S]`
mask). A query that sees no key (a left-padding position) is don't-care:
its output is never read at a valid position.

A new kernel is a file here with a `KERNEL` and one row in that table.
`ragged` (decode over a pool of KV pages) is the slot pool's, not a row.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax


class Kernel(NamedTuple):
  """A kernel and what it can run.

  Attributes:
    fn: `fn(q_BxLxHxh, k_BxSxKxh, v_BxSxKxh, q_slot_L, kv_valid_BxS, *,
      scale, block_size, interpret, sharder)` -> [B, L, H, h].
    backend: the backend it needs ("gpu", "tpu"), None for any.
    takes_cache: whether keys may be a KV cache longer than the queries
      (else it takes self-attention over the same L positions only).
    dtypes: the input dtypes it takes, None for any.
  """

  fn: Callable
  backend: str | None = None
  takes_cache: bool = True
  dtypes: tuple | None = None


def visible(q_slot_Q, kv_slot_C, kv_valid_BxC):
  """bool [B, Q, C]: which of a tile's keys each of its queries sees."""
  causal_QxC = kv_slot_C[None, :] <= q_slot_Q[:, None]
  return causal_QxC[None] & kv_valid_BxC[:, None, :]


def check_backend(
  name: str,
  backend: str | None,
  *,
  interpret: bool = False,
  field: str = "attention_impl",
  auto: str | None = None,
) -> None:
  """Raises a ValueError naming `field` when kernel `name`, which needs
  `backend`, cannot run here (a TPU kernel in interpret mode can); `auto`
  is what "auto" would pick here, for the message."""
  here = jax.default_backend()
  if backend is None or backend == here or (backend == "tpu" and interpret):
    return
  picks = f" (picks {auto!r} here)" if auto else ""
  raise ValueError(
    f"{field}={name!r} needs a {backend.upper()} (this backend is {here!r}); "
    f"use 'auto'{picks} or 'blockwise', which runs everywhere"
  )
