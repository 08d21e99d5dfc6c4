"""`launch/evaluate.py` and `rock_jax.train.evaluation` on a finished tiny
run of the embedded task's data: its export, a checkpoint step, pass@k."""

import json
import re
import subprocess
import sys
import types

import pytest
import torch
import transformers
from process_helpers import cpu_env
from run_helpers import ROOT, tiny_config, tiny_overrides

from rock_jax import storage, train
from rock_jax.data import builders, loader, prompts, tokenization, verifiers
from rock_jax.train import evaluation, model_source, session

# The tiny models on the embedded task's data (their tokenizer is the
# task's), as test_train.py's embedded run.
EMBEDDED = {
  "data__name": "embedded",
  "data__options": "",
  "data__student_prompt_len": 32,
  "data__teacher_prompt_len": 32,
  "embedded__train_size": 64,
  "embedded__test_size": 16,
}


@pytest.fixture(scope="module")
def run(assets, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(assets, workdir, train__steps=2, **EMBEDDED)
  return workdir, train.run(config)


def _completions(out):
  return [json.loads(x) for x in open(out / "completions.jsonl")]


def test_the_export_reproduces_the_runs_accuracy_exactly(run, tmp_path):
  workdir, summary = run
  out = tmp_path / "export"
  command = [
    sys.executable,
    str(ROOT / "launch" / "evaluate.py"),
    f"--workdir={workdir}",
    f"--out={out}",
  ]
  done = subprocess.run(command, capture_output=True, text=True, env=cpu_env())
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((out / "accuracy.json").read_text())
  assert result["greedy_accuracy"] == summary["student_accuracy_after"]
  assert result["problems"] == summary["eval_problems"] == 8
  assert result["model"] == str(workdir / "export")
  rows = _completions(out)
  assert [r["correct"] for r in rows] == [
    bool(x) for x in summary["eval_correct"]
  ]
  assert all(r["decoding"] == "greedy" and r["prompt"] for r in rows)
  # Token for token: the completions the run logged at its last evaluation.
  logged = [json.loads(x) for x in open(workdir / "logs" / "metrics.jsonl")]
  final = [x["eval/samples"] for x in logged if "eval/samples" in x][-1]
  expected = [
    f"{'OK' if r['correct'] else 'WRONG'}: {r['prompt']!r} -> "
    f"{r['completion']!r}"
    for r in rows[:3]
  ]
  assert final.split("\n\n") == expected


def test_a_checkpoint_step_and_sampled_pass_at_k(run, tmp_path):
  workdir, summary = run
  config = model_source.run_config(workdir)
  # The last step's checkpoint holds the exported parameters.
  result = evaluation.run(
    config, str(tmp_path / "step"), workdir=str(workdir), step=2, samples=3
  )
  assert result["model"] == f"{workdir} step 2"
  assert result["greedy_accuracy"] == summary["student_accuracy_after"]
  assert 0 <= result["pass@1"] <= result["pass@2"] <= result["pass@3"] <= 1
  assert result["samples"] == 3 and result["temperature"] == 1.0
  rows = _completions(tmp_path / "step")
  sampled = [r for r in rows if r["decoding"] == "sampled"]
  assert len(sampled) == 3 * result["problems"]
  assert [r["sample"] for r in sampled[:3]] == [0, 1, 2]
  assert len({r["uid"] for r in sampled[:3]}) == 1
  correct = sum(r["correct"] for r in sampled)
  assert result["pass@1"] == pytest.approx(correct / len(sampled))
  with pytest.raises(ValueError, match=r"step 1: .* holds steps \[2\]"):
    evaluation.run(config, str(tmp_path / "x"), workdir=str(workdir), step=1)
  with pytest.raises(FileNotFoundError, match=r"no config.json there"):
    evaluation.run(config, str(tmp_path / "y"), folder=str(tmp_path))


def test_only_the_decoding_roles_prompts_must_fit_its_width(run, tmp_path):
  workdir, summary = run
  config = model_source.run_config(workdir)
  split = config.data.eval_split
  # The embedded teacher prompts carry the privileged style (25 to 27
  # tokens), the student's do not (under 20): 20 fits only the student's.
  config.data.teacher_prompt_len = 20
  result = evaluation.run(config, str(tmp_path), workdir=str(workdir))
  assert result["greedy_accuracy"] == summary["student_accuracy_after"]
  dataset_dir = session.prepare_data(config, [split])
  source = builders.open_split(dataset_dir, split)
  examples = [
    e
    for batch in loader.eval_batches(
      source, len(source), process_index=0, process_count=1
    )
    for e in batch
  ]
  model = types.SimpleNamespace(
    tokenizer=tokenization.build_embedded_tokenizer()
  )
  formats = evaluation.prompt_formats(
    config, model, dataset_dir, split, "student"
  )
  longest = {
    r: max(len(f.ids(e)) for e in examples) for r, f in formats.items()
  }
  assert longest["teacher"] > 20 >= longest["student"]
  # The student's width is the config's, padded as training padded it; the
  # teacher's prompts, never decoded, are as wide as the longest of them.
  assert (formats["student"].width, formats["student"].array_width) == (32, 32)
  assert formats["teacher"].width == longest["teacher"]
  assert formats["teacher"].array_width == longest["teacher"]
  # The decoding role's own width still binds, named in the error.
  config.data.student_prompt_len = longest["student"] - 1
  with pytest.raises(ValueError, match=r"raise data.student_prompt_len"):
    evaluation.run(config, str(tmp_path / "x"), workdir=str(workdir))
  # So does the model's position limit (the tiny models have 256).
  config.data.student_prompt_len = 32
  config.rollout.max_new_tokens = 256 - 32 + 1
  with pytest.raises(
    ValueError,
    match=r"data.student_prompt_len \(32\) \+ rollout.max_new_tokens exceeds "
    r"the student's max_position_embeddings=256 \(.*export\); lower it to at "
    r"most 224",
  ):
    evaluation.run(config, str(tmp_path / "y"), workdir=str(workdir))


def test_a_model_folder_at_a_url_on_gsm8k(assets, gcs):
  # The README's command: a model folder (here in a bucket) on a GSM8K
  # folder's test split, the prompt width measured, greedy and pass@k.
  model = storage.join(gcs, "student")
  storage.upload(assets["student"], model)
  out = storage.join(gcs, "eval")
  settings = {**tiny_overrides(assets), "data.student_prompt_len": 0}
  command = [
    sys.executable,
    str(ROOT / "launch" / "evaluate.py"),
    f"--model={model}",
    *[f"--config.{k}={v}" for k, v in settings.items()],
    "--samples=2",
    f"--out={out}",
  ]
  done = subprocess.run(command, capture_output=True, text=True, env=cpu_env())
  assert done.returncode == 0, done.stderr[-3000:]
  assert re.search(
    r"data.student_prompt_len=0: measured 64 \(the longest student prompt, "
    r"'[^']+' of split '\w+', has 47 tokens",
    done.stdout,
  )
  result = json.loads(storage.read_text(storage.join(out, "accuracy.json")))
  assert (result["model"], result["split"], result["problems"]) == (
    model,
    "test",
    8,
  )
  rows = [
    json.loads(x)
    for x in storage.read_text(storage.join(out, "completions.jsonl")).split(
      "\n"
    )
    if x
  ]
  verify = verifiers.get_verifier("gsm8k")
  for r in rows:
    assert r["correct"] == bool(verify(r["completion"], r["reference"]))
  greedy = [r for r in rows if r["decoding"] == "greedy"]
  sampled = [r for r in rows if r["decoding"] == "sampled"]
  assert len(greedy) == 8 and len(sampled) == 16
  assert result["greedy_accuracy"] == sum(r["correct"] for r in greedy) / 8
  # Sampled rows are problem-major: rows 2i and 2i + 1 are problem i's.
  assert [r["uid"] for r in sampled[::2]] == [r["uid"] for r in greedy]
  per_problem = [
    sampled[2 * i]["correct"] + sampled[2 * i + 1]["correct"] for i in range(8)
  ]
  assert result["pass@1"] == pytest.approx(sum(per_problem) / 16)
  assert result["pass@2"] == pytest.approx(sum(p > 0 for p in per_problem) / 8)
  # Greedy completions as transformers decodes the folder, one prompt alone.
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(
    assets["student"]
  )
  tokenizer = tokenization.load_tokenizer(assets["student"])
  for r in greedy[:2]:
    ids = prompts.encode(r["prompt"], tokenizer)
    with torch.no_grad():
      ref = hf_model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=settings["rollout.max_new_tokens"],
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
      )
    completion = ref[0, len(ids) :].tolist()
    text = tokenizer.decode(completion, skip_special_tokens=True)
    assert r["completion"] == text
