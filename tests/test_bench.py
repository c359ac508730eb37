"""The throughput benchmark runs end to end and prints its table (speed is not asserted here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "sft_throughput.py"), "--quick", "--threads", "1",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout
    for text in ("TRL configurations, ranked", "trl padding-fp32", "trl packing-bf16", "hone default", "hone / TRL best: tokens/s"):
        assert text in out, text
