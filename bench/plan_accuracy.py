"""Predicted versus measured: peak memory and step time of `hone plan` against real short runs
of hone's own loop on this CPU (a ~22M-parameter Llama built here), for full, LoRA and QLoRA at
two sequence lengths and two batch sizes. Prints one row per case and the worst errors.

    PYTHONPATH=src python bench/plan_accuracy.py [--quick] [--workdir DIR]

Memory: see hone.plan.measure for what "peak" means. Time: median seconds of the timed steps
against flops / (measured matmul rate x CPU_EFFICIENCY), the two measured back to back so that
a busy shared machine slows both alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="LoRA only, one shape")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both the prediction's benchmark and the run")
    parser.add_argument("--checkpointing", action="store_true", help="also run every case with gradient checkpointing")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from plan_models import accuracy_cases, make_medium_model, predict_case

    from hone.plan.measure import measure_run

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="hone-plan-")) / "m22"
    if not (folder / "config.json").exists():
        make_medium_model(folder)
    cases = accuracy_cases()[:1] if args.quick else accuracy_cases()
    if args.checkpointing:
        cases += [(m, True, b, t) for m, _, b, t in cases]
    print(f"{'method':<6} {'ckpt':<5} {'B':>2} {'T':>4} | {'pred MiB':>8} {'meas MiB':>8} {'err':>6} | {'pred s':>7} {'meas s':>7} {'err':>6}")
    worst_mem = worst_time = 0.0
    for method, checkpointing, batch, seq in cases:
        measured = measure_run(folder, method, batch, seq, steps=args.steps, gradient_checkpointing=checkpointing,
                               threads=args.threads)
        memory, seconds = predict_case(folder, method, checkpointing, batch, seq)
        mem_err = memory / measured.peak_bytes - 1
        time_err = seconds / measured.seconds_per_step - 1
        worst_mem, worst_time = max(worst_mem, abs(mem_err)), max(worst_time, abs(time_err))
        print(f"{method:<6} {str(checkpointing):<5} {batch:>2} {seq:>4} | {memory / 2**20:8.0f} {measured.peak_bytes / 2**20:8.0f} "
              f"{mem_err:+6.1%} | {seconds:7.2f} {measured.seconds_per_step:7.2f} {time_err:+6.1%}", flush=True)
    print(f"worst memory error {worst_mem:.1%} (target 20%), worst time error {worst_time:.1%} (target 30%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
