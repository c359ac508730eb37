"""Builders shared by the eval tests: a run folder with an adapter, synthetic results, general text."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import torch


def make_adapter_run(base: Path, run: Path, seed: int = 1):
    """A run folder as `hone train` leaves it: config.yaml, tokenizer, a non-zero LoRA adapter, metrics.jsonl."""
    from transformers import AutoTokenizer

    from hone.config import AdapterArgs, ModelArgs, RunConfig, save_config
    from hone.model.adapters import apply_method
    from hone.model.load import load_model

    args = ModelArgs(path=str(base), dtype="float32")
    model = apply_method(load_model(args), AdapterArgs(method="lora", lora_rank=4))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # LoRA B starts at zero; make the adapter change outputs
    run.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(base).save_pretrained(run)
    save_config(RunConfig(model=args), run / "config.yaml")
    write_curves(run / "metrics.jsonl", overfit=False)
    return model


def write_curves(path: Path, overfit: bool, steps: int = 60) -> None:
    """metrics.jsonl with a falling train loss; eval loss turns up after step 30 when `overfit`."""
    with path.open("w") as handle:
        for step in range(1, steps + 1):
            record = {"step": step, "loss": 3 * 0.97**step + 0.3}
            if step % 6 == 0:
                record["eval_loss"] = 3 * 0.97 ** min(step, 30) + 0.5 + (0.01 * max(0, step - 30) if overfit else 0)
            handle.write(json.dumps(record) + "\n")


def general_text(path: Path, n: int = 30) -> Path:
    from tiny import sample_text

    with gzip.open(path, "wt") as handle:
        handle.write("\n<|endoftext|>\n".join(sample_text(n, seed=3)) + "\n")
    return path


def synthetic_results(n: int = 40, seed: int = 0):
    """(examples, base result, tuned result) for a JSON task where tuned is clearly better; no model."""
    from hone.data.formats import Example
    from hone.eval.compare import ModelResult
    from hone.model.generate import Generation
    from hone.eval.loss import LossResult
    from hone.eval.metrics import build_settings, mean_scores, score_example

    rng = random.Random(seed)
    examples, base_answers, tuned_answers = [], [], []
    for i in range(n):
        ref = {"product": rng.choice(["router", "laptop"]), "category": rng.choice(["billing", "bug"]), "urgency": "high"}
        examples.append(Example("chat", messages=[{"role": "user", "content": f"ticket {i}: <b>{ref['product']}</b> broke"},
                                                  {"role": "assistant", "content": json.dumps(ref)}], line=i + 1))
        base_answers.append(f"It is about a {ref['product']}" if rng.random() < 0.8 else json.dumps({"product": ref["product"]}))
        tuned = dict(ref, category=rng.choice(["billing", "bug"])) if rng.random() < 0.3 else ref
        tuned_answers.append(json.dumps(tuned))
    settings = build_settings()

    def result(name, answers, loss, perplexity):
        scores = [score_example(a, e.messages[-1]["content"], settings) | {"output_tokens": 20.0, "truncated": 0.0}
                  for a, e in zip(answers, examples)]
        metrics = {"eval_loss": loss, "perplexity": 2.718281828**loss, **mean_scores(scores),
                   "examples_per_s": 25.0, "n_examples": n, "general_perplexity": perplexity}
        return ModelResult(name, "base", [Generation(a, 20, True) for a in answers], scores, metrics, LossResult(0, perplexity, 4096))

    return examples, result("embedded", base_answers, 2.0, 40.0), result("runs/demo", tuned_answers, 0.7, 41.0)
