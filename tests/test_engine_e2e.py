"""The real CLI killed with SIGKILL mid-run and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from test_train_e2e import SRC, common, hone


def steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(tmp_path, tiny_llama, chat_file):
    # 12 steps of 8 over 64 examples cross an epoch boundary; dropout checks the RNG is restored too
    extra = ["train.max_steps=12", "train.save_every=2", "train.eval_every=5", "adapter.lora_dropout=0.1"]
    hone("train", *common(tiny_llama, chat_file, tmp_path / "straight", *extra))
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "hone", "train", *common(tiny_llama, chat_file, run, *extra)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and steps_logged(run) < 5 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = hone("train", "--resume", str(run))
    assert "resuming from" in resumed.stdout
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(run / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
