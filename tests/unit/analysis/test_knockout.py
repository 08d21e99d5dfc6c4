"""Token knockout (rock_jax.analysis.knockout): statistics and real decoding.

The statistics run on a fake deterministic `run` and are compared with
`rock_jax.analysis.stats` called directly; the ban itself is checked by
greedy decoding of the tiny Hugging Face student (the `assets` fixture).
"""

import numpy as np
import pytest

from rock_jax import evaluate
from rock_jax import sharding as shd
from rock_jax.analysis import knockout, multiple, stats
from rock_jax.data import builders, prompts, tokenization
from rock_jax.models import hf

V = 64
P = 60
RESAMPLES = 2000


def _fake_problem(seed=0):
  """A baseline and, per candidate id, the correctness with it banned."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(size=P) < 0.5
  right, wrong = np.flatnonzero(base), np.flatnonzero(~base)
  pillar, block, flip, few = base.copy(), base.copy(), base.copy(), base.copy()
  pillar[right[:15]] = False  # Δ = −0.25: a strong pillar
  block[wrong[:15]] = True  # Δ = +0.25: a strong stumbling block
  flip[wrong[0]] = True  # Δ = +1/60, far from significant
  few[right[:4]] = False  # Δ = −1/15, borderline
  banned = {11: pillar, 22: block, 33: base.copy(), 44: flip, 55: few}
  base_count = rng.integers(1, 20, V)
  return base, banned, base_count


class FakeRun:
  """`run(bias)`: the prescribed correctness, no emission of the banned id."""

  def __init__(self, base, banned, base_count, leak=0):
    self.base, self.banned, self.base_count = base, banned, base_count
    self.leak = leak  # times the banned id is (wrongly) emitted anyway
    self.calls = []

  def __call__(self, bias):
    if bias is None:
      self.calls.append(None)
      return self.base.copy(), self.base_count.copy()
    bias = np.asarray(bias)
    assert bias.shape == (V,) and bias.dtype == np.float32
    (token,) = np.flatnonzero(np.isneginf(bias))
    assert np.all(bias[np.arange(V) != token] == 0)
    self.calls.append(int(token))
    count = self.base_count.copy()
    count[token] = self.leak
    return self.banned[int(token)].copy(), count


def test_knockout_rows_follow_the_bootstrap_and_the_census_rule():
  base, banned, base_count = _fake_problem()
  run = FakeRun(base, banned, base_count)
  candidates = list(banned)
  seen = []
  result = knockout.knockout(
    run,
    np.asarray(candidates),
    V,
    n_resamples=RESAMPLES,
    seed=3,
    on_candidate=lambda i, row: seen.append((i, row["id"])),
  )
  assert run.calls == [None, *candidates]
  assert seen == list(enumerate(candidates))
  assert result["problems"] == P
  assert result["baseline"] == pytest.approx(base.mean())

  rows = result["rows"]
  assert [r["id"] for r in rows] == candidates
  expected_classes = []
  for row, token in zip(rows, candidates, strict=True):
    want = stats.paired_bootstrap(
      base, banned[token], n_resamples=RESAMPLES, seed=3
    )
    for key, value in want.to_dict().items():
      assert row[key] == value, (token, key)
    assert row["class"] == stats.classify(want)
    assert row["emitted"] == 0
    assert row["baseline_count"] == base_count[token]
    expected_classes.append(row["class"])
  by_id = {r["id"]: r for r in rows}
  assert by_id[11]["class"] == "strong_pillar"
  assert by_id[22]["class"] == "strong_stumbling_block"
  assert by_id[33]["class"] == "neutral" and by_id[33]["p_value"] == 1.0
  assert by_id[44]["class"] == "neutral"
  assert by_id[44]["delta"] == pytest.approx(1 / P)

  assert result["census"] == {
    c: expected_classes.count(c) for c in stats.CLASSES
  }
  assert sum(result["census"].values()) == len(candidates)
  deltas = np.array([r["delta"] for r in rows])
  p_values = np.array([r["p_value"] for r in rows])
  significant = deltas[p_values < 0.05]
  assert len(significant) >= 2
  assert result["sign_test"] == stats.sign_test(significant).to_dict()
  assert result["sign_test_all"] == stats.sign_test(deltas).to_dict()
  assert result["bonferroni"] == multiple.bonferroni(p_values, 0.05).sum()
  assert (
    result["benjamini_hochberg"]
    == multiple.benjamini_hochberg(p_values, 0.2).sum()
  )


def test_a_banned_token_that_is_emitted_is_an_error():
  base, banned, base_count = _fake_problem()
  run = FakeRun(base, banned, base_count, leak=3)
  with pytest.raises(AssertionError, match="token 22 was banned but emitted 3"):
    knockout.knockout(run, [22], V, n_resamples=10)


# ---------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def student_run(assets, tmp_path_factory):
  """`greedy_run`'s keyword arguments for the tiny student on 8 problems."""
  data_dir = tmp_path_factory.mktemp("data")
  dataset = builders.prepare("gsm8k", data_dir, source=assets["gsm8k"])
  source = builders.open_split(dataset, "test")
  sharder = shd.Sharder(shd.make_mesh([("data", 8)]), shd.get_rules("fsdp"))
  cfg, params = hf.load(assets["student"], "float32", sharder=sharder)
  tokenizer = tokenization.load_tokenizer(assets["student"])
  kwargs = dict(
    sharder=sharder,
    student=prompts.PromptFormat("student", tokenizer, 64),
    teacher=prompts.PromptFormat("teacher", tokenizer, 64),
    max_new_tokens=16,
    batch_size=8,
    num_examples=8,
  )
  return cfg, params, source, kwargs


def test_greedy_knockout_never_emits_the_banned_token(student_run):
  cfg, params, source, kwargs = student_run
  base, count = knockout.greedy_run(cfg, params, source, **kwargs)
  assert base.shape == (8,) and base.dtype == bool
  assert count.shape == (cfg.vocab_size,) and count.sum() > 0

  top = int(np.argmax(count))
  assert count[top] > 0
  bias = knockout.ban(cfg.vocab_size, top)
  banned, banned_count = knockout.greedy_run(
    cfg, params, source, logit_bias_V=bias, **kwargs
  )
  assert banned_count[top] == 0
  assert banned_count.sum() > 0
  # The completions themselves, as the evaluator decodes them.
  completions = [
    ids
    for graded in evaluate.greedy_batches(
      cfg, params, source, role="student", logit_bias_V=bias, **kwargs
    )
    for ids in graded.completion_ids
  ]
  assert len(completions) == 8
  assert all(top not in ids for ids in completions)
  recount = np.bincount(np.concatenate(completions), minlength=cfg.vocab_size)
  np.testing.assert_array_equal(recount, banned_count)

  # An id the baseline never emits is never the argmax on its path, so
  # banning it changes nothing. One the model does pick elsewhere (after
  # the first ban) makes the check more than a no-op bias.
  unused = np.flatnonzero(count == 0)
  picked = unused[banned_count[unused] > 0]
  never = int((picked if len(picked) else unused)[0])
  same, same_count = knockout.greedy_run(
    cfg,
    params,
    source,
    logit_bias_V=knockout.ban(cfg.vocab_size, never),
    **kwargs,
  )
  np.testing.assert_array_equal(same, base)
  np.testing.assert_array_equal(same_count, count)
