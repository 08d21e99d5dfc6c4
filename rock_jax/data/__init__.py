"""Prompts, tokenizers and answer checkers for training and evaluation, and
the embedded task (its self-trained models are `rock_jax.embedded`).

Modules, in dependency order:
  schema            the `Example` of every dataset, TFDS features and base
  embedded_task     the CPU reasoning task with planted Rock Tokens
  verifiers         `score(completion, reference) -> bool` per task
  jsonl_formats     GSM8K, MATH and prompt JSONL records -> `Example`
  tokenization      Hugging Face tokenizers, the embedded tokenizer, vocab check
  embedded_builder  TFDS builder of the embedded task (+ tokenizer, rock.json)
  jsonl_builders    TFDS builders of local GSM8K, MATH-500 and prompt files
  builders          datasets by name: `prepare`, `open_split`, `split_sizes`
  loader            seeded, process-sharded, resumable batches of examples
  prompts           each role's `PromptFormat`, padded id batches of both
  inspect           `python -m rock_jax.data.inspect`: what the models see
"""
