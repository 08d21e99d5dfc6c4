"""Per-token distillation losses, their chunked form and the reduction.

Arrays in, arrays out: no model and no config object, so any Flax codebase can
call these inside its own jitted step.

Shapes: B batch, T positions, V vocabulary, D student hidden, E teacher hidden,
K chunks, C positions per chunk.

Modules, in dependency order (each states the conventions it implements):
  divergences  per-logit divergence forms: values, logit gradients, the
               `DIVERGENCES` table; zero-probability rules
  spec         argument checks shared by both entry points, the teacher's
               single `stop_gradient`
  logit_space  temperature, kd_ratio mixing, stable log-softmax, and the
               forward value and logit cotangent both custom VJPs share
  exact        `token_divergence`: the custom VJP on materialised logits
  chunked      `chunked_token_divergence`: hidden states and LM heads,
               scanned in chunks without [B·T, V]; `DEFAULT_CHUNK_SIZE`
  reduction    `reduce` and its `NORMALIZERS`
"""

from rock_jax.losses.chunked import DEFAULT_CHUNK_SIZE, chunked_token_divergence
from rock_jax.losses.divergences import DIVERGENCES
from rock_jax.losses.exact import token_divergence
from rock_jax.losses.reduction import NORMALIZERS, reduce

__all__ = [
  "DEFAULT_CHUNK_SIZE",
  "DIVERGENCES",
  "NORMALIZERS",
  "chunked_token_divergence",
  "reduce",
  "token_divergence",
]
