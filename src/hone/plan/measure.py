"""Measure what a short real run takes on this machine: peak memory and seconds per step.

This is the ground truth the planner's estimates are checked against (tests and
`bench/plan_accuracy.py`). It runs hone's own `train_step` on synthetic batches of an exact
shape, in a fresh subprocess so that nothing else in the caller's memory is counted.

What "peak" means here (CPU): the process's resident-set high-water mark (`VmHWM`) from the
moment the model is loaded and made trainable until the last step ends, minus the resident
set right after the libraries were imported. So it counts the weights, the adapter, and
everything training allocates (gradients, optimizer state, activations, logits, the
optimizer's temporaries), and it excludes the interpreter and library code, and the
transient of reading the weights file (loading goes through a memory map that is released
once the weights are in place). On a GPU the same quantity is `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hone.config import RunConfig
from hone.data.render import IGNORE, Tokenized
from hone.model.offline import import_adapter_libraries
from hone.train.loop import Setup, build_optimizer, train_step
from hone.train.sft import build_trainable


@dataclass
class Measured:
    """One measured short run."""

    peak_bytes: int
    """Resident-set high-water mark during training minus the resident set after imports."""
    weights_bytes: int
    """Resident-set growth from loading the model and making it trainable (before any step)."""
    seconds_per_step: float
    """Median wall-clock seconds of the timed optimizer steps (the first step is a warm-up)."""
    tokens_per_step: int
    compute_bytes: int = 2
    """Bytes per element of the compute dtype the run chose (bf16 only where this CPU multiplies it fast)."""


def measure_run(model_dir: str | Path, method: str, batch_size: int, seq_len: int, steps: int = 3,
                gradient_checkpointing: bool = False, trained_fraction: float = 0.5, threads: int = 2) -> Measured:
    """Run `steps` optimizer steps of hone's loop in a subprocess and report what they took."""
    job = dict(model_dir=str(model_dir), method=method, batch_size=batch_size, seq_len=seq_len, steps=steps,
               gradient_checkpointing=gradient_checkpointing, trained_fraction=trained_fraction, threads=threads)
    out = subprocess.run([sys.executable, "-m", "hone.plan.measure", json.dumps(job)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed: {out.stderr.strip()[-2000:]}")
    return Measured(**json.loads(out.stdout.strip().splitlines()[-1]))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)


def _synthetic_batch(batch_size: int, seq_len: int, vocab: int, trained_fraction: float):
    """Items of exactly `seq_len` tokens whose last `trained_fraction` is labelled."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=generator).tolist()
    start = seq_len - max(1, int(seq_len * trained_fraction))
    return [Tokenized(row, [IGNORE] * start + row[start:]) for row in ids]


def _import_libraries(model_dir: str) -> None:
    """Import everything loading and training will import, so the baseline already holds library code."""
    import_adapter_libraries()  # PEFT and the bitsandbytes it imports, with the hub offline
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(model_dir))]  # imports the modeling module


def _child(job: dict) -> dict:
    import gc

    import torch

    torch.set_num_threads(job["threads"])
    _import_libraries(job["model_dir"])
    gc.collect()
    baseline = _rss_kib("VmRSS")
    config = RunConfig()
    config.model.path = job["model_dir"]
    config.model.device = "cpu"
    config.adapter.method = job["method"]
    config.train.gradient_checkpointing = job["gradient_checkpointing"]
    model, compute = build_trainable(config, seed=0)
    gc.collect()
    _reset_peak()
    loaded = _rss_kib("VmRSS")
    setup = Setup(model, 0, torch.device("cpu"), compute, Path("."))
    optimizer, _ = build_optimizer(model, config.train, total_steps=job["steps"] + 1)
    items = _synthetic_batch(job["batch_size"], job["seq_len"], model.config.vocab_size, job["trained_fraction"])
    seconds = []
    for _ in range(job["steps"]):
        started = time.perf_counter()
        train_step(setup, [items], optimizer, config.train.max_grad_norm)
        seconds.append(time.perf_counter() - started)
    timed = sorted(seconds[1:] or seconds)
    return asdict(Measured(peak_bytes=(_rss_kib("VmHWM") - baseline) * 1024, weights_bytes=(loaded - baseline) * 1024,
                           seconds_per_step=timed[len(timed) // 2], tokens_per_step=job["batch_size"] * job["seq_len"],
                           compute_bytes=compute.itemsize))


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
