"""Reading config values: folders, comma lists, `k=v` options, widths.

Each parser names the field it reads in its error.
"""

from __future__ import annotations

import os

import ml_collections

from rock_jax import storage


def cache_dir(config: ml_collections.ConfigDict) -> str:
  """The embedded task's cache folder."""
  return config.embedded.cache_dir or default_cache_dir()


def default_cache_dir() -> str:
  """$ROCK_JAX_CACHE, else ~/.cache/rock_jax."""
  return os.environ.get(
    "ROCK_JAX_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "rock_jax"),
  )


def workdir(config: ml_collections.ConfigDict) -> str:
  """The run's folder (absolute) or URL."""
  return storage.absolute(
    config.workdir or os.path.join("workdir", config.name)
  )


def check_workdir(path: str) -> None:
  """Raises unless `path` is a folder, or can become one, that is writable.

  Checked before any model loads: the nearest existing folder on the way
  must be writable, and nothing on the way may be a file. A URL's bucket
  must exist and take a probe object.
  """
  if storage.is_url(path):
    storage.check_writable(path, "workdir")
    return
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(
      f"workdir={path!r}: {existing!r} is a file, not a folder; pass "
      "--workdir (or config.workdir) a folder path"
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(
      f"workdir={path!r}: {existing!r} is not writable; pass --workdir (or "
      "config.workdir) a folder you can write to"
    )


def parse_list(text: str) -> list[str]:
  """The non-empty items of a comma list, stripped."""
  return [s.strip() for s in text.split(",") if s.strip()]


def parse_ints(text: str, what: str) -> list[int]:
  """A comma list of positive integers; `what` names the field."""
  try:
    values = [int(x) for x in parse_list(text)]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise ValueError(
      f"{what}={text!r}: expected a comma list of positive integers"
    )
  return values


def parse_kv(text: str, what: str) -> dict[str, str]:
  """Parses `k=v,k2=v2` (values stay strings); `what` names the field."""
  out = {}
  for item in parse_list(text):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(
        f"{what}={text!r}: expected comma-separated key=value pairs; got "
        f"{item!r}"
      )
    out[key.strip()] = value.strip()
  return out


def template_kwargs(role: ml_collections.ConfigDict, what: str) -> dict:
  """Chat-template variables, with true/false/none as Python values."""
  literals = {"true": True, "false": False, "none": None}
  return {
    k: literals.get(v.lower(), v)
    for k, v in parse_kv(role.template_kwargs, what).items()
  }


def completion_width(
  config: ml_collections.ConfigDict, role: str, sampling: bool = False
) -> tuple[str, int]:
  """The field that sets the role's completion width in its own tokens, and
  the width: the rollout budget, or for a teacher scoring across tokenizers
  (not `sampling`) `teacher.completion_len` (0: twice the budget)."""
  budget = config.rollout.max_new_tokens
  if role == "teacher" and config.teacher.cross_tokenizer and not sampling:
    return "teacher.completion_len", config.teacher.completion_len or 2 * budget
  return "rollout.max_new_tokens", budget


def profile_window(text: str, steps: int) -> tuple[int, int] | None:
  """`train.profile_steps`: `(first, last)` steps (1-based, inclusive) of
  `"a:b"` (or `"a"`, one step), None for `""`; raises naming the field."""
  if not text:
    return None
  parts = text.split(":")
  try:
    first, last = int(parts[0]), int(parts[-1])
  except ValueError:
    first = last = None
  if len(parts) > 2 or first is None or not 1 <= first <= last <= steps:
    raise ValueError(
      f"train.profile_steps={text!r}: expected 'a:b' (or 'a') with "
      f"1 <= a <= b <= train.steps={steps}, e.g. '10:12'"
    )
  return first, last
