"""Shared pieces of the cross-tokenizer tests: texts that stress alignment."""

# Digits, LaTeX, markdown, whitespace runs, CJK and emoji (multi-byte
# characters that byte-level BPE cuts inside, joiners, flags).
TEXTS = {
  "digits": "The sum 12345 + 678 = 13023, and 0.5% of 1,000,000.",
  "latex": r"$\frac{a^2}{b_1} + \sqrt{x}$ and \(\sum_{i=1}^{n} i\)",
  "markdown": "# Title\n\n- **bold** and `code`\n\n```py\nx = 1\n```\n",
  "whitespace": "a   b\t\tc\n\n\n  d    \n\t end  ",
  "cjk": "中文的句子，测试一下。日本語もあります。한국어",
  "emoji": "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷 end",
}


def make_cross_teacher(folder, vocab_size=300, seed=5):
  """A tiny random teacher folder with its own tokenizer: the embedded
  task's byte-level BPE stopped at `vocab_size` ids (other pieces, other
  ids than the students' 337-id one), ChatML template."""
  import hf_helpers  # noqa: PLC0415 (imports torch)

  from rock_jax.data import tokenization  # noqa: PLC0415

  tokenizer = tokenization.build_embedded_tokenizer(vocab_size=vocab_size)
  hf_helpers.make_model(
    "qwen3",
    str(folder),
    seed=seed,
    vocab_size=len(tokenizer),
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
  )
  tokenizer.save_pretrained(folder)
  return str(folder)
