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
