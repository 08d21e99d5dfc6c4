"""Bad dataset inputs: builder options, sources, splits and JSONL lines.

Each case writes its input under `tmp_path` and returns the public call a
user makes (`builders.prepare`, `builders.open_split`, ...), which must fail
naming the option, file or field, the value, and what would work.
`check_failed_prepare_leaves_nothing` checks that a failed preparation
leaves the data folder as it was.
"""

import json
import pathlib
import shutil

import pytest
from bad_input_cases import Case

from rock_jax.data import builders, loader

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
GOOD = {
  "question": "Tom has 2 apples and buys 3. How many?",
  "answer": "#### 5",
}


def _prepare(name, **options):
  """A case whose thunk prepares dataset `name` with `options`."""

  def build(tmp_path, assets):
    del assets
    return lambda: builders.prepare(name, tmp_path / "data", **options)

  return build


def _gsm8k_source(tmp_path, assets, **splits) -> pathlib.Path:
  """A copy of the session's GSM8K folder, with `splits` (name -> text)
  written over it (None removes the split's file)."""
  source = tmp_path / "src"
  shutil.copytree(assets["gsm8k"], source)
  for split, text in splits.items():
    path = source / f"{split}.jsonl"
    if text is None:
      path.unlink()
    else:
      path.write_text(text)
  return source


def _prepare_source(options=None, **splits):
  """A case preparing gsm8k from the GSM8K copy edited by `splits`, with
  `options` for `prepare`."""

  def build(tmp_path, assets):
    source = _gsm8k_source(tmp_path, assets, **splits)
    return lambda: builders.prepare(
      "gsm8k", tmp_path / "data", source=source, **(options or {})
    )

  return build


def _bad_line(line: str) -> str:
  """A train split whose second line is `line`."""
  return f"{json.dumps(GOOD)}\n{line}\n"


def _prepare_file(name, file_name, text, **options):
  """A case preparing `name` from one file `file_name` holding `text`."""

  def build(tmp_path, assets):
    del assets
    path = tmp_path / file_name
    if isinstance(text, bytes):
      path.write_bytes(text)
    else:
      path.write_text(text)
    return lambda: builders.prepare(
      name, tmp_path / "data", source=path, **options
    )

  return build


def _prepared(tmp_path, assets) -> str:
  return builders.prepare(
    "gsm8k", tmp_path / "data", source=_gsm8k_source(tmp_path, assets)
  )


def _open_missing_split(tmp_path, assets):
  path = _prepared(tmp_path, assets)
  return lambda: builders.open_split(path, "validation")


def _open_data_root(tmp_path, assets):
  _prepared(tmp_path, assets)
  return lambda: builders.open_split(tmp_path / "data", "train")


def _batch_too_big(tmp_path, assets):
  source = builders.open_split(_prepared(tmp_path, assets), "train")
  return lambda: loader.Loader(source, 64, process_index=0, process_count=1)


def _missing_source(tmp_path, assets):
  del assets
  source = tmp_path / "nope"
  return lambda: builders.prepare("gsm8k", tmp_path / "data", source=source)


def _no_source(name):
  return Case(
    f"{name}_without_source",
    _prepare(name),
    ValueError,
    rf"data\.name='{name}' needs the option source=<a \.jsonl file.*"
    r"train\.jsonl and test\.jsonl.*data\.options=source=",
  )


CASES: list[Case] = [
  *(_no_source(name) for name in ("gsm8k", "math", "prompts")),
  Case(
    "gsm8k_option_typo",
    _prepare("gsm8k", sorce=FIXTURES / "gsm8k"),
    ValueError,
    r"unknown rock_gsm8k options \['sorce'\] for dataset 'gsm8k'; available: "
    r"\['instruction', 'source'\] \(did you mean sorce= -> source=\?\)",
  ),
  Case(
    "math_option_typo",
    _prepare("math", source=FIXTURES / "math500", instrution="Box it."),
    ValueError,
    r"unknown rock_math options \['instrution'\] .*available: \['instruction',"
    r" 'source'\] \(did you mean instrution= -> instruction=\?\)",
  ),
  Case(
    "prompts_option_typo",
    _prepare("prompts", source=FIXTURES / "prompts", feild="messages"),
    ValueError,
    r"unknown rock_prompts options \['feild'\] .*available: \['field', .*"
    r"'source', .*did you mean feild= -> field=\?",
  ),
  Case(
    "prompts_option_not_a_string",
    _prepare("prompts", source=FIXTURES / "prompts", field=3),
    ValueError,
    r"prompts option field=3: expected a string",
  ),
  Case(
    "prompts_task_without_reference_field",
    _prepare("prompts", source=FIXTURES / "prompts", task="gsm8k"),
    ValueError,
    r"task='gsm8k', reference_field='': set both .* or neither",
  ),
  Case(
    "embedded_option_typo",
    _prepare("embedded", trian_size=64),
    ValueError,
    r"unknown embedded task options \['trian_size'\] .*available: .*"
    r"'train_size'.*did you mean trian_size= -> train_size=\?",
  ),
  Case(
    "embedded_train_size_not_a_number",
    _prepare("embedded", train_size="abc"),
    ValueError,
    r"embedded option train_size='abc': expected an integer >= 1",
  ),
  Case(
    "embedded_empty_test_split",
    _prepare("embedded", train_size=64, test_size=0),
    ValueError,
    r"embedded option test_size=0: expected an integer >= 1",
  ),
  Case(
    "embedded_unknown_difficulty",
    _prepare("embedded", difficulty="medium"),
    ValueError,
    r"embedded option difficulty='medium': expected one of \['default', "
    r"'easy', 'hard', 'long_tail'\]",
  ),
  Case(
    "embedded_no_validation_split",
    _prepare("embedded", train_size=64, require_splits=("validation",)),
    ValueError,
    r"embedded dataset has no split\(s\) \['validation'\]; use \['train', "
    r"'test'\] \(data\.train_split, data\.eval_split\)",
  ),
  Case(
    "source_folder_missing",
    _missing_source,
    ValueError,
    r"source='[^']*/nope': no such file or folder; expected a \.jsonl file or "
    r"a folder of them",
  ),
  Case(
    "source_folder_without_jsonl",
    _prepare_source(train=None, test=None),
    ValueError,
    r"source='[^']*/src': folder holds no \.jsonl file \(found: \[\]\); put "
    r"one <split>\.jsonl per split there",
  ),
  Case(
    "source_file_not_jsonl",
    _prepare_file("gsm8k", "train.json", json.dumps([GOOD])),
    ValueError,
    r"source='[^']*/train\.json': expected a \.jsonl file .*convert it to "
    r"JSON Lines",
  ),
  Case(
    "split_name_not_a_word",
    _prepare_file("gsm8k", "my-train.jsonl", json.dumps(GOOD)),
    ValueError,
    r"my-train\.jsonl: split name 'my-train' .* rename the file, e\.g\. to "
    r"my_train\.jsonl",
  ),
  Case(
    "source_without_train_split",
    _prepare_source({"require_splits": ("train", "test")}, train=None),
    ValueError,
    r"source='[^']*/src' has no train\.jsonl for the split\(s\) \['train'\] "
    r"\(found: \['test\.jsonl'\]\); add train\.jsonl to that folder",
  ),
  Case(
    "empty_split_file",
    _prepare_source(train=""),
    ValueError,
    r"src/train\.jsonl: the 'train' split has no records \(the file is "
    r"empty\); write one JSON object per line, or remove the file",
  ),
  Case(
    "gsm8k_line_without_answer",
    _prepare_source(train=_bad_line(json.dumps({"question": "q"}))),
    ValueError,
    r"train\.jsonl:2: field 'answer' is None; expected a string \(fields "
    r"present: \['question'\]\); a GSM8K line is",
  ),
  Case(
    "gsm8k_answer_not_a_string",
    _prepare_source(
      train=_bad_line(json.dumps({"question": "q", "answer": 5}))
    ),
    ValueError,
    r"train\.jsonl:2: field 'answer' is 5; expected a string",
  ),
  Case(
    "gsm8k_line_not_json",
    _prepare_source(train=_bad_line("{question: q}")),
    ValueError,
    r"train\.jsonl:2: not valid JSON .*each line must be one JSON object",
  ),
  Case(
    "gsm8k_line_not_an_object",
    _prepare_source(train=_bad_line('["q", "#### 5"]')),
    ValueError,
    r"train\.jsonl:2: expected a JSON object, got \['q', '#### 5'\]",
  ),
  Case(
    "gsm8k_answer_without_final_line",
    _prepare_source(
      train=_bad_line(json.dumps({"question": "q", "answer": "It is 5."}))
    ),
    ValueError,
    r"train\.jsonl:2: field 'answer' has no '#### <number>' line .*"
    r"\"answer\": \"<worked solution>\\n#### <number>\"",
  ),
  Case(
    "gsm8k_final_answer_not_a_number",
    _prepare_source(
      train=_bad_line(json.dumps({"question": "q", "answer": "#### five"}))
    ),
    ValueError,
    r"train\.jsonl:2: field 'answer' ends in '#### five'; expected a number "
    r"after '####' \(e\.g\. '#### 42'\)",
  ),
  Case(
    "not_utf8",
    _prepare_file("gsm8k", "train.jsonl", b'{"question": "caf\xe9"}\n'),
    ValueError,
    r"train\.jsonl:1: not UTF-8 text .*save the file as UTF-8",
  ),
  Case(
    "math_line_without_answer",
    _prepare_file("math", "test.jsonl", json.dumps({"problem": "1+1?"})),
    ValueError,
    r"test\.jsonl:1: no 'answer' field and no \\boxed\{\} in 'solution' .*"
    r"a MATH line has 'problem' and 'answer'",
  ),
  Case(
    "prompts_line_without_prompt_field",
    _prepare_file("prompts", "ask.jsonl", json.dumps({"text": "Hi"})),
    ValueError,
    r"ask\.jsonl:1: field 'prompt': expected a list of chat messages or a "
    r"string, got None \(fields present: \['text'\]\); set the option field=",
  ),
  Case(
    "prompts_reference_field_missing",
    _prepare(
      "prompts",
      source=FIXTURES / "prompts" / "plain.jsonl",
      task="gsm8k",
      reference_field="answer",
    ),
    ValueError,
    r"plain\.jsonl:1: field 'answer' is None; expected a string \(fields "
    r"present: \['hint', 'prompt'\]\); set reference_field= to the right",
  ),
  Case(
    "open_split_missing_split",
    _open_missing_split,
    ValueError,
    r"split 'validation' not in .*available: \['test', 'train'\]; use one of "
    r"those \(data\.train_split, data\.eval_split\), or add validation\.jsonl",
  ),
  Case(
    "open_split_never_prepared",
    lambda tmp_path, assets: (
      lambda: builders.open_split(tmp_path / "never", "train")
    ),
    FileNotFoundError,
    r"dataset_dir='[^']*/never' is not a prepared dataset \(no such folder\);"
    r" pass the folder builders\.prepare\(name, data_dir, \.\.\.\) returned",
  ),
  Case(
    "open_split_of_the_data_root",
    _open_data_root,
    FileNotFoundError,
    r"dataset_dir='[^']*/data' is not a prepared dataset \(no "
    r"dataset_info\.json in it; prepared datasets below it: \['[^']*/data/"
    r"rock_gsm8k/src_\w+/1\.1\.0'\]\); pass the folder builders\.prepare",
  ),
  Case(
    "split_sizes_never_prepared",
    lambda tmp_path, assets: lambda: builders.split_sizes(tmp_path),
    FileNotFoundError,
    r"is not a prepared dataset \(no dataset_info\.json in it\); pass the "
    r"folder builders\.prepare",
  ),
  Case(
    "batch_larger_than_split",
    _batch_too_big,
    ValueError,
    r"the split has 24 examples, fewer than global_batch_size=64; use a "
    r"batch of at most 24 \(train\.batch_size\) or a larger split",
  ),
]


def _tree(folder: pathlib.Path) -> list[str] | None:
  if not folder.exists():
    return None
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_failed_prepare_leaves_nothing(tmp_path, assets):
  """A preparation that fails, whether on a bad line (checked before any
  write) or half-way through generating (the embedded task cannot draw its
  train split), leaves `data_dir` as it found it, absent or not."""
  data = tmp_path / "data"
  bad = _gsm8k_source(tmp_path, assets, train=_bad_line("{oops"))
  undrawable = dict(min_digits=1, max_digits=1, train_size=8, test_size=2000)
  for existed in (False, True):
    if existed:
      builders.prepare("gsm8k", data, source=assets["gsm8k"])
    before = _tree(data)
    with pytest.raises(ValueError, match=r"train\.jsonl:2: not valid JSON"):
      builders.prepare("gsm8k", data, source=bad)
    assert _tree(data) == before
    with pytest.raises(ValueError, match=r"could only draw 0 of 8 problems"):
      builders.prepare("embedded", data, **undrawable)
    assert _tree(data) == before
  (bad / "train.jsonl").write_text(_bad_line(json.dumps(GOOD)))
  fixed = builders.prepare("gsm8k", data, source=bad)
  assert builders.split_sizes(fixed) == {"test": 8, "train": 2}
