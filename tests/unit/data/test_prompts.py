"""Teacher/student rendering from one example, padding and batching."""

import numpy as np
import pytest

from rock_jax.data import embedded_task, prompts, schema, tokenization

USER = {"role": "user", "content": "What is 2+2?"}


@pytest.fixture(scope="module")
def tok():
  return tokenization.build_embedded_tokenizer()


def _example(uid="a", messages=(USER,), privileged="style: terse"):
  return schema.Example(
    uid=uid,
    task="embedded",
    messages=messages,
    privileged=privileged,
    reference="4",
  )


def test_privileged_text_goes_to_the_teacher_only():
  example = _example()
  assert prompts.student_messages(example) == [USER]
  assert prompts.teacher_messages(example) == [
    {"role": "system", "content": "style: terse"},
    USER,
  ]
  system = {"role": "system", "content": "Be brief."}
  merged = prompts.teacher_messages(_example(messages=(system, USER)))
  assert merged == [
    {"role": "system", "content": "style: terse\n\nBe brief."},
    USER,
  ]
  plain = _example(privileged="")
  assert prompts.teacher_messages(plain) == prompts.student_messages(plain)


def test_rendering_uses_each_sides_template(tok, tmp_path):
  example = _example()
  assert prompts.render_student_prompt(example, tok) == (
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
  )
  tok.save_pretrained(tmp_path)
  other = tokenization.load_tokenizer(
    tmp_path,
    chat_template="{% for m in messages %}{{ m['role'][0] }}:"
    "{{ m['content'] }}|{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}",
  )
  assert prompts.render_teacher_prompt(example, other) == (
    "s:style: terse|u:What is 2+2?|a:"
  )


def test_prompt_batch_is_left_padded_per_side(tok):
  problems = embedded_task.sample_problems(embedded_task.TaskConfig(), 5, 0)
  examples = [
    embedded_task.to_example(p, str(i)) for i, p in enumerate(problems)
  ]
  batch = prompts.make_prompt_batch(
    examples,
    student=prompts.PromptFormat("student", tok, 24),
    teacher=prompts.PromptFormat("teacher", tok, 32),
  )
  assert batch.student_tokens_BxP.shape == (5, 24)
  assert batch.teacher_tokens_BxP.shape == (5, 32)
  assert batch.student_tokens_BxP.dtype == np.int32
  assert batch.teacher_mask_BxP.dtype == bool
  # Left padding: the last column is real in every row, and masks are
  # contiguous runs that end there.
  for mask in (batch.student_mask_BxP, batch.teacher_mask_BxP):
    assert mask[:, -1].all()
    assert (np.diff(mask.astype(int), axis=1) >= 0).all()
  for b, example in enumerate(examples):
    student = batch.student_tokens_BxP[b][batch.student_mask_BxP[b]]
    teacher = batch.teacher_tokens_BxP[b][batch.teacher_mask_BxP[b]]
    assert tok.decode(student) == prompts.render_student_prompt(example, tok)
    assert tok.decode(teacher) == prompts.render_teacher_prompt(example, tok)
  assert (batch.student_tokens_BxP[~batch.student_mask_BxP] == 0).all()
  for role in prompts.ROLES:
    tokens, mask = batch.of(role)
    assert tokens is getattr(batch, f"{role}_tokens_BxP")
    assert mask is getattr(batch, f"{role}_mask_BxP")
  assert batch.references == [e.reference for e in examples]
  assert batch.tasks == ["embedded"] * 5


def test_too_long_prompt_names_the_example(tok):
  with pytest.raises(
    ValueError,
    match=r"teacher prompt of example 'x' has "
    r"\d+ tokens, more than the width 20",
  ):
    prompts.make_prompt_batch(
      [_example(uid="x")],
      student=prompts.PromptFormat("student", tok, 20),
      teacher=prompts.PromptFormat("teacher", tok, 20),
    )


def test_prompts_pad_to_the_padded_width_but_stop_at_the_width(tok):
  example = _example(uid="x")
  n = len(prompts.PromptFormat("student", tok, 64).ids(example))
  fmt = prompts.PromptFormat("student", tok, n, padded_width=n + 5)
  tokens, mask = fmt.pad([example])
  assert tokens.shape == (1, n + 5) and mask.sum() == n
  assert not mask[0, :5].any()
  narrow = prompts.PromptFormat("student", tok, n - 1, padded_width=n + 5)
  with pytest.raises(ValueError, match=f"has {n} tokens, more than the "):
    narrow.pad([example])
  with pytest.raises(ValueError, match="padded_width=3: expected 0 or at"):
    prompts.PromptFormat("student", tok, 4, padded_width=3)


def test_teacher_scores_prompt_ids_plus_completion_ids(tok):
  """Concatenating ids equals encoding the concatenated text, so a student
  completion can be scored under the teacher prompt without re-tokenizing."""
  for i, problem in enumerate(
    embedded_task.sample_problems(embedded_task.TaskConfig(), 50, 1)
  ):
    example = embedded_task.to_example(problem, str(i))
    prompt = prompts.render_teacher_prompt(example, tok)
    assert prompts.encode(prompt, tok) + prompts.encode(
      example.solution, tok
    ) == prompts.encode(prompt + example.solution, tok)


def test_completions_are_right_padded_with_eos(tok):
  tokens, mask = prompts.encode_completions(
    ["So the answer is $4$", ""], tok, 10
  )
  n = len(prompts.encode("So the answer is $4$", tok))
  assert mask.sum(axis=1).tolist() == [n + 1, 1]
  assert tokens[0, n] == tok.eos_token_id == tokens[1, 0]
  assert mask[0, : n + 1].all() and not mask[0, n + 1 :].any()
  with pytest.raises(
    ValueError, match=r"completion 0 .* more than the length 3"
  ):
    prompts.encode_completions(["So the answer is $4$"], tok, 3)
