"""The throughput benchmark runs end to end and prints its table (speed is not asserted here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "sft_throughput.py"), "--quick", "--threads", "1",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout
    fast = _bench_module().fast_dtype(torch.device("cpu"), "auto")  # bf16 where this CPU is faster in it, else fp32
    for text in ("machine: ", "TRL configurations, ranked", "trl padding-fp32", f"trl packing-{fast}", "hone default",
                 "hone / TRL best: tokens/s"):
        assert text in out, text


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_throughput", ROOT / "bench" / "sft_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_trl_variants_set_gradient_checkpointing_explicitly(tmp_path):
    """TRL's SFTConfig turns gradient checkpointing on by default (~20% slower on the benchmark):
    a variant without `-gc` must turn it off, or TRL's 'best' row is not its fastest."""
    import torch

    bench = _bench_module()
    cpu = torch.device("cpu")
    fast = bench.trl_config(tmp_path, bench.Spec(), "packing-bf16", cpu)
    lean = bench.trl_config(tmp_path, bench.Spec(), "packing-bf16-gc", cpu)
    assert fast.gradient_checkpointing is False and lean.gradient_checkpointing is True
    assert fast.packing and fast.bf16 and not bench.trl_config(tmp_path, bench.Spec(), "padding-fp32", cpu).bf16
    assert {"packing-bf16", "packing-bf16-gc"} <= set(bench.trl_variants(cpu, quick=False))
    fp32 = bench.trl_variants(cpu, quick=False, fast="fp32")  # a CPU without fast bf16: TRL in fp32 too
    assert {"padding_free-fp32", "packing-fp32", "packing-fp32-gc"} <= set(fp32) and not any("bf16" in v for v in fp32)
    with pytest.raises(ValueError, match="unknown TRL variant"):
        bench.trl_config(tmp_path, bench.Spec(), "packing-bf16-fast", cpu)
