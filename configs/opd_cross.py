"""Cross-tokenizer OPD: the teacher reads each completion in its own tokens.

The student samples with its tokenizer and chat template; each completion's
text is re-tokenised by the teacher's tokenizer after the teacher's own
prompt, the two tokenisations are aligned by their text, and the loss is the
exact reverse KL where a span is one token on both sides with the same
string, the span log-ratio as a policy-gradient reward elsewhere
(docs/cross_tokenizer.md). Otherwise `opd_rock.py`'s experiment.

Embedded task (CPU, minutes): the teacher is trained here with its own
byte-level BPE of 300 ids (the student's has 337: words split into other
pieces, under other ids), the student is the embedded default's:

  python launch/train.py --config=configs/opd_cross.py

A real pair of two families, e.g. a DeepSeek-R1 distilled teacher for a
Qwen3 student:

  python launch/train.py --config=configs/opd_cross.py:qwen3_8b_to_1p7b,h100x8 \
      --config.teacher.path=/models/DeepSeek-R1-Distill-Llama-8B \
      --config.student.path=/models/Qwen3-1.7B \
      --config.data.options=source=/data/openthoughts_math
"""

from rock_jax.config import presets


def get_config(arg=None):
  opd_rock = presets.load_sibling(__file__, "opd_rock.py")
  c = opd_rock.experiment(arg, "opd_cross", lam=0.0)
  c.teacher.cross_tokenizer = True
  # The teacher's prompts are measured in its own tokens.
  c.data.teacher_prompt_len = 0
  if not presets.is_model_pair(arg):
    c.embedded.teacher_vocab = 300
  return c
