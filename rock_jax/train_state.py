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

from rock_jax import rock


@flax.struct.dataclass
class TrainState:
  """Step counter, student parameters, optimizer state, Rock-Token tracker."""

  step: jax.Array
  params: Any
  opt_state: Any
  rock: rock.RockState


def create(
  params,
  optimizer: optax.GradientTransformation,
  vocab_size: int,
  *,
  rock_decay: float = 0.99,
  rock_fast_decay: float = 0.9,
) -> TrainState:
  """A fresh state around (possibly sharded) student parameters.

  The optimizer state is created under `jax.jit`, so its moments take the
  parameters' shardings.
  """

  @jax.jit
  def make(params):
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      rock=rock.init(vocab_size, decay=rock_decay, fast_decay=rock_fast_decay),
    )

  return make(params)


def shardings(state: TrainState):
  """The shardings of a state's arrays, for a step's in/out shardings."""
  return jax.tree.map(lambda x: x.sharding, state)
