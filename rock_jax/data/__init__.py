"""Prompts, tokenizers and answer checkers for training and evaluation.

Modules, in dependency order:
  schema         the `Example` every dataset is converted to, TFDS features
  embedded_task  the CPU reasoning task with planted Rock Tokens
  verifiers      `score(completion, reference) -> bool` per task
  jsonl_formats  GSM8K, MATH and prompt JSONL records -> `Example`
  tokenization   Hugging Face tokenizers, the embedded tokenizer, vocab check
  builders       TFDS builders (array_record), `prepare`, `open_split`
  loader         seeded, process-sharded, resumable batches of examples
  prompts        teacher/student prompt rendering and padded id batches
  inspect        `python -m rock_jax.data.inspect`: look at what models see
"""
