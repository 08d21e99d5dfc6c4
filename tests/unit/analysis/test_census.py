"""Census statistics (rock_jax.analysis.census) against NumPy references."""

import jax
import numpy as np
import pytest
from step_helpers import STUDENT, TEACHER, opd_batch

from rock_jax import losses, models, storage
from rock_jax import sharding as shd
from rock_jax.analysis import census
from rock_jax.opd.train_step import Sharders

V = 12


def random_corpus(seed=0, b=40, n=9):
  rng = np.random.default_rng(seed)
  # Skewed ids, so some types are frequent and others rare or absent.
  ids = np.minimum(rng.geometric(0.25, (b, n)) - 1, V - 1).astype(np.int32)
  kl = rng.gamma(1.0, 0.5, (b, n)).astype(np.float32)
  mask = rng.uniform(size=(b, n)) < 0.85
  mask[3] = False  # an empty completion
  return ids, kl, mask


def reference_stats(ids, kl, mask):
  count, total = np.zeros(V), np.zeros(V)
  for i, ell, m in zip(ids.ravel(), kl.ravel(), mask.ravel(), strict=True):
    if m:
      count[i] += 1
      total[i] += float(ell)
  return count, total


def test_rock_score_and_top_k_match_a_loop_reference():
  ids, kl, mask = random_corpus()
  ts = census.type_stats(ids, kl, mask, V)
  count, total = reference_stats(ids, kl, mask)
  np.testing.assert_array_equal(ts.count_V, count)
  np.testing.assert_allclose(ts.kl_sum_V, total, rtol=1e-12)
  seen = count > 0
  np.testing.assert_allclose(ts.mean_V[seen], total[seen] / count[seen])
  assert np.isnan(ts.mean_V[~seen]).all()

  ranked = sorted(range(V), key=lambda v: (-total[v], v))
  ranked = [v for v in ranked if count[v] >= 2]
  np.testing.assert_array_equal(census.top_k(ts, 5, min_count=2), ranked[:5])
  frequent = set(np.argsort(-count, kind="stable")[:3].tolist())
  expected = [v for v in ranked if v not in frequent][:4]
  np.testing.assert_array_equal(
    census.top_k(ts, 4, min_count=2, exclude_most_frequent=3), expected
  )


def test_coverage_and_sequence_density():
  ids, kl, mask = random_corpus(1)
  ts = census.type_stats(ids, kl, mask, V)
  _, total = reference_stats(ids, kl, mask)
  ks = [1, 3, 5, V]
  order = sorted(range(V), key=lambda v: (-total[v], v))
  expected = [total[order[:k]].sum() / total.sum() for k in ks]
  np.testing.assert_allclose(census.coverage(ts, ks), expected, rtol=1e-12)
  assert census.coverage(ts, [V])[0] == pytest.approx(1.0)

  rocks = [0, 2]
  density = census.sequence_density(ids, mask, rocks)
  rows = [
    np.isin(ids[b][mask[b]], rocks).mean()
    for b in range(len(ids))
    if mask[b].any()
  ]
  np.testing.assert_allclose(density, rows)


def _corpus(ids, kl, mask):
  b, n = ids.shape
  zeros = np.zeros((b, 1), np.int32)
  batch = census.OPDBatch(
    student_tokens_BxS=np.concatenate([zeros, ids], 1),
    student_mask_BxS=np.concatenate([np.ones((b, 1), bool), mask], 1),
    teacher_tokens_BxU=np.concatenate([zeros, ids], 1),
    teacher_mask_BxU=np.concatenate([np.ones((b, 1), bool), mask], 1),
    completion_mask_BxN=mask,
  )
  return census.Corpus(batch, kl, np.zeros(b, bool))


def test_stability_on_a_hand_built_corpus():
  # Sequences 0-1 favour type 1, sequences 2-3 type 2, so the top-1 of the
  # first two sequences is {1} while the top-1 of all four is {2}.
  ids = np.array([[1, 3], [1, 3], [2, 2], [2, 2]], np.int32)
  kl = np.array([[1.0, 0.5], [1.0, 0.5], [0.8, 0.8], [0.8, 0.8]], np.float32)
  mask = np.ones_like(ids, bool)
  result = census.stability(_corpus(ids, kl, mask), [1, 2, 3, 9], [1, 2], V)
  # R on all four: {2: 3.2, 1: 2.0, 3: 1.0}. Prefix n = 1: {1: 1, 3: .5};
  # n = 2: {1: 2, 3: 1}; n = 3: {2: 1.6, 1: 2, 3: 1}.
  assert result["sizes"] == [1, 2, 3]  # n >= the corpus size is dropped
  np.testing.assert_allclose(
    result["jaccard"],
    [[0.0, 1 / 3], [0.0, 1 / 3], [0.0, 1.0]],
  )
  np.testing.assert_allclose(result["mean"], [0.0, 5 / 9])


def test_groups_are_disjoint_and_follow_their_definitions():
  ids, kl, mask = random_corpus(2, b=200)
  ts = census.type_stats(ids, kl, mask, V)
  rocks = census.top_k(ts, 3)
  g = census.groups(ts, rocks, high_kl_k=3, high_kl_min_count=2, random_k=4)
  assert not set(g["rock"]) & set(g["high_kl_rare"])
  assert not set(g["random"]) & (set(g["rock"]) | set(g["high_kl_rare"]))
  others = [v for v in range(V) if v not in rocks and ts.count_V[v] >= 2]
  top_mean = sorted(others, key=lambda v: -ts.mean_V[v])[:3]
  assert sorted(g["high_kl_rare"]) == sorted(top_mean)
  assert all(ts.count_V[v] > 0 for v in g["random"])


def test_corpus_round_trips_through_npz(tmp_path):
  ids, kl, mask = random_corpus(3)
  corpus = _corpus(ids, kl, mask)
  corpus.save(tmp_path / "c.npz")
  back = census.Corpus.load(tmp_path / "c.npz")
  np.testing.assert_array_equal(back.ids_BxN, ids)
  np.testing.assert_array_equal(back.kl_BxN, kl)
  np.testing.assert_array_equal(back.mask_BxN, mask)
  assert back.head(5).kl_BxN.shape == (5, ids.shape[1])


def test_corpus_round_trips_through_a_gs_url(gcs):
  ids, kl, mask = random_corpus(4)
  path = storage.join(gcs, "analysis", "corpus.npz")
  _corpus(ids, kl, mask).save(path)
  assert storage.listdir(storage.join(gcs, "analysis")) == ["corpus.npz"]
  back = census.Corpus.load(path)
  np.testing.assert_array_equal(back.ids_BxN, ids)
  np.testing.assert_array_equal(back.kl_BxN, kl)
  np.testing.assert_array_equal(back.mask_BxN, mask)


def test_score_equals_the_materialised_reverse_kl():
  student = models.init(STUDENT, jax.random.key(0))
  teacher = models.init(TEACHER, jax.random.key(1))
  # Five rows through one 8-row slice: the padding rows are dropped.
  batch = jax.tree.map(lambda x: x[:5], opd_batch())
  sharder = shd.Sharder(shd.make_mesh([("data", 8)]), shd.get_rules("fsdp"))
  cfg = census.kl_config(STUDENT, TEACHER, chunk_size=8)
  kl = census.score(cfg, student, teacher, batch, Sharders(sharder, sharder), 8)
  n = batch.completion_mask_BxN.shape[1]

  def logits(cfg_, params, tokens, mask):
    out = models.apply(cfg_, params, tokens, attention_mask_BxL=mask)
    p = tokens.shape[1] - n
    return out[:, p - 1 : p - 1 + n]

  expected = losses.token_divergence(
    logits(STUDENT, student, batch.student_tokens_BxS, batch.student_mask_BxS),
    logits(TEACHER, teacher, batch.teacher_tokens_BxU, batch.teacher_mask_BxU),
  )
  m = batch.completion_mask_BxN
  # float32 KL of near-equal distributions cancels to ~1e-6 absolute (the
  # tolerance of tests/test_losses.py for the same quantity).
  np.testing.assert_allclose(
    kl[m], np.asarray(expected)[m], rtol=1e-5, atol=2e-6
  )
