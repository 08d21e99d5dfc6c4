"""Rock-Token tracker: per-token-id loss statistics, rock selection, weights.

Pure functions on a small pytree over the vocabulary, usable inside jit.
Host-side helpers for static lists and control sets live in `lists`.

Shapes: B batch, T positions, V vocabulary, K selected ids.

Statistics are keyed on the emitted token: `update` credits the loss at
position t to the token x_t produced there, as the paper's R(v) does.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

SOURCES = ("ema", "total")
ALIGNMENTS = ("emitted", "context")


@struct.dataclass
class RockState:
  """Per-token-id loss statistics and the currently weighted rock set.

  Every EMA is over optimizer steps (calls to `update`) and includes steps in
  which the id does not occur, so `ema_count_V` is a recency-weighted
  occurrence rate per step and `ema_loss_V / ema_count_V` a recency-weighted
  mean loss per occurrence. Counts are float32 in the EMAs and exact int32 in
  the totals.
  """

  ema_count_V: jax.Array  # EMA at `decay` of per-step occurrences.
  ema_loss_V: jax.Array  # EMA at `decay` of the per-step summed loss.
  fast_count_V: jax.Array  # The same two at `fast_decay`, for stagnation.
  fast_loss_V: jax.Array
  total_count_V: jax.Array  # int32 occurrences since init.
  total_loss_V: jax.Array  # Summed loss since init.
  rock_mask_V: jax.Array  # bool: the set `token_weights` weights by λ.
  step: jax.Array  # int32 number of `update` calls.
  decay: float = struct.field(pytree_node=False)
  fast_decay: float = struct.field(pytree_node=False)

  @property
  def vocab_size(self):
    return self.ema_count_V.shape[0]


def init(vocab_size, decay=0.99, fast_decay=0.9):
  """An empty tracker.

  The defaults average over about 100 steps (slow) and 10 steps (fast): at the
  paper's 4 sequences per step, the slow window sees a corpus comparable to
  its 500-problem detection set.

  Args:
    vocab_size: V, the number of token ids.
    decay: slow EMA decay per step, in (0, 1); it drives R(v).
    fast_decay: fast EMA decay, in [0, decay); compared with the slow one to
      measure stagnation (see `improvement`).

  Returns:
    A `RockState` with zero statistics, an empty rock set and step 0.
  """
  if not isinstance(vocab_size, int) or vocab_size < 1:
    raise ValueError(f"vocab_size={vocab_size!r} must be a positive int")
  if not 0.0 <= fast_decay < decay < 1.0:
    raise ValueError(
      f"need 0 <= fast_decay < decay < 1; got fast_decay={fast_decay!r}, "
      f"decay={decay!r}"
    )
  zeros = jnp.zeros(vocab_size, jnp.float32)
  return RockState(
    ema_count_V=zeros,
    ema_loss_V=zeros,
    fast_count_V=zeros,
    fast_loss_V=zeros,
    total_count_V=jnp.zeros(vocab_size, jnp.int32),
    total_loss_V=zeros,
    rock_mask_V=jnp.zeros(vocab_size, bool),
    step=jnp.zeros((), jnp.int32),
    decay=float(decay),
    fast_decay=float(fast_decay),
  )


def _in_vocab(ids, valid, vocab_size):
  """ids where valid and inside [0, V), else V, which `mode="drop"` drops.

  Negative ids would otherwise wrap around like NumPy indices.
  """
  keep = valid & (ids >= 0) & (ids < vocab_size)
  return jnp.where(keep, ids, vocab_size)


def update(state, token_ids_BxT, loss_BxT, mask_BxT):
  """Adds one step's per-token losses to the statistics.

  A scatter-add into [V] buffers; under jit with the batch sharded over
  devices, XLA sums the per-device buffers, so the result equals the
  single-device one (counts exactly, losses up to float32 summation order).

  Args:
    state: the tracker.
    token_ids_BxT: the emitted token at each loss position.
    loss_BxT: the per-token loss there (the unweighted divergence; it is not
      differentiated through).
    mask_BxT: positions to count (nonzero = valid); others, and ids outside
      the vocabulary, are ignored.

  Returns:
    The updated state, with `step` incremented.
  """
  shapes = {token_ids_BxT.shape, loss_BxT.shape, mask_BxT.shape}
  if len(shapes) != 1:
    raise ValueError(
      f"token_ids_BxT.shape={token_ids_BxT.shape}, "
      f"loss_BxT.shape={loss_BxT.shape} and mask_BxT.shape={mask_BxT.shape} "
      "must be equal"
    )
  vocab_size = state.vocab_size
  valid = mask_BxT != 0
  ids = _in_vocab(token_ids_BxT, valid, vocab_size).ravel()
  loss = jnp.where(valid, jax.lax.stop_gradient(loss_BxT), 0.0).ravel()
  count_V = jnp.zeros(vocab_size, jnp.int32).at[ids].add(1, mode="drop")
  loss_V = (
    jnp.zeros(vocab_size, jnp.float32)
    .at[ids]
    .add(loss.astype(jnp.float32), mode="drop")
  )
  count_f_V = count_V.astype(jnp.float32)

  def ema(old, new, decay):
    return decay * old + (1.0 - decay) * new

  return state.replace(
    ema_count_V=ema(state.ema_count_V, count_f_V, state.decay),
    ema_loss_V=ema(state.ema_loss_V, loss_V, state.decay),
    fast_count_V=ema(state.fast_count_V, count_f_V, state.fast_decay),
    fast_loss_V=ema(state.fast_loss_V, loss_V, state.fast_decay),
    total_count_V=state.total_count_V + count_V,
    total_loss_V=state.total_loss_V + loss_V,
    step=state.step + 1,
  )


def _ratio(numerator, denominator):
  """numerator / denominator, 0 where the denominator is 0 (id never seen)."""
  safe = jnp.where(denominator > 0, denominator, 1.0)
  return jnp.where(denominator > 0, numerator / safe, 0.0)


def _check_source(source):
  if source not in SOURCES:
    raise ValueError(f"unknown source {source!r}; available: {sorted(SOURCES)}")


def mean_loss(state, source="ema"):
  """Per-id mean loss per occurrence, float32 [V] (0 for unseen ids).

  "ema" is recency-weighted (the bias corrections of numerator and
  denominator cancel); "total" is the plain mean since init.
  """
  _check_source(source)
  if source == "total":
    return _ratio(state.total_loss_V, state.total_count_V.astype(jnp.float32))
  return _ratio(state.ema_loss_V, state.ema_count_V)


def mean_loss_all(state, source="ema"):
  """Mean loss per position over every id, a float32 scalar (0 before any
  update): the yardstick of `Selection.min_loss_ratio`."""
  _check_source(source)
  if source == "total":
    loss, count = state.total_loss_V, state.total_count_V.astype(jnp.float32)
  else:
    loss, count = state.ema_loss_V, state.ema_count_V
  return _ratio(loss.sum(), count.sum())


def rock_score(state, source="ema"):
  """The Rock Score R(v) = frequency × mean loss, float32 [V].

  "ema": R(v) = ĉ(v)·ℓ̄(v), with ĉ the bias-corrected (as in Adam) EMA of
  per-step occurrences and ℓ̄ the EMA mean loss of `mean_loss`; the product is
  the bias-corrected EMA of v's summed loss per step, i.e. the expected
  divergence mass v carries in one step. "total": count × mean since init,
  i.e. v's summed loss, the paper's offline R(v) when the tracker has seen
  exactly the detection corpus.
  """
  _check_source(source)
  if source == "total":
    return state.total_loss_V
  correction = 1.0 - jnp.power(jnp.float32(state.decay), state.step)
  return jnp.where(state.step > 0, state.ema_loss_V / correction, 0.0)


def improvement(state):
  """Per-id relative improvement (slow mean − fast mean) / slow mean, [V].

  The fast EMA forgets sooner, so a falling loss gives a positive value, a
  stagnating one about 0 and a rising one a negative value. Ids without a
  positive slow mean get 0.
  """
  slow = _ratio(state.ema_loss_V, state.ema_count_V)
  fast = _ratio(state.fast_loss_V, state.fast_count_V)
  return _ratio(slow - fast, jnp.where(state.fast_count_V > 0, slow, 0.0))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
  """How the rock set is chosen from the tracker: the paper's type-level
  top-k by R(v), with filters. Hashable, so it is static under jit.

  Attributes:
    k: number of ids (the paper's K = 100).
    min_count: minimum occurrences since init (the figure list uses 2).
    exclude_most_frequent: drop this many ids with the largest counts since
      init (the figure list drops 5: spaces and common punctuation).
    min_mean_loss: if set, keep only ids whose `mean_loss` is at least this.
    min_loss_ratio: if set, keep only ids whose `mean_loss` is at least this
      multiple of the mean over all positions (`mean_loss_all`): ids whose
      share of the loss exceeds their share of the positions. A frequent
      content token with a moderate loss per occurrence (a digit the student
      mostly gets right) can rank high by R(v) on frequency alone; this
      keeps it out without knowing any reference answer.
    min_score_ratio: if set, keep only ids whose R(v) is at least this
      fraction of the largest: the set ends where R(v) falls far below the
      top rock's, instead of filling K slots with rare ids that carry a
      negligible share of the loss (a stray token the student still has to
      unlearn).
    max_improvement: if set, keep only ids whose `improvement` is at most
      this (stagnating ids), an online stand-in for the paper's persistence.
    source: "ema" (online R) or "total" (R since init); also used by
      `min_mean_loss`.
    protected: ids never selected, e.g. the content tokens a verifier reads
      (`rock_set.protected_ids`).
  """

  k: int = 100
  min_count: int = 1
  exclude_most_frequent: int = 0
  min_mean_loss: float | None = None
  min_loss_ratio: float | None = None
  min_score_ratio: float | None = None
  max_improvement: float | None = None
  source: str = "ema"
  protected: tuple[int, ...] = ()

  def __post_init__(self):
    _check_source(self.source)
    if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
      raise ValueError(f"k={self.k!r} must be an int >= 1")
    for name in ("min_loss_ratio", "min_score_ratio"):
      value = getattr(self, name)
      if value is not None and not value > 0:
        raise ValueError(f"{name}={value!r} must be > 0, or None for none")

  def ranking(self) -> "Selection":
    """This selection without its guards (`min_loss_ratio`,
    `min_score_ratio`, `protected`): the tracker's own ranking, from which
    detection is read."""
    return dataclasses.replace(
      self, min_loss_ratio=None, min_score_ratio=None, protected=()
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
  """The weighting a train step applies: λ on the held rock set, how that
  set is selected, and when it is refreshed (see `refresh`).

  Attributes:
    lam: weight of rock tokens (1 = uniform OPD, 0 = Rock-Freeze).
    align: "emitted" or "context" (`token_weights`).
    selection: how the set is chosen from the tracker.
    warmup_steps, refresh_every: the `refresh` schedule.
  """

  lam: float = 1.0
  align: str = "emitted"
  selection: Selection = Selection()
  warmup_steps: int = 0
  refresh_every: int = 0

  def __post_init__(self):
    # `token_weights` and `refresh` check the other fields when traced.
    if not 0 <= self.lam <= 1:
      raise ValueError(f"lam={self.lam} must be in [0, 1]")


def rock_ids(state, selection: Selection = Selection()):
  """The ids `selection` picks from the tracker, by decreasing R(v).

  Works under jit (the selection is static).

  Returns:
    int32 [k] ids in decreasing R(v); slots beyond the eligible ids hold -1.
  """
  s, vocab_size = selection, state.vocab_size
  if not s.k <= vocab_size:
    raise ValueError(
      f"k={s.k!r} must be an int in [1, vocab_size={vocab_size}]"
    )
  if not 0 <= s.exclude_most_frequent < vocab_size:
    raise ValueError(
      f"exclude_most_frequent={s.exclude_most_frequent!r} must be in "
      f"[0, vocab_size={vocab_size})"
    )
  eligible = state.total_count_V >= max(s.min_count, 1)
  if s.exclude_most_frequent:
    _, frequent = jax.lax.top_k(state.total_count_V, s.exclude_most_frequent)
    eligible = eligible.at[frequent].set(False)
  if s.min_mean_loss is not None:
    eligible &= mean_loss(state, s.source) >= s.min_mean_loss
  if s.min_loss_ratio is not None:
    floor = s.min_loss_ratio * mean_loss_all(state, s.source)
    eligible &= mean_loss(state, s.source) >= floor
  if s.max_improvement is not None:
    eligible &= improvement(state) <= s.max_improvement
  if s.protected:
    eligible = eligible.at[jnp.asarray(s.protected, jnp.int32)].set(
      False, mode="drop"
    )
  score = rock_score(state, s.source)
  if s.min_score_ratio is not None:
    eligible &= score >= s.min_score_ratio * score.max()
  score = jnp.where(eligible, score, -jnp.inf)
  best, ids = jax.lax.top_k(score, s.k)
  return jnp.where(best > -jnp.inf, ids, -1).astype(jnp.int32)


def rock_mask(ids_K, vocab_size):
  """bool [V], True at the given ids; negative (unfilled) ids are ignored."""
  # An empty list would otherwise become a float array, not an index.
  ids = _in_vocab(jnp.asarray(ids_K, jnp.int32), True, vocab_size)
  return jnp.zeros(vocab_size, bool).at[ids].set(True, mode="drop")


def refresh(
  state,
  selection: Selection = Selection(),
  *,
  warmup_steps: int = 0,
  refresh_every: int = 0,
  static_V=None,
):
  """Sets `state.rock_mask_V` to the set to weight from the next step on.

  Call it after `update`. Before `warmup_steps` updates the set is empty, so
  every weight is 1. From then on it is either `static_V` (a static set,
  e.g. from `lists.load_rock_json`) or `rock_ids(state, selection)`,
  selected after update number `warmup_steps` and then again every
  `refresh_every` updates (0: never again, the first selection is kept),
  and held in between (`lax.cond`, so the selection only runs when due).
  Updates are numbered from 1, so `warmup_steps=0` first selects after
  update `refresh_every`, and with both 0 nothing is ever selected.

  Args:
    state: the tracker, after `update`.
    selection: how the set is chosen.
    warmup_steps: updates before any weighting starts.
    refresh_every: updates between selections; 0 selects once.
    static_V: optional bool [V] static set, weighted instead of a selection
      (from the end of the warm-up on; nothing is selected or refreshed).

  Returns:
    The state with its rock set for the next step.
  """
  if refresh_every < 0 or warmup_steps < 0:
    raise ValueError(
      f"refresh_every={refresh_every!r} and warmup_steps={warmup_steps!r} "
      "must be >= 0"
    )
  since = state.step - warmup_steps
  if static_V is not None:
    if static_V.shape != state.rock_mask_V.shape:
      raise ValueError(
        f"static_V.shape={static_V.shape} must be {state.rock_mask_V.shape}"
      )
    return state.replace(rock_mask_V=(since >= 0) & static_V.astype(bool))
  if not (warmup_steps or refresh_every):
    return state
  due = since == 0
  if refresh_every:
    due = (since >= 0) & (since % refresh_every == 0)
  mask = jax.lax.cond(
    due,
    lambda s: rock_mask(rock_ids(s, selection), s.vocab_size),
    lambda s: s.rock_mask_V,
    state,
  )
  return state.replace(rock_mask_V=mask)


def token_weights(rock, token_ids_BxT, mask_BxT, lam=0.0, align="emitted"):
  """Loss weights: λ at rock tokens, 1 elsewhere, 0 on masked positions.

  Args:
    rock: a `RockState` (its held `rock_mask_V`) or a bool [V] mask.
    token_ids_BxT: token ids with x_t at loss position t (the token emitted
      there); for `align="context"` include the prompt, so that x_{t−1} of
      the first response position is its last prompt token.
    mask_BxT: loss positions (nonzero = valid).
    lam: weight of rock tokens, a float ≥ 0 or a traced scalar (e.g. a
      schedule); 0 freezes them (the paper's Rock-Freeze), 1 is plain OPD.
    align: "emitted" keys the weight on x_t, the paper's w(x_t)·ℓ_t and the
      token R(v) credits; "context" keys it on x_{t−1}, what the reference
      code does (it freezes the distribution after a rock token). Position 0
      has no previous token and gets weight 1 under "context".

  Returns:
    float32 [B, T] weights.
  """
  if align not in ALIGNMENTS:
    raise ValueError(
      f"unknown align {align!r}; available: {sorted(ALIGNMENTS)}"
    )
  if isinstance(lam, (int, float)) and not lam >= 0:
    raise ValueError(f"lam={lam!r} must be >= 0")
  if token_ids_BxT.shape != mask_BxT.shape or token_ids_BxT.ndim != 2:
    raise ValueError(
      f"token_ids_BxT.shape={token_ids_BxT.shape} and "
      f"mask_BxT.shape={mask_BxT.shape} must be equal [B, T]"
    )
  mask_V = rock.rock_mask_V if isinstance(rock, RockState) else rock
  keys = token_ids_BxT
  if align == "context":
    keys = jnp.pad(keys[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  # Ids outside [0, V) (the -1 above, padding ids) are not rocks.
  keys = _in_vocab(keys, True, mask_V.shape[0])
  is_rock = jnp.take(mask_V, keys, mode="fill", fill_value=False)
  weights = jnp.where(is_rock, jnp.asarray(lam, jnp.float32), 1.0)
  return jnp.where(mask_BxT != 0, weights, 0.0)
