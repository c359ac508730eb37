"""Preference throughput: hone's loop versus TRL's DPOTrainer and RewardTrainer, side by side, one command.

    PYTHONPATH=src python bench/preference_throughput.py            # full run
    PYTHONPATH=src python bench/preference_throughput.py --quick    # smoke run: checks the bench works, not speed

Both systems train the embedded model (a ~4M-parameter Llama) with the same LoRA (rank 16,
alpha 32, every linear layer) on the same pairs of the demo preference task
(src/hone/assets/preference, the SFT chat template), the same number of pairs per step, one
epoch, sigmoid DPO with beta 0.1 and the base as reference. TRL runs in its best
configuration for a CPU: padding-free batches, reference log-probabilities precomputed,
bf16 autocast where the CPU multiplies bf16 natively (AMX / AVX-512 BF16; fp32 elsewhere),
gradient checkpointing off (it only trades speed for memory at these sizes), and with it on
as a second row. hone runs its defaults (packed rows, precomputed reference). Each system
runs in its own subprocess so peak resident memory is its own; held-out preference
accuracy (implicit reward of chosen above rejected, against the base) is computed
afterwards by the same fp32 function for both adapters.

The reward-model rows train a Bradley-Terry reward model (the same LoRA plus a score head)
on the same pairs: hone's `reward` objective (packed rows, each pair's prompt computed
once) against TRL's RewardTrainer (padded batches: it has no padding-free mode; fp32 or
bf16 as above). Held-out accuracy there is the share of held-out pairs whose chosen answer
gets the higher reward, computed inside each worker with its own model on the same ids.
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
DATA = ROOT / "src" / "hone" / "assets" / "preference"
SETTINGS = {"batch_size": 16, "learning_rate": 5e-4, "beta": 0.1, "lora_rank": 16, "lora_alpha": 32, "max_length": 256}


def load_pairs(path: Path, limit: int):
    from hone.data.dataset import read_examples
    from hone.data.pairs import tokenize_pairs
    from hone.model.load import load_tokenizer
    from hone.config import ModelArgs

    tokenizer = load_tokenizer(ModelArgs())
    items, _ = tokenize_pairs(tokenizer, read_examples(path).examples[:limit], SETTINGS["max_length"], "drop")
    return tokenizer, items


def run_hone(work: Path, pairs: int, dtype: str, objective: str = "dpo", eval_pairs: int = 0) -> dict:
    from hone.config import load_config
    from hone.train import dpo, objectives, reward  # noqa: F401 - registers dpo and reward
    from hone.train.loop import Setup, fit
    from hone.train.sft import build_trainable

    _, train = load_pairs(DATA / "train.jsonl", pairs)
    config = load_config(None, [f"train.output_dir={work / 'hone'}", f"train.objective={objective}", "train.epochs=1",
                                f"train.batch_size={SETTINGS['batch_size']}", f"train.learning_rate={SETTINGS['learning_rate']}",
                                "train.progress=false", "train.save_every=100000", "train.warmup_ratio=0.1",
                                f"adapter.lora_rank={SETTINGS['lora_rank']}", f"adapter.lora_alpha={SETTINGS['lora_alpha']}",
                                f"model.dtype={'bfloat16' if dtype == 'bf16' else 'float32'}"])
    (work / "hone").mkdir(parents=True, exist_ok=True)
    model, compute = build_trainable(config, config.train.seed)
    setup = Setup(model, 0, torch.device("cpu"), compute, work / "hone", objectives.get(objective))
    started = time.perf_counter()
    setup = objectives.started(setup, config, train, [], False)  # the reference, scored once: counted
    fit(setup, train, [], config.train)
    seconds = time.perf_counter() - started
    if objective == "reward":
        return {"pairs": len(train), "seconds": seconds, "accuracy": reward_accuracy(lambda b: reward.sequence_rewards(model, b, len(b["input_ids"])), eval_pairs)}
    save_lora(model, work / "hone.safetensors")
    return {"pairs": len(train), "seconds": seconds}


def run_trl_reward(work: Path, pairs: int, dtype: str, eval_pairs: int) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from hone.model.load import EMBEDDED_MODEL

    tokenizer, train = load_pairs(DATA / "train.jsonl", pairs)
    dataset = Dataset.from_list([{"chosen": tokenizer.decode(i.chosen.input_ids), "rejected": tokenizer.decode(i.rejected.input_ids)}
                                 for i in train])
    model = AutoModelForSequenceClassification.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32, num_labels=1)
    args = RewardConfig(output_dir=str(work / "trl-reward"), per_device_train_batch_size=SETTINGS["batch_size"], num_train_epochs=1,
                        learning_rate=SETTINGS["learning_rate"], warmup_steps=0.1, lr_scheduler_type="cosine", bf16=dtype == "bf16",
                        use_cpu=True, save_strategy="no", report_to="none", logging_steps=1000, max_length=SETTINGS["max_length"],
                        dataloader_num_workers=0, seed=42)
    lora = LoraConfig(r=SETTINGS["lora_rank"], lora_alpha=SETTINGS["lora_alpha"], target_modules="all-linear", task_type="SEQ_CLS")
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tuned = trainer.model.eval()
    return {"pairs": len(dataset), "seconds": seconds,
            "accuracy": reward_accuracy(lambda b: tuned(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, 0].float(), eval_pairs)}


@torch.no_grad()
def reward_accuracy(rewards, eval_pairs: int) -> float:
    """Share of held-out pairs whose chosen answer `rewards` (padded batch -> (S,)) scores higher."""
    from hone.data.collate import pad_batch

    _, evals = load_pairs(DATA / "eval.jsonl", eval_pairs)
    right = 0
    for start in range(0, len(evals), 16):
        chunk = evals[start : start + 16]
        scores = rewards(pad_batch([i.chosen for i in chunk] + [i.rejected for i in chunk], 3))
        right += int((scores[: len(chunk)] > scores[len(chunk) :]).sum())
    return right / len(evals)


def run_trl(work: Path, pairs: int, dtype: str, checkpointing: bool) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from hone.model.load import EMBEDDED_MODEL

    tokenizer, train = load_pairs(DATA / "train.jsonl", pairs)
    # the same token ids as hone: prompt = everything before the first trained token
    rows = []
    for item in train:
        start = next(i for i, label in enumerate(item.chosen.labels) if label != -100)
        start_r = next(i for i, label in enumerate(item.rejected.labels) if label != -100)
        rows.append({"prompt_ids": item.chosen.input_ids[:start], "chosen_ids": item.chosen.input_ids[start:],
                     "rejected_ids": item.rejected.input_ids[start_r:]})
    dataset = Dataset.from_list([{"prompt": tokenizer.decode(r["prompt_ids"]), "chosen": tokenizer.decode(r["chosen_ids"]),
                                  "rejected": tokenizer.decode(r["rejected_ids"])} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32)
    args = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=SETTINGS["batch_size"], num_train_epochs=1,
                     learning_rate=SETTINGS["learning_rate"], warmup_steps=0.1, lr_scheduler_type="cosine", beta=SETTINGS["beta"],
                     padding_free=True, precompute_ref_log_probs=True, bf16=dtype == "bf16", use_cpu=True,
                     gradient_checkpointing=checkpointing, save_strategy="no", report_to="none", logging_steps=1000,
                     max_length=SETTINGS["max_length"], dataloader_num_workers=0, seed=42)
    lora = LoraConfig(r=SETTINGS["lora_rank"], lora_alpha=SETTINGS["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()  # the reference is precomputed inside train(): counted, as hone's
    seconds = time.perf_counter() - started
    save_lora(trainer.model, work / f"trl-{int(checkpointing)}.safetensors")
    return {"pairs": len(dataset), "seconds": seconds}


def save_lora(model, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k.replace(".default", ""): v.detach().float().contiguous() for k, v in model.named_parameters() if "lora_" in k}
    save_file(tensors, path)


def accuracy(lora_file: Path, eval_pairs: int) -> float:
    """Held-out preference accuracy of an adapter, fp32: beta * log-ratio of chosen above rejected."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from hone.config import ModelArgs
    from hone.data.collate import pad_batch
    from hone.model.load import load_model
    from hone.train.logprobs import sequence_logprobs

    _, evals = load_pairs(DATA / "eval.jsonl", eval_pairs)
    model = load_model(ModelArgs(dtype="float32"))
    model = get_peft_model(model, LoraConfig(r=SETTINGS["lora_rank"], lora_alpha=SETTINGS["lora_alpha"],
                                             target_modules="all-linear", task_type="CAUSAL_LM")).eval()
    weights = {k.replace(".default", ""): v for k, v in load_file(lora_file).items()}
    params = {k.replace(".default", ""): p for k, p in model.named_parameters() if "lora_" in k}
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    right = 0
    with torch.no_grad():
        for start in range(0, len(evals), 16):
            chunk = evals[start : start + 16]
            batch = pad_batch([i.chosen for i in chunk] + [i.rejected for i in chunk], 0)
            tuned = sequence_logprobs(model, batch, 2 * len(chunk))[0]
            with model.disable_adapter():
                base = sequence_logprobs(model, batch, 2 * len(chunk))[0]
            ratio = tuned - base
            right += int((ratio[: len(chunk)] > ratio[len(chunk) :]).sum())
    return right / len(evals)


def worker(argv: list[str]) -> None:
    system, work, pairs, dtype, eval_pairs = argv[0], Path(argv[1]), int(argv[2]), argv[3], int(argv[4])
    torch.manual_seed(0)
    runs = {"hone": lambda: run_hone(work, pairs, dtype), "trl": lambda: run_trl(work, pairs, dtype, False),
            "trl-ckpt": lambda: run_trl(work, pairs, dtype, True), "hone-reward": lambda: run_hone(work, pairs, dtype, "reward", eval_pairs),
            "trl-reward": lambda: run_trl_reward(work, pairs, dtype, eval_pairs)}
    result = runs[system]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def spawn(system: str, work: Path, pairs: int, dtype: str, eval_pairs: int) -> dict:
    return workers.spawn(HERE, system, work, pairs, dtype, eval_pairs)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 pairs, 32 held out: checks the bench works, not speed")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--workdir", help="keep the adapters here (default: a temporary folder)")
    args = parser.parse_args()
    from hone.engine.tiers import cpu_flags, machine_line
    from hone.versions import installed_version

    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    dtype = "bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "fp32"  # bf16 only where the CPU multiplies it natively
    pairs, eval_pairs = (64, 32) if args.quick else (600, 120)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hone-pref-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for system in ("hone", "trl", "trl-ckpt", "hone-reward", "trl-reward"):
        rows[system] = spawn(system, work, pairs, dtype, eval_pairs)
        if "accuracy" not in rows[system]:  # a DPO adapter: judged by one fp32 function for both systems
            lora = work / ("hone.safetensors" if system == "hone" else f"trl-{int(system == 'trl-ckpt')}.safetensors")
            rows[system]["accuracy"] = accuracy(lora, eval_pairs)
        rows[system]["pairs_per_s"] = rows[system]["pairs"] / rows[system]["seconds"]
        print(f"{system:11s} {rows[system]['pairs_per_s']:7.2f} pairs/s  peak {rows[system]['peak_rss_mb']:7.0f} MB  "
              f"held-out accuracy {rows[system]['accuracy']:.1%}", flush=True)
    print(f"\nlibraries: {', '.join(f'{p} {installed_version(p)}' for p in ('torch', 'transformers', 'peft', 'trl'))}")
    best = max(("trl", "trl-ckpt"), key=lambda s: rows[s]["pairs_per_s"])
    for label, hone, trl in (("DPO", rows["hone"], rows[best]), ("reward model", rows["hone-reward"], rows["trl-reward"])):
        name = best if label == "DPO" else "trl-reward"
        print(f"{label}: hone vs TRL's fastest ({name}, {dtype}): {hone['pairs_per_s'] / trl['pairs_per_s']:.2f}x pairs/s (target >= 2), "
              f"{hone['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x peak memory (target <= 0.7), "
              f"accuracy {100 * (hone['accuracy'] - trl['accuracy']):+.1f} points (target within 2)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "versions": {p: installed_version(p) for p in ("torch", "transformers", "peft", "trl")}, "dtype": dtype,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
