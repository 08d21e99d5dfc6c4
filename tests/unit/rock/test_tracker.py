"""Tests for the Rock-Token tracker (rock_jax.rock) and lists (rock_lists)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import optimize

from rock_jax import rock, storage
from rock_jax.rock import lists as rock_lists

V = 12


def batches(steps, b=4, t=6, seed=0):
  """Random (ids, loss, mask) batches; ids include -1 and V (out of vocab)."""
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    ids = rng.integers(-1, V + 1, size=(b, t))
    loss = rng.uniform(0.0, 2.0, size=(b, t)).astype(np.float32)
    mask = rng.uniform(size=(b, t)) < 0.8
    yield ids.astype(np.int32), loss, mask


class NumpyTracker:
  """Float64 reference of the tracker, written from its documentation."""

  def __init__(self, decay, fast_decay):
    self.decay, self.fast_decay = decay, fast_decay
    self.ema_count, self.ema_loss = np.zeros(V), np.zeros(V)
    self.fast_count, self.fast_loss = np.zeros(V), np.zeros(V)
    self.count, self.loss, self.step = np.zeros(V, int), np.zeros(V), 0

  def update(self, ids, loss, mask):
    count, total = np.zeros(V), np.zeros(V)
    for i, ell, m in zip(ids.ravel(), loss.ravel(), mask.ravel(), strict=True):
      if m and 0 <= i < V:
        count[i] += 1
        total[i] += ell
    d, f = self.decay, self.fast_decay
    self.ema_count = d * self.ema_count + (1 - d) * count
    self.ema_loss = d * self.ema_loss + (1 - d) * total
    self.fast_count = f * self.fast_count + (1 - f) * count
    self.fast_loss = f * self.fast_loss + (1 - f) * total
    self.count += count.astype(int)
    self.loss += total
    self.step += 1

  def score(self):
    return self.ema_loss / (1 - self.decay**self.step)

  def mean(self):
    seen = self.ema_count > 0
    return np.where(seen, self.ema_loss / np.where(seen, self.ema_count, 1), 0)

  def improvement(self):
    slow = self.mean()
    seen = self.fast_count > 0
    fast = np.where(
      seen, self.fast_loss / np.where(seen, self.fast_count, 1), 0
    )
    ok = seen & (slow > 0)
    return np.where(ok, (slow - fast) / np.where(ok, slow, 1), 0)


def test_update_matches_numpy_reference_over_several_steps():
  state = rock.init(V, decay=0.8, fast_decay=0.5)
  ref = NumpyTracker(0.8, 0.5)
  update = jax.jit(rock.update)
  for ids, loss, mask in batches(5):
    state = update(state, ids, loss, mask)
    ref.update(ids, loss, mask)
  np.testing.assert_array_equal(state.total_count_V, ref.count)
  assert int(state.step) == 5
  for got, want in [
    (state.ema_count_V, ref.ema_count),
    (state.ema_loss_V, ref.ema_loss),
    (state.fast_count_V, ref.fast_count),
    (state.fast_loss_V, ref.fast_loss),
    (state.total_loss_V, ref.loss),
    (rock.rock_score(state), ref.score()),
    (rock.rock_score(state, "total"), ref.loss),
    (rock.mean_loss(state), ref.mean()),
    (rock.mean_loss(state, "total"), ref.loss / np.maximum(ref.count, 1)),
    (rock.improvement(state), ref.improvement()),
  ]:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_score_is_bias_corrected_from_the_first_step():
  # One step with id 3 seen twice (loss 0.5 each): R = 1.0 right away, not
  # (1 - decay) · 1.0 as an uncorrected EMA would give.
  state = rock.init(V, decay=0.99)
  ids = jnp.array([[3, 3, 4]])
  loss = jnp.array([[0.5, 0.5, 2.0]])
  state = rock.update(state, ids, loss, jnp.array([[1, 1, 0]]))
  np.testing.assert_allclose(rock.rock_score(state)[3], 1.0, rtol=1e-6)
  assert float(rock.rock_score(state)[4]) == 0.0
  assert float(rock.rock_score(rock.init(V))[3]) == 0.0  # step 0: no NaN


def test_update_sharded_over_8_devices_equals_single_device():
  mesh = Mesh(np.array(jax.devices()).reshape(8, 1), ("data", "model"))
  batch = NamedSharding(mesh, P("data"))
  update = jax.jit(rock.update)
  single = sharded = rock.init(V)
  for ids, loss, mask in batches(3, b=8, t=5, seed=1):
    single = update(single, ids, loss, mask)
    args = [jax.device_put(a, batch) for a in (ids, loss, mask)]
    sharded = update(sharded, *args)
  assert len(args[0].sharding.device_set) == 8
  np.testing.assert_array_equal(sharded.total_count_V, single.total_count_V)
  np.testing.assert_array_equal(sharded.ema_count_V, single.ema_count_V)
  # Loss sums may add the per-device partial sums in another order.
  np.testing.assert_allclose(sharded.ema_loss_V, single.ema_loss_V, rtol=1e-6)
  np.testing.assert_allclose(sharded.total_loss_V, single.total_loss_V, 1e-6)


def hand_built_state():
  """V = 12 with chosen counts, EMA mean losses and fast means.

  id:        0    1    2    3    4    5    6    7    8    9   10   11
  count:   100   50   40   30   20   10    5    1    0    3    3    2
  R:        10   20   30   25    8    6    5    4    0   2.5   2    3
  mean:    0.1  0.4 0.75 0.83  0.4  0.6  1.0  4.0   -  0.83 0.67  1.5
  fast:    0.1  0.4  0.3 0.83  0.4  0.6  1.0  4.0   -  0.83 0.67  1.5
  """
  count = jnp.array([100, 50, 40, 30, 20, 10, 5, 1, 0, 3, 3, 2], jnp.int32)
  score = jnp.array([10, 20, 30, 25, 8, 6, 5, 4, 0, 2.5, 2, 3], jnp.float32)
  state = rock.init(V, decay=0.5, fast_decay=0.25)
  counts_f = count.astype(jnp.float32)
  # With step = 30, 1 - 0.5**30 rounds to 1 in float32: R = ema_loss_V.
  fast_loss = score.at[2].set(0.3 * 40)
  return state.replace(
    ema_count_V=counts_f,
    ema_loss_V=score,
    fast_count_V=counts_f,
    fast_loss_V=fast_loss,
    total_count_V=count,
    total_loss_V=score,
    step=jnp.array(30, jnp.int32),
  )


@pytest.mark.parametrize(
  "k,kwargs,want",
  [
    (3, {}, [2, 3, 1]),
    (12, {}, [2, 3, 1, 0, 4, 5, 6, 7, 11, 9, 10, -1]),
    (4, dict(exclude_most_frequent=2), [2, 3, 4, 5]),
    (4, dict(min_count=5), [2, 3, 1, 0]),
    (10, dict(min_count=10), [2, 3, 1, 0, 4, 5, -1, -1, -1, -1]),
    (3, dict(min_mean_loss=0.8), [3, 6, 7]),
    (3, dict(max_improvement=0.1), [3, 1, 0]),
    # Ids outside the vocabulary are ignored.
    (3, dict(protected=(2, 3, 99)), [1, 0, 4]),
    # Mean over all positions: 115.5 / 264 = 0.4375 per position.
    (3, dict(min_loss_ratio=1.0), [2, 3, 5]),
    (4, dict(min_loss_ratio=2.0), [6, 7, 11, -1]),
    (3, dict(min_loss_ratio=1.0, protected=(3,)), [2, 5, 6]),
    # R(v) >= 0.2 * 30: the set ends at R = 6 instead of filling 8 slots.
    (8, dict(min_score_ratio=0.2), [2, 3, 1, 0, 4, 5, -1, -1]),
    (2, dict(source="total"), [2, 3]),
  ],
)
def test_rock_ids_on_a_hand_built_state(k, kwargs, want):
  state = hand_built_state()
  selection = rock.Selection(k=k, **kwargs)
  got = jax.jit(lambda s: rock.rock_ids(s, selection))(state)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, want)


def test_mean_loss_all_is_the_loss_per_position_over_every_id():
  state = hand_built_state()
  assert float(rock.mean_loss_all(state)) == pytest.approx(115.5 / 264)
  assert float(rock.mean_loss_all(state, "total")) == pytest.approx(115.5 / 264)
  assert float(rock.mean_loss_all(rock.init(V))) == 0.0


def test_ranking_is_the_selection_without_its_guards():
  guarded = rock.Selection(
    k=3, min_loss_ratio=1.0, min_score_ratio=0.5, protected=(3,)
  )
  assert guarded.ranking() == rock.Selection(k=3)
  state = hand_built_state()
  np.testing.assert_array_equal(
    rock.rock_ids(state, guarded.ranking()), [2, 3, 1]
  )


def test_improvement_is_positive_when_the_loss_falls():
  state = hand_built_state()
  got = np.asarray(rock.improvement(state))
  np.testing.assert_allclose(got[2], (0.75 - 0.3) / 0.75, rtol=1e-6)
  assert np.all(np.delete(got, 2) == 0.0)


def test_rock_mask_ignores_unfilled_slots():
  mask = rock.rock_mask(jnp.array([2, -1, 5, -1]), V)
  assert mask.dtype == jnp.bool_
  np.testing.assert_array_equal(np.flatnonzero(mask), [2, 5])


def test_token_weights_alignment_lambda_and_padding():
  rocks = rock.rock_mask(jnp.array([1, 4]), V)
  ids = jnp.array([[1, 2, 4, 4, 3], [7, 1, 9, -1, 12]])
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]], bool)
  emitted = rock.token_weights(rocks, ids, mask, lam=0.3)
  context = rock.token_weights(rocks, ids, mask, lam=0.3, align="context")
  assert emitted.dtype == jnp.float32
  # Exactly λ as a float32, never rounded to an integer.
  lam = np.float32(0.3)
  np.testing.assert_array_equal(
    emitted, [[lam, 1, lam, lam, 0], [1, lam, 1, 0, 1]]
  )
  # x_{t-1}: position 0 has none (weight 1); id 12 >= V is no rock.
  np.testing.assert_array_equal(
    context, [[1, lam, 1, lam, 0], [1, 1, lam, 0, 1]]
  )
  state = rock.init(V).replace(rock_mask_V=rocks)
  np.testing.assert_array_equal(
    rock.token_weights(state, ids, mask, 0.3), emitted
  )
  traced = jax.jit(rock.token_weights)(rocks, ids, mask, jnp.float32(0.3))
  np.testing.assert_array_equal(traced, emitted)


def test_refresh_warmup_and_interval():
  refresh = jax.jit(
    lambda s: rock.refresh(
      s, rock.Selection(k=1), warmup_steps=2, refresh_every=3
    )
  )
  state = rock.init(V, decay=0.5, fast_decay=0.1)
  held = []
  # The worst id changes every step: 3, 4, 5, ...; refreshes at steps 2, 5.
  for step in range(1, 7):
    ids = jnp.array([[step + 2]])
    state = refresh(rock.update(state, ids, jnp.array([[10.0]]), ids >= 0))
    held.append(np.flatnonzero(state.rock_mask_V).tolist())
  assert held == [[], [4], [4], [4], [7], [7]]


def test_refresh_every_zero_selects_once_at_the_end_of_the_warmup():
  # One meaning for the trainer's config and the library alike.
  refresh = jax.jit(
    lambda s: rock.refresh(s, rock.Selection(k=1), warmup_steps=2)
  )
  state = rock.init(V, decay=0.5, fast_decay=0.1)
  held = []
  for step in range(1, 6):
    ids = jnp.array([[step + 2]])
    state = refresh(rock.update(state, ids, jnp.array([[10.0]]), ids >= 0))
    held.append(np.flatnonzero(state.rock_mask_V).tolist())
  assert held == [[], [4], [4], [4], [4]]


def test_refresh_with_a_static_set():
  static = rock.rock_mask(jnp.array([0, 6]), V)
  refresh = jax.jit(
    lambda s: rock.refresh(s, warmup_steps=2, refresh_every=1, static_V=static)
  )
  state = rock.init(V)
  sizes = []
  for _ in range(3):
    ones = jnp.ones((1, 2))
    state = refresh(
      rock.update(state, jnp.zeros((1, 2), jnp.int32), ones, ones)
    )
    sizes.append(int(state.rock_mask_V.sum()))
  # The static set, never a selection (which would be {0}).
  assert sizes == [0, 2, 2]


def test_tracker_errors_name_the_argument():
  with pytest.raises(ValueError, match="fast_decay=0.9, decay=0.5"):
    rock.init(V, decay=0.5, fast_decay=0.9)
  with pytest.raises(ValueError, match="vocab_size=0"):
    rock.init(0)
  state = rock.init(V)
  with pytest.raises(ValueError, match=r"k=13 must be an int in \[1, "):
    rock.rock_ids(state, rock.Selection(k=13))
  with pytest.raises(ValueError, match="unknown source 'recent'"):
    rock.Selection(k=2, source="recent")
  with pytest.raises(ValueError, match="min_loss_ratio=0.0 must be > 0"):
    rock.Selection(k=2, min_loss_ratio=0.0)
  with pytest.raises(ValueError, match="min_score_ratio=-1 must be > 0"):
    rock.Selection(k=2, min_score_ratio=-1)
  with pytest.raises(ValueError, match=r"loss_BxT.shape=\(2, 2\)"):
    rock.update(
      state, jnp.zeros((2, 3), int), jnp.zeros((2, 2)), jnp.ones((2, 3))
    )
  with pytest.raises(ValueError, match="unknown align 'previous'"):
    rock.token_weights(
      state, jnp.zeros((1, 2), int), jnp.ones((1, 2)), 0, "previous"
    )
  with pytest.raises(ValueError, match="lam=-0.5 must be >= 0"):
    rock.token_weights(state, jnp.zeros((1, 2), int), jnp.ones((1, 2)), -0.5)
  with pytest.raises(ValueError, match=r"static_V.shape=\(3,\)"):
    rock.refresh(state, static_V=jnp.zeros(3, bool))
  with pytest.raises(ValueError, match="lam=1.5 must be in"):
    rock.Policy(lam=1.5)


# ---------------------------------------------------------------- lists


@pytest.mark.parametrize(
  "content",
  [
    [3070, 279, 400],  # the paper's rock.json
    {"token_ids": [3070, 279, 400], "tokens": ["**", " the", " $"]},
    [{"token_id": 3070, "token": "**"}, {"token_id": 279}, {"id": 400}],
    {"rock": [{"token_id": 3070}, {"token_id": 279}, {"token_id": 400}]},
  ],
)
def test_load_rock_json_accepts_the_known_formats(tmp_path, content):
  path = tmp_path / "rock.json"
  path.write_text(json.dumps(content))
  ids = rock_lists.load_rock_json(path, vocab_size=151936)
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [3070, 279, 400])


@pytest.mark.parametrize(
  "content,match",
  [
    ({"words": [1]}, r"keys \['words'\] has none of"),
    ([], "non-empty list"),
    ([1, "2"], "entry 1 is '2'; token ids must be integers"),
    ([1, 2.0], "entry 1 is 2.0"),
    ([True], "entry 0 is True"),
    ([1, -4], r"entry 1 is -4, outside \[0, 100\)"),
    ([1, 100], r"entry 1 is 100, outside \[0, 100\)"),
    ([{"token": "a"}], r"entry 0 .* has no \['token_id', 'id'\] field"),
    ([5, 3, 5], r"repeated token ids \[5\]"),
  ],
)
def test_load_rock_json_rejects_with_file_and_entry(tmp_path, content, match):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(content))
  with pytest.raises(ValueError, match=f"bad.json: .*{match}"):
    rock_lists.load_rock_json(path, vocab_size=100)


def test_load_rock_json_from_a_bucket_names_the_url(gcs):
  url = storage.join(gcs, "rock.json")
  storage.write_text(url, json.dumps({"token_ids": [7, 3]}))
  np.testing.assert_array_equal(rock_lists.load_rock_json(url, 10), [7, 3])
  with pytest.raises(ValueError, match=rf"{url}: entry 0 is 7, outside"):
    rock_lists.load_rock_json(url, vocab_size=5)
  storage.write_text(url, "[1,")
  with pytest.raises(ValueError, match=rf"{url}: not JSON"):
    rock_lists.load_rock_json(url)
  absent = storage.join(gcs, "absent.json")
  with pytest.raises(FileNotFoundError, match=rf"{absent}: no such object"):
    rock_lists.load_rock_json(absent)


def brute_force_cost(rock_ids, counts):
  """Optimal total cost of a Hungarian match over all candidates, unpruned."""
  candidates = np.setdiff1d(np.flatnonzero(counts > 0), rock_ids)
  cost = np.abs(
    np.log10(counts[rock_ids])[:, None] - np.log10(counts[candidates])[None, :]
  )
  rows, cols = optimize.linear_sum_assignment(cost)
  return cost[rows, cols].sum()


def test_frequency_matched_control_is_an_optimal_match():
  rng = np.random.default_rng(0)
  counts = rng.integers(0, 2000, size=500) ** 2 // 1000  # heavy-tailed, ties
  rock_ids = np.argsort(-counts)[[0, 1, 3, 7, 20, 50, 120, 200]]
  control = rock_lists.frequency_matched_control(rock_ids, counts, seed=3)
  assert control.dtype == np.int32 and control.size == rock_ids.size
  assert len(set(control)) == control.size
  assert not set(control) & set(rock_ids) and np.all(counts[control] > 0)
  cost = np.abs(np.log10(counts[rock_ids]) - np.log10(counts[control])).sum()
  np.testing.assert_allclose(cost, brute_force_cost(rock_ids, counts), 1e-12)


def test_frequency_matched_control_seeds_break_ties_and_jitter():
  counts = np.array([500, 400, 7, 7, 7, 7, 7, 7, 7, 7, 1, 0, 3])
  rock_ids = np.array([2, 12])  # count 7 (seven peers) and count 3 (none)
  sets = {
    tuple(rock_lists.frequency_matched_control(rock_ids, counts, seed=s))
    for s in range(8)
  }
  assert len(sets) > 1  # ties go to different ids per seed
  for control in sets:
    assert counts[control[0]] == 7 and control[1] not in rock_ids
  fixed = rock_lists.frequency_matched_control(rock_ids, counts, seed=5)
  again = rock_lists.frequency_matched_control(rock_ids, counts, seed=5)
  np.testing.assert_array_equal(fixed, again)
  jittered = rock_lists.frequency_matched_control(
    rock_ids, counts, seed=5, jitter=0.2, exclude_ids=[3, 4]
  )
  assert not {3, 4} & set(jittered.tolist())


def test_frequency_matched_control_errors():
  counts = np.array([5, 0, 3, 2])
  with pytest.raises(ValueError, match=r"rock ids \[1\] have count 0"):
    rock_lists.frequency_matched_control([0, 1], counts)
  with pytest.raises(
    ValueError, match="only 0 observed non-rock ids to match 2"
  ):
    rock_lists.frequency_matched_control([0, 2], counts, exclude_ids=[3])
  with pytest.raises(ValueError, match="non-empty and distinct"):
    rock_lists.frequency_matched_control([0, 0], counts)


def test_rock_ids_feed_the_control_set_end_to_end():
  state = hand_built_state()
  rock_ids = np.asarray(
    rock.rock_ids(state, rock.Selection(k=12))
  )  # ends with -1
  counts = np.asarray(state.total_count_V) + np.array([0] * 8 + [4] + [0] * 3)
  with pytest.raises(ValueError, match="only 1 observed non-rock ids"):
    rock_lists.frequency_matched_control(rock_ids, counts)
  control = rock_lists.frequency_matched_control(rock_ids[:3], counts, seed=0)
  assert len(set(control)) == 3 and set(control).isdisjoint(rock_ids[:3])
