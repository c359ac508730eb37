"""The README's quickstart, end to end on the embedded model: the tuned model must clearly win."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.mark.slow
def test_quickstart_tunes_the_embedded_model_into_the_json_format(tmp_path):
    out = tmp_path / "qs"
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-m", "hone", "quickstart", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("data check", "plan", "train", "evaluate"):
        assert heading in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    base, tuned = metrics["baseline"], metrics["tuned"]
    assert tuned["json_valid"] >= 0.9
    assert tuned["schema_valid"] >= 0.9 > base["schema_valid"]
    assert tuned["field_exact_match"] > base["field_exact_match"] + 0.5
    assert tuned["eval_loss"] < base["eval_loss"] / 5
    # Replay keeps general ability: perplexity on the held-out corpus rises by less than 10%.
    assert tuned["general_perplexity"] < base["general_perplexity"] * 1.10
    assert (out / "report.html").is_file() and (out / "run" / "adapter_model.safetensors").is_file()
