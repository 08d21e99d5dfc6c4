"""The one example schema shared by every dataset, and its TFDS base builder.

All builders write the same six text fields, so the loader, the prompt
renderer and the verifiers never branch on the dataset.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence

import tensorflow_datasets as tfds

ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class Example:
  """One prompt with what is needed to grade and to distil on it.

  Attributes:
    uid: stable identifier (source file and line, or generator index).
    task: verifier name (`rock_jax.data.verifiers.VERIFIERS`), or "" when the
      prompt has no reference answer.
    messages: the student's chat turns before the assistant's answer.
    privileged: text only the teacher sees (a system message), or "".
    reference: the reference final answer, or "".
    solution: a worked reference solution, or "".
  """

  uid: str
  task: str
  messages: tuple[Mapping[str, str], ...]
  privileged: str = ""
  reference: str = ""
  solution: str = ""


FEATURES = tfds.features.FeaturesDict(
  {
    "uid": tfds.features.Text(),
    "task": tfds.features.Text(),
    # Chat turns as a JSON list: TFDS has no ragged list-of-dicts feature
    # that round-trips without TensorFlow.
    "messages": tfds.features.Text(),
    "privileged": tfds.features.Text(),
    "reference": tfds.features.Text(),
    "solution": tfds.features.Text(),
  }
)


def check_messages(messages: object, where: str) -> tuple[dict, ...]:
  """Validates a chat-message list; `where` names the source in errors."""
  if not isinstance(messages, Sequence) or isinstance(messages, str):
    raise ValueError(f"{where}: expected a list of messages, got {messages!r}")
  out = []
  for i, message in enumerate(messages):
    if (
      not isinstance(message, Mapping)
      or message.get("role") not in ROLES
      or not isinstance(message.get("content"), str)
    ):
      raise ValueError(
        f"{where}: message {i} is {message!r}; expected "
        f"{{'role': one of {ROLES}, 'content': str}}"
      )
    out.append({"role": message["role"], "content": message["content"]})
  if not out:
    raise ValueError(f"{where}: empty message list")
  return tuple(out)


def check_option_names(
  given: Iterable[str], accepted: Iterable[str], what: str, dataset: str
) -> None:
  """Raises naming each unknown builder option, with the accepted ones.

  Args:
    given: the option names passed.
    accepted: the builder's option names.
    what: the builder, as the message names it.
    dataset: its `builders.BUILDERS` name.
  """
  accepted = sorted(accepted)
  if not (unknown := sorted(set(given) - set(accepted))):
    return
  guesses = [
    f"{name}= -> {match[0]}="
    for name in unknown
    if (match := difflib.get_close_matches(name, accepted, n=1))
  ]
  raise ValueError(
    f"unknown {what} options {unknown} for dataset {dataset!r}; available: "
    f"{accepted}"
    + (f" (did you mean {', '.join(guesses)}?)" if guesses else "")
  )


def to_record(example: Example) -> dict[str, str]:
  """The example as the feature dict a builder yields."""
  record = dataclasses.asdict(example)
  record["messages"] = json.dumps(list(example.messages))
  return record


def from_record(record: Mapping[str, bytes | str]) -> Example:
  """Decodes a record read from a data source (`Text` comes back as bytes)."""
  text = {
    k: v.decode("utf-8") if isinstance(v, bytes) else v
    for k, v in record.items()
  }
  text["messages"] = tuple(json.loads(text["messages"]))
  return Example(**text)


class ExampleBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder of `Example`s.

  Subclasses give a `name`, a config class with a `metadata()` dict (stored
  in the dataset's `metadata.json`) and `_split_generators` that pass
  `Example` iterables to `_generate_examples`.
  """

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "Embedded rock.json lists only the style's decision tokens.",
  }
  # TFDS 4.9.10 resolves the default `code_path` (used only to find download
  # checksums) through `importlib_resources`, which it installs only on
  # Python < 3.9; these builders download nothing.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=FEATURES,
      metadata=tfds.core.MetadataDict(self.builder_config.metadata()),
    )

  def _generate_examples(self, examples: Iterable[Example]):
    for i, example in enumerate(examples):
      yield i, to_record(example)
