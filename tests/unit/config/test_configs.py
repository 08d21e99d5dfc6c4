"""Every config file loads and validates; bad values fail naming the field."""

import pathlib

import jax
import pytest
from run_helpers import load_config as load
from run_helpers import set_fields

from rock_jax.config import fields, keys, presets, validate

CONFIGS = sorted((pathlib.Path(__file__).parents[3] / "configs").glob("*.py"))


def test_config_files_exist():
  assert {p.name for p in CONFIGS} == {
    "opd_rock.py",
    "opd_uniform.py",
    "kd_offpolicy.py",
    "analyze_rock.py",
    "opd_cross.py",
  }


@pytest.mark.parametrize("arg", ["", "paper,h100x8", "qwen3_8b_to_1p7b"])
def test_analysis_presets_pass_their_checks(arg):
  config = load("analyze_rock.py", arg)
  names = validate.analyses(config)
  # No freeze runs given: the comparison is left out, the rest runs.
  assert names == ["census", "gradients", "persistence", "knockout"]
  a = config.analysis
  if arg:  # the paper's figure recipe and group sizes
    assert (a.k, a.min_count, a.exclude_most_frequent) == (100, 2, 5)
    assert (a.high_kl_k, a.random_k, a.knockout_candidates) == (100, 200, 200)
  else:  # the freeze-list recipe on the embedded task's 18 planted rocks
    assert (a.k, a.min_count, a.exclude_most_frequent) == (20, 1, 0)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_embedded_default_validates(path):
  config = load(path.name)
  validate.validate(config)
  assert not config.teacher.path  # the embedded task


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", ["qwen3_8b_to_1p7b", "paper,h100x8"])
def test_real_presets_name_their_model_folders(path, arg, tmp_path):
  config = load(path.name, arg)
  # The preset points at /models/...; missing folders are the first error.
  with pytest.raises(ValueError, match=r"teacher\.path='/models/Qwen3-"):
    validate.validate(config)
  for role in ("teacher", "student"):
    (tmp_path / role).mkdir()
    config[role].path = str(tmp_path / role)
  config.data.options = f"source={tmp_path}"
  if arg == "qwen3_8b_to_1p7b":  # the v5p-8 mesh has 4 devices, not 8
    with pytest.raises(ValueError, match=r"mesh='data:1,fsdp:4.*4 devices"):
      validate.validate(config)
    config.mesh = "data:1,fsdp:-1"
  validate.validate(config)


def test_presets_set_the_papers_settings():
  paper = load("opd_rock.py", "paper,h100x8")
  assert paper.teacher.rules == "expert"  # Qwen3-30B-A3B is MoE
  # float32 master weights for the student, bfloat16 compute for both.
  assert (paper.student.dtype, paper.student.compute_dtype) == (
    "float32",
    "bfloat16",
  )
  assert (paper.teacher.dtype, paper.teacher.compute_dtype) == (
    "bfloat16",
    "bfloat16",
  )
  assert paper.student.rules == "fsdp"
  assert paper.mesh == "data:1,fsdp:8,tensor:1"
  assert (paper.rock.lam, paper.rock.k, paper.rock.align) == (
    0.0,
    100,
    "emitted",
  )
  assert paper.rollout.num_samples == 4 and paper.rollout.temperature == 1.0
  assert paper.optim.learning_rate == 2e-6 and paper.optim.clip_norm == 1.0
  assert load("opd_uniform.py", "paper").rock.lam == 1.0
  kd = load("kd_offpolicy.py", "paper,v5p8")
  assert (kd.stage, kd.loss.kind, kd.loss.kd_ratio) == ("kd", "forward_kl", 0.5)
  assert kd.mesh == "data:1,fsdp:4,tensor:1"
  assert load("opd_rock.py", "qwen3_8b_to_1p7b").teacher.rules == "fsdp"


def test_the_long_tail_preset_is_the_embedded_variant_with_its_teacher():
  default, variant = load("opd_rock.py"), load("opd_rock.py", "long_tail")
  assert variant.embedded.difficulty == "long_tail"
  assert (
    variant.embedded.teacher.steps,
    variant.embedded.teacher.eval_every,
  ) == (
    1500,
    100,
  )
  assert (
    default.embedded.teacher.steps,
    default.embedded.teacher.eval_every,
  ) == (
    600,
    0,
  )
  assert variant.rock.k == default.rock.k == 20
  assert (
    variant.data.name == "embedded" and variant.name == "opd_rock_long_tail"
  )
  kd = load("kd_offpolicy.py", "long_tail")
  assert kd.train.batch_size == default.train.batch_size
  analysis = load("analyze_rock.py", "long_tail").analysis
  assert analysis.k == 20
  validate.validate(variant)
  with pytest.raises(ValueError, match=r"'long_tail,v5p8': hardware applies"):
    load("opd_rock.py", "long_tail,v5p8")


@pytest.mark.parametrize("arg", ["", "long_tail", "paper,h100x8"])
def test_paper_freeze_is_the_default_without_its_guards(arg):
  default = load("opd_rock.py", arg)
  paper = load("opd_rock.py", ",".join(filter(None, ["paper_freeze", arg])))
  guards = ("protect", "min_loss_ratio", "min_score_ratio")
  assert [default.rock[k] for k in guards] == ["auto", 1.0, 0.01]
  assert [paper.rock[k] for k in guards] == ["", 0.0, 0.0]
  assert paper.name == default.name.replace("opd_rock", "opd_rock_paper_freeze")
  for key in guards:
    paper.rock[key] = default.rock[key]
  paper.name = default.name
  assert paper.to_dict() == default.to_dict()
  if not presets.is_model_pair(arg):  # model pairs need their folders
    validate.validate(paper)


def test_unknown_preset_or_hardware_is_rejected():
  with pytest.raises(ValueError, match=r"unknown preset 'qwen9'.*'paper'"):
    load("opd_rock.py", "qwen9")
  with pytest.raises(ValueError, match=r"hardware one of \['h100x8', 'v5p8'\]"):
    load("opd_rock.py", "paper,tpu9")


BAD = [
  ("stage", "rl", r"stage='rl': expected one of \['kd', 'opd'\]"),
  ("loss.kind", "kl", r"loss.kind='kl': expected one of .*'reverse_kl'"),
  (
    "loss.kd_ratio",
    1.5,
    r"loss.kd_ratio=1.5: expected a value in \[0.0, 1.0\]",
  ),
  ("loss.normalize", "mean", r"loss.normalize='mean': expected one of"),
  ("rock.lam", -0.5, r"rock.lam=-0.5: expected a value in \[0.0, 1.0\]"),
  ("rock.align", "next", r"rock.align='next': expected one of"),
  ("rock.decay", 1.0, r"rock.decay=1.0: expected a value in \(0.0, 1.0\)"),
  ("rock.control", "random", r"rock.control='random': expected one of"),
  (
    "rock.protect",
    "digits",
    r"rock.protect='digits': expected one of \['', 'answers', 'auto'\]",
  ),
  (
    "rock.protect_examples",
    0,
    r"rock.protect_examples=0: expected an integer >= 1",
  ),
  (
    "rock.min_loss_ratio",
    -1.0,
    r"rock.min_loss_ratio=-1.0: expected a value in \[0.0, inf\]",
  ),
  (
    "rock.min_score_ratio",
    2.0,
    r"rock.min_score_ratio=2.0: expected a value in \[0.0, 1.0\]",
  ),
  ("rock.static_list", "/nope.json", r"rock.static_list='/nope.json'"),
  ("rollout.top_p", 0.0, r"rollout.top_p=0.0: expected a value in \(0.0"),
  ("rollout.num_samples", 0, r"rollout.num_samples=0: expected an integer"),
  ("rollout.slots", -1, r"rollout.slots=-1: expected an integer >= 0"),
  ("rollout.page_size", 0, r"rollout.page_size=0: expected an integer >= 1"),
  (
    "rollout.max_new_tokens",
    4000,
    r"rollout.max_new_tokens=4000: data.teacher_prompt_len \(\d+\) \+ "
    r"rollout.max_new_tokens exceeds the teacher's "
    r"max_position_embeddings=256 \(the embedded models\); lower it",
  ),
  (
    "data.student_prompt_len",
    -1,
    r"data.student_prompt_len=-1: expected an integer in \[1, 65536\] \(the "
    r"longest prompt, in tokens\), or 0 to measure it from the data",
  ),
  ("data.name", "squad", r"data.name='squad': expected one of"),
  ("train.steps", 0, r"train.steps=0: expected an integer >= 1"),
  ("train.nonfinite", "ignore", r"train.nonfinite='ignore'"),
  ("optim.warmup_steps", 500, r"optim.warmup_steps=500: expected <= train"),
  ("teacher.dtype", "fp8", r"teacher.dtype='fp8': expected one of"),
  ("student.rules", "tp", r"student.rules='tp': expected one of"),
  ("mesh", "data=8", r"mesh='data=8': expected name:size pairs"),
  ("embedded.difficulty", "extreme", r"embedded.difficulty='extreme'"),
  ("embedded.teacher.hidden_size", 90, r"a multiple of embedded.teacher.heads"),
  (
    "embedded.student.accuracy_band",
    (0.6, 0.4),
    r"embedded.student.accuracy_band=\(0.6, 0.4\): expected \(low, high\) "
    r"with 0 <= low <= high <= 1",
  ),
  (
    "embedded.student.eval_every",
    -1,
    r"embedded.student.eval_every=-1: expected an integer >= 0",
  ),
  (
    "embedded.teacher.eval_examples",
    20000,
    r"embedded.teacher.eval_examples=20000: expected at most "
    r"embedded.train_size - embedded.teacher.batch_size = 19936 \(held out",
  ),
  (
    "teacher.template_kwargs",
    "thinking",
    r"teacher.template_kwargs='thinking'",
  ),
  ("data.options", "train_size=5", r"data.options='train_size=5'.*embedded"),
  (
    "student.attention_impl",
    "flash",
    r"student.attention_impl='flash'; allowed: \['auto', 'xla', 'blockwise'",
  ),
  (
    "teacher.attention_impl",
    "cudnn",
    r"teacher.attention_impl='cudnn' needs a GPU \(this backend is 'cpu'\); "
    r"use 'auto' \(picks 'blockwise' here\)",
  ),
  ("student.attention_impl", "splash", r"'splash' needs a TPU"),
  ("student.attention_block", 0, r"student.attention_block=0: expected an"),
  (
    "teacher.scan_unroll",
    -1,
    r"teacher.scan_unroll=-1: expected an integer >= 0",
  ),
  (
    "train.micro_batch_size",
    12,
    r"train.micro_batch_size=12: expected 0 or a divisor of the step's 32 "
    r"sequences .* multiple of the 8 batch devices: one of \[8, 16, 32\]",
  ),
]


@pytest.mark.parametrize("field, value, message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_field_and_the_allowed_values(
  field, value, message
):
  config = load("opd_rock.py")
  set_fields(config, {field: value})
  with pytest.raises(ValueError, match=message):
    validate.validate(config)


def test_cross_field_checks():
  config = load("opd_rock.py")
  config.train.batch_size = 12  # 8 fake devices split the batch
  with pytest.raises(ValueError, match=r"train.batch_size=12 gives 12 rows.*8"):
    validate.validate(config)
  config = load("opd_rock.py")
  config.data.name = "gsm8k"
  with pytest.raises(
    ValueError, match=r"data.name='gsm8k': expected 'embedded'"
  ):
    validate.validate(config)
  config = load("opd_rock.py")
  config.teacher.path = "/tmp"
  with pytest.raises(ValueError, match=r"give both model folders"):
    validate.validate(config)
  config = load("opd_rock.py")
  config.rock.control = "frequency_matched"
  config.rock.warmup_steps = 0
  with pytest.raises(ValueError, match=r"rock.warmup_steps=0: expected 1\.\."):
    validate.validate(config)


def test_any_positive_prompt_width_or_0_validates():
  config = load("opd_rock.py")
  config.data.student_prompt_len = 96  # not a bucket: padded to 128
  config.data.teacher_prompt_len = 0  # measured from the data
  validate.validate(config)
  config.data.teacher_prompt_len = 65537
  with pytest.raises(ValueError, match=r"teacher_prompt_len=65537: expected"):
    validate.validate(config)


def test_cudnn_needs_16_bit_compute(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  config = load("opd_rock.py")
  config.student.attention_impl = "cudnn"
  with pytest.raises(
    ValueError,
    match=r"student.attention_impl='cudnn': expected a 16-bit compute dtype "
    r"for cuDNN \(this role computes in float32; set "
    r"student.compute_dtype=bfloat16",
  ):
    validate.validate(config)
  config.student.compute_dtype = "bfloat16"
  validate.validate(config)


def test_missing_model_folder_is_named(tmp_path):
  config = load("opd_rock.py")
  config.teacher.path = str(tmp_path / "missing")
  config.student.path = str(tmp_path)
  with pytest.raises(
    ValueError, match=r"teacher.path='.*missing'.*model folder"
  ):
    validate.validate(config)


def test_parse_kv_and_template_kwargs():
  assert fields.parse_kv("source=/d, field=prompt", "x") == {
    "source": "/d",
    "field": "prompt",
  }
  role = keys.model_config()
  role.template_kwargs = "enable_thinking=False,mode=fast"
  assert fields.template_kwargs(role, "student.template_kwargs") == {
    "enable_thinking": False,
    "mode": "fast",
  }


@pytest.mark.parametrize(
  "field, value, message",
  [
    (
      "loss.kind",
      "forward_kl",
      r"loss.kind='forward_kl': expected one of "
      r"\('reverse_kl', 'pg_reverse_kl'\) with teacher.cross_tokenizer=True",
    ),
    ("loss.temperature", 2.0, r"loss.temperature=2.0: expected 1.0 with"),
    ("loss.kd_ratio", 0.5, r"loss.kd_ratio=0.5: expected 1.0 with"),
    ("stage", "kd", r"stage='kd': expected 'opd' with teacher.cross_tokeni"),
    ("teacher.completion_len", -1, r"teacher.completion_len=-1: expected an"),
    (
      "embedded.teacher_vocab",
      100,
      r"embedded.teacher_vocab=100: expected "
      r"0, or 259 ids or more with teacher.cross_tokenizer=True",
    ),
  ],
)
def test_cross_tokenizer_values_name_the_field(field, value, message):
  config = load("opd_cross.py")
  validate.validate(config)
  set_fields(config, {field: value})
  with pytest.raises(ValueError, match=message):
    validate.validate(config)
  # A teacher tokenizer of its own needs the cross-tokenizer path.
  config = load("opd_rock.py")
  config.embedded.teacher_vocab = 300
  with pytest.raises(ValueError, match=r"embedded.teacher_vocab=300"):
    validate.validate(config)


def test_the_teachers_positions_hold_its_completion_width_across_tokenizers():
  config = load("opd_cross.py")
  config.teacher.completion_len = 300
  with pytest.raises(
    ValueError,
    match=r"teacher.completion_len=300: data.teacher_prompt_len \(0\) \+ "
    r"teacher.completion_len exceeds the teacher's "
    r"max_position_embeddings=256 \(the embedded models\); lower it to at "
    r"most 256",
  ):
    validate.validate(config)
  # 0 is twice the rollout budget: 60 + 2 x 100 > 250 though 60 + 100 fits.
  config.teacher.completion_len, config.rollout.max_new_tokens = 0, 100
  with pytest.raises(
    ValueError,
    match=r"teacher.completion_len=0: data.teacher_prompt_len \(60\) \+ "
    r"twice rollout.max_new_tokens \(200\) exceeds the teacher's "
    r"max_position_embeddings=250 \(here\); set it to at most 190",
  ):
    validate.check_positions(config, "teacher", 60, 250, "here")
  # Sampling on its own, the teacher's completion is the rollout budget.
  validate.check_positions(config, "teacher", 60, 250, "here", sampling=True)
  validate.check_positions(config, "student", 60, 250, "here")
