"""Per-token distillation losses, their chunked form and the reduction.

Arrays in, arrays out: no model and no config object, so any Flax codebase can
call these inside its own jitted step.

Shapes: B batch, T positions, V vocabulary, D student hidden, E teacher hidden,
K chunks, C positions per chunk.

Modules, in dependency order:
  divergences  per-logit divergence forms: values, logit gradients, the
               `DIVERGENCES` table (pg_reverse_kl: exact reverse-KL value,
               sampled policy-gradient gradient); zero-probability rules
  logit_space  argument checks, the teacher's single `stop_gradient`,
               temperature, kd_ratio mixing, stable log-softmax, and the
               forward value and logit cotangent both custom VJPs share
  exact        `token_divergence`: the custom VJP on materialised logits
  chunked      `chunked_token_divergence`: hidden states and LM heads,
               scanned in chunks without [B·T, V], optionally also the
               student's log-probs of the sampled ids; `DEFAULT_CHUNK_SIZE`
  spans        cross-tokenizer terms: `CrossTerms` (at a span's first
               position reverse KL coarsened to comparable ids and first
               bytes; the span log-ratio reward inside spans),
               `cross_terms`, `teacher_log_probs`, `span_logprob`, `GROUPS`
  reduction    `reduce` and its `NORMALIZERS`; `importance_weights`:
               truncated importance sampling (TIS) weights for tokens from a
               stale sampler
"""

from rock_jax.losses.chunked import (
  CROSS_KINDS,
  DEFAULT_CHUNK_SIZE,
  chunked_token_divergence,
)
from rock_jax.losses.divergences import DIVERGENCES
from rock_jax.losses.exact import token_divergence
from rock_jax.losses.reduction import NORMALIZERS, importance_weights, reduce
from rock_jax.losses.spans import (
  GROUPS,
  CrossTerms,
  TeacherLogProbs,
  cross_terms,
  span_logprob,
  teacher_log_probs,
)

__all__ = [
  "CROSS_KINDS",
  "CrossTerms",
  "DEFAULT_CHUNK_SIZE",
  "DIVERGENCES",
  "GROUPS",
  "NORMALIZERS",
  "TeacherLogProbs",
  "chunked_token_divergence",
  "cross_terms",
  "importance_weights",
  "reduce",
  "span_logprob",
  "teacher_log_probs",
  "token_divergence",
]
