"""Meshes and the logical -> mesh mapping (rock_jax.sharding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from rock_jax import sharding as shd


def test_make_mesh_fills_minus_one_with_auto_axes():
  mesh = shd.make_mesh([("data", -1), ("fsdp", 2), ("tensor", 1)])
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert set(mesh.axis_types) == {AxisType.Auto}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


@pytest.mark.parametrize(
  "axes, match",
  [
    ([("data", 3), ("fsdp", -1)], "not divisible"),
    ([("data", 2), ("fsdp", 2)], "has 4 devices, but 8"),
    ([("data", -1), ("fsdp", -1)], "at most one axis"),
    ([("model", 8)], "mesh axis 'model' is not one of"),
  ],
)
def test_make_mesh_errors(axes, match):
  with pytest.raises(ValueError, match=match):
    shd.make_mesh(axes)


def test_each_mesh_axis_used_once_per_array():
  mesh = shd.make_mesh([("data", 2), ("fsdp", 4)])
  # The batch claims fsdp first, so activations keep embed unsharded.
  spec = shd.logical_to_spec(
    (shd.BATCH, shd.LENGTH, shd.EMBED), shd.FSDP_RULES, mesh
  )
  assert spec == P(("data", "fsdp"), None, None)
  assert shd.logical_to_spec((shd.VOCAB, shd.EMBED), shd.FSDP_RULES, mesh) == P(
    None, "fsdp"
  )


def test_axis_that_does_not_divide_is_dropped():
  mesh = shd.make_mesh([("data", 2), ("fsdp", 4)])
  sharder = shd.Sharder(mesh, shd.FSDP_RULES)
  assert sharder.spec((shd.VOCAB, shd.EMBED), (300, 6)) == P(None, None)
  assert sharder.spec((shd.BATCH,), (6,)) == P("data")
  assert sharder.spec((shd.BATCH,), (8,)) == P(("data", "fsdp"))


def test_rules_by_name_and_literal_tables():
  assert shd.get_rules("fsdp") is shd.FSDP_RULES
  table = shd.get_rules([["batch", ["data"]], ["embed", "fsdp"]])
  assert table == (("batch", ("data",)), ("embed", "fsdp"))
  with pytest.raises(
    ValueError,
    match=r"unknown sharding rules 'zero3'; "
    r"available: \['expert', 'fsdp', 'replicated'\]",
  ):
    shd.get_rules("zero3")
  with pytest.raises(ValueError, match="unknown logical axis 'hidden'"):
    shd.get_rules([("hidden", "fsdp")])
  with pytest.raises(ValueError, match="'embed' -> 'model': unknown mesh"):
    shd.get_rules([("embed", "model")])


def test_missing_rule_is_named():
  mesh = shd.make_mesh([("data", 8)])
  with pytest.raises(ValueError, match="logical axis 'mlp' has no sharding"):
    shd.logical_to_spec(("mlp",), (("batch", "data"),), mesh)


def test_constrain_is_identity_without_sharder_and_shards_with_one():
  x = np.arange(16.0).reshape(8, 2)
  assert shd.constrain(x, (shd.BATCH, None), None) is x
  sharder = shd.Sharder(shd.make_mesh([("data", 8)]), shd.FSDP_RULES)
  y = jax.jit(lambda a: sharder.constrain(a * 2, (shd.BATCH, shd.EMBED)))(x)
  assert y.sharding.shard_shape(y.shape) == (1, 2)
  np.testing.assert_array_equal(y, x * 2)


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
  moved = shd.move(tree, target, through_hosts=through_hosts)
  for key in tree:
    assert moved[key].sharding == target[key]
    assert moved[key].dtype == tree[key].dtype
    np.testing.assert_array_equal(moved[key], tree[key])
    assert {d.id for d in moved[key].sharding.device_set} == {4, 5, 6, 7}
