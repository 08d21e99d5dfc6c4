"""Logical axis names, meshes, and the logical -> `NamedSharding` mapping.

Model code names tensor dimensions with the logical constants below and never
mentions a mesh axis. A *rules* table, which lives in config, maps each logical
name to zero or more mesh axes; this module is the only place that applies it.
Teacher and student may carry different rules over the same mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

# Logical dimension names used by the model code.
BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
VOCAB = "vocab"
LAYERS = "layers"
CACHE_LENGTH = "cache_length"
EXPERT = "expert"

LOGICAL_AXES = (
  BATCH,
  LENGTH,
  EMBED,
  MLP,
  HEADS,
  KV_HEADS,
  HEAD_DIM,
  VOCAB,
  LAYERS,
  CACHE_LENGTH,
  EXPERT,
)

# Mesh axes every rules table may refer to: data parallel, fully sharded data
# parallel (parameters and optimizer state split, batch split too), tensor.
MESH_AXES = ("data", "fsdp", "tensor")

# FSDP with optional tensor parallelism: parameters are split over `fsdp` on
# their model dimension and over `tensor` on heads / MLP / vocab; the batch is
# split over both data axes. Order matters: within one array a mesh axis is
# used once, by the first dimension that claims it, so activations
# [batch, length, embed] keep `fsdp` for the batch.
FSDP_RULES = (
  (BATCH, ("data", "fsdp")),
  (LENGTH, None),
  (EMBED, "fsdp"),
  (MLP, "tensor"),
  (HEADS, "tensor"),
  (KV_HEADS, "tensor"),
  (HEAD_DIM, None),
  (VOCAB, "tensor"),
  (LAYERS, None),
  (CACHE_LENGTH, None),
  (EXPERT, None),
)

# FSDP, with the experts of MoE layers split over `fsdp` instead of their
# model dimension: expert parallelism on the axis the batch is already split
# over, so teacher and student share one mesh and the student keeps plain FSDP
# on it. In stacked experts `[layers, expert, embed, mlp]` the expert dimension
# comes before embed and so claims `fsdp`: each device stores whole experts.
# Dense models lay out exactly as under `FSDP_RULES`.
EXPERT_RULES = ((EXPERT, "fsdp"),) + tuple(
  rule for rule in FSDP_RULES if rule[0] != EXPERT
)

# Parameters replicated on every device, batch split: for a small frozen
# teacher whose weights fit everywhere (no all-gathers in its forward).
REPLICATED_RULES = ((BATCH, ("data", "fsdp")),) + tuple(
  (name, None) for name in LOGICAL_AXES if name != BATCH
)

RULE_PRESETS = {
  "fsdp": FSDP_RULES,
  "replicated": REPLICATED_RULES,
  "expert": EXPERT_RULES,
}


def get_rules(name_or_rules: str | Sequence[Sequence[Any]]) -> tuple:
  """Returns a validated rules table from a preset name or a literal table."""
  if isinstance(name_or_rules, str):
    if name_or_rules not in RULE_PRESETS:
      raise ValueError(
        f"unknown sharding rules {name_or_rules!r}; available: "
        f"{sorted(RULE_PRESETS)}"
      )
    return RULE_PRESETS[name_or_rules]
  rules = tuple(
    (name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
    for name, axes in name_or_rules
  )
  for name, axes in rules:
    if name not in LOGICAL_AXES:
      raise ValueError(
        f"sharding rule for unknown logical axis {name!r}; "
        f"known: {sorted(LOGICAL_AXES)}"
      )
    for axis in _as_tuple(axes):
      if axis not in MESH_AXES:
        raise ValueError(
          f"sharding rule {name!r} -> {axis!r}: unknown mesh axis; "
          f"known: {list(MESH_AXES)}"
        )
  return rules


def parse_mesh(text: str, what: str = "mesh") -> list[tuple[str, int]]:
  """Parses `data:-1,fsdp:4` into `[("data", -1), ("fsdp", 4)]`.

  `what` names the flag or config field in the error message.
  """
  axes = []
  for item in text.split(","):
    name, _, size = item.partition(":")
    try:
      axes.append((name.strip(), int(size)))
    except ValueError:
      raise ValueError(
        f"{what}={text!r}: expected name:size pairs separated "
        f"by commas, e.g. data:-1,fsdp:4; got {item!r}"
      ) from None
  return axes


def make_mesh(
  axes: Sequence[tuple[str, int]], devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """Builds a mesh from `[(axis_name, size), ...]`; one size may be -1.

  Axes use `AxisType.Auto` (classic GSPMD propagation): with the explicit
  axis types that `jax.make_mesh` defaults to, a matmul over a sharded
  contracting dimension needs an explicit output sharding.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(name for name, _ in axes)
  sizes = [int(size) for _, size in axes]
  for name in names:
    if name not in MESH_AXES:
      raise ValueError(f"mesh axis {name!r} is not one of {list(MESH_AXES)}")
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {list(axes)}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
        f"mesh {list(axes)}: {len(devices)} devices are not divisible by "
        f"the fixed axes' product {known}"
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
      f"mesh {list(axes)} has {int(np.prod(sizes))} devices, "
      f"but {len(devices)} are available"
    )
  try:
    device_array = mesh_utils.create_device_mesh(sizes, devices)
  except (AssertionError, NotImplementedError, ValueError):
    # Fake CPU devices and unusual topologies have no physical layout.
    device_array = np.asarray(devices).reshape(sizes)
  return Mesh(device_array, names, axis_types=(AxisType.Auto,) * len(names))


def _as_tuple(axes) -> tuple:
  if axes is None:
    return ()
  return tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)


def logical_to_spec(
  logical: Sequence[str | None],
  rules: Sequence,
  mesh: Mesh,
  shape: Sequence[int] | None = None,
) -> PartitionSpec:
  """Maps logical dimension names to a `PartitionSpec` over `mesh`.

  A mesh axis is used at most once per array (first dimension wins), axes
  absent from the mesh or of size 1 are skipped, and when `shape` is given an
  axis that does not divide its dimension is dropped for that dimension, so
  odd sizes (a 151,936-entry vocabulary over 3 devices) replicate instead of
  failing.
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(logical):
    if name is not None and name not in table:
      raise ValueError(
        f"logical axis {name!r} has no sharding rule; rules cover "
        f"{sorted(table)}"
      )
    chosen = []
    size = 1
    for axis in _as_tuple(table.get(name)):
      if axis in used or axis not in mesh.shape or mesh.shape[axis] == 1:
        continue
      if shape is not None and shape[dim] % (size * mesh.shape[axis]):
        continue
      chosen.append(axis)
      size *= mesh.shape[axis]
    used.update(chosen)
    spec.append(
      None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen)
    )
  return PartitionSpec(*spec)


@dataclasses.dataclass(frozen=True)
class Sharder:
  """A mesh plus one role's rules: resolves logical names for that role.

  Hashable, so it can be a static argument of a jitted function; the model
  takes it to constrain activations.
  """

  mesh: Mesh
  rules: tuple

  def spec(self, logical, shape=None) -> PartitionSpec:
    return logical_to_spec(logical, self.rules, self.mesh, shape)

  def sharding(self, logical, shape=None) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical, shape))

  def constrain(self, x: jax.Array, logical: Sequence[str | None]):
    """`with_sharding_constraint` by logical names."""
    return jax.lax.with_sharding_constraint(x, self.sharding(logical, x.shape))

  def tree_shardings(self, logical_tree, shape_tree):
    """NamedShardings for a pytree given matching logical-name and shape trees.

    `logical_tree` leaves are tuples of logical names (or `PartitionSpec`s
    holding them); `shape_tree` leaves are anything with `.shape`.
    """
    return jax.tree.map(
      lambda names, x: self.sharding(tuple(names), x.shape),
      logical_tree,
      shape_tree,
      is_leaf=lambda n: isinstance(n, (tuple, PartitionSpec)),
    )


def constrain(
  x: jax.Array, logical: Sequence[str | None], sharder: Sharder | None
):
  """Constrains `x` when a sharder is given; identity otherwise."""
  return x if sharder is None else sharder.constrain(x, logical)


def to_global(local: Any, sharding: NamedSharding) -> Any:
  """Global arrays from each process's own rows (a pytree of host arrays).

  Every process calls it with its slice of the global batch, in process
  order, so multi-host runs never need the whole batch on one host.
  """
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
    local,
  )


def to_local(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, on the host."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  local = multihost_utils.global_array_to_host_local_array(
    x, x.sharding.mesh, x.sharding.spec
  )
  return np.asarray(local)


def unsharded_bytes(tree: Any, min_bytes: int) -> list[tuple[str, int]]:
  """Lists (path, bytes) of arrays of at least `min_bytes` that are replicated.

  Used to check that a rules table really splits the large parameters.
  """
  found = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    nbytes = x.size * x.dtype.itemsize
    if nbytes >= min_bytes and x.sharding.is_fully_replicated:
      found.append((jax.tree_util.keystr(path), nbytes))
  return sorted(found, key=lambda item: -item[1])


def move(tree: Any, shardings: Any, *, through_hosts: bool | None = None):
  """`jax.device_put(tree, shardings)` across meshes on disjoint devices.

  JAX moves arrays between disjoint device sets of several processes only
  on TPU's TFRT runtime, so with several processes this goes through the
  hosts (each gathers the array, then places its own shards): correct on
  any backend, but the host waits for the array.

  Args:
    tree: a pytree of `jax.Array`s.
    shardings: one `Sharding` for every leaf, or a matching pytree.
    through_hosts: gather each array on every host and place the shards
      from there; default: only with several processes (where JAX cannot
      move between disjoint device sets), else a device-to-device copy.
  """
  if through_hosts is None:
    through_hosts = jax.process_count() > 1
  if not through_hosts:
    return jax.device_put(tree, shardings)
  if isinstance(shardings, Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)

  def staged(x, sharding):
    full = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.make_array_from_callback(
      x.shape, sharding, lambda index: full[index]
    )

  return jax.tree.map(staged, tree, shardings)
