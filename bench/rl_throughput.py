"""Online RL (GRPO) throughput: hone's grpo objective versus TRL's GRPOTrainer, side by side, one command.

    PYTHONPATH=src python bench/rl_throughput.py            # full run
    PYTHONPATH=src python bench/rl_throughput.py --quick    # smoke run: checks the bench works, not speed

Both systems train the embedded model (a ~4M-parameter Llama) with the same LoRA (rank 16,
alpha 32, every linear layer) on the same prompts of the demo ticket task (the SFT chat
template's prompts, token for token), 4 prompts per step, 8 completions per prompt of at most
64 tokens sampled at temperature 1, the same reward (JSON schema + per-field agreement with the
reference answer, hone's built-ins called from both) and the same loss (grpo normalisation,
beta 0.04 with the adapter-off reference, epsilon 0.2, one optimisation step per rollout).
TRL runs in its best configurations for a CPU: generation with transformers' KV cache, bf16
autocast where the CPU multiplies bf16 natively (fp32 elsewhere), gradient checkpointing off;
with the process's default threads (`trl`), with one intra-op thread (`trl-1t`: on a busy
2-core machine small decode steps are much faster on one thread, as hone decodes), and with
gradient checkpointing (`trl-ckpt`, with `--all`). hone runs its defaults (packed rows with
each prompt computed once per group, its own seeded decode loop), with the process's threads
(`hone`) and with one (`hone-1t`); each side's fastest row is compared.
Each system runs in its own subprocess so peak resident memory is its own. Completions per
second and trained (completion) tokens per second are over the whole run, sampling included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

import workers  # bench/workers.py: this script's folder is on sys.path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
DATA = ROOT / "src" / "hone" / "assets" / "demo"
SETTINGS = {"prompts_per_step": 4, "group_size": 8, "max_new_tokens": 64, "learning_rate": 1e-4, "beta": 0.04,
            "lora_rank": 16, "lora_alpha": 32}
REWARDS = [{"name": "json_schema", "args": {"schema": str(DATA / "schema.json")}}, {"name": "field_match"}]


def load_prompts(limit: int):
    from hone.config import ModelArgs
    from hone.data.dataset import read_examples
    from hone.data.prompts import tokenize_prompts
    from hone.model.load import load_tokenizer

    tokenizer = load_tokenizer(ModelArgs())
    items, _ = tokenize_prompts(tokenizer, read_examples(DATA / "train.jsonl").examples[:limit], 256, "drop")
    return tokenizer, items


def run_hone(work: Path, steps: int, dtype: str, threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    from hone.config import load_config
    from hone.train import objectives, rl  # noqa: F401 - registers grpo
    from hone.train.loop import Setup, fit
    from hone.train.metrics import read_metrics
    from hone.train.sft import build_trainable

    tokenizer, prompts = load_prompts(steps * SETTINGS["prompts_per_step"])
    config = load_config(None, [f"train.output_dir={work / 'hone'}", "train.objective=grpo", f"train.max_steps={steps}",
                                f"train.batch_size={SETTINGS['prompts_per_step']}", f"train.learning_rate={SETTINGS['learning_rate']}",
                                "train.progress=false", "train.save_every=100000", "train.warmup_ratio=0",
                                f"adapter.lora_rank={SETTINGS['lora_rank']}", f"adapter.lora_alpha={SETTINGS['lora_alpha']}",
                                f"model.dtype={'bfloat16' if dtype == 'bf16' else 'float32'}",
                                f"rl.group_size={SETTINGS['group_size']}", f"rl.max_new_tokens={SETTINGS['max_new_tokens']}",
                                f"rl.beta={SETTINGS['beta']}", f"rl.rewards={json.dumps(REWARDS)}"])
    (work / "hone").mkdir(parents=True, exist_ok=True)
    model, compute = build_trainable(config, config.train.seed)
    setup = Setup(model, tokenizer.pad_token_id, torch.device("cpu"), compute, work / "hone", objectives.get("grpo"))
    started = time.perf_counter()
    setup = objectives.started(setup, config, prompts, [], False)
    fit(setup, prompts, [], config.train)
    seconds = time.perf_counter() - started
    rows = read_metrics(work / "hone" / "metrics.jsonl")
    per_step = SETTINGS["prompts_per_step"] * SETTINGS["group_size"]
    return {"completions": per_step * len(rows), "tokens": sum(r["completion_length"] * per_step for r in rows),
            "seconds": seconds, "reward": sum(r["reward"] for r in rows) / len(rows)}


TRL_VARIANTS = {"trl": {}, "trl-1t": {"threads": 1}, "trl-ckpt": {"checkpointing": True}}


def run_trl(work: Path, steps: int, dtype: str, checkpointing: bool = False, threads: int | None = None) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if threads:
        torch.set_num_threads(threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from hone.model.load import EMBEDDED_MODEL
    from hone.train.rewards import build_rewards, score_completions

    tokenizer, prompts = load_prompts(steps * SETTINGS["prompts_per_step"])
    rewards, seen = build_rewards(REWARDS), {"completions": 0, "tokens": 0, "reward": []}

    def reward(completions, completion_ids, reference, **kwargs):  # the same built-ins as hone's run
        items = [type("Item", (), {"reference": r})() for r in reference]
        total, _ = score_completions(rewards, [c.strip() for c in completions], items)
        seen["completions"] += len(completions)
        seen["tokens"] += sum(map(len, completion_ids))
        seen["reward"].append(float(total.mean()))
        return total.tolist()

    dataset = Dataset.from_list([{"prompt": tokenizer.decode(p.prompt_ids), "reference": p.reference} for p in prompts])
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32)
    per_step = SETTINGS["prompts_per_step"] * SETTINGS["group_size"]
    args = GRPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=per_step, num_generations=SETTINGS["group_size"],
                      max_completion_length=SETTINGS["max_new_tokens"], max_steps=steps, learning_rate=SETTINGS["learning_rate"],
                      beta=SETTINGS["beta"], loss_type="grpo", temperature=1.0, bf16=dtype == "bf16", use_cpu=True,
                      gradient_checkpointing=checkpointing, save_strategy="no", report_to="none", logging_steps=1000,
                      dataloader_num_workers=0, seed=42, warmup_steps=0)
    lora = LoraConfig(r=SETTINGS["lora_rank"], lora_alpha=SETTINGS["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"completions": seen["completions"], "tokens": seen["tokens"], "seconds": seconds,
            "reward": sum(seen["reward"]) / max(len(seen["reward"]), 1)}


def worker(argv: list[str]) -> None:
    system, work, steps, dtype = argv[0], Path(argv[1]), int(argv[2]), argv[3]
    torch.manual_seed(0)
    if system.startswith("hone"):
        result = run_hone(work / system, steps, dtype, threads=1 if system == "hone-1t" else None)
    else:
        result = run_trl(work, steps, dtype, **TRL_VARIANTS[system])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def spawn(system: str, work: Path, steps: int, dtype: str) -> dict:
    return workers.spawn(HERE, system, work, steps, dtype)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps: checks the bench works, not speed")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per system (default 8)")
    parser.add_argument("--all", action="store_true", help="also TRL with gradient checkpointing")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    from hone.engine.tiers import cpu_flags, machine_line
    from hone.versions import installed_version

    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    dtype = "bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "fp32"  # bf16 only where the CPU multiplies it natively
    steps = 2 if args.quick else args.steps
    work = Path(tempfile.mkdtemp(prefix="hone-rl-bench-"))
    rows = {}
    honest = ["hone", "hone-1t"]
    systems = honest + ["trl-1t", "trl"] + (["trl-ckpt"] if args.all else [])
    for system in systems:
        rows[system] = row = spawn(system, work, steps, dtype)
        row["completions_per_s"] = row["completions"] / row["seconds"]
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        print(f"{system:9s} {row['completions_per_s']:6.2f} completions/s  {row['tokens_per_s']:7.1f} trained tokens/s  "
              f"peak {row['peak_rss_mb']:6.0f} MB  mean reward {row['reward']:.3f}  ({row['completions']} completions, "
              f"{row['seconds']:.0f} s)", flush=True)
    mine = max(honest, key=lambda s: rows[s]["completions_per_s"])
    best = max(systems[2:], key=lambda s: rows[s]["completions_per_s"])
    hone, trl = rows[mine], rows[best]
    versions = {p: installed_version(p) for p in ("torch", "transformers", "peft", "trl")}
    print(f"\nlibraries: {', '.join(f'{p} {v}' for p, v in versions.items())}")
    print(f"hone's fastest ({mine}) vs TRL's fastest ({best}, {dtype}): {hone['completions_per_s'] / trl['completions_per_s']:.2f}x completions/s, "
          f"{hone['tokens_per_s'] / trl['tokens_per_s']:.2f}x trained tokens/s (target >= 2), "
          f"{hone['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x peak memory (target <= 0.7)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "versions": versions, "dtype": dtype, "steps": steps,
                                               "settings": SETTINGS, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
