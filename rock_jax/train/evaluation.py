"""`run(config, ...)`: one model's accuracy on a dataset split, written as
`accuracy.json` and `completions.jsonl`.

Greedy accuracy is measured as training's evaluations and summary.json
measure it (the config's widths, `rollout.max_new_tokens`,
`train.eval_batch_size`, `train.eval_examples`); with `samples` > 0 each
problem also gets that many completions sampled as the config's rollouts are
(`rollout.temperature`, `top_k`, `top_p`), scored as unbiased pass@k. The
problems are split over the mesh's batch devices and the processes as in
training.
"""

from __future__ import annotations

import json

import jax
import ml_collections

from rock_jax import evaluate, metrics, storage
from rock_jax.config import fields, runtime, validate
from rock_jax.data import builders, prompts
from rock_jax.data.prompts import ROLES
from rock_jax.sampler.sampling import Sampling
from rock_jax.train import model_source, session, widths


def prompt_formats(config, model, dataset_dir: str, split: str, role: str):
  """Both roles' prompt formats with the model's tokenizer.

  The decoding `role`'s width is the config's (measured over the run's
  splits and `split` for 0), so its prompts are padded as training padded
  them. The other role's prompts are only rendered beside it
  (`evaluate.graded_batches`) and never decoded: its width is the longest
  of `split`, rendered with this model's tokenizer, so a width the config
  set for another tokenizer cannot fail the evaluation.
  """
  tok = model.tokenizer
  kwargs = {
    r: fields.template_kwargs(config[r], f"{r}.template_kwargs") for r in ROLES
  }
  width = widths.of_run(config, dataset_dir, {role: tok}, (split,), (role,))
  (other,) = set(ROLES) - {role}
  source = {split: builders.open_split(dataset_dir, split)}
  unbounded = prompts.PromptFormat(other, tok, 0, kwargs[other])
  longest = widths.measure(source, [unbounded])[other].tokens
  return {
    role: widths.format_of(role, tok, width[role], kwargs[role]),
    # Not bucketed: no compiled program takes these arrays.
    other: prompts.PromptFormat(other, tok, max(longest, 1), kwargs[other]),
  }


def _rows(graded, fmt, decoding: str):
  """One JSON-able row per graded completion of a batch."""
  rows = []
  for r, (text, ok) in enumerate(
    zip(graded.texts, graded.correct, strict=True)
  ):
    example = graded.examples[r // graded.num_samples]
    rows.append(
      {
        "uid": example.uid,
        "decoding": decoding,
        "sample": r % graded.num_samples,
        "prompt": fmt.text(example),
        "completion": text,
        "correct": ok,
        "reference": example.reference,
      }
    )
  return rows


def _load(config, role: str, split: str, **where):
  """The model (`where`: `model_source.load`'s folder, workdir, step), its
  layout, the split and the prompt formats, checked against its widths and
  positions before anything is decoded."""
  d = config.data
  # A width of 0 is measured as training measured it, over its splits too.
  auto = d[f"{role}_prompt_len"] == widths.AUTO
  needed = [split, *((d.train_split, d.eval_split) if auto else ())]
  dataset_dir = session.prepare_data(
    config, list(dict.fromkeys(s for s in needed if s))
  )
  sharder = model_source.sharder_for(config, role)
  model = model_source.load(config, role, sharder, **where)
  source = builders.open_split(dataset_dir, split)
  formats = prompt_formats(config, model, dataset_dir, split, role)
  session.check_prompts(source, split, dataset_dir, [formats[role]])
  limit = model.cfg.max_position_embeddings
  validate.check_positions(
    config, role, formats[role].width, limit, model.name, sampling=True
  )
  return model, sharder, source, formats


def run(
  config: ml_collections.ConfigDict,
  out_dir: str,
  *,
  folder: str = "",
  workdir: str = "",
  step: int = 0,
  role: str = "student",
  split: str = "",
  samples: int = 0,
  seed: int = 0,
) -> dict:
  """Evaluates a model folder, or a run's export or checkpoint step.

  Args:
    config: lays the model out and names the data (a run's config.json for
      its work directory, `model_source.run_config`).
    out_dir: where accuracy.json and completions.jsonl go (folder or URL;
      process i > 0 writes completions.<i>.jsonl).
    folder, workdir, step: the model (`model_source.load`).
    role: whose prompts, tokenizer settings and layout the model takes.
    split: the dataset split (default `data.eval_split`).
    samples: sampled completions per problem for pass@k (0: greedy only).
    seed: the samples' key.

  Returns:
    The accuracy dict written to accuracy.json.
  """
  runtime.join_cluster(config)
  validate.evaluation(config, role)
  split = split or config.data.eval_split
  if not split:
    raise ValueError("data.eval_split='': name the split to evaluate on")
  model, sharder, source, formats = _load(
    config, role, split, folder=folder, workdir=workdir, step=step
  )
  num_examples = config.train.eval_examples
  kwargs = dict(
    role=role,
    **formats,
    max_new_tokens=config.rollout.max_new_tokens,
    batch_size=config.train.eval_batch_size,
    num_examples=num_examples,
    sharder=sharder,
  )
  total = len(evaluate.head(source, num_examples))
  rows, greedy = [], []
  for graded in evaluate.greedy_batches(
    model.cfg, model.params, source, **kwargs
  ):
    rows += _rows(graded, formats[role], "greedy")
    greedy += graded.correct
  correct = evaluate.gather_per_example(greedy, total)
  result = {
    "model": model.name,
    "role": role,
    "split": split,
    "problems": len(correct),
    "greedy_correct": int(correct.sum()),
    "greedy_accuracy": float(correct.sum() / max(len(correct), 1)),
  }
  if samples:
    r = config.rollout
    sampling = Sampling(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p)
    counts = []
    for graded in evaluate.graded_batches(
      model.cfg,
      model.params,
      source,
      sampling=sampling,
      num_samples=samples,
      seed=seed,
      **kwargs,
    ):
      rows += _rows(graded, formats[role], "sampled")
      for b in range(graded.real):
        counts.append(sum(graded.correct[b * samples : (b + 1) * samples]))
    counts = evaluate.gather_per_example(counts, total)
    result.update(samples=samples, temperature=r.temperature, seed=seed)
    result.update(top_k=r.top_k, top_p=r.top_p)
    for k in range(1, samples + 1):
      scores = [evaluate.pass_at_k(samples, int(c), k) for c in counts]
      result[f"pass@{k}"] = sum(scores) / max(len(scores), 1)
  _write(out_dir, result, rows)
  return result


def _write(out_dir: str, result: dict, rows: list[dict]) -> None:
  index = jax.process_index()
  name = "completions.jsonl" if index == 0 else f"completions.{index}.jsonl"
  storage.makedirs(out_dir)
  storage.write_text(
    storage.join(out_dir, name),
    "".join(json.dumps(row) + "\n" for row in rows),
  )
  if index == 0:
    metrics.write_json(storage.join(out_dir, "accuracy.json"), result)
