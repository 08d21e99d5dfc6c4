"""The OPD step as `launch/train.py` runs it: where its time goes, phase by
phase, against what each phase must cost on this machine.

Two sizes (`--size`):
  qwen3: a random Qwen3 teacher (D 128, 4 layers) and student (D 64,
    2 layers) at the published Qwen3 tokenizer's 151,936 rows, saved as
    Hugging Face folders with that tokenizer; 8 GSM8K-format prompts of
    64 tokens, 64 sampled tokens at temperature 1 (the peers' comparison
    in ../shared/peers.md).
  embedded: the embedded default's cached teacher and student and task
    (`configs/opd_rock.py` with no argument).
Both run `configs/opd_rock.py`'s recipe (exact reverse KL, the tracker)
with `train.log_every=1` through `rock_jax.train.loop.Loop`, the object
`launch/train.py` drives.

Timed as interleaved medians in one process (each block of `--steps`
loop steps to completion, then each phase alone, blocked on):
  step_s: the loop's seconds per step (sampling, update, logging).
  phases: each phase's seconds, its share of step_s, its floor on this
    machine (FLOPs over the matmul probe's rate; for sampling the larger of
    that and the bytes decode must read over the bandwidth probe's rate)
    and floor / seconds:
      sampling: the rollout (prefill, KV-cache decode) of a rendered
        batch;
      teacher: the teacher's layers over the batch;
      student: the update minus the teacher (the student's forward and
        backward through the chunked loss with the teacher's LM head,
        AdamW, the tracker);
      host: step_s minus sampling and update: the loop's own work between
        steps that the devices do not hide (negative: all hidden, and
        noise).
    and for sampling, teacher and student, gemm_s and gemm_over_s: the
    phase's matmuls alone at their own shapes (`gemm_floor`: at D 64 most
    of them are far too small for the 2048^3 rate) and that time over the
    phase's.
  host_busy_ms_per_step: the CPU time of the loop's thread per step
    (dispatching, logging; waits excluded), hidden or not.
  feed_ms_per_step: reading, rendering and placing a batch's prompts, which
    the loop's feed does on its own thread a step ahead
    (`rock_jax.data.feed`), timed alone.
  step_over_matmul: model FLOPs of sampling and update over step_s, over
    the matmul probe's FLOP/s (`benchmarks/train_step.py`'s terms, whole
    step); update_over_matmul: the update's alone (its step_over_matmul).
  gemm_ceiling: the step_over_matmul of a step that ran nothing but its
    matmuls (FLOPs over the phases' gemm_s, over the probe's FLOP/s): the
    most these shapes allow on this machine.
  step_over_gemm: the phases' gemm_s summed over step_s.

  python benchmarks/opd_step.py --size=qwen3     # needs ../shared/tokenizers
  python benchmarks/opd_step.py --size=embedded  # trains the models once
"""

import argparse
import collections
import functools
import json
import pathlib
import tempfile
import time

import gemm_floor
import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians, print_result
from cross_tokenizer import add_tokenizers_argument, tokenizers

from rock_jax import models
from rock_jax.config import presets
from rock_jax.data import loader
from rock_jax.models import hf
from rock_jax.opd.train_step import score_teacher
from rock_jax.train import session as session_lib
from rock_jax.train.loop import Loop

QWEN3_VOCAB = 151936
QWEN3_PAIR = {
  "teacher": dict(hidden_size=128, intermediate_size=384, num_layers=4),
  "student": dict(hidden_size=64, intermediate_size=192, num_layers=2),
}


def qwen3_assets(folder: pathlib.Path, tokenizer_dir: str) -> dict:
  """Random Qwen3 teacher and student folders with the published Qwen3
  tokenizer, and a GSM8K-format source."""
  tokenizer = tokenizers(pathlib.Path(tokenizer_dir), str(folder / "tok"))[
    "qwen3"
  ]
  eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
  out = {}
  for seed, (role, shape) in enumerate(QWEN3_PAIR.items()):
    cfg = models.ModelConfig(
      model_type="qwen3",
      vocab_size=QWEN3_VOCAB,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      qk_norm=True,
      tie_word_embeddings=role == "student",
      max_position_embeddings=1024,
      eos_token_id=(eos,),
      pad_token_id=tokenizer.pad_token_id,
      **shape,
    )
    out[role] = str(folder / role)
    params = models.init(cfg, jax.random.key(seed))
    hf.save(cfg, params, out[role], tokenizer=tokenizer)
  source = folder / "gsm8k"
  source.mkdir()
  rng = np.random.default_rng(0)
  for split, n in (("train", 64), ("test", 8)):
    with open(source / f"{split}.jsonl", "w") as f:
      for a, b in rng.integers(1, 50, (n, 2)):
        question = f"Tom has {a} apples and buys {b}. How many now?"
        answer = f"He has {a} + {b} = {a + b}.\n#### {a + b}"
        f.write(json.dumps({"question": question, "answer": answer}) + "\n")
  out["source"] = str(source)
  return out


def config_for(size: str, folder: pathlib.Path, tokenizer_dir: str):
  """`configs/opd_rock.py`'s config at `size`, logging every step."""
  c = presets.base("", "opd_rock")
  c.rock.lam = 0.0
  c.workdir = str(folder / "run")
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.checkpoint_every = 100000
  c.train.export = False
  if size == "qwen3":
    a = qwen3_assets(folder, tokenizer_dir)
    c.teacher.path, c.student.path = a["teacher"], a["student"]
    c.data.name, c.data.options = "gsm8k", f"source={a['source']}"
    c.data.student_prompt_len = c.data.teacher_prompt_len = 64
    c.rollout.max_new_tokens = 64
    c.train.batch_size = 8
  return c


def param_bytes(params) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))


def kv_bytes(cfg, batch: int, prompt: int, new: int) -> int:
  """Keys and values decode reads: every layer's cache up to each step."""
  per_position = 2 * cfg.num_kv_heads * cfg.head_dim * 4 * cfg.num_layers
  return batch * per_position * sum(prompt + i for i in range(new))


def probes():
  """`(matmul FLOP/s, read bytes/s)`: a jitted 2048^3 float32 matmul and a
  jitted sum over 256 MiB, interleaved medians of 5."""
  size = 2048
  a = jax.random.normal(jax.random.key(3), (size, size), jnp.float32)
  big = jnp.ones((64 * 2**20,), jnp.float32)
  matmul, total = jax.jit(lambda x: x @ x), jax.jit(jnp.sum)
  t = interleaved_medians(
    {"matmul": lambda: matmul(a), "read": lambda: total(big)}, repeats=5
  )
  return 2 * size**3 / t["matmul"], big.nbytes / t["read"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=("qwen3", "embedded"), default="qwen3")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=4)
  add_tokenizers_argument(parser)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    config = config_for(args.size, pathlib.Path(tmp), args.tokenizers)
    config.train.steps = 100000
    session = session_lib.open(config)
    d = config.data
    sources = (session.open_split(d.train_split), None)
    loop = Loop.create(config, session, config.workdir, sources)
    reader = loader.Loader(sources[0], config.train.batch_size)
    result = measure(loop, reader, args)
    loop.writer.close()
    loop.ckpt.close()
  print_result({"benchmark": "opd_step", "size": args.size, **result})


def measure(loop: Loop, reader: loader.Loader, args) -> dict:
  """The loop's seconds per step and its phases', interleaved; `reader`
  reads the training split as the loop's feed does."""
  key = jax.random.key(loop.config.seed)
  loop.start()
  for _ in range(3):  # compile every program the loop runs
    loop.advance(key)
  pipeline, session = loop.pipeline, loop.session
  prompts = next(loop.data)
  teacher = session.params["teacher"]

  def sampling():
    # The loop's updates donate the student's weights: read them anew.
    return pipeline.sample(prompts, key, loop.params("student"))

  batch = sampling()
  teacher_forward = jax.jit(functools.partial(score_teacher, session.step_cfg))

  busy = []

  def loop_steps():
    start = time.thread_time()
    for _ in range(args.steps):
      loop.advance(key)
    busy.append((time.thread_time() - start) / args.steps)
    return loop.state

  def update():
    loop.state, metrics = loop.step_fn(
      loop.state, teacher, batch, loop.rocks.static_V
    )
    return metrics

  fns = {
    "feed": lambda: pipeline.place(next(reader)),
    "step": loop_steps,
    "sampling": sampling,
    "teacher": lambda: teacher_forward(teacher, batch),
    "update": update,
  }
  t = interleaved_medians(fns, repeats=args.repeats)
  t["step"] /= args.steps
  t["host_busy"] = float(np.median(busy[-args.repeats :]))
  peak, bandwidth = probes()
  return report(loop, batch, t, peak, bandwidth)


def report(loop: Loop, batch, t: dict, peak: float, bandwidth: float):
  """The phases' seconds, shares and floors, as one JSON-able dict."""
  session = loop.session
  s_cfg, t_cfg = session.student.cfg, session.teacher.cfg
  rows, prompt = batch.student_tokens_BxS.shape
  new = batch.completion_mask_BxN.shape[1]
  prompt -= new
  length = prompt + new
  # The teacher's phase is its layers; its LM head runs inside the loss, on
  # the completion's positions (the student's phase).
  student_forward = gemm_floor.forward_gemms(s_cfg, rows, length)
  gemms = {
    "sampling": gemm_floor.decode_gemms(s_cfg, rows, prompt, new),
    "teacher": gemm_floor.forward_gemms(t_cfg, rows, length, head=False),
    "student": student_forward
    + gemm_floor.backward_gemms(student_forward)
    + collections.Counter(
      {(1, rows * new, t_cfg.hidden_size, t_cfg.vocab_size): 1}
    ),
  }
  flops = {name: gemm_floor.flops(g) for name, g in gemms.items()}
  matmuls = gemm_floor.seconds(gemms)
  decode_bytes = new * param_bytes(loop.params("student")) + kv_bytes(
    s_cfg, rows, prompt, new
  )
  seconds = {
    "sampling": t["sampling"],
    "teacher": t["teacher"],
    "student": max(t["update"] - t["teacher"], 0.0),
    # Negative when the devices hide all of it (and then some noise).
    "host": t["step"] - t["sampling"] - t["update"],
  }
  floors = {name: f / peak for name, f in flops.items()}
  floors["sampling"] = max(floors["sampling"], decode_bytes / bandwidth)
  phases = {
    name: {
      "s": round(s, 4),
      "share": round(s / t["step"], 3),
      **(
        {
          "floor_s": round(floors[name], 4),
          "floor_over_s": round(floors[name] / s, 3) if s else None,
          "gemm_s": round(matmuls[name], 4),
          "gemm_over_s": round(matmuls[name] / s, 3) if s else None,
        }
        if name in floors
        else {}
      ),
    }
    for name, s in seconds.items()
  }
  update_flops = flops["teacher"] + flops["student"]
  return {
    "device": jax.devices()[0].device_kind,
    "shape": f"{rows} x ({prompt} + {new}) tokens, V {s_cfg.vocab_size}, "
    f"student D {s_cfg.hidden_size} x {s_cfg.num_layers}, teacher D "
    f"{t_cfg.hidden_size} x {t_cfg.num_layers}",
    "step_s": round(t["step"], 4),
    "update_s": round(t["update"], 4),
    "host_ms_per_step": round(1e3 * seconds["host"], 1),
    "host_busy_ms_per_step": round(1e3 * t["host_busy"], 1),
    "feed_ms_per_step": round(1e3 * t["feed"], 1),
    "phases": phases,
    "matmul_gflops": round(peak / 1e9, 1),
    "read_gbps": round(bandwidth / 1e9, 1),
    "step_over_matmul": round(
      (update_flops + flops["sampling"]) / t["step"] / peak, 3
    ),
    "update_over_matmul": round(update_flops / t["update"] / peak, 3),
    "gemm_ceiling": round(
      sum(flops.values()) / sum(matmuls.values()) / peak, 3
    ),
    "step_over_gemm": round(sum(matmuls.values()) / t["step"], 3),
  }


if __name__ == "__main__":
  main()
