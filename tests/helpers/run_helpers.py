"""Configs and tiny runs for the trainer and analysis tests: the config
files as a user loads them, with the tiny models' settings (the models are
the session fixture `assets` of conftest.py)."""

import importlib.util
import json
import os
import pathlib

import numpy as np
import safetensors.numpy

ROOT = pathlib.Path(__file__).parents[2]
TINY_STUDENT = dict(
  hidden_size=32,
  intermediate_size=64,
  num_attention_heads=2,
  num_key_value_heads=1,
  head_dim=16,
)


def assert_trees_equal(a, b):
  """Every leaf of two pytrees equal, bit for bit."""
  import jax  # noqa: PLC0415 (after conftest set XLA_FLAGS)

  jax.tree.map(np.testing.assert_array_equal, a, b)


def xla_flags(devices: int, flags: str | None = None) -> str:
  """XLA_FLAGS for `devices` fake CPU devices, without LLVM's optimisation
  passes (tiny models compile far longer than they run); other flags kept."""
  kept = [
    f
    for f in (flags or "").split()
    if not f.startswith(
      ("--xla_force_host_platform_device_count", "--xla_backend_optimization")
    )
  ]
  return " ".join(
    kept
    + [
      f"--xla_force_host_platform_device_count={devices}",
      "--xla_backend_optimization_level=0",
    ]
  )


def load_config(name="opd_rock.py", arg=""):
  path = ROOT / "configs" / name
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def write_gsm8k(folder, sizes):
  """GSM8K-format JSONL splits of one-step word problems."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in sizes.items():
    with open(folder / f"{split}.jsonl", "w") as f:
      for _ in range(n):
        a, b = rng.integers(1, 50, 2)
        f.write(
          json.dumps(
            {
              "question": f"Tom has {a} apples and buys {b}. How many now?",
              "answer": f"He has {a} + {b} = {a + b}.\n#### {a + b}",
            }
          )
          + "\n"
        )


def tiny_overrides(assets, steps=4):
  """The tiny run's settings, as `--config.<key>=<value>` pairs."""
  return {
    "teacher.path": assets["teacher"],
    "student.path": assets["student"],
    "data.name": "gsm8k",
    "data.options": f"source={assets['gsm8k']}",
    "data.student_prompt_len": 64,
    "data.teacher_prompt_len": 64,
    "embedded.cache_dir": assets["cache"],
    "rollout.max_new_tokens": 16,
    "train.steps": steps,
    "train.batch_size": 8,
    "train.log_every": 2,
    "train.eval_every": 0,
    "train.eval_examples": 8,
    "train.eval_batch_size": 8,
    "train.checkpoint_every": 2,
    "optim.warmup_steps": 1,
    "rock.k": 8,
    "rock.warmup_steps": 1,
    "rock.refresh_every": 1,
  }


def set_fields(config, settings):
  """Sets `{"a.b": value}` entries as `--config.a.b=value` would."""
  for key, value in settings.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value


def tiny_config(assets, workdir, name="opd_rock.py", **overrides):
  """A config file's config with the tiny settings; `a__b=v` sets a.b."""
  config = load_config(name)
  config.workdir = str(workdir)
  settings = tiny_overrides(assets)
  settings.update({k.replace("__", "."): v for k, v in overrides.items()})
  set_fields(config, settings)
  return config


def exported(workdir):
  return safetensors.numpy.load_file(
    os.path.join(workdir, "export", "model.safetensors")
  )


def run_capturing_the_loop(config, monkeypatch):
  """`train.run(config)` and the `Loop` it trained with."""
  from rock_jax import train  # noqa: PLC0415 (heavy, few tests need it)
  from rock_jax.train import loop as loop_lib  # noqa: PLC0415

  loops = []
  original = loop_lib.Loop.train

  def train_and_keep(self):
    loops.append(self)
    return original(self)

  monkeypatch.setattr(loop_lib.Loop, "train", train_and_keep)
  summary = train.run(config)
  return summary, loops[0]
