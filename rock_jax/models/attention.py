"""Causal grouped-query attention that never holds `[L, S]` scores, by the
kernel a model config names (`rock_jax.models.kernels`).

Legend: B batch, L query length, S key length, H query heads, K kv heads,
h head dim.

- "xla": XLA's attention over the dense mask: the reference, and every
  decode step (one query: scores linear in S).
- "blockwise": flash-style tiles in plain JAX; linear memory, any backend.
- "cudnn": cuDNN's fused attention, each row's valid run rotated to the
  front so causal lengths describe it (GPU, 16-bit inputs).
- "splash": the Pallas TPU splash kernel, padding as segment ids (TPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rock_jax.models import kernels
from rock_jax.models.kernels import blockwise, cudnn, splash, xla

# A new kernel: its file in kernels/ and a row here.
KERNELS = {
  "xla": xla.KERNEL,
  "blockwise": blockwise.KERNEL,
  "cudnn": cudnn.KERNEL,
  "splash": splash.KERNEL,
}
IMPLS = ("auto", *KERNELS)
# What "auto" runs on each backend; anything else runs "blockwise".
AUTO = {"tpu": "splash", "gpu": "cudnn"}


def resolve(impl: str, backend: str | None = None) -> str:
  """The implementation `impl` names on `backend` (default: JAX's)."""
  if impl != "auto":
    return impl
  return AUTO.get(backend or jax.default_backend(), "blockwise")


def check(impl: str, *, interpret: bool = False, field: str = "attention_impl"):
  """Raises a ValueError when `impl` cannot run on this process's backend."""
  if impl not in IMPLS:
    raise ValueError(f"{field}={impl!r}; allowed: {list(IMPLS)}")
  name = resolve(impl)
  kernels.check_backend(
    impl,
    KERNELS[name].backend,
    interpret=interpret,
    field=field,
    auto=resolve("auto"),
  )


def _chosen(impl, length, keys, block_size, dtype) -> str:
  """What runs for `impl` on these shapes and this backend."""
  if impl != "auto":
    return impl
  choice = resolve(impl)
  dtypes = KERNELS[choice].dtypes
  if dtypes is not None and jnp.dtype(dtype) not in dtypes:
    return "blockwise"
  if choice == "blockwise" and max(length, keys) <= block_size:
    # One tile's scores are all blockwise would hold anyway; XLA's fused
    # attention skips the loops (and their compile time).
    return "xla"
  return choice


def attend(
  q_BxLxHxh,
  k_BxSxKxh,
  v_BxSxKxh,
  q_slot_L,
  kv_valid_BxS,
  *,
  impl: str,
  scale: float,
  block_size: int = 512,
  cached: bool = False,
  interpret: bool = False,
  sharder=None,
):
  """Causal GQA attention by the kernel `impl` names.

  Query l sits at key slot `q_slot_L[l]` and sees key s iff `s <=
  q_slot_L[l] and kv_valid_BxS[b, s]`. `cached`: the keys are a KV cache
  (slots beyond the queries exist); a kernel that takes self-attention only
  falls back to "blockwise" there. One query row (a decode step) always
  runs "xla". "auto" runs "blockwise" for dtypes its kernel does not take,
  and "xla" when queries and keys fit in one `block_size` tile.
  """
  impl = _chosen(
    impl, q_BxLxHxh.shape[1], k_BxSxKxh.shape[1], block_size, q_BxLxHxh.dtype
  )
  if q_BxLxHxh.shape[1] == 1:
    impl = "xla"
  elif cached and not KERNELS[impl].takes_cache:
    impl = "blockwise"
  return KERNELS[impl].fn(
    q_BxLxHxh,
    k_BxSxKxh,
    v_BxSxKxh,
    q_slot_L,
    kv_valid_BxS,
    scale=scale,
    block_size=block_size,
    interpret=interpret,
    sharder=sharder,
  )
