"""Tests for rock_jax.checkpoint: round trip, resharding, mismatches, resume."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec
from run_helpers import assert_trees_equal

from rock_jax import checkpoint


@struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: tuple
  rock: dict


def mesh_2x4():
  return Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))


def make_state(mesh, width=8):
  sharded = NamedSharding(mesh, PartitionSpec("data", "model"))
  w = jnp.arange(4 * width, dtype=jnp.float32).reshape(4, width)
  return TrainState(
    step=jnp.array(7, jnp.int32),
    params={
      "w": jax.device_put(w, sharded),
      "b": jnp.ones(width, jnp.bfloat16),
    },
    opt_state=(jax.device_put(w * 2, sharded), None),
    rock={"ema": jnp.linspace(0, 1, 16)},
  )


def test_round_trip_schedule_keep_and_meta(tmp_path):
  state = make_state(mesh_2x4())
  ckpt = checkpoint.Checkpointer(tmp_path, keep=2, save_every=2)
  assert ckpt.restore_latest(checkpoint.abstract_like(state)) is None
  started = [ckpt.save(s, state, {"position": s}) for s in range(1, 6)]
  assert started == [False, True, False, True, False]
  assert ckpt.save(
    5, state, {"position": 5, "config": {"lr": 1e-3}}, force=True
  )
  # A final forced save at an already saved step is a no-op, not an error.
  assert not ckpt.save(5, state, force=True)
  ckpt.close()

  reopened = checkpoint.Checkpointer(tmp_path, keep=2, save_every=2)
  restored, meta, step = reopened.restore_latest(
    checkpoint.abstract_like(state)
  )
  reopened.close()
  assert step == 5
  assert sorted(int(p.name) for p in tmp_path.iterdir()) == [4, 5]
  assert meta == {"position": 5, "config": {"lr": 1e-3}}
  assert isinstance(restored, TrainState)
  assert restored.params["b"].dtype == jnp.bfloat16
  assert restored.params["w"].sharding == state.params["w"].sharding
  assert_trees_equal(restored, state)


def test_relative_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with checkpoint.Checkpointer("ckpt") as ckpt:
    ckpt.save(1, {"a": jnp.ones(3)}, force=True)
  assert ckpt.directory == str(tmp_path / "ckpt")
  with checkpoint.Checkpointer("ckpt") as ckpt:
    restored, _, step = ckpt.restore_latest({"a": jnp.zeros(3)})
  assert step == 1
  np.testing.assert_array_equal(restored["a"], np.ones(3))


def test_restore_into_another_sharding(tmp_path):
  state = make_state(mesh_2x4())
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, state, force=True)

  other = Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tensor"))
  layout = NamedSharding(other, PartitionSpec(None, ("fsdp", "tensor")))
  target = jax.tree.map(
    lambda x: (
      jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=layout)
      if x.ndim == 2
      else jax.ShapeDtypeStruct(x.shape, x.dtype)
    ),
    state,
  )
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    restored, _, _ = ckpt.restore_latest(
      checkpoint.abstract_like(target, other)
    )
  assert restored.params["w"].sharding == layout
  assert restored.opt_state[0].sharding == layout
  assert restored.rock["ema"].sharding == NamedSharding(other, PartitionSpec())
  assert_trees_equal(restored, state)


def test_restore_params_reads_one_step_s_parameters_only(tmp_path):
  mesh = mesh_2x4()
  state = make_state(mesh)
  later = state.replace(params=jax.tree.map(lambda x: x + 1, state.params))
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, state, force=True)
    # Saved beside the batches sampled ahead (rollout.staleness > 0).
    ckpt.save(4, {"state": later, "inflight": [jnp.ones(3)]}, force=True)
  layout = NamedSharding(mesh, PartitionSpec("model", "data"))
  target = {
    "w": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=layout),
    "b": jax.ShapeDtypeStruct(
      (8,), jnp.bfloat16, sharding=NamedSharding(mesh, PartitionSpec())
    ),
  }
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.steps() == [2, 4]
    params = ckpt.restore_params(2, target)
    assert params["w"].sharding == layout
    assert_trees_equal(params, state.params)
    assert_trees_equal(ckpt.restore_params(4, target), later.params)
    with pytest.raises(ValueError, match=r"step 3: .* holds steps \[2, 4\]"):
      ckpt.restore_params(3, target)
    replicated = target["b"].sharding
    wide = dict(
      target,
      w=jax.ShapeDtypeStruct((4, 9), jnp.float32, sharding=replicated),
    )
    with pytest.raises(
      checkpoint.CheckpointMismatchError,
      match=r"w: expected shape \(4, 9\), found \(4, 8\)",
    ):
      ckpt.restore_params(2, wide)


def test_abstract_mesh_target_needs_a_concrete_mesh(tmp_path):
  mesh = mesh_2x4()
  state = make_state(mesh)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, force=True)
  # What nnx.eval_shape under jax.set_mesh gives: shardings on an
  # AbstractMesh, which orbax cannot place.
  abstract_mesh = AbstractMesh((2, 4), ("data", "model"))
  spec = PartitionSpec("data", "model")
  target = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      x.shape,
      x.dtype,
      sharding=NamedSharding(
        abstract_mesh, spec if x.ndim == 2 else PartitionSpec()
      ),
    ),
    state,
  )
  with pytest.raises(ValueError, match=r"'params\.w'.*AbstractMesh.*mesh="):
    checkpoint.abstract_like({"params": {"w": target.params["w"]}})
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    restored, _, _ = ckpt.restore_latest(checkpoint.abstract_like(target, mesh))
  assert restored.params["w"].sharding == NamedSharding(mesh, spec)
  assert_trees_equal(restored, state)


def test_mismatch_names_paths_and_shapes_and_deletes_nothing(tmp_path):
  mesh = mesh_2x4()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(2, make_state(mesh), force=True)
  before = sorted(str(p) for p in tmp_path.rglob("*"))

  bigger = make_state(mesh, width=16)
  bigger = bigger.replace(rock={"ema": bigger.rock["ema"], "new": jnp.zeros(3)})
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatchError) as info:
      ckpt.restore_latest(checkpoint.abstract_like(bigger))
  message = str(info.value)
  assert str(tmp_path / "2" / "state") in message
  assert "params.w: expected shape (4, 16), found (4, 8)" in message
  assert "params.b: expected shape (16,), found (8,)" in message
  assert "missing in checkpoint: rock.new (3,)" in message
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    smaller = make_state(mesh).replace(rock={})
    with pytest.raises(
      checkpoint.CheckpointMismatchError, match="not in target: rock.ema"
    ):
      ckpt.restore_latest(checkpoint.abstract_like(smaller))


def test_sigterm_is_recorded_and_handler_restored(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.install_sigterm_handler()
  assert not ckpt.should_stop(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert ckpt.should_stop(2)
  ckpt.close()
  assert signal.getsignal(signal.SIGTERM) == previous


def test_a_bucket_restores_only_steps_orbax_marked_complete(gcs):
  # Cloud Storage has no rename: orbax writes a step in place and marks it
  # with commit_success.txt last. A step without the mark (a writer killed
  # mid-save) is never restored.
  import fsspec  # noqa: PLC0415

  state = make_state(mesh_2x4())
  directory = f"{gcs}/ckpt"
  with checkpoint.Checkpointer(directory, save_every=1, keep=5) as ckpt:
    ckpt.save(1, state, {"position": 1})
    ckpt.save(2, state, {"position": 2})
  fs, root = fsspec.core.url_to_fs(directory)
  for name in fs.find(f"{root}/2"):
    if not name.endswith("commit_success.txt"):
      fs.copy(name, name.replace(f"{root}/2/", f"{root}/3/"))
  assert fs.exists(f"{root}/3/state")
  ckpt = checkpoint.Checkpointer(directory, save_every=1, keep=5)
  restored, meta, step = ckpt.restore_latest(state)
  assert step == 2 and meta == {"position": 2}
  assert_trees_equal(restored, state)
  ckpt.close()
