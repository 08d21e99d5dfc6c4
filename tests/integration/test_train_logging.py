"""The loop's logging and profiling (rock_jax.train.loop, .profiling) on a
tiny run: every step logged from device buffers one step late, never
waiting on the update just dispatched, and a trace of the chosen steps."""

import json

import jax
from run_helpers import run_capturing_the_loop, tiny_config

from rock_jax import metrics as metrics_lib
from rock_jax.train import loop as loop_lib


def test_every_step_logged_one_step_late_and_traced(
  assets, tmp_path, monkeypatch
):
  recorded = []
  make = loop_lib.make_train_step

  def recording(*args, **kwargs):
    step = make(*args, **kwargs)

    def run(*step_args):
      state, metrics = step(*step_args)
      recorded.append(metrics)
      return state, metrics

    return run

  monkeypatch.setattr(loop_lib, "make_train_step", recording)
  config = tiny_config(
    assets,
    tmp_path,
    train__steps=6,
    train__log_every=1,
    train__checkpoint_every=6,
    train__profile_steps="3:4",
  )
  summary, loop = run_capturing_the_loop(config, monkeypatch)
  assert summary["steps"] == 6

  # Each step's row holds exactly that step's metrics.
  rows = [json.loads(x) for x in open(tmp_path / "logs" / "metrics.jsonl")]
  rows = [r for r in rows if "kl/unweighted" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  for row, metrics in zip(rows, recorded, strict=True):
    expected = metrics_lib.summarize(
      metrics_lib.accumulate({}, jax.device_get(metrics))
    )
    for name, value in expected.items():
      assert row[name] == value, (row["step"], name)

  # Step t's metrics are fetched after update t + 1 is dispatched.
  events = loop.pipeline.events
  for t in range(5):
    assert events.index(("update", t + 1)) < events.index(("wait", t))

  # The top rocks logged at the end are the summary's table's.
  _, table, _ = loop.rocks.table(loop.state.rock)
  top = ", ".join(f"{r['text']!r} ({r['R']:.3g})" for r in table[:10])
  assert rows[-1]["rock/top_tokens"] == top

  traces = list((tmp_path / "profile").rglob("*"))
  names = {p.name for p in traces}
  assert "perfetto_trace.json.gz" in names
  assert any(n.endswith(".xplane.pb") for n in names)
