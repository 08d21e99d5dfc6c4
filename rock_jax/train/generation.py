"""Completions of one model for given prompts, with the rollouts' engine.

Prompts are rendered with the model's chat template as a role's prompts are
in training (`prompts.PromptFormat`), left-padded to their bucket and sampled
by `sampler.generate` as the config's rollouts are (`rollout.temperature`,
`top_k`, `top_p`, `max_new_tokens`), in batches split over the mesh's batch
devices. One process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import jax
import ml_collections

from rock_jax import sharding as shd
from rock_jax.config import fields
from rock_jax.data import jsonl_formats, prompts, schema
from rock_jax.sampler import rollout
from rock_jax.sampler.sampling import Sampling
from rock_jax.train import widths


def read_prompts(path: str, field: str = "") -> list[schema.Example]:
  """The prompts of a JSONL file (local or gs://), one per line.

  Args:
    path: the file.
    field: the field holding each prompt, a string (one user turn) or a
      list of chat messages; "" takes `messages` where a line has it, else
      `prompt`.

  Returns:
    One `Example` per line (its uid `file:line`).
  """
  examples = []
  for where, record in jsonl_formats.read_jsonl(path):
    name = field or ("messages" if "messages" in record else "prompt")
    examples.append(jsonl_formats.prompt_example(record, where, field=name))
  if not examples:
    raise ValueError(f"{path}: no prompts (an empty file)")
  return examples


def chat_example(messages: Sequence[dict]) -> schema.Example:
  """A conversation so far as an `Example` to prompt with."""
  turns = schema.check_messages(list(messages), "chat")
  return schema.Example(uid="chat", task="", messages=turns)


@dataclasses.dataclass(frozen=True)
class Generator:
  """A model, the role whose prompt format it takes, and how it samples."""

  model: object  # model_source.Model
  role: str
  template_kwargs: dict
  sampling: Sampling
  max_new_tokens: int
  batch_size: int
  sharder: shd.Sharder

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, model, role, sharder):
    """The config's rollout settings for `model` in `role`."""
    if jax.process_count() > 1:
      raise ValueError(
        f"{jax.process_count()} processes: generation runs in one process "
        "(it splits its batches over that process's devices)"
      )
    r = config.rollout
    return cls(
      model=model,
      role=role,
      template_kwargs=fields.template_kwargs(
        config[role], f"{role}.template_kwargs"
      ),
      sampling=Sampling(
        temperature=r.temperature, top_k=r.top_k, top_p=r.top_p
      ),
      max_new_tokens=r.max_new_tokens,
      batch_size=config.train.eval_batch_size,
      sharder=sharder,
    )

  def prompt_text(self, example: schema.Example) -> str:
    """The rendered prompt the model continues."""
    return self._format(0).text(example)

  def _format(self, width: int) -> prompts.PromptFormat:
    return widths.format_of(
      self.role, self.model.tokenizer, width, self.template_kwargs
    )

  def _check_positions(self, uid: str, longest: int) -> None:
    """Raises unless a batch's longest prompt (`uid`'s) and the completion
    fit the model's positions (it was not trained past them)."""
    limit = self.model.cfg.max_position_embeddings
    if longest + self.max_new_tokens > limit:
      raise ValueError(
        f"prompt {uid!r} has {longest} tokens: with rollout.max_new_tokens="
        f"{self.max_new_tokens} it exceeds the model's max_position_embeddings"
        f"={limit}; shorten it or lower rollout.max_new_tokens to at most "
        f"{limit - longest}"
      )

  def complete(
    self, examples: Iterable[schema.Example], num_samples: int, seed: int
  ) -> Iterator[tuple[schema.Example, list[str]]]:
    """Yields each example with its `num_samples` completions' texts.

    Batch i samples with `fold_in(key(seed), i)`; a batch is filled up with
    repeats of its last prompt to split evenly over the devices.
    """
    examples = list(examples)
    tokenizer = self.model.tokenizer
    devices = self.sharder.mesh.shape.get("data", 1) * (
      self.sharder.mesh.shape.get("fsdp", 1)
    )
    size = -(-self.batch_size // devices) * devices
    sharding = self.sharder.sharding((shd.BATCH, shd.LENGTH))
    for i in range(0, len(examples), size):
      batch = examples[i : i + size]
      filled = batch + [batch[-1]] * (size - len(batch))
      lengths = [len(self._format(0).ids(e)) for e in batch]
      longest = max(lengths)
      self._check_positions(batch[lengths.index(longest)].uid, longest)
      tokens, mask = self._format(longest).pad(filled)
      tokens, mask = shd.to_global((tokens, mask), sharding)
      out = rollout.generate(
        self.model.cfg,
        self.model.params,
        tokens,
        mask,
        jax.random.fold_in(jax.random.key(seed), i // size),
        self.max_new_tokens,
        self.sampling,
        num_samples=num_samples,
        crop=False,
        sharder=self.sharder,
      )
      width = out.tokens.shape[1] - tokens.shape[1]
      ids = shd.to_local(out.tokens)[:, -width:]
      kept = shd.to_local(out.completion_mask)[:, -width:]
      for b, example in enumerate(batch):
        rows = range(b * num_samples, (b + 1) * num_samples)
        texts = [
          tokenizer.decode(ids[r][kept[r]].tolist(), skip_special_tokens=True)
          for r in rows
        ]
        yield example, texts
