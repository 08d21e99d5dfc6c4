"""Low-rank adapters (LoRA) on the projections of a frozen model.

An adapted projection adds `(alpha / r) B A x` to `W x` (Hu et al., 2021),
as PEFT's `LoraLayer` does: A `[in, r]` starts Kaiming-uniform, B `[r, out]`
at zero, so a fresh adapter leaves the model unchanged. The adapters live in
the parameter tree beside the kernel they adapt (`q_kernel` ->
`q_lora_a`, `q_lora_b`; `rock_jax.models.layers`), with the kernel's logical
axes on their `in` and `out` dimensions and the rank unsharded, so they are
laid out like their base projection under any rules.

`split` and `combine` separate the trainable adapters from the frozen base
and join them again; `merge` folds the adapters into the kernels (a plain
model of the same architecture: the merged export, or rollouts without the
adapter matmuls).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# The projections an adapter can target, by their names in PEFT's and
# transformers' modules (`q_proj`, ..., `down_proj`).
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_DTYPES = ("float32", "bfloat16", "float16")
_A, _B = "_lora_a", "_lora_b"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraSpec:
  """Static settings of the adapters (hashable: part of `ModelConfig`).

  Attributes:
    rank: r, the adapters' inner dimension (> 0).
    alpha: the update's scale is alpha / r (PEFT's `lora_alpha`).
    targets: which projections carry an adapter (names from `TARGETS`).
      Mixture-of-experts blocks carry none: their gate/up/down targets
      adapt the dense MLP layers only.
    dropout: dropout on each adapter's input while training (PEFT's
      `lora_dropout`); 0 leaves the step deterministic.
    dtype: the adapters' storage dtype (the base keeps its own).
  """

  rank: int
  alpha: float
  targets: tuple[str, ...]
  dropout: float = 0.0
  dtype: str = "float32"

  def __post_init__(self):
    if self.rank <= 0:
      raise ValueError(f"lora rank={self.rank} must be > 0")
    unknown = [t for t in self.targets if t not in TARGETS]
    if not self.targets or unknown:
      raise ValueError(
        f"lora targets={self.targets}: expected a non-empty subset of "
        f"{TARGETS}"
      )
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lora dropout={self.dropout} must be in [0, 1)")
    if self.dtype not in _DTYPES:
      raise ValueError(f"lora dtype={self.dtype!r}: expected one of {_DTYPES}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def names(target: str) -> tuple[str, str]:
  """The parameter names of a target's A and B matrices."""
  return target + _A, target + _B


def adapts(path: tuple[str, ...], spec: LoraSpec) -> bool:
  """Whether the parameter at `path` (its keys) is a kernel `spec` adapts
  (a dense block's; mixture-of-experts blocks take no adapters)."""
  return (
    len(path) > 1
    and path[-2] in ("attn", "mlp")
    and path[-1] in {f"{t}_kernel" for t in spec.targets}
  )


def is_adapter(name: str) -> bool:
  """Whether a parameter name is an adapter matrix."""
  return name.endswith((_A, _B))


def split(params) -> tuple[dict, dict]:
  """`(base, adapters)`: the parameter tree without its adapter matrices,
  and those matrices alone (empty branches dropped), both as nested dicts."""
  base, adapters = {}, {}
  for name, value in params.items():
    if isinstance(value, dict):
      b, a = split(value)
      if b:
        base[name] = b
      if a:
        adapters[name] = a
    elif is_adapter(name):
      adapters[name] = value
    else:
      base[name] = value
  return base, adapters


def combine(base, adapters) -> dict:
  """The inverse of `split`: one tree holding both (no copies)."""
  out = dict(base)
  for name, value in adapters.items():
    if isinstance(value, dict):
      value = combine(out.get(name, {}), value)
    out[name] = value
  return out


def delta(kernel: jax.Array, a: jax.Array, b: jax.Array, scale: float):
  """`scale * A B` in the kernel's layout `[..., *in, *out]`, float32.

  A is `[..., *in, r]` and B `[..., r, *out]`, with the same leading
  (stacked-layer) axes as the kernel.
  """
  lead = a.ndim + b.ndim - kernel.ndim - 2
  shape = kernel.shape
  inner = a.shape[-1]
  a2 = a.reshape(shape[:lead] + (-1, inner)).astype(jnp.float32)
  b2 = b.reshape(shape[:lead] + (inner, -1)).astype(jnp.float32)
  return (scale * jnp.matmul(a2, b2)).reshape(shape)


@functools.partial(jax.jit, static_argnames=("spec",))
def merge(params, spec: LoraSpec) -> dict:
  """The base tree with every adapter folded into its kernel,
  `W + (alpha / r) A B` rounded once to the kernel's dtype."""
  out = {}
  for name, value in params.items():
    if isinstance(value, dict):
      out[name] = merge(value, spec)
    elif not is_adapter(name):
      out[name] = value
  for target in TARGETS:
    a_name, b_name = names(target)
    if a_name in params:
      kernel = params[f"{target}_kernel"]
      d = delta(kernel, params[a_name], params[b_name], spec.scale)
      out[f"{target}_kernel"] = (kernel.astype(jnp.float32) + d).astype(
        kernel.dtype
      )
  return out


def update(module, target, x, in_logical, out_shape, out_logical):
  """`(alpha / r) B A x` of projection `target` inside a layer `module`,
  declaring its adapter matrices, or None where the model carries no
  adapter there. `x`'s last `len(in_logical)` axes are the projection's
  input; the update has shape `x.shape[:-len(in_logical)] + out_shape`."""
  cfg = module.cfg
  spec = cfg.lora
  if spec is None or target not in spec.targets:
    return None
  in_shape = x.shape[x.ndim - len(in_logical) :]
  a_name, b_name = names(target)
  # PEFT's Kaiming-uniform (a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  kaiming = nn.initializers.variance_scaling(
    1 / 3, "fan_in", "uniform", in_axis=tuple(range(len(in_shape))),
    out_axis=-1,
  )
  weight_dtype = jnp.dtype(spec.dtype)
  a = module.param(
    a_name,
    nn.with_logical_partitioning(kaiming, tuple(in_logical) + (None,)),
    in_shape + (spec.rank,),
    weight_dtype,
  )
  b = module.param(
    b_name,
    nn.with_logical_partitioning(
      nn.initializers.zeros, (None,) + tuple(out_logical)
    ),
    (spec.rank,) + tuple(out_shape),
    weight_dtype,
  )
  if spec.dropout and module.has_rng("dropout"):
    keep = jax.random.bernoulli(
      module.make_rng("dropout"), 1.0 - spec.dropout, x.shape
    )
    x = jnp.where(keep, x / (1.0 - spec.dropout), 0).astype(x.dtype)
  dtype = cfg.compute_dtype
  h = jnp.tensordot(
    x.astype(dtype),
    a.astype(dtype),
    axes=len(in_shape),
    preferred_element_type=jnp.float32,
  )
  y = jnp.tensordot(
    h.astype(dtype), b.astype(dtype), axes=1, preferred_element_type=jnp.float32
  )
  return spec.scale * y

