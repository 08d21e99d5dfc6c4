"""The run read once (`run_spec`): one policy, one pipeline spec, the rock
list loaded once, and the step's settings derived from them."""

import json

import pytest
from run_helpers import load_config

from rock_jax import rock
from rock_jax.config import validate
from rock_jax.models.config import ModelConfig
from rock_jax.train import run_spec

MODEL = ModelConfig(
  model_type="qwen3",
  vocab_size=40,
  hidden_size=16,
  intermediate_size=32,
  num_layers=1,
  num_heads=2,
  num_kv_heads=1,
  head_dim=8,
)


def test_the_pipeline_reads_the_rollout_and_the_stage():
  config = load_config("kd_offpolicy.py")
  config.rollout.slots, config.rollout.staleness = 0, 0
  p = run_spec.build(config).pipeline
  assert p.sampler == "teacher" and p.slots is None and p.staleness == 0
  assert (p.sampling.temperature, p.sampling.top_p) == (0.6, 0.95)
  assert (p.prompts, p.num_samples, p.steps) == (
    config.train.batch_size,
    config.rollout.num_samples,
    config.train.steps,
  )
  assert run_spec.build(load_config()).pipeline.sampler == "student"


@pytest.mark.parametrize("staleness, cap", [(0, None), (1, 3.0)])
def test_the_step_reads_an_importance_cap_only_for_stale_samples(
  staleness, cap
):
  config = load_config()
  config.rollout.staleness, config.loss.is_cap = staleness, 3.0
  config.loss.kind, config.train.micro_batch_size = "pg_reverse_kl", 4
  step = run_spec.build(config).step_config(MODEL, MODEL, protected=(3, 5))
  assert step.importance_cap == cap
  assert (step.kind, step.micro_batch_size) == ("pg_reverse_kl", 4)
  assert step.clip_norm == config.optim.clip_norm
  # Its policy is the run's one: k clipped to the vocabulary, the guard in.
  assert step.rock == run_spec.build(config).rocks.policy(40, (3, 5))
  assert step.rock.selection.k == min(config.rock.k, 40)
  assert step.rock.selection.protected == (3, 5)


def test_the_rock_list_is_read_once_when_the_run_is_built(
  tmp_path, monkeypatch
):
  path = tmp_path / "rock.json"
  path.write_text(json.dumps([5, 9]))
  config = load_config()
  config.rock.static_list = str(path)
  loads = []
  original = rock.lists.load_rock_json
  monkeypatch.setattr(
    rock.lists,
    "load_rock_json",
    lambda *args, **kwargs: loads.append(args) or original(*args, **kwargs),
  )
  validate.validate(config)  # checks the file is there, reads nothing
  spec = run_spec.build(config)
  assert len(loads) == 1 and spec.rocks.static_ids == (5, 9)
  spec.rocks.check_vocab(10)  # against the vocabulary, from the ids kept
  assert len(loads) == 1
  with pytest.raises(ValueError, match=r"rock.json: entry 1 is 9, outside"):
    spec.rocks.check_vocab(9)


def test_the_optimizer_and_its_schedule_come_from_one_reading():
  config = load_config()
  config.optim.learning_rate, config.optim.warmup_steps = 1e-2, 4
  config.train.nonfinite = "skip"
  optim = run_spec.build(config).optim
  schedule = optim.schedule()
  assert float(schedule(4)) == pytest.approx(1e-2)
  assert optim.skip_nonfinite and optim.total_steps == config.train.steps
