"""The inspect command prints both sides' prompts for a person to read."""

from data_helpers import FIXTURES

from rock_jax.data import inspect


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
