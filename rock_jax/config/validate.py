"""`validate(config)`: every check that needs no model or data, run first.

Each failure is a `ValueError` naming the field, its value and what is
allowed, so a bad override costs seconds, not a half-loaded teacher.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from rock_jax import losses, rock, storage
from rock_jax import sharding as shd
from rock_jax.analysis import report
from rock_jax.config import adapters, fields, keys, placement
from rock_jax.data import builders, embedded_task
from rock_jax.embedded import sft
from rock_jax.models import attention
from rock_jax.models.config import DTYPES
from rock_jax.sampler import rollout


def _fail(field: str, value, expected: str):
  raise ValueError(f"{field}={value!r}: expected {expected}")


def _one_of(config, field: str, allowed) -> None:
  value = _get(config, field)
  if value not in allowed:
    _fail(field, value, f"one of {sorted(allowed)}")


def _get(config, field: str):
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _range(
  config, field, low=None, high=None, *, low_open=False, high_open=False
):
  """`low <= value <= high`, either end optional or open."""
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    _fail(field, value, "a number")
  too_low = low is not None and (value <= low if low_open else value < low)
  too_high = high is not None and (value >= high if high_open else value > high)
  if too_low or too_high:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    _fail(field, value, f"a value in {left}{lo}, {hi}{right}")


def _positive_int(config, field, minimum=1):
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(field, value, f"an integer >= {minimum}")


def _batch_devices(config) -> dict[str, int]:
  """Devices the batch is split over (`data` x `fsdp`), by role mesh field."""
  shd.parse_mesh(config.mesh, "mesh")
  where = placement.plan(config)
  meshes = placement.meshes(config, where)
  fields = {"student": "mesh"}
  fields.update(
    {r: f"{r}.mesh" if config[r].mesh else "mesh" for r in where.apart}
  )
  return {
    f"{fields[role]} on the {role}'s devices": meshes[role].shape.get("data", 1)
    * meshes[role].shape.get("fsdp", 1)
    for role in fields
  }


def _validate_role(config, role: str) -> None:
  c = config[role]
  _one_of(config, f"{role}.dtype", DTYPES)
  _one_of(config, f"{role}.compute_dtype", ("",) + DTYPES)
  _one_of(config, f"{role}.rules", shd.RULE_PRESETS)
  for field in ("path", "tokenizer"):
    path = c[field]
    if path and storage.is_url(path):
      # A model folder is read for its config.json; a tokenizer folder whole.
      inside = ("config.json",) if field == "path" else ()
      storage.check_readable(storage.join(path, *inside), f"{role}.{field}")
    elif path and not os.path.isdir(path):
      _fail(f"{role}.{field}", path, "an existing Hugging Face model folder")
  fields.template_kwargs(c, f"{role}.template_kwargs")
  attention.check(c.attention_impl, field=f"{role}.attention_impl")
  compute = c.compute_dtype or c.dtype
  cudnn_dtype = jnp.dtype(compute) in attention.KERNELS["cudnn"].dtypes
  if c.attention_impl == "cudnn" and not cudnn_dtype:
    _fail(
      f"{role}.attention_impl",
      c.attention_impl,
      f"a 16-bit compute dtype for cuDNN (this role computes in {compute}; "
      f"set {role}.compute_dtype=bfloat16, or use 'auto' or 'blockwise')",
    )
  _positive_int(config, f"{role}.attention_block")
  _positive_int(config, f"{role}.moe_chunk_size", 0)
  _positive_int(config, f"{role}.scan_unroll", 0)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError on the first invalid field."""
  _one_of(config, "stage", keys.STAGES)
  for role in ("teacher", "student"):
    _validate_role(config, role)
  adapters.validate(config)
  for section in (
    _validate_data,
    _validate_rollout_and_loss,
    _validate_cross,
    _validate_rock,
    _validate_train,
    _validate_embedded,
    _validate_batches,
  ):
    section(config)


def _validate_data(config) -> None:
  if bool(config.teacher.path) != bool(config.student.path):
    raise ValueError(
      f"teacher.path={config.teacher.path!r}, student.path="
      f"{config.student.path!r}: give both model folders, or neither for the "
      "embedded task"
    )
  _one_of(config, "data.name", builders.BUILDERS)
  if not config.teacher.path and config.data.name != "embedded":
    _fail(
      "data.name",
      config.data.name,
      "'embedded' when no model folders are given (teacher.path is empty)",
    )
  fields.parse_kv(config.data.options, "data.options")
  # Written by process 0 and read by all: a missing bucket fails here.
  storage.check_bucket(config.data.data_dir, "data.data_dir")
  storage.check_bucket(config.embedded.cache_dir, "embedded.cache_dir")
  if config.data.name == "embedded" and config.data.options:
    _fail(
      "data.options",
      config.data.options,
      "'' for the embedded task (its settings are the embedded.* fields)",
    )
  _validate_widths(config)


def _validate_widths(config) -> None:
  largest = max(rollout.DEFAULT_BUCKETS)
  for field in ("data.student_prompt_len", "data.teacher_prompt_len"):
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int):
      value = -1
    if not 0 <= value <= largest:
      _fail(
        field,
        _get(config, field),
        f"an integer in [1, {largest}] (the longest prompt, in tokens), or "
        "0 to measure it from the data",
      )


def evaluation(config: ml_collections.ConfigDict, role: str) -> None:
  """The checks of a command that evaluates or samples from one model
  (`launch/evaluate.py`, `launch/generate.py`): the role's layout, the
  data, the prompt widths, sampling and the evaluation batch. Raises
  ValueError on the first invalid field."""
  if role not in ("student", "teacher"):
    _fail("role", role, "one of ['student', 'teacher']")
  _validate_role(config, role)
  _one_of(config, "data.name", builders.BUILDERS)
  fields.parse_kv(config.data.options, "data.options")
  _validate_widths(config)
  _validate_sampling(config)
  _positive_int(config, "train.eval_examples", 0)
  _positive_int(config, "train.eval_batch_size")
  shd.parse_mesh(config.mesh, "mesh")
  devices = _batch_devices(config)["mesh on the student's devices"]
  rows = config.train.eval_batch_size
  if rows % devices or rows % jax.process_count():
    _fail(
      "train.eval_batch_size",
      rows,
      f"a multiple of the {devices} devices the batch is split over (mesh) "
      f"and of the {jax.process_count()} processes",
    )


def check_positions(config, role, width, limit, where, sampling=False):
  """Raises unless the role's prompt width plus its completion width
  (`fields.completion_width`; the rollout budget when `sampling`) fits."""
  field, budget = fields.completion_width(config, role, sampling)
  if width + budget > limit:
    value = _get(config, field)
    what = field if value else f"twice rollout.max_new_tokens ({budget})"
    raise ValueError(
      f"{field}={value}: data.{role}_prompt_len ({width}) + {what} exceeds "
      f"the {role}'s max_position_embeddings={limit} ({where}); "
      f"{'lower' if value else 'set'} it to at most {limit - width}"
    )


def _validate_sampling(config) -> None:
  _positive_int(config, "rollout.max_new_tokens")
  _range(config, "rollout.temperature", 0.0)
  _positive_int(config, "rollout.top_k", 0)
  _range(config, "rollout.top_p", 0.0, 1.0, low_open=True)


def _validate_rollout_and_loss(config) -> None:
  _validate_sampling(config)
  _positive_int(config, "rollout.num_samples")
  _positive_int(config, "rollout.slots", 0)
  _positive_int(config, "rollout.page_size")
  _one_of(config, "rollout.rules", ("",) + tuple(shd.RULE_PRESETS))
  _positive_int(config, "rollout.staleness", 0)
  if config.rollout.staleness and not config.rollout.devices:
    _fail(
      "rollout.staleness",
      config.rollout.staleness,
      "0 unless rollout.devices gives the sampler its own devices (e.g. "
      "rollout.devices=6:8): a stale rollout overlaps the update only on "
      "devices the update does not use",
    )
  if not config.teacher.path:  # the embedded models
    for role in ("teacher", "student"):
      width = config.data[f"{role}_prompt_len"]  # 0: checked once measured
      check_positions(
        config, role, width, sft.MAX_POSITIONS, "the embedded models"
      )

  _one_of(config, "loss.kind", losses.DIVERGENCES)
  if config.loss.kind == "k1":
    _fail(
      "loss.kind",
      "k1",
      "a training objective: the gradient of k1 is the score function, "
      "zero in expectation, so the student would learn nothing; use "
      "'pg_reverse_kl' (k1 as a held-constant reward times the score, the "
      "sampled-token policy gradient of reverse KL) or the exact "
      "'reverse_kl'",
    )
  _range(config, "loss.is_cap", 0.0, low_open=True)
  _range(config, "loss.beta", 0.0, 1.0)
  _range(config, "loss.temperature", 0.0, low_open=True)
  _range(config, "loss.kd_ratio", 0.0, 1.0)
  _positive_int(config, "loss.chunk_size")
  _one_of(config, "loss.normalize", losses.NORMALIZERS)


def _validate_cross(config) -> None:
  """Across tokenizers the student samples and the loss is reverse KL's:
  the span reward estimates its gradient (`rock_jax.losses.spans`)."""
  _one_of(config, "teacher.cross_tokenizer", (False, True))
  _positive_int(config, "teacher.completion_len", 0)
  why = "with teacher.cross_tokenizer=True"
  vocab = config.embedded.teacher_vocab
  if vocab and (not config.teacher.cross_tokenizer or vocab < 259):
    _fail("embedded.teacher_vocab", vocab, f"0, or 259 ids or more {why}")
  if not config.teacher.cross_tokenizer:
    return
  if config.stage != "opd":
    _fail("stage", config.stage, f"'opd' {why} (the student samples)")
  if config.loss.kind not in losses.CROSS_KINDS:
    _fail("loss.kind", config.loss.kind, f"one of {losses.CROSS_KINDS} {why}")
  for field in ("loss.temperature", "loss.kd_ratio"):
    if _get(config, field) != 1.0:
      _fail(field, _get(config, field), f"1.0 {why}")


def _validate_rock(config) -> None:
  r = config.rock
  _range(config, "rock.lam", 0.0, 1.0)
  _one_of(config, "rock.align", rock.ALIGNMENTS)
  _positive_int(config, "rock.k")
  _positive_int(config, "rock.min_count")
  _positive_int(config, "rock.exclude_most_frequent", 0)
  _range(config, "rock.max_improvement")
  _range(config, "rock.min_loss_ratio", 0.0)
  _range(config, "rock.min_score_ratio", 0.0, 1.0)
  _one_of(config, "rock.source", rock.SOURCES)
  _range(config, "rock.decay", 0.0, 1.0, low_open=True, high_open=True)
  _range(config, "rock.fast_decay", 0.0, r.decay, high_open=True)
  _positive_int(config, "rock.warmup_steps", 0)
  _positive_int(config, "rock.refresh_every", 0)
  _one_of(config, "rock.control", keys.CONTROLS)
  _one_of(config, "rock.protect", keys.PROTECTIONS)
  _positive_int(config, "rock.protect_examples")
  if storage.is_url(r.static_list):
    storage.check_readable(r.static_list, "rock.static_list")
  elif r.static_list and not os.path.isfile(r.static_list):
    _fail("rock.static_list", r.static_list, "an existing rock.json file")
  if r.static_list and r.control != "none":
    _fail("rock.control", r.control, "'none' when rock.static_list is set")
  if r.control != "none" and not 1 <= r.warmup_steps <= config.train.steps:
    _fail(
      "rock.warmup_steps",
      r.warmup_steps,
      f"1..train.steps={config.train.steps}: the control set is matched to "
      "the tracker's selection at the end of the warm-up",
    )


def _validate_train(config) -> None:
  t = config.train
  _positive_int(config, "train.steps")
  _positive_int(config, "train.batch_size")
  _positive_int(config, "train.micro_batch_size", 0)
  _positive_int(config, "train.log_every")
  _positive_int(config, "train.eval_every", 0)
  _positive_int(config, "train.eval_examples", 0)
  _positive_int(config, "train.eval_batch_size")
  _positive_int(config, "train.checkpoint_every")
  _positive_int(config, "train.keep_checkpoints")
  _positive_int(config, "train.log_samples", 0)
  _positive_int(config, "train.export_every", 0)
  _one_of(config, "train.nonfinite", ("raise", "skip"))
  fields.profile_window(t.profile_steps, t.steps)

  o = config.optim
  _range(config, "optim.learning_rate", 0.0, low_open=True)
  _positive_int(config, "optim.warmup_steps", 0)
  if o.warmup_steps > t.steps:
    _fail("optim.warmup_steps", o.warmup_steps, f"<= train.steps={t.steps}")
  _range(config, "optim.min_lr", 0.0, o.learning_rate)
  _range(config, "optim.b1", 0.0, 1.0, high_open=True)
  _range(config, "optim.b2", 0.0, 1.0, high_open=True)
  _range(config, "optim.weight_decay", 0.0)
  _range(config, "optim.clip_norm")


def _validate_embedded(config) -> None:
  e = config.embedded
  _one_of(config, "embedded.difficulty", embedded_task.DIFFICULTIES)
  _positive_int(config, "embedded.train_size")
  _positive_int(config, "embedded.test_size")
  for role in ("teacher", "student"):
    spec = e[role]
    for field in ("hidden_size", "layers", "heads", "steps", "batch_size"):
      _positive_int(config, f"embedded.{role}.{field}")
    _positive_int(config, f"embedded.{role}.schedule_steps", 0)
    if spec.schedule_steps and spec.schedule_steps < spec.steps:
      _fail(
        f"embedded.{role}.schedule_steps",
        spec.schedule_steps,
        f"0 or >= embedded.{role}.steps={spec.steps}",
      )
    _range(config, f"embedded.{role}.learning_rate", 0.0, low_open=True)
    _range(config, f"embedded.{role}.mixed_prefix", 0.0, 1.0)
    _positive_int(config, f"embedded.{role}.eval_every", 0)
    _positive_int(config, f"embedded.{role}.eval_examples")
    # Only the models trained here hold problems out.
    trained_here = not config.teacher.path
    if trained_here and e.train_size - spec.eval_examples < spec.batch_size:
      _fail(
        f"embedded.{role}.eval_examples",
        spec.eval_examples,
        f"at most embedded.train_size - embedded.{role}.batch_size = "
        f"{e.train_size - spec.batch_size} (held out from its training)",
      )
    band = spec.accuracy_band
    if not (
      isinstance(band, (tuple, list))
      and len(band) == 2
      and all(isinstance(x, (int, float)) for x in band)
      and 0 <= band[0] <= band[1] <= 1
    ):
      _fail(
        f"embedded.{role}.accuracy_band",
        band,
        "(low, high) with 0 <= low <= high <= 1",
      )
    if spec.hidden_size % spec.heads:
      _fail(
        f"embedded.{role}.hidden_size",
        spec.hidden_size,
        f"a multiple of embedded.{role}.heads={spec.heads}",
      )


def _validate_batches(config) -> None:
  """Every batch splits evenly over the batch devices and processes."""
  t = config.train
  by_mesh = _batch_devices(config)
  processes = jax.process_count()
  for field, rows in (
    ("train.batch_size", t.batch_size * config.rollout.num_samples),
    ("train.eval_batch_size", t.eval_batch_size),
  ):
    for mesh, devices in by_mesh.items():
      if rows % devices or rows % processes:
        raise ValueError(
          f"{field}={_get(config, field)} gives {rows} rows per batch, not "
          f"a multiple of the {devices} devices the batch is split over "
          f"({mesh}) and of the {processes} processes"
        )
  devices = next(iter(by_mesh.values()))
  micro = t.micro_batch_size
  rows = t.batch_size * config.rollout.num_samples
  if micro and (rows % micro or micro % devices):
    divisors = [d for d in range(devices, rows + 1, devices) if rows % d == 0]
    _fail(
      "train.micro_batch_size",
      micro,
      f"0 or a divisor of the step's {rows} sequences (train.batch_size x "
      f"rollout.num_samples) that is a multiple of the {devices} batch "
      f"devices: one of {divisors}",
    )


ANALYSES = ("census", "gradients", "persistence", "knockout", "freeze")
PERSISTENCE_CONTEXTS = ("own", "fixed", "both")


def analyses(config: ml_collections.ConfigDict) -> list[str]:
  """Validates `config.analysis`; returns the analyses to run, in order."""
  a = config.analysis
  names = fields.parse_list(a.analyses)
  if not names or any(n not in ANALYSES for n in names):
    _fail("analysis.analyses", a.analyses, f"a comma list from {ANALYSES}")
  _one_of(config, "analysis.persistence_contexts", PERSISTENCE_CONTEXTS)
  formats = fields.parse_list(a.formats)
  if not formats or any(f not in report.FORMATS for f in formats):
    _fail("analysis.formats", a.formats, f"a comma list from {report.FORMATS}")
  for field in ("k", "num_examples", "batch_size", "high_kl_k", "random_k"):
    _positive_int(config, f"analysis.{field}")
  for field in ("knockout_candidates", "grad_batches"):
    _positive_int(config, f"analysis.{field}", 0)
  _positive_int(config, "analysis.resamples")
  _range(config, "analysis.alpha", 0.0, 1.0, low_open=True, high_open=True)
  _range(config, "analysis.epsilon", 0.0)
  _range(config, "analysis.target_fraction", 0.0, 1.0, low_open=True)
  fields.parse_ints(a.k_sweep, "analysis.k_sweep")
  fields.parse_ints(a.stability_sizes, "analysis.stability_sizes")
  if "freeze" in names and names != ["freeze"] and not a.freeze_runs:
    names.remove("freeze")  # nothing to compare; the others still run
  if names == ["freeze"] and not a.freeze_runs:
    raise ValueError(
      "analysis.analyses='freeze' needs analysis.freeze_runs (a comma list "
      "of finished run workdirs)"
    )
  return [n for n in ANALYSES if n in names]
