"""A distillation step against an SFT step of the same student, side by side, one command.

    PYTHONPATH=src python bench/distill_step.py             # 10 timed steps of each
    PYTHONPATH=src python bench/distill_step.py --quick     # smoke run: checks the bench works, not speed

The student is cut from the teacher (`hone derive --keep 2`: 2 of the embedded model's 4
layers) unless `--student` names one; the teacher is the quickstart's tuned run when it exists
(else the embedded model). Every step trains the student fully (adapter.method full) on the same
packed micro-batches of 16 demo tickets, in hone's loop (`hone.train.loop.train_step`, the
speed layer installed). Rows, median seconds per optimizer step:
    sft            cross-entropy only (train.objective causal_lm)
    teacher fwd    one forward pass of the teacher over the same batch, no gradients
    distill top-k  the teacher's top-64 read from the cache (computed once, timed apart)
    distill live   the teacher runs inside the step (distill.top_k 0)
The target: a distillation step costs at most the SFT step plus one teacher forward.
`time_steps(...)` is importable (e.g. by another benchmark) and returns the same numbers.

    PYTHONPATH=src python bench/distill_step.py --generation --student runs/distill/kd

times generation instead: teacher and student answer the 120 held-out demo tickets (greedy,
batches of 16 with a KV cache, at most 64 new tokens), generated tokens per second of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "src" / "hone" / "assets" / "demo" / "train.jsonl"
QUICKSTART = ROOT / "runs" / "quickstart" / "run"


def demo_items(student: str, count: int, max_length: int = 256):
    from hone.config import ModelArgs
    from hone.data.dataset import read_examples, tokenize_examples
    from hone.model.load import load_tokenizer

    tokenizer = load_tokenizer(ModelArgs(path=student))
    items, _ = tokenize_examples(tokenizer, read_examples(DEMO).examples[:count], max_length, "drop")
    return tokenizer, items


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


@torch.no_grad()
def teacher_forward(teacher, head, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One teacher pass over a packed batch: the logits of its scored rows."""
    from hone.train.teacher_outputs import teacher_rows

    return head(teacher_rows(teacher, batch))


def time_steps(teacher_path: str, student_path: str, steps: int = 10, warmup: int = 2, batch_size: int = 16,
               dtype: str = "float32", top_k: int = 64) -> dict[str, float]:
    """Median seconds: {"sft", "teacher_forward", "distill_topk", "distill_live"} per step and
    "topk_cache_once". Every batch is first run once untimed (the matmul library builds its
    kernels per shape); then the variants take turns on each batch, so a shared machine's
    drift hits them alike."""
    from hone.config import DistillArgs, load_config
    from hone.data.collate import PACK_MULTIPLE, pack_batch
    from hone.engine import engine
    from hone.model.teacher import load_whole
    from hone.train.distill import Distill
    from hone.train.loop import Setup, train_step
    from hone.train.loss import split_model
    from hone.train.objectives import CAUSAL_LM
    from hone.train.sft import build_trainable
    from hone.train.teacher_outputs import settle_topk

    tokenizer, items = demo_items(student_path, (steps + warmup) * batch_size)
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    config = load_config(None, [f"model.path={student_path}", "adapter.method=full", f"model.dtype={dtype}"])
    student, compute = build_trainable(config, seed=0)
    teacher, _, teacher_compute = load_whole(teacher_path, dtype)
    device, pad_id, head = torch.device("cpu"), tokenizer.pad_token_id, split_model(teacher)[1]
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    seconds = {"sft": [], "teacher_forward": [], "distill_topk": [], "distill_live": []}
    with tempfile.TemporaryDirectory() as work, engine(student, device, compute, packing=True), \
            engine(teacher, device, teacher_compute, packing=True, fused_layers=False):
        setup = Setup(student, pad_id, device, compute, Path(work), CAUSAL_LM)
        args = DistillArgs(teacher_path=teacher_path, top_k=top_k, teacher_dtype=dtype)
        once = timed(lambda: settle_topk(args, setup, {"train": items}, batch_size))
        variants = {
            "sft": lambda b: train_step(setup, [b], optimizer, 1.0, layout="pack"),
            "teacher_forward": lambda b: teacher_forward(teacher, head, pack_batch(b, pad_id, PACK_MULTIPLE)),
            "distill_topk": lambda b: train_step(dataclasses.replace(setup, objective=Distill(args=args)), [b], optimizer, 1.0,
                                                 layout="pack"),
            "distill_live": lambda b: train_step(dataclasses.replace(setup, objective=Distill(
                args=dataclasses.replace(args, top_k=0), teacher=teacher)), [b], optimizer, 1.0, layout="pack"),
        }
        for batch in batches:  # warm-up: every shape once
            variants["sft"](batch)
        for index, batch in enumerate(batches):
            for name, run in variants.items():
                elapsed = timed(lambda: run(batch))
                if index >= warmup:
                    seconds[name].append(elapsed)
    return {name: statistics.median(values) for name, values in seconds.items()} | {"topk_cache_once": once}


def generation_speed(models: dict[str, str], batch_size: int = 16, max_new_tokens: int = 64,
                     rounds: int = 5) -> dict[str, list[float]]:
    """Generated tokens per second of each model (name -> model or run folder) on the held-out
    demo prompts, one value per round, the models taking turns: on a shared machine compare them
    round by round (the drift between rounds can be larger than the difference)."""
    from hone.data.dataset import read_examples
    from hone.data.render import render_prompt
    from hone.model.generate import GenerationArgs, generate_answers
    from hone.model.teacher import load_whole

    args = GenerationArgs(max_new_tokens=max_new_tokens, batch_size=batch_size)
    loaded, rates = {}, {name: [] for name in models}
    for name, path in models.items():
        model, tokenizer, _ = load_whole(path, "float32")
        prompts = [render_prompt(tokenizer, e) for e in read_examples(DEMO.with_name("eval.jsonl")).examples]
        generate_answers(model, tokenizer, prompts[:batch_size], args)  # warm-up
        loaded[name] = (model, tokenizer, prompts)
    for _ in range(rounds):
        for name, (model, tokenizer, prompts) in loaded.items():
            started = time.perf_counter()
            answers = generate_answers(model, tokenizer, prompts, args)
            rates[name].append(sum(a.new_tokens for a in answers) / (time.perf_counter() - started))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(QUICKSTART) if (QUICKSTART / "config.yaml").is_file() else "embedded")
    parser.add_argument("--student", help="a student folder (default: derived from the teacher, 2 layers)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 timed steps: checks the bench runs")
    parser.add_argument("--generation", action="store_true", help="time generation of teacher and --student instead")
    cli = parser.parse_args()
    from hone.engine.tiers import machine_line

    print(machine_line())
    if cli.generation:
        speed = generation_speed({"teacher": cli.teacher, "student": cli.student})
        for name, rates in speed.items():
            print(f"{name:<8} generated tokens/s by round: {', '.join(f'{r:.1f}' for r in rates)}")
        ratios = [s / t for s, t in zip(speed["student"], speed["teacher"])]
        print(f"student / teacher, median of the rounds' ratios: {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        return 0
    steps = 2 if cli.quick else cli.steps
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        student = cli.student
        if student is None:
            from hone.model.derive import derive

            student = str(Path(work) / "student")
            derive(cli.teacher, student, keep=2)
        numbers = time_steps(cli.teacher, student, steps=steps)
    sft, teacher = numbers["sft"], numbers["teacher_forward"]
    print(f"teacher {cli.teacher}, student {cli.student or 'derived, 2 layers'}; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads{'; QUICK (not a measurement)' if cli.quick else ''}")
    print(f"{'step':<16}{'median s':>10}{'x SFT':>8}")
    for name, key in (("sft", "sft"), ("teacher fwd", "teacher_forward"), ("distill top-k", "distill_topk"),
                      ("distill live", "distill_live")):
        print(f"{name:<16}{numbers[key]:>10.3f}{numbers[key] / sft:>8.2f}")
    print(f"top-k cache, once before training: {numbers['topk_cache_once']:.2f} s")
    budget = sft + teacher
    for key in ("distill_topk", "distill_live"):
        verdict = "met" if numbers[key] <= budget else "NOT met"
        print(f"{key}: {numbers[key]:.3f} s against SFT + one teacher forward {budget:.3f} s: target {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
