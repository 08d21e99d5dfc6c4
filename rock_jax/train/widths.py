"""Each role's prompt width: the configured one, or measured from the data.

`data.<role>_prompt_len` is the longest prompt a role accepts, in tokens, any
positive number; 0 measures it from the splits the run opens (the longest
prompt, rounded up to its bucket). Prompt arrays are left-padded to the
bucket of the width (`rollout.DEFAULT_BUCKETS`), so widths within one bucket
share the compiled rollout and train step. Positions reach only the real
prompt plus the completion, so the model's length limit is checked against
the width itself, not its bucket.
"""

from __future__ import annotations

import dataclasses

from rock_jax.config import fields
from rock_jax.data import builders, loader, prompts
from rock_jax.sampler import rollout

AUTO = 0
BUCKETS = rollout.DEFAULT_BUCKETS


def field(role: str) -> str:
  """The config field of a role's width."""
  return f"data.{role}_prompt_len"


def padded(width: int) -> int:
  """P, the array width of prompts up to `width` tokens: its bucket."""
  return rollout.bucket(width, BUCKETS)


@dataclasses.dataclass(frozen=True)
class Longest:
  """A role's longest prompt over the splits measured."""

  tokens: int
  uid: str
  split: str


def measure(splits, formats) -> dict[str, Longest]:
  """The longest prompt of each role, rendered with its format.

  Args:
    splits: `{split name: records}`.
    formats: the roles' `PromptFormat`s (their widths are not read).

  Returns:
    `{role: Longest}`.
  """
  longest = {f.role: Longest(0, "", "") for f in formats}
  for split, source in splits.items():
    for examples in loader.eval_batches(
      source, 512, process_index=0, process_count=1
    ):
      for f in formats:
        for e in examples:
          n = len(f.ids(e))
          if n > longest[f.role].tokens:
            longest[f.role] = Longest(n, e.uid, split)
  return longest


def resolve(config, role: str, longest: Longest | None) -> int:
  """The role's width: the configured one, or its measured bucket.

  Args:
    config: the run's config.
    role: "student" or "teacher".
    longest: the role's measured longest prompt (needed only for AUTO).

  Returns:
    The longest prompt the role accepts.
  """
  width = config.data[f"{role}_prompt_len"]
  if width != AUTO:
    return width
  if longest is None:
    raise ValueError(
      f"{field(role)}=0 measures the width from the data, which was not "
      "read here; give the width"
    )
  if longest.tokens > max(BUCKETS):
    raise ValueError(
      f"{field(role)}=0: the longest {role} prompt ({longest.uid!r} of split "
      f"{longest.split!r}) has {longest.tokens} tokens, more than the "
      f"largest width {max(BUCKETS)}; filter the data"
    )
  return padded(max(longest.tokens, 1))


def describe(role: str, width: int, longest: Longest) -> str:
  """One line for the log: a measured width and where it came from."""
  return (
    f"{field(role)}=0: measured {width} (the longest {role} prompt, "
    f"{longest.uid!r} of split {longest.split!r}, has {longest.tokens} "
    f"tokens; arrays are {padded(width)} wide)"
  )


def format_of(role: str, tokenizer, width: int, template_kwargs=None):
  """The role's `PromptFormat` for prompts up to `width` tokens, padded to
  the width's bucket."""
  return prompts.PromptFormat(
    role, tokenizer, width, template_kwargs or {}, padded_width=padded(width)
  )


def of_run(
  config, dataset_dir: str, tokenizers, extra_splits=(), roles=prompts.ROLES
) -> dict[str, int]:
  """The roles' widths, measuring those set to AUTO on the run's splits.

  Args:
    config: the run's config.
    dataset_dir: the prepared dataset.
    tokenizers: `{role: tokenizer}` (chat templates included).
    extra_splits: more splits measured (one a command evaluates).
    roles: whose widths (both by default).

  Returns:
    `{role: width}`.
  """
  d = config.data
  auto = [r for r in roles if d[f"{r}_prompt_len"] == AUTO]
  longest = {}
  if auto:
    names = [s for s in (d.train_split, d.eval_split, *extra_splits) if s]
    names = list(dict.fromkeys(names))
    splits = {s: builders.open_split(dataset_dir, s) for s in names}
    formats = [
      prompts.PromptFormat(
        r,
        tokenizers[r],
        0,
        fields.template_kwargs(config[r], f"{r}.template_kwargs"),
      )
      for r in auto
    ]
    longest = measure(splits, formats)
  resolved = {r: resolve(config, r, longest.get(r)) for r in roles}
  for r in auto:
    print(describe(r, resolved[r], longest[r]), flush=True)
  return resolved
