"""Device slices per role and moves between their meshes (8 fake CPU
devices); bad slices are cases of tests/bad_input_runs.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from run_helpers import load_config, set_fields

from rock_jax import placement
from rock_jax import sharding as shd


def _config(**settings):
  config = load_config()
  set_fields(config, {k.replace("__", "."): v for k, v in settings.items()})
  return config


def test_the_student_keeps_the_devices_no_role_claims():
  where = placement.plan(
    _config(teacher__devices="2:4", rollout__devices="6:8")
  )
  assert where.student == (0, 1, 4, 5)
  assert where.teacher == (2, 3) and where.rollout == (6, 7)
  assert where.apart == {"teacher", "rollout"}
  meshes = placement.meshes(
    _config(teacher__devices="2:4", rollout__devices="6:8"), where
  )
  assert [d.id for d in meshes["student"].devices.flat] == [0, 1, 4, 5]
  assert [d.id for d in meshes["rollout"].devices.flat] == [6, 7]
  # Without slices every role shares the student's one mesh.
  alone = _config()
  meshes = placement.meshes(alone, placement.plan(alone))
  assert meshes["teacher"] is meshes["rollout"] is meshes["student"]
  assert meshes["student"].size == 8


def test_a_role_mesh_of_its_own():
  config = _config(teacher__devices="4:8", teacher__mesh="data:1,fsdp:4")
  meshes = placement.meshes(config, placement.plan(config))
  assert dict(meshes["teacher"].shape) == {"data": 1, "fsdp": 4}
  assert dict(meshes["student"].shape) == {"data": 4, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("through_hosts", [False, True])
def test_moves_between_disjoint_meshes_keep_values_and_take_the_layout(
  through_hosts,
):
  devices = jax.devices()
  a = shd.make_mesh([("data", 2), ("fsdp", 2)], devices[:4])
  b = shd.make_mesh([("data", 4)], devices[4:])
  tree = {
    "rows": jax.device_put(
      jnp.arange(48.0).reshape(8, 6),
      jax.sharding.NamedSharding(
        a, jax.sharding.PartitionSpec(("data", "fsdp"))
      ),
    ),
    "w": jax.device_put(
      jnp.arange(12, dtype=jnp.int32).reshape(3, 4),
      jax.sharding.NamedSharding(a, jax.sharding.PartitionSpec(None, "fsdp")),
    ),
  }
  target = {
    "rows": jax.sharding.NamedSharding(b, jax.sharding.PartitionSpec("data")),
    "w": jax.sharding.NamedSharding(b, jax.sharding.PartitionSpec()),
  }
  moved = placement.move(tree, target, through_hosts=through_hosts)
  for key in tree:
    assert moved[key].sharding == target[key]
    assert moved[key].dtype == tree[key].dtype
    np.testing.assert_array_equal(moved[key], tree[key])
    assert {d.id for d in moved[key].sharding.device_set} == {4, 5, 6, 7}
