"""One process versus two (DDP and FSDP, gloo on CPU): the same run, and what each process costs.

    PYTHONPATH=src python bench/distributed.py            # 40 steps of LoRA on the embedded model
    PYTHONPATH=src python bench/distributed.py --quick    # 6 steps (smoke run)

Each system is the real CLI in its own process tree: `hone train` with batch_size 8 on one
process (2 threads), and `hone train train.nproc=2` with batch_size 4 per process (torchrun
gives each process 1 thread), so all three train on the same global batch of 8 examples on
the same cores. Printed: the largest loss and eval-loss difference from the one-process curve,
the largest difference in the final adapter weights, tokens per second per process and peak
resident memory per process (from each run's summary.json). On a CPU the processes share the
machine's cores, so this measures correctness and overhead; the speed-up needs one device per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hone.engine.tiers import machine_line  # noqa: E402

SYSTEMS = {"1 process": ["train.batch_size=8"],
           "2 x ddp": ["train.batch_size=4", "train.nproc=2", "train.distributed=ddp"],
           "2 x fsdp": ["train.batch_size=4", "train.nproc=2", "train.distributed=fsdp"]}


def train(out: Path, steps: int, extra: list[str]) -> dict:
    args = ["model.path=embedded", f"data.train={ROOT / 'src/hone/assets/demo/train.jsonl'}", f"train.output_dir={out}",
            f"train.max_steps={steps}", f"train.eval_every={max(steps // 2, 1)}", "train.save_every=1000",
            "train.progress=false", "eval.compare=false", "data.check=false", "model.dtype=float32", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_NUM_THREADS", None)  # hone shares the cores among the processes it starts
    result = subprocess.run([sys.executable, "-m", "hone", "train", *args], env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{out.name} failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"summary": json.loads((out / "summary.json").read_text()), "rows": rows}


def compare(run: dict, reference: dict, folder: Path, reference_folder: Path) -> dict:
    from safetensors.torch import load_file

    losses = [abs(a["loss"] - b["loss"]) for a, b in zip(run["rows"], reference["rows"])]
    evals = [abs(a["eval_loss"] - b["eval_loss"]) for a, b in zip(run["rows"], reference["rows"]) if "eval_loss" in a]
    ours, theirs = load_file(folder / "adapter_model.safetensors"), load_file(reference_folder / "adapter_model.safetensors")
    summary = run["summary"]
    return {"max_loss_diff": max(losses), "max_eval_loss_diff": max(evals, default=0.0),
            "max_weight_diff": max(float((ours[k] - theirs[k]).abs().max()) for k in theirs),
            "tokens_per_s_per_process": summary["tokens_per_s_per_process"],
            "peak_rss_mb_per_process": summary["peak_rss_mb_per_process"], "train_seconds": summary["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 steps instead of 40")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    steps = 6 if args.quick else 40
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: Path(tmp) / name.replace(" ", "_") for name in SYSTEMS}
        runs = {name: train(folders[name], steps, extra) for name, extra in SYSTEMS.items()}
        reference = "1 process"
        results = {name: compare(runs[name], runs[reference], folders[name], folders[reference]) for name in SYSTEMS}
    print(f"LoRA on the embedded model, {steps} steps, global batch 8, fp32")
    print(f"{'':<10} {'loss diff':>10} {'eval diff':>10} {'weight diff':>12} {'tok/s/proc':>11} {'peak MB/proc':>16} {'train s':>8}")
    for name, r in results.items():
        memory = "/".join(f"{m:.0f}" for m in r["peak_rss_mb_per_process"])
        print(f"{name:<10} {r['max_loss_diff']:>10.2e} {r['max_eval_loss_diff']:>10.2e} {r['max_weight_diff']:>12.2e} "
              f"{r['tokens_per_s_per_process']:>11.0f} {memory:>16} {r['train_seconds']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "steps": steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
