"""`open(config)`: what training and the analyses set up once, as a `Session`.

Joins the process group, validates the config, builds the mesh, prepares the
data (and, for the embedded task, the self-trained models), and loads both
models with their tokenizers. Every failure names the config field, folder or
example at fault, before any step runs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from rock_jax import embedded, evaluate, storage
from rock_jax import sharding as shd
from rock_jax.config import adapters, fields, placement, runtime, validate
from rock_jax.data import (
  builders,
  embedded_builder,
  loader,
  prompts,
  retokenize,
  tokenization,
)
from rock_jax.models import hf
from rock_jax.models.config import ModelConfig
from rock_jax.opd.train_step import Sharders, StepConfig
from rock_jax.rock import rock_set
from rock_jax.train import role_tokenizers, run_spec, widths

ROLES = prompts.ROLES


@dataclasses.dataclass(frozen=True)
class Role:
  """One model of the run: where it came from, its config, its layout and
  how its prompts are written (tokenizer, width, template variables)."""

  name: str
  path: str
  cfg: ModelConfig
  sharder: shd.Sharder
  prompt: prompts.PromptFormat

  @property
  def tokenizer(self):
    return self.prompt.tokenizer


@dataclasses.dataclass
class Session:
  """Both roles, their parameters, the data and the meshes of one run.

  `params` maps role names to parameters; the trainer moves the student's
  into its train state (`params.pop("student")`), so it is held once.
  `mesh` is the student's; the teacher's and the sampler's are their
  sharders' (the same mesh unless `teacher.devices` / `rollout.devices`
  give them their own, `rock_jax.config.placement`).
  """

  config: ml_collections.ConfigDict
  # The run's settings, read once (`run_spec.build`), and the jitted step's
  # (its `rock` the run's one policy).
  spec: run_spec.RunSpec
  step_cfg: StepConfig
  mesh: jax.sharding.Mesh
  student: Role
  teacher: Role
  # Where the student's rollouts are sampled: its mesh and rules.
  rollout: shd.Sharder
  placement: placement.Placement
  params: dict[str, Any]
  dataset_dir: str
  # The planted rock ids of the embedded task, else None.
  truth: frozenset[int] | None
  prepare_s: float
  # Re-tokenises completions for a teacher of another tokenizer
  # (`teacher.cross_tokenizer`), else None.
  retokenizer: retokenize.Retokenizer | None = None

  @property
  def sharders(self) -> Sharders:
    return Sharders(self.student.sharder, self.teacher.sharder)

  def role(self, name: str) -> Role:
    if name not in ROLES:
      raise ValueError(f"role={name!r}: expected one of {ROLES}")
    return getattr(self, name)

  def prompt_batch(self, examples) -> prompts.PromptBatch:
    """Both roles' padded prompts for this process's examples."""
    return prompts.make_prompt_batch(
      examples, student=self.student.prompt, teacher=self.teacher.prompt
    )

  def decoding(self, role: str) -> dict:
    """The `evaluate.greedy_batches` arguments naming who decodes."""
    return dict(
      role=role,
      student=self.student.prompt,
      teacher=self.teacher.prompt,
      sharder=self.role(role).sharder,
    )

  def evaluate(self, role: str, params, source, **kwargs) -> evaluate.Result:
    """Greedy accuracy of a role's model (`evaluate.accuracy` arguments)."""
    return evaluate.accuracy(
      self.role(role).cfg, params, source, **self.decoding(role), **kwargs
    )

  def open_split(self, split: str):
    """A split's records, after checking every prompt fits its width."""
    source = builders.open_split(self.dataset_dir, split)
    check_prompts(
      source,
      split,
      self.dataset_dir,
      (self.student.prompt, self.teacher.prompt),
    )
    return source

  def load_params(self, role: str, path: str, what: str):
    """Another checkpoint of a role's model, in the same layout; `what`
    names the field that gave its folder."""
    r = self.role(role)
    cfg, params = load_model(self.config[role], path, r.sharder)
    if cfg.vocab_size != r.cfg.vocab_size:
      raise ValueError(
        f"{what}={path!r}: vocab_size={cfg.vocab_size}, expected the "
        f"{role}'s {r.cfg.vocab_size} ({r.path})"
      )
    return params


def open(  # noqa: A001 (the module's verb)
  config: ml_collections.ConfigDict, *, student_path: str | None = None
) -> Session:
  """Validates `config` and sets up its run.

  Args:
    config: a training or analysis config.
    student_path: another student folder than the config's (an analysed
      run's export).

  Returns:
    The `Session`.
  """
  start = time.time()
  runtime.join_cluster(config)
  validate.validate(config)
  spec = run_spec.build(config)
  where = placement.plan(config)
  meshes = placement.meshes(config, where)
  mesh = meshes["student"]
  lead = jax.process_index() == 0
  if lead:
    print(
      f"mesh {dict(mesh.shape)} over {mesh.size} "
      f"{jax.devices()[0].platform} devices, {jax.process_count()} "
      "processes",
      flush=True,
    )
    for role in sorted(where.apart):
      print(
        f"{role} mesh {dict(meshes[role].shape)} on its own devices "
        f"{list(getattr(where, role))} (the student's: "
        f"{list(where.student)})",
        flush=True,
      )
  check_models_fit_the_data(config)
  # Process 0 prepares (TFDS renames race), the others then reuse.
  if jax.process_count() > 1 and not lead:
    multihost_utils.sync_global_devices("rock_jax: prepared")
  dataset_dir, paths, known = prepare(config)
  if jax.process_count() > 1 and lead:
    multihost_utils.sync_global_devices("rock_jax: prepared")
  prepare_s = time.time() - start
  if student_path:
    paths["student"] = student_path
  # Another student folder (an analysed run's export) is a plain model: a
  # LoRA run's export has its adapters merged in.
  adapted = () if student_path else ROLES
  roles, params, retokenizer = _load_roles(
    config, spec, meshes, paths, dataset_dir, known, adapted
  )
  rules = config.rollout.rules or config.student.rules
  student, teacher = roles["student"], roles["teacher"]
  protected = rock_set.answer_guard(
    spec.rocks.protect,
    builders.open_split(dataset_dir, config.data.train_split),
    student.tokenizer,
    spec.rocks.protect_examples,
    f"data.name={config.data.name!r}",
  )
  if spec.rocks.protect and not protected:
    print(
      f"rock.protect={spec.rocks.protect!r}: data.name="
      f"{config.data.name!r} has no reference answers; the rock set is "
      f"guarded by rock.min_loss_ratio={config.rock.min_loss_ratio} alone",
      flush=True,
    )
  return Session(
    config=config,
    spec=spec,
    step_cfg=spec.step_config(student.cfg, teacher.cfg, protected),
    retokenizer=retokenizer,
    mesh=mesh,
    student=student,
    teacher=teacher,
    rollout=shd.Sharder(meshes["rollout"], shd.get_rules(rules)),
    placement=where,
    params=params,
    dataset_dir=dataset_dir,
    truth=embedded_builder.planted_rocks(dataset_dir),
    prepare_s=prepare_s,
  )


def check_models_fit_the_data(config) -> None:
  """Fails unless model folders on the embedded data speak its vocabulary.

  `data.name` defaults to the embedded task, whose data only the embedded
  models (and what was distilled from them, e.g. a Stage-1 export) can read;
  a real model given without a dataset would otherwise wait for 20,000
  problems to be prepared and then fail on their prompts.
  """
  if not config.teacher.path or config.data.name != "embedded":
    return
  embedded_vocab = tokenization.build_embedded_tokenizer().get_vocab()
  # A teacher of another tokenizer reads the task's text, not its ids.
  cross = ("teacher",) if config.teacher.cross_tokenizer else ()
  for role in sorted(set(ROLES) - set(cross)):
    c = config[role]
    tokenizer = tokenization.load_tokenizer(
      c.tokenizer or c.path, chat_template=c.chat_template or None
    )
    vocab = tokenizer.get_vocab()
    if vocab != embedded_vocab:
      raise ValueError(
        f"{role}.path={c.path!r} with data.name='embedded': the data is "
        "still the embedded task (the default), but the "
        f"{role}'s vocabulary ({len(vocab)} ids) is not the task's "
        f"({len(embedded_vocab)}); set data.name to the dataset to train on "
        f"(one of {sorted(builders.BUILDERS)}, with data.options=source=...), "
        "or use a preset that sets it"
      )


def prepare(config) -> tuple[str, dict[str, str], dict[str, int] | None]:
  """Prepares the data (and, without model folders, the embedded models).

  Returns:
    `(dataset_dir, {role: model folder}, widths)`: the prompt widths
    (`widths.of_run`) when the embedded models were trained on them here,
    else None (they are resolved once the tokenizers load).
  """
  d = config.data
  # The splits the run opens: a missing one fails before any preparation.
  dataset_dir = prepare_data(
    config, [s for s in (d.train_split, d.eval_split) if s]
  )
  paths = {role: config[role].path for role in ROLES}
  # Own folders on the embedded data (e.g. a Stage-1 export as student).
  if d.name != "embedded" or config.teacher.path:
    return dataset_dir, paths, None
  tokenizers = dict.fromkeys(
    ROLES, embedded_builder.load_tokenizer(dataset_dir)
  )
  if config.embedded.teacher_vocab:  # a teacher across tokenizers
    tokenizers["teacher"] = tokenization.build_embedded_tokenizer(
      vocab_size=config.embedded.teacher_vocab
    )
  known = widths.of_run(config, dataset_dir, tokenizers)
  paths["teacher"], paths["student"] = embedded.prepare(
    dataset_dir,
    fields.cache_dir(config),
    teacher=sft_spec(config, "teacher", known["teacher"]),
    student=sft_spec(config, "student", known["student"]),
    difficulty=config.embedded.difficulty,
    # The dataset's tokenizer unless the teacher has its own.
    teacher_tokenizer=tokenizers["teacher"]
    if config.embedded.teacher_vocab
    else None,
  )
  return dataset_dir, paths, known


def prepare_data(config, splits) -> str:
  """Prepares (or reuses) `data.name`'s dataset; returns its folder.

  Args:
    config: a training config (its data and embedded fields).
    splits: the splits needed; a missing one fails before preparation.
  """
  d = config.data
  data_root = d.data_dir or storage.join(fields.cache_dir(config), "data")
  if d.name != "embedded":
    options = fields.parse_kv(d.options, "data.options")
    return builders.prepare(d.name, data_root, require_splits=splits, **options)
  e = config.embedded
  return builders.prepare(
    "embedded",
    data_root,
    require_splits=splits,
    difficulty=e.difficulty,
    train_size=e.train_size,
    test_size=e.test_size,
  )


def sft_spec(config, role: str, width: int | None = None) -> embedded.SFTSpec:
  """`config.embedded.<role>` as the recipe of the embedded model, on
  prompts up to `width` tokens (default: the configured width)."""
  return embedded.SFTSpec(
    **config.embedded[role].to_dict(),
    prompt_len=width or widths.resolve(config, role, None),
  )


def load_model(c: ml_collections.ConfigDict, path: str, sharder):
  """`(cfg, params)` of a model folder as the role config `c` lays it out."""
  cfg, params = hf.load(
    path, c.dtype, compute_dtype=c.compute_dtype or None, sharder=sharder
  )
  return role_model(cfg, c), params


def role_model(cfg: ModelConfig, c: ml_collections.ConfigDict) -> ModelConfig:
  """A folder's architecture with the role config's execution settings."""
  return cfg.replace(
    remat=c.remat,
    scan_unroll=c.scan_unroll,
    attention_impl=c.attention_impl,
    attention_block=c.attention_block,
    moe_chunk_size=c.moe_chunk_size,
  )


def _load_roles(config, spec, meshes, paths, dataset_dir, known, adapted):
  """Both roles (tokenizers, configs, layouts) and their parameters, with
  the prompt widths `known` or measured (`widths.of_run`); the `adapted`
  roles get their LoRA adapters (`<role>.lora`)."""
  for role, path in paths.items():
    if storage.is_url(path):
      storage.check_readable(path, f"{role}.path")
    if not storage.isfile(storage.join(path, "config.json")):
      raise FileNotFoundError(
        f"{role}.path={path!r}: no config.json there; expected a Hugging "
        "Face model folder (config.json + *.safetensors)"
      )
  # Readers of weights and tokenizers open local files: a URL is copied to
  # this machine once (checked, reused while the objects are unchanged).
  given, paths = paths, {role: storage.mirror(p) for role, p in paths.items()}
  tokenizers = {
    role: role_tokenizers.load(config, role, paths[role]) for role in ROLES
  }
  retokenizer = role_tokenizers.pair(config, tokenizers, paths, given)
  width = known or widths.of_run(config, dataset_dir, tokenizers)
  student_cfg = hf.load_config(paths["student"])
  for role in ROLES:
    limit = hf.load_config(paths[role]).max_position_embeddings
    validate.check_positions(config, role, width[role], limit, given[role])
  # A listed rock id against the vocabulary before anything is written.
  spec.rocks.check_vocab(student_cfg.vocab_size)
  roles, params = {}, {}
  for role in ROLES:
    c = config[role]
    sharder = shd.Sharder(meshes[role], shd.get_rules(c.rules))
    cfg, params[role] = load_model(c, paths[role], sharder)
    if role in adapted:
      cfg, params[role] = adapters.attach(
        cfg, params[role], c, sharder, config.seed
      )
    prompt = widths.format_of(
      role,
      tokenizers[role],
      width[role],
      fields.template_kwargs(c, f"{role}.template_kwargs"),
    )
    roles[role] = Role(role, given[role], cfg, sharder, prompt)
  return roles, params, retokenizer


def check_prompts(source, split: str, path: str, formats) -> None:
  """Fails before training on a prompt over its width.

  Every prompt is rendered with each role's template and counted, so a run
  never stops hours in on one long example.

  Args:
    source: the split's records.
    split, path: its name and dataset folder, for the message.
    formats: the roles' `PromptFormat`s.
  """
  records = loader.eval_batches(source, 512, process_index=0, process_count=1)
  too_long = []
  for examples in records:
    for f in formats:
      for e in examples:
        n = len(f.ids(e))
        if n > f.width:
          too_long.append((f.role, e.uid, n, f.width))
  if too_long:
    name, _, _, width = too_long[0]
    longest = max(n for r, _, n, _ in too_long if r == name)
    listed = ", ".join(
      f"{u!r} ({r}, {n} tokens)" for r, u, n, _ in too_long[:5]
    )
    raise ValueError(
      f"{len(too_long)} prompts of split {split!r} ({path}) exceed their "
      f"width, e.g. {listed}; the longest {name} prompt has {longest} "
      f"tokens: raise {widths.field(name)} (now {width}) to at least "
      f"{longest}, set it to 0 to measure it from the data, or filter the "
      "data"
    )


def task_of(source) -> str:
  """The verifier name of a split's first record ('' if ungraded)."""
  task = source[0]["task"]
  return task.decode() if isinstance(task, bytes) else task
