"""Per-token divergences on log-probabilities: values and logit gradients.

Shapes: V vocabulary; `...` any leading per-token shape (e.g. B batch,
T positions).

A kind's value and gradient need not be the derivative pair: `pg_reverse_kl`
reports the exact reverse KL but returns the single-sample policy-gradient
estimate k1(x)·∇log p_s(x) as its gradient (see `token_divergence`).

Zero probability follows information theory: a term p·log(p/q) with p = 0 is
0, whatever q (so −inf logits on the side that weighs the sum are harmless, in
value and gradient); a term with p > 0 and q = 0 is +inf (the divergence is
infinite, e.g. reverse KL when the student puts mass on a token the teacher
gives −inf). Unlike KDFlow we do not drop vocabulary entries where the teacher
is −inf: a student could then park its mass on tokens the teacher forbids at
no cost. Mask such entries in both models (e.g. slice both to the shared
vocabulary) or mask the position.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class _Divergence(NamedTuple):
  """One divergence: its per-token value and its logit-space gradient.

  Both take float32 log-probabilities `logp_s`, `logp_t` ([..., V], already
  temperature-scaled), the sampled ids ([...], or None) and beta. `grad` also
  gets the forward value and returns dvalue/dz_s for the scaled student
  logits z_s.
  """

  value: Callable
  grad: Callable
  sampled: bool


def _p_times(p, x):
  """p·x with 0·x = 0 even where x is ±inf (plain 0·inf would be NaN)."""
  return jnp.where(p > 0, p * x, 0.0)


def _centered(p, b):
  """p ⊙ (b − E_p[b]): the softmax chain rule for dL/dp = b."""
  mean = jnp.sum(_p_times(p, b), axis=-1, keepdims=True)
  return _p_times(p, b - mean)


def _reverse_kl_value(logp_s, logp_t, ids, beta):
  del ids, beta
  return jnp.sum(_p_times(jnp.exp(logp_s), logp_s - logp_t), axis=-1)


def _reverse_kl_grad(logp_s, logp_t, ids, beta, value):
  del ids, beta
  # dKL/dz = p_s ⊙ (A − E_ps[A]) with A = log p_s − log p_t, and E_ps[A] is the
  # forward value itself, which saves a reduction over V.
  return _p_times(jnp.exp(logp_s), logp_s - logp_t - value[..., None])


def _forward_kl_value(logp_s, logp_t, ids, beta):
  del ids, beta
  return jnp.sum(_p_times(jnp.exp(logp_t), logp_t - logp_s), axis=-1)


def _forward_kl_grad(logp_s, logp_t, ids, beta, value):
  del ids, beta, value
  return jnp.exp(logp_s) - jnp.exp(logp_t)


def _log_mixture(logp_s, logp_t, beta):
  """log m with m = (1 − β)·p_s + β·p_t, computed in log space."""
  return jnp.logaddexp(logp_s + math.log1p(-beta), logp_t + math.log(beta))


def _jsd_value(logp_s, logp_t, ids, beta):
  del ids
  log_m = _log_mixture(logp_s, logp_t, beta)
  teacher = jnp.sum(_p_times(jnp.exp(logp_t), logp_t - log_m), axis=-1)
  student = jnp.sum(_p_times(jnp.exp(logp_s), logp_s - log_m), axis=-1)
  return beta * teacher + (1.0 - beta) * student


def _jsd_grad(logp_s, logp_t, ids, beta, value):
  del ids, value
  # dJSD/dp_s = (1 − β)·(log p_s − log m): the β·p_t/m and (1 − β)·p_s/m terms
  # of the two KLs sum to 1 and cancel against the +1 of d(p log p)/dp.
  b = (1.0 - beta) * (logp_s - _log_mixture(logp_s, logp_t, beta))
  return _centered(jnp.exp(logp_s), b)


def gather(logp, ids):
  return jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]


def score(logp_s, ids):
  """d log p_s(x)/dz_s = onehot(x) − p_s."""
  onehot = jax.nn.one_hot(ids, logp_s.shape[-1], dtype=jnp.float32)
  return onehot - jnp.exp(logp_s)


def _k1_value(logp_s, logp_t, ids, beta):
  del beta
  return gather(logp_s, ids) - gather(logp_t, ids)


def _k1_grad(logp_s, logp_t, ids, beta, value):
  del logp_t, beta, value
  return score(logp_s, ids)


def _pg_reverse_kl_grad(logp_s, logp_t, ids, beta, value):
  del beta, value
  # The score-function (REINFORCE) estimator of ∇ reverse KL: the reward
  # −k1(x) is held constant, so E_{x~p_s}[k1(x)·∇log p_s(x)] = Σ_x ∇p_s(x)·A(x)
  # is the exact gradient (the Σ p_s·∇A term it omits is Σ ∇p_s = 0).
  k1 = gather(logp_s, ids) - gather(logp_t, ids)
  return k1[..., None] * score(logp_s, ids)


def _k3_value(logp_s, logp_t, ids, beta):
  del beta
  log_r = gather(logp_t, ids) - gather(logp_s, ids)
  return jnp.expm1(log_r) - log_r


def _k3_grad(logp_s, logp_t, ids, beta, value):
  del beta, value
  # d[(r − 1) − log r]/dz = (r − 1)·dlog r/dz = (1 − r)·(onehot − p_s).
  log_r = gather(logp_t, ids) - gather(logp_s, ids)
  return -jnp.expm1(log_r)[..., None] * score(logp_s, ids)


# Name -> implementation. Full-vocabulary kinds are exact at every position;
# k1 and k3 are the single-sample estimators of reverse KL on `sampled_ids`.
# pg_reverse_kl pairs the exact reverse KL value (the logged ℓ_t) with the
# sampled policy-gradient estimate of its gradient, so it reads the ids too.
DIVERGENCES = {
  "reverse_kl": _Divergence(_reverse_kl_value, _reverse_kl_grad, False),
  "forward_kl": _Divergence(_forward_kl_value, _forward_kl_grad, False),
  "jsd": _Divergence(_jsd_value, _jsd_grad, False),
  "k1": _Divergence(_k1_value, _k1_grad, True),
  "k3": _Divergence(_k3_value, _k3_grad, True),
  "pg_reverse_kl": _Divergence(_reverse_kl_value, _pg_reverse_kl_grad, True),
}
