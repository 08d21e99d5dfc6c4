"""Bad inputs to a cross-tokenizer run, each failing at start-up (cases for
tests/test_bad_inputs.py): a teacher tokenizer without a chat template, one
that shares no text token with the student's, and differing tokenizers
without `teacher.cross_tokenizer`."""

import json

from bad_input_cases import Case
from cross_helpers import make_cross_teacher
from run_helpers import tiny_config

from rock_jax import train


def _run(name="opd_cross.py", edit=None):
  """A case body: a tiny run whose teacher has its own tokenizer (`edit`
  changes the teacher folder first)."""

  def build(tmp_path, assets):
    teacher = make_cross_teacher(tmp_path / "teacher")
    if edit:
      edit(tmp_path / "teacher")
    config = tiny_config(assets, tmp_path / "run", name, teacher__path=teacher)
    return lambda: train.run(config)

  return build


def _no_chat_template(folder):
  (folder / "chat_template.jinja").unlink()


def _nothing_in_common(folder):
  # A byte-level BPE of the special tokens and two CJK characters: no text
  # token of the (ASCII-trained) student's vocabulary.
  file = folder / "tokenizer.json"
  data = json.loads(file.read_text())
  specials = {t["content"]: t["id"] for t in data["added_tokens"]}
  data["model"]["vocab"] = {**specials, "ä¸Ń": 3, "æĸĩ": 4}
  data["model"]["merges"] = []
  file.write_text(json.dumps(data))


CASES = [
  Case(
    "cross_teacher_without_chat_template",
    _run(edit=_no_chat_template),
    ValueError,
    r"teacher.tokenizer='.*teacher', teacher.chat_template='': tokenizer at "
    r"'.*teacher' has no chat template; pass chat_template=",
  ),
  Case(
    "cross_vocabularies_share_no_text_token",
    _run(edit=_nothing_in_common),
    ValueError,
    r"teacher.tokenizer='.*teacher' and student.tokenizer='.*student' share "
    r"no token string \(0 of \d+ student text tokens map to a teacher id\)",
  ),
  Case(
    "different_tokenizers_without_cross_tokenizer",
    _run(name="opd_rock.py"),
    ValueError,
    r"teacher.tokenizer='.*teacher' and student.tokenizer='.*student': "
    r"teacher and student vocabularies differ at \d+ ids.*set "
    r"teacher.cross_tokenizer=True",
  ),
]
