"""Device slices and meshes per role (8 fake CPU devices); bad slices are
cases of tests/bad_input_runs.py."""

from run_helpers import load_config, set_fields

from rock_jax.config import placement


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
