"""Run one system of a benchmark in its own subprocess, so its peak resident memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spawn(script: Path, system: str, *args) -> dict:
    """`python script --worker system args...`; the dict it printed on its `RESULT ` line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRL_EXPERIMENTAL_SILENCE": "1"}
    out = subprocess.run([sys.executable, str(script), "--worker", system, *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{system} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])
