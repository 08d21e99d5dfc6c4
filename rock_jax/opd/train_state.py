"""`TrainState`: everything a run checkpoints, as one pytree.

The teacher's parameters are deliberately absent: they are frozen, passed to
the step as a separate argument, and reloaded from their own folder.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from rock_jax import rock


@flax.struct.dataclass
class TrainState:
  """Step counter, student parameters, optimizer state, Rock-Token tracker."""

  step: jax.Array
  params: Any
  opt_state: Any
  rock: rock.RockState


def _maker(params, optimizer, vocab_size, rock_decay, rock_fast_decay):
  """The jitted function that builds a fresh state around `params`.

  Every parameter-shaped part of the optimizer state (Adam's moments, a
  momentum trace) is laid out like the parameters: left to XLA, freshly
  created zeros come out replicated, a full copy of the moments per device.
  """
  shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), params)
  params_def = jax.tree.structure(params)

  def like_params(node):
    if jax.tree.structure(node) != params_def:
      return node
    return jax.tree.map(
      lambda x, s: (
        jax.lax.with_sharding_constraint(x, s)
        if isinstance(s, NamedSharding)
        else x
      ),
      node,
      shardings,
    )

  @jax.jit
  def make(params):
    opt_state = jax.tree.map(
      like_params,
      optimizer.init(params),
      is_leaf=lambda n: jax.tree.structure(n) == params_def,
    )
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_state,
      rock=rock.init(vocab_size, decay=rock_decay, fast_decay=rock_fast_decay),
    )

  return make


def create(
  params,
  optimizer: optax.GradientTransformation,
  vocab_size: int,
  *,
  rock_decay: float = 0.99,
  rock_fast_decay: float = 0.9,
) -> TrainState:
  """A fresh state around (possibly sharded) student parameters, the
  optimizer state laid out like the parameters."""
  make = _maker(params, optimizer, vocab_size, rock_decay, rock_fast_decay)
  return make(params)


def abstract(
  params,
  optimizer: optax.GradientTransformation,
  vocab_size: int,
  *,
  rock_decay: float = 0.99,
  rock_fast_decay: float = 0.9,
) -> TrainState:
  """The state `create` builds, as sharded `jax.ShapeDtypeStruct`s, from
  abstract parameters (`ShapeDtypeStruct`s with shardings): for compiling
  a step without allocating it."""
  make = _maker(params, optimizer, vocab_size, rock_decay, rock_fast_decay)
  out_shardings = make.lower(params).compile().output_shardings
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    jax.eval_shape(make, params),
    out_shardings,
  )


def shardings(state: TrainState):
  """The shardings of a state's arrays, for a step's in/out shardings."""
  return jax.tree.map(lambda x: x.sharding, state)
