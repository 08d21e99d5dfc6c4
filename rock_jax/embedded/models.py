"""The embedded default's teacher and student, trained here and cached.

No pretrained weights exist for the embedded column-addition task, so the
framework makes its own pair by supervised fine-tuning on the task's worked
solutions (`rock_jax.embedded.sft`): a teacher trained to a held-out
accuracy of at least 0.95 on the teacher's prompt (which carries the
privileged style tag), and a student trained on the student's prompt and
stopped when its held-out accuracy is in a band well below the teacher's.
Both are saved as Hugging Face folders (config.json, safetensors, tokenizer,
and `sft.json`: the step kept and its measured accuracy), so the trainer
loads them exactly as it loads real models. A folder is written under
a temporary name and renamed when complete (in a `gs://` cache: uploaded with
config.json last); later runs reuse it (the folder name is a fingerprint of
the data and the `SFTSpec`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil

from rock_jax import metrics, storage
from rock_jax.data import embedded_builder, embedded_task
from rock_jax.embedded import sft
from rock_jax.models import hf

# What a model folder records about its training (`train_sft`'s record).
RECORD_FILE = "sft.json"


def _fingerprint(*parts) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _save(folder, cfg, params, record, tokenizer) -> None:
  hf.save(cfg, params, folder)
  tokenizer.save_pretrained(folder)
  metrics.write_json(os.path.join(folder, RECORD_FILE), record)


def training_record(folder: str) -> dict | None:
  """What an embedded model folder records about its training (`train_sft`),
  or None for another folder."""
  path = storage.join(folder, RECORD_FILE)
  return json.loads(storage.read_text(path)) if storage.isfile(path) else None


def _cached_model(folder, train, tokenizer):
  """Returns `folder`, training and saving into it first if absent.

  A local folder is written under a temporary name and renamed; a `gs://`
  one is written locally and uploaded with `config.json` last. Either way a
  folder with `config.json` is complete, and only such a folder is reused.
  """
  if storage.isfile(storage.join(folder, "config.json")):
    return folder
  if storage.is_url(folder):
    # Before the minutes of training: a bucket that refuses writes.
    storage.check_writable(folder, "cache")
    trained = train()
    # What an interrupted upload left (no config.json) is replaced whole.
    storage.rmtree(folder)
    with storage.staged_folder(folder, last=("config.json",)) as local:
      _save(local, *trained, tokenizer)
    return folder
  tmp = f"{folder}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  _save(tmp, *train(), tokenizer)
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(tmp, folder)
  return folder


def prepare(
  dataset_dir: str,
  cache: str,
  *,
  teacher: sft.SFTSpec,
  student: sft.SFTSpec,
  difficulty: str = "default",
  teacher_tokenizer=None,
) -> tuple[str, str]:
  """Trains (or reuses) both models of a prepared embedded dataset.

  Single-process: on a pod, run it once (it takes minutes on a CPU) and
  point the config at the resulting folders.

  Args:
    dataset_dir: the embedded dataset (`builders.prepare("embedded", ...)`),
      a folder or a `gs://` URL (read through its local mirror).
    cache: the cache folder or `gs://` URL; models go to
      `<cache>/models/<role>-<key>`, and a published one is reused.
    teacher, student: the two models' recipes.
    difficulty: the dataset's `embedded_task` difficulty (its styles).
    teacher_tokenizer: the teacher's own tokenizer (a teacher across
      tokenizers); None: the dataset's.

  Returns:
    `(teacher_dir, student_dir)`, URLs under a URL cache.
  """
  tokenizer = embedded_builder.load_tokenizer(dataset_dir)
  styles = embedded_task.get_difficulty(difficulty).styles
  folders = []
  own = {"teacher": teacher_tokenizer or tokenizer, "student": tokenizer}
  for role, spec in (("teacher", teacher), ("student", student)):
    tokenizer = own[role]
    parts = (dataset_dir, role, dataclasses.asdict(spec))
    if tokenizer is not own["student"]:  # its vocabulary names the model
      parts += (sorted(tokenizer.get_vocab().items()),)
    key = _fingerprint(*parts)
    folder = storage.join(cache, "models", f"{role}-{key}")
    if not storage.isfile(storage.join(folder, "config.json")):
      print(
        f"Preparing the embedded {role} (supervised, at most {spec.steps} "
        f"steps, kept at a held-out greedy accuracy in "
        f"{list(spec.accuracy_band)}; cached in {folder})",
        flush=True,
      )
    train = functools.partial(
      sft.train_sft, spec, dataset_dir, tokenizer, role, styles
    )
    folders.append(_cached_model(folder, train, tokenizer))
  return tuple(folders)
