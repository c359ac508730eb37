"""Bad input: one line naming the problem and the fix, exit code 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run_hone(*args):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "hone", *args], capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("hone: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_config_file(tmp_path):
    assert_one_line_error(run_hone("train", str(tmp_path / "nope.yaml")), "config file not found", "nope.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 1\n bad indent: [\n")
    assert_one_line_error(run_hone("train", str(bad)), f"{bad}:", "malformed YAML")


def test_unknown_key(tmp_path):
    assert_one_line_error(run_hone("train", "train.learnig_rate=1"), "train.learnig_rate", "valid keys")


def test_missing_data_file(tmp_path, tiny_llama):
    result = run_hone("train", f"model.path={tiny_llama}", f"data.train={tmp_path / 'none.jsonl'}",
                      f"train.output_dir={tmp_path / 'run'}")
    assert_one_line_error(result, "data file not found", "none.jsonl")


def test_invalid_json_line_names_file_and_line(tmp_path, tiny_llama, chat_file):
    lines = chat_file.read_text().splitlines()
    lines.insert(4, '{"messages": [oops')
    chat_file.write_text("\n".join(lines) + "\n")
    result = run_hone("train", f"model.path={tiny_llama}", f"data.train={chat_file}", f"train.output_dir={tmp_path / 'run'}",
                      "data.check=false")
    assert_one_line_error(result, f"{chat_file}:5", "invalid JSON", "hone check")


def test_model_folder_without_weights(tmp_path, tiny_llama, chat_file):
    folder = tmp_path / "noweights"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_llama / "config.json").read_text())
    result = run_hone("train", f"model.path={folder}", f"data.train={chat_file}", f"train.output_dir={tmp_path / 'run'}")
    assert_one_line_error(result, "no weights", str(folder))


def test_gpu_requested_where_there_is_none(tmp_path, tiny_llama, chat_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so asking for one is not an error")
    result = run_hone("train", f"model.path={tiny_llama}", f"data.train={chat_file}", f"train.output_dir={tmp_path / 'run'}",
                      "model.device=cuda")
    assert_one_line_error(result, "no CUDA GPU", "model.device=cpu")
