"""Rock Tokens: the tracker over token ids and the set a step weights.

Modules:
  tracker    `RockState` (per-id loss statistics), `update`, R(v),
             `Selection`, `Policy`, `refresh`, `token_weights`; jit-able
  lists      rock.json lists, frequency-matched controls, detection (NumPy)
  snapshots  tracker snapshots on disk
  rock_set   `RockSet`: the set a run weights (a selection, a list or a
             control) and its top-K table; `protected_ids`
"""

from rock_jax import deprecated
from rock_jax.rock import lists, rock_set, snapshots
from rock_jax.rock.tracker import (
  ALIGNMENTS,
  SOURCES,
  Policy,
  RockState,
  Selection,
  improvement,
  init,
  mean_loss,
  mean_loss_all,
  refresh,
  rock_ids,
  rock_mask,
  rock_score,
  token_weights,
  update,
)

__all__ = [
  "ALIGNMENTS",
  "SOURCES",
  "Policy",
  "RockState",
  "Selection",
  "improvement",
  "init",
  "lists",
  "maybe_refresh",
  "mean_loss",
  "mean_loss_all",
  "refresh",
  "rock_ids",
  "rock_mask",
  "rock_score",
  "rock_set",
  "snapshots",
  "token_weights",
  "update",
]


def maybe_refresh(
  state, *, warmup_steps=0, refresh_every=0, fixed_mask_V=None, **select
):
  """Deprecated: `refresh(state, Selection(**select), warmup_steps=...,
  refresh_every=..., static_V=fixed_mask_V)`.

  Keeps its own rule: without `fixed_mask_V`, `refresh_every=0` never
  selects (`refresh` selects once at the end of the warm-up).
  """
  deprecated("rock_jax.rock.maybe_refresh", "rock_jax.rock.refresh")
  if fixed_mask_V is not None and refresh_every:
    raise ValueError(
      f"refresh_every={refresh_every!r} with fixed_mask_V: a static set is "
      "never recomputed; pass refresh_every=0"
    )
  if fixed_mask_V is None and not refresh_every:
    return state
  return refresh(
    state,
    Selection(**select),
    warmup_steps=warmup_steps,
    refresh_every=refresh_every,
    static_V=fixed_mask_V,
  )
