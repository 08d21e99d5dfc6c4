"""Which devices each role of a run uses: the student, the teacher, rollouts.

By default every role shares one mesh over all devices (`mesh`). With
`teacher.devices` or `rollout.devices` (slices `start:stop` of the device
list), the frozen teacher and the rollout sampler get their own devices,
each with its own mesh (`teacher.mesh`, `rollout.mesh`; empty: the `mesh`
string over that slice) and rules; the student keeps the devices no other
role claims. Only arrays the other side needs cross between meshes
(completion ids, the teacher's completion hidden states, the student's
weights), so a large teacher never sits in the student's memory, and a
rollout can run while the student updates.

With one process a slice indexes `jax.devices()`. With several, it indexes
each process's local devices, and a role's mesh takes that slice on every
process in process order: every role spans every host, so each host still
feeds only its own rows (arrays cross with `sharding.move`).
"""

from __future__ import annotations

import dataclasses

import jax
from jax.sharding import Mesh

from rock_jax import sharding as shd

# Roles that may own devices, with the config field naming their slice.
APART = {"teacher": "teacher.devices", "rollout": "rollout.devices"}


def parse_devices(text: str, field: str, count: int) -> list[int] | None:
  """Device indices of a `start:stop` slice (None when `text` is empty).

  Args:
    text: the field's value, e.g. "4:8".
    field: the config field, for errors.
    count: how many devices there are.
  """
  if not text:
    return None
  start, sep, stop = text.partition(":")
  try:
    first, last = int(start), int(stop)
  except ValueError:
    first = last = None
  if not sep or first is None or not 0 <= first < last:
    raise ValueError(
      f"{field}={text!r}: expected a slice start:stop of the device list "
      f"with 0 <= start < stop, e.g. {count // 2}:{count}"
    )
  if last > count:
    where = "of each process" if jax.process_count() > 1 else "here"
    raise ValueError(
      f"{field}={text!r} exceeds the {count} devices {where} (indices "
      f"0..{count - 1}); use a slice within 0:{count}"
    )
  return list(range(first, last))


@dataclasses.dataclass(frozen=True)
class Placement:
  """Device indices per role; `apart` names the roles with their own."""

  student: tuple[int, ...]
  teacher: tuple[int, ...]
  rollout: tuple[int, ...]
  apart: frozenset[str]


def plan(config, count: int | None = None) -> Placement:
  """The run's device indices per role (no mesh built).

  Args:
    config: the run's config.
    count: devices per slice's list (default: `jax.local_device_count()`,
      which is `jax.device_count()` for one process).

  Raises:
    ValueError: a slice that is malformed, exceeds the devices, overlaps
      another role's, or leaves the student no device; `rollout.devices` in
      Stage-1 KD (the teacher samples there).
  """
  count = jax.local_device_count() if count is None else count
  owned = {
    role: parse_devices(config[role].devices, field, count)
    for role, field in APART.items()
  }
  owned = {role: ids for role, ids in owned.items() if ids is not None}
  if "rollout" in owned and config.stage != "opd":
    raise ValueError(
      f"rollout.devices={config.rollout.devices!r}: only stage='opd' samples "
      f"with the student (stage={config.stage!r} samples with the teacher, "
      "on teacher.devices); leave rollout.devices empty"
    )
  if len(owned) == 2 and set(owned["teacher"]) & set(owned["rollout"]):
    raise ValueError(
      f"teacher.devices={config.teacher.devices!r} and rollout.devices="
      f"{config.rollout.devices!r} overlap; give each role its own devices"
    )
  taken = {i for ids in owned.values() for i in ids}
  student = tuple(i for i in range(count) if i not in taken)
  if not student:
    fields = ", ".join(f"{APART[r]}={config[r].devices!r}" for r in owned)
    raise ValueError(
      f"{fields} take all {count} devices; leave some to the student "
      "(it trains on the devices no other role claims)"
    )
  return Placement(
    student=student,
    teacher=tuple(owned.get("teacher", student)),
    rollout=tuple(owned.get("rollout", student)),
    apart=frozenset(owned),
  )


def _role_mesh(config, placement: Placement, role: str, devices) -> Mesh:
  """A role's mesh over its devices; `devices`: the list the slices index
  (None: every process's local devices, `_devices`)."""
  text, field = config.mesh, "mesh"
  if role != "student" and config[role].mesh:
    text, field = config[role].mesh, f"{role}.mesh"
  ids = getattr(placement, role)
  devices = _devices(ids) if devices is None else [devices[i] for i in ids]
  try:
    return shd.make_mesh(shd.parse_mesh(text, field), devices)
  except ValueError as e:
    where = (
      f"{APART[role]}={config[role].devices!r}"
      if role in APART
      else "the devices no other role claims"
    )
    hint = "" if field != "mesh" or role == "student" else f"; set {role}.mesh"
    raise ValueError(
      f"{field}={text!r} does not fit the {role}'s {len(devices)} devices "
      f"({where}): {e}{hint}, e.g. data:-1"
    ) from None


def meshes(config, placement: Placement, devices=None) -> dict[str, Mesh]:
  """`{student, teacher, rollout}` meshes; roles not apart share the
  student's mesh object (`devices` as in `_role_mesh`)."""
  student = _role_mesh(config, placement, "student", devices)
  return {
    "student": student,
    **{
      role: _role_mesh(config, placement, role, devices)
      if role in placement.apart
      else student
      for role in APART
    },
  }


def _devices(ids) -> list:
  """The devices at local indices `ids` of every process, process-major
  (with one process, `jax.devices()[i]`)."""
  by_process = {}
  for d in jax.devices():
    by_process.setdefault(d.process_index, []).append(d)
  return [by_process[p][i] for p in sorted(by_process) for i in ids]
