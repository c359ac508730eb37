"""Predicted versus measured: peak memory and step time of `hone plan` against real short runs
of hone's own loop on this CPU (a ~22M-parameter Llama built here), for full, LoRA and QLoRA at
two sequence lengths and two batch sizes. Prints one row per case and the worst errors.

    PYTHONPATH=src python bench/plan_accuracy.py [--quick] [--workdir DIR]

Memory: see hone.plan.measure for what "peak" means. Time: median seconds of the timed steps
against two predictions: `flops s`, flops / (measured matmul rate x CPU_EFFICIENCY) + per-layer
overhead (what `hone plan` uses above hone.plan.calibrate.MAX_CALIBRATED_PARAMS, and for QLoRA),
and `timed s`, hone.plan.calibrate.time_steps on the same batch shape (what `hone plan` uses for
smaller models: a few real steps of the model built from its config.json, random weights).
Each pair is measured back to back so that a busy shared machine slows both alike.
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

    from hone.engine.tiers import machine_line

    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    torch.set_num_threads(args.threads)
    from plan_models import accuracy_cases, make_medium_model, predict_case

    from hone.plan.measure import measure_run

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="hone-plan-")) / "m22"
    if not (folder / "config.json").exists():
        make_medium_model(folder)
    cases = accuracy_cases()[:1] if args.quick else accuracy_cases()
    if args.checkpointing:
        cases += [(m, True, b, t) for m, _, b, t in cases]
    print(f"{'method':<6} {'ckpt':<5} {'B':>2} {'T':>4} | {'pred MiB':>8} {'meas MiB':>8} {'err':>6} | {'meas s':>7} "
          f"{'flops s':>7} {'err':>6} {'timed s':>7} {'err':>6}")
    worst_mem = worst_time = worst_timed = 0.0
    for method, checkpointing, batch, seq in cases:
        measured = measure_run(folder, method, batch, seq, steps=args.steps, gradient_checkpointing=checkpointing,
                               threads=args.threads)
        memory, seconds = predict_case(folder, method, checkpointing, batch, seq)
        timed = timed_prediction(folder, method, checkpointing, batch, seq)
        mem_err = memory / measured.peak_bytes - 1
        time_err = seconds / measured.seconds_per_step - 1
        timed_err = timed / measured.seconds_per_step - 1
        worst_mem, worst_time = max(worst_mem, abs(mem_err)), max(worst_time, abs(time_err))
        worst_timed = max(worst_timed, abs(timed_err)) if timed == timed else worst_timed
        print(f"{method:<6} {str(checkpointing):<5} {batch:>2} {seq:>4} | {memory / 2**20:8.0f} {measured.peak_bytes / 2**20:8.0f} "
              f"{mem_err:+6.1%} | {measured.seconds_per_step:7.2f} {seconds:7.2f} {time_err:+6.1%} {timed_column(timed, timed_err)}", flush=True)
    print(f"worst memory error {worst_mem:.1%} (target 20%); worst time error (target 30%): "
          f"flops {worst_time:.1%}, timed steps {worst_timed:.1%}")
    return 0


def timed_column(seconds: float, error: float) -> str:
    return f"{seconds:7.2f} {error:+6.1%}" if seconds == seconds else f"{'-':>7} {'(flops)':>6}"


def timed_prediction(folder: Path, method: str, checkpointing: bool, batch: int, seq: int) -> float:
    """Seconds per step as `hone plan` measures them for small models (nan for 4-bit QLoRA, left to FLOPs)."""
    from hone.model.methods import get

    if get(method).quantize_4bit:
        return float("nan")
    from hone.config import RunConfig
    from hone.plan.calibrate import time_steps
    from hone.plan.measure import _synthetic_batch

    config = RunConfig()
    config.model.path, config.model.device = str(folder), "cpu"
    config.adapter.method, config.train.gradient_checkpointing = method, checkpointing
    config.train.packing = False  # measure_run trains padded batches
    items = _synthetic_batch(batch, seq, 512, 0.5)
    return time_steps(config, [items] * 4, None).seconds_per_token * batch * seq


if __name__ == "__main__":
    raise SystemExit(main())
