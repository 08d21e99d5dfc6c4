"""Tests of rock_jax.analysis.persistence against SciPy and NumPy."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sp_stats

from rock_jax import rock, storage
from rock_jax.analysis import census, persistence
from rock_jax.rock import snapshots

V = 8

# Per-type counts and summed KL at two checkpoints. Type 1 is never emitted
# early and type 2 never late, so both must drop out of the paired test.
# Types 6 and 7 have the same mean at both checkpoints (2/1 = 4/2 and
# 3/1 = 6/2), a zero difference that counts in n and the medians but not in
# the signed-rank statistic.
EARLY = census.TypeStats(
  count_V=np.array([2, 0, 3, 1, 4, 2, 1, 1], np.float64),
  kl_sum_V=np.array([3.0, 0.0, 1.5, 0.7, 8.0, 5.0, 2.0, 3.0]),
)
LATE = census.TypeStats(
  count_V=np.array([1, 2, 0, 3, 2, 5, 2, 2], np.float64),
  kl_sum_V=np.array([0.5, 1.0, 0.0, 3.0, 1.0, 2.0, 4.0, 6.0]),
)
GROUPS = {
  "rocks": [0, 1, 2, 3, 4, 5],
  "ties": [0, 3, 4, 5, 6, 7],
  "gone": [1, 2],
}


def _complete(ids):
  """Early and late mean KL of the types seen at both checkpoints."""
  with np.errstate(invalid="ignore", divide="ignore"):
    early = EARLY.kl_sum_V[ids] / EARLY.count_V[ids]
    late = LATE.kl_sum_V[ids] / LATE.count_V[ids]
  seen = (EARLY.count_V[ids] > 0) & (LATE.count_V[ids] > 0)
  return early[seen], late[seen]


def test_compare_means_are_kl_sum_over_count():
  result = persistence.compare(EARLY, LATE, GROUPS)
  assert set(result) == set(GROUPS)
  for name, ids in GROUPS.items():
    ids = np.asarray(ids)
    np.testing.assert_array_equal(result[name]["ids"], ids)
    with np.errstate(invalid="ignore", divide="ignore"):
      early = np.where(
        EARLY.count_V[ids] > 0, EARLY.kl_sum_V[ids] / EARLY.count_V[ids], np.nan
      )
      late = np.where(
        LATE.count_V[ids] > 0, LATE.kl_sum_V[ids] / LATE.count_V[ids], np.nan
      )
    # NaN marks the unseen types; assert_array_equal treats NaNs as equal.
    np.testing.assert_array_equal(result[name]["early"], early)
    np.testing.assert_array_equal(result[name]["late"], late)


def test_compare_drops_unseen_types_and_matches_scipy():
  result = persistence.compare(EARLY, LATE, GROUPS)["rocks"]
  early, late = _complete(np.asarray(GROUPS["rocks"]))
  assert result["n"] == 4 == early.size  # types 1 and 2 dropped
  change = late - early
  assert np.all(change != 0)
  # Without zeros the statistic is SciPy's on the differences as they are.
  expected = sp_stats.wilcoxon(change)
  assert result["statistic"] == pytest.approx(expected.statistic)
  assert result["p_value"] == pytest.approx(expected.pvalue)
  assert result["median_before"] == pytest.approx(np.median(early))
  assert result["median_after"] == pytest.approx(np.median(late))
  assert result["median_change"] == pytest.approx(np.median(change))
  assert result["relative_median_change"] == pytest.approx(
    np.median(change) / np.median(early)
  )


def test_compare_zero_differences_count_in_n_not_in_the_test():
  result = persistence.compare(EARLY, LATE, GROUPS)["ties"]
  early, late = _complete(np.asarray(GROUPS["ties"]))
  change = late - early
  assert result["n"] == 6
  assert np.count_nonzero(change == 0) == 2
  expected = sp_stats.wilcoxon(change[change != 0])
  assert result["statistic"] == pytest.approx(expected.statistic)
  assert result["p_value"] == pytest.approx(expected.pvalue)
  assert result["median_change"] == pytest.approx(np.median(change))


def test_compare_group_without_a_complete_pair():
  result = persistence.compare(EARLY, LATE, GROUPS)["gone"]
  assert result["n"] == 0
  assert np.isnan(result["median_before"])
  assert np.isnan(result["statistic"])
  assert result["p_value"] == 1.0


def _updated_tracker(steps=3, seed=0, decay=0.95, fast_decay=0.5):
  rng = np.random.default_rng(seed)
  state = rock.init(V, decay=decay, fast_decay=fast_decay)
  for _ in range(steps):
    ids = jnp.asarray(rng.integers(0, V, size=(2, 5)), jnp.int32)
    loss = jnp.asarray(rng.uniform(0.0, 2.0, size=(2, 5)), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(2, 5)) < 0.8)
    state = rock.update(state, ids, loss, mask)
  # A non-empty rock set, so the bool field round-trips something.
  return state.replace(rock_mask_V=rock.rock_mask(jnp.array([1, 4]), V))


def test_save_then_load_tracker_round_trips_the_arrays(tmp_path):
  state = _updated_tracker()
  path = snapshots.save(str(tmp_path), 3, state)
  assert path == os.path.join(str(tmp_path), snapshots.DIR, "step_0000003.npz")
  loaded = snapshots.load(path)
  assert isinstance(loaded, rock.RockState)
  assert isinstance(loaded.decay, float)
  assert isinstance(loaded.fast_decay, float)
  # Float32 precision: exactness is `test_..._keeps_the_decays_exact`'s job.
  assert loaded.decay == pytest.approx(state.decay, rel=1e-6)
  assert loaded.fast_decay == pytest.approx(state.fast_decay, rel=1e-6)
  assert int(loaded.step) == 3
  for field in dataclasses.fields(state):
    if field.name in ("decay", "fast_decay"):
      continue
    want = np.asarray(getattr(state, field.name))
    got = np.asarray(getattr(loaded, field.name))
    assert got.dtype == want.dtype, field.name
    np.testing.assert_array_equal(got, want, err_msg=field.name)


def test_save_then_load_tracker_keeps_the_decays_exact(tmp_path):
  state = _updated_tracker(decay=0.95, fast_decay=0.9)
  loaded = snapshots.load(snapshots.save(str(tmp_path), 3, state))
  assert (loaded.decay, loaded.fast_decay) == (0.95, 0.9)
  # The decays are static pytree fields: they must match for tree ops.
  jax.tree.map(np.testing.assert_array_equal, state, loaded)


# Ids 0 and 1 lose loss every step, ids 2 and 3 keep it; id 5 is in a group
# but never emitted (it must not enter the median), id 4 is a group of its
# own that is never emitted.
ONLINE_GROUPS = {"falling": [0, 1], "flat": [2, 3, 5], "never": [4]}


def _controlled_step(state, step):
  ids = jnp.array([[0, 1, 2, 3]], jnp.int32)
  loss = jnp.array(
    [[5.0 - 0.2 * step, 3.0 - 0.1 * step, 1.0, 2.0]], jnp.float32
  )
  return rock.update(state, ids, loss, jnp.ones_like(ids))


def _seen_median(values, state, ids):
  ids = np.asarray(ids)
  ids = ids[np.asarray(state.ema_count_V)[ids] > 0]
  return float(np.median(np.asarray(values)[ids]))


def test_online_medians_per_group_over_snapshots(tmp_path):
  state = rock.init(V, decay=0.9, fast_decay=0.5)
  saved = {}
  for step in range(1, 21):
    state = _controlled_step(state, step)
    if step in (10, 20):
      snapshots.save(str(tmp_path), step, state)
      saved[step] = state

  out = persistence.online(str(tmp_path), ONLINE_GROUPS)
  assert out["steps"] == [10, 20]
  for name, ids in ONLINE_GROUPS.items():
    if name == "never":
      continue
    for i, step in enumerate(out["steps"]):
      snap = saved[step]
      assert out[name]["median_loss"][i] == pytest.approx(
        _seen_median(rock.mean_loss(snap), snap, ids), rel=1e-6
      )
      assert out[name]["median_improvement"][i] == pytest.approx(
        _seen_median(rock.improvement(snap), snap, ids), rel=1e-6, abs=1e-7
      )
  # Id 5 is unseen: the flat median is that of ids 2 and 3 (1.0 and 2.0).
  assert out["flat"]["median_loss"] == pytest.approx([1.5, 1.5], rel=1e-5)
  assert out["flat"]["median_improvement"] == pytest.approx(
    [0.0, 0.0], abs=1e-5
  )
  falling = out["falling"]
  assert falling["median_loss"][1] < falling["median_loss"][0]
  assert all(g > 0.01 for g in falling["median_improvement"])
  assert all(np.isnan(out["never"]["median_loss"]))
  assert all(np.isnan(out["never"]["median_improvement"]))


def test_online_reads_snapshots_under_a_gs_workdir(gcs, tmp_path):
  state = rock.init(V, decay=0.9, fast_decay=0.5)
  for step in range(1, 11):
    state = _controlled_step(state, step)
    if step in (5, 10):
      snapshots.save(gcs, step, state)
      snapshots.save(str(tmp_path), step, state)
  remote = persistence.online(gcs, ONLINE_GROUPS)
  assert remote["steps"] == [5, 10]
  local = persistence.online(str(tmp_path), ONLINE_GROUPS)
  for name in ONLINE_GROUPS:
    for key in ("median_loss", "median_improvement"):
      np.testing.assert_array_equal(remote[name][key], local[name][key])
  missing = persistence.online(storage.join(gcs, "missing"), ONLINE_GROUPS)
  assert missing["steps"] == []


def test_online_without_snapshots_is_empty(tmp_path):
  (tmp_path / snapshots.DIR).mkdir()
  for run_dir in (tmp_path, tmp_path / "missing"):
    out = persistence.online(str(run_dir), ONLINE_GROUPS)
    assert out["steps"] == []
    for name in ONLINE_GROUPS:
      assert out[name] == {"median_loss": [], "median_improvement": []}


def _export(root, name, config=True):
  path = root / name
  path.mkdir()
  if config:
    (path / "config.json").write_text("{}")
  return str(path)


def test_earliest_export_picks_the_smallest_step_with_a_config(tmp_path):
  _export(tmp_path, "export_step_30")
  # 9 < 12 numerically but not as text: the pick must be numeric.
  want = _export(tmp_path, "export_step_9")
  _export(tmp_path, "export_step_12")
  _export(tmp_path, "export_step_3", config=False)  # incomplete export
  _export(tmp_path, "export_step_1x")  # not export_step_<N>
  _export(tmp_path, "export_step_")
  _export(tmp_path, "export")  # the final export
  (tmp_path / "export_step_2").write_text("")  # a file, not a folder
  assert persistence.earliest_export(str(tmp_path)) == want


def test_earliest_export_without_one_is_empty(tmp_path):
  assert persistence.earliest_export(str(tmp_path)) == ""
  _export(tmp_path, "export_step_4", config=False)
  _export(tmp_path, "export")
  assert persistence.earliest_export(str(tmp_path)) == ""


def test_earliest_export_under_a_gs_workdir(gcs):
  for name in ("export_step_30", "export_step_9", "export_step_12", "export"):
    storage.write_text(storage.join(gcs, name, "config.json"), "{}")
  # An incomplete export, a name that is no step and a file, not a folder.
  storage.write_text(storage.join(gcs, "export_step_3", "model.bin"), "")
  storage.write_text(storage.join(gcs, "export_step_1x", "config.json"), "")
  storage.write_text(storage.join(gcs, "export_step_2"), "")
  assert persistence.earliest_export(gcs) == storage.join(gcs, "export_step_9")
  assert persistence.earliest_export(storage.join(gcs, "export")) == ""
  assert persistence.earliest_export(storage.join(gcs, "missing")) == ""
