"""The inspect command prints both sides' prompts for a person to read."""

import data_helpers
from data_helpers import FIXTURES

from rock_jax.data import embedded_builder, inspect


def test_inspect_embedded(tmp_path, capsys):
  inspect.main(
    [
      "embedded",
      f"--data_dir={tmp_path}",
      "--set",
      "train_size=32",
      "--set",
      "test_size=8",
      "--split=test",
      "--num=2",
    ]
  )
  out = capsys.readouterr().out
  assert "splits: test=8, train=32" in out
  assert out.count("--- student prompt") == 2
  assert out.count("<|im_start|>system\nstyle: ") == 2
  assert "[[" in out and "answer is" in out


def test_inspect_gsm8k_with_a_tokenizer_folder(tmp_path, capsys):
  inspect.main(
    [
      "embedded",
      f"--data_dir={tmp_path}",
      "--set",
      "train_size=8",
      "--set",
      "test_size=8",
      "--num=0",
    ]
  )
  tokenizer = next(tmp_path.glob("rock_embedded/*/*/tokenizer"))
  inspect.main(
    [
      "gsm8k",
      f"--data_dir={tmp_path}",
      f"--set=source={FIXTURES / 'gsm8k'}",
      f"--tokenizer={tokenizer}",
      "--num=1",
    ]
  )
  out = capsys.readouterr().out
  assert "splits: test=4, train=7" in out
  assert "task='gsm8k'" in out


def test_inspect_embedded_in_a_bucket(gcs, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("ROCK_JAX_CACHE", str(tmp_path / "cache"))
  sizes = ["--set", "train_size=8", "--set", "test_size=4"]
  inspect.main(["embedded", f"--data_dir={gcs}", *sizes, "--num=1"])
  out = capsys.readouterr().out
  # The dataset's URL, its tokenizer and rock.json read from the bucket.
  assert f"dataset: {gcs}/rock_embedded/" in out
  assert "splits: test=4, train=8" in out
  assert "[[" in out and "<|im_start|>system\nstyle: " in out
  dataset = out.split("dataset: ")[1].split("\n")[0]
  local = data_helpers.prepare_embedded(
    tmp_path / "data", train_size=8, test_size=4
  )
  assert embedded_builder.planted_rocks(dataset) == (
    embedded_builder.planted_rocks(local)
  )
  assert embedded_builder.load_tokenizer(dataset).get_vocab() == (
    embedded_builder.load_tokenizer(local).get_vocab()
  )
  assert embedded_builder.planted_rocks(f"{gcs}/absent") is None
