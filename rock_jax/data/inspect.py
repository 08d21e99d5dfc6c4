"""Prepares a dataset and prints what the teacher and the student see.

  python -m rock_jax.data.inspect embedded --data_dir=/tmp/rock_data
  python -m rock_jax.data.inspect gsm8k --data_dir=/tmp/rock_data \\
      --set source=tests/fixtures/gsm8k --tokenizer=/path/to/model

`--data_dir`, `source=` and the tokenizer and template paths may be `gs://`
URLs. `--set key=value` passes builder options (`builders.get_builder`). The
embedded task uses the tokenizer saved with it; other datasets need a
tokenizer folder (`--tokenizer`, or per side `--teacher_tokenizer` /
`--student_tokenizer`, with optional `--*_template` chat templates). In the
reference solution, `[[...]]` marks ground-truth Rock Tokens when the dataset
has a `rock.json`.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence

import tensorflow_datasets as tfds

from rock_jax import storage
from rock_jax.data import (
  builders,
  embedded_builder,
  prompts,
  schema,
  tokenization,
)


def _option(text: str) -> tuple[str, object]:
  key, sep, value = text.partition("=")
  if not sep:
    raise argparse.ArgumentTypeError(f"--set {text!r}: expected key=value")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m rock_jax.data.inspect",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("dataset", choices=sorted(builders.BUILDERS))
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--set", type=_option, action="append", default=[])
  parser.add_argument("--split", default=None, help="default: the first")
  parser.add_argument("--num", type=int, default=3)
  for side in ("", "teacher_", "student_"):
    parser.add_argument(f"--{side}tokenizer", default=None)
  for side in ("teacher_", "student_"):
    parser.add_argument(f"--{side}template", default=None)
  return parser


def _tokenizer(args, side: str, dataset_dir: str):
  path = getattr(args, f"{side}_tokenizer") or args.tokenizer
  if path is None:
    path = storage.join(dataset_dir, embedded_builder.TOKENIZER_DIR)
    if not storage.isdir(path):
      raise SystemExit(f"{args.dataset} needs --tokenizer (a model folder)")
  return tokenization.load_tokenizer(path, getattr(args, f"{side}_template"))


def _marked(text: str, tokenizer, rock_ids: frozenset[int]) -> str:
  """The text token by token, with `[[...]]` around Rock Tokens."""
  pieces = []
  for i in prompts.encode(text, tokenizer):
    piece = tokenizer.decode([i])
    if i in rock_ids:
      # Show a rock newline as `\n` but keep the line break for reading.
      shown = piece.replace("\n", "\\n")
      piece = f"[[{shown}]]" + "\n" * ("\n" in piece)
    pieces.append(piece)
  return "".join(pieces)


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  tfds.disable_progress_bar()
  dataset_dir = builders.prepare(args.dataset, args.data_dir, **dict(args.set))
  teacher = _tokenizer(args, "teacher", dataset_dir)
  student = _tokenizer(args, "student", dataset_dir)
  tokenization.check_same_vocab(teacher, student)
  rock_ids = embedded_builder.planted_rocks(dataset_dir) or frozenset()
  sizes = builders.split_sizes(dataset_dir)
  print(f"dataset: {dataset_dir}")
  print("splits: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
  split = args.split or next(iter(sizes))
  source = builders.open_split(dataset_dir, split)
  for i in range(min(args.num, len(source))):
    example = schema.from_record(source[i])
    print(
      f"\n=== {split}[{i}] uid={example.uid} task={example.task!r} "
      f"reference={example.reference!r}"
    )
    for side, tok, render in (
      ("student", student, prompts.render_student_prompt),
      ("teacher", teacher, prompts.render_teacher_prompt),
    ):
      text = render(example, tok)
      print(f"--- {side} prompt ({len(prompts.encode(text, tok))} tokens)")
      print(text, end="" if text.endswith("\n") else "\n")
    if example.solution:
      n = len(prompts.encode(example.solution, teacher))
      print(f"--- reference solution ({n} tokens)")
      print(_marked(example.solution, teacher, rock_ids))


if __name__ == "__main__":
  main()
