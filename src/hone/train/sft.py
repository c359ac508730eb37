"""Supervised fine-tuning recipe: setup -> data -> fit -> save.

The run folder describes itself: the resolved config, the tokenizer, the adapter (PEFT
format) or full weights (safetensors), metrics.jsonl, summary.json and checkpoints/.
"""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import torch

from hone.config import RunConfig, save_config
from hone.data.replay import load_replay
from hone.data.dataset import read_examples, require_clean, split_examples, tokenize_examples
from hone.errors import HoneError
from hone.model.adapters import apply_method, count_parameters
from hone.model.load import check_weights, load_model, load_tokenizer, pick_device, pick_dtype, resolve_model_path
from hone.train.loop import Setup, fit

CONFIG_FILE = "config.yaml"


def build_trainable(config: RunConfig, seed: int):
    """Load the model for `config.adapter.method` and make it trainable.

    Returns (model, compute_dtype). LoRA keeps the frozen base in the compute dtype;
    full fine-tuning keeps fp32 master weights and computes under autocast.
    """
    device = pick_device(config.model)
    compute = pick_dtype(config.model, device)
    method = config.adapter.method
    weights = torch.float32 if method == "full" else compute
    model = load_model(config.model, quantize_4bit=method == "qlora", weights_dtype=weights)
    torch.manual_seed(seed)  # adapter initialisation is part of the seeded run
    model = apply_method(model, config.adapter)
    # Non-reentrant checkpointing works whether or not the inputs need gradients, so the frozen
    # embeddings' output does not get one (no `enable_input_require_grads`): the first layer's
    # input gradient, which nothing would read, is never computed.
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, compute


def prepare_data(config: RunConfig, tokenizer):
    """(train items, eval items, reports) with the over-length policy applied and reported."""
    data = config.data
    if not data.train:
        raise HoneError("no training data given", "set data.train=PATH in the config or on the command line")
    train_examples = require_clean(read_examples(data.train), data.train)
    if data.eval:
        eval_examples = require_clean(read_examples(data.eval), data.eval)[: data.max_eval_examples]
    else:
        train_examples, eval_examples = split_examples(train_examples, data.eval_fraction, config.train.seed, data.max_eval_examples)
    train, train_report = tokenize_examples(tokenizer, train_examples, data.max_length, data.overlength)
    evals, eval_report = tokenize_examples(tokenizer, eval_examples, data.max_length, data.overlength)
    if not train:
        raise HoneError(f"{data.train}: no example is left to train on after the length policy",
                        "raise data.max_length or set data.overlength=truncate")
    return train, evals, {"train": train_report, "eval": eval_report}


def start_run(config: RunConfig, resume: bool) -> Path:
    """Refuse to overwrite a run, check the model before any data work, save the resolved config."""
    run_dir = Path(config.train.output_dir)
    if (run_dir / "checkpoints").exists() and not resume:
        raise HoneError(f"{run_dir} already holds a run", "add --resume to continue it, or set train.output_dir to a new folder")
    check_weights(resolve_model_path(config.model.path), config.model)
    pick_device(config.model)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_FILE)
    return run_dir


def train_and_save(config: RunConfig, tokenizer, train, evals, run_dir: Path, resume: bool, replay=None) -> dict:
    """Build the trainable model, fit it, save it; returns the summary fields every run shares."""
    model, compute = build_trainable(config, config.train.seed)
    trainable, total = count_parameters(model)
    print(f"method {config.adapter.method}: {trainable:,} trainable of {total:,} parameters, compute {str(compute).removeprefix('torch.')}")
    setup = Setup(model, tokenizer.pad_token_id, pick_device(config.model), compute, run_dir)
    state = fit(setup, train, evals, config.train, resume=resume, replay=replay)
    save_outputs(run_dir, model, tokenizer, config)
    return {
        "method": config.adapter.method,
        "trained_tokens": state.trained_tokens,
        "train_seconds": round(state.train_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "final_eval_loss": last_eval_loss(run_dir),
        "best_eval_loss": state.best_eval_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "overfitting_step": state.overfitting_step,
        "rollbacks": state.rollbacks,
        "steps": state.step,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_examples": len(train),
        "eval_examples": len(evals),
    }


def run_sft(config: RunConfig, resume: bool = False, plan=None) -> Path:
    """Train per `config`; returns the run folder. `plan` (hone.plan.estimate.Plan, made before
    the run) puts its predicted training time beside the measured one in summary.json."""
    run_dir = start_run(config, resume)
    tokenizer = load_tokenizer(config.model)
    train, evals, reports = prepare_data(config, tokenizer)
    for name, report in reports.items():
        print(report.line(name))
    replay = load_replay(config.replay, tokenizer, config.data.max_length)
    if replay:
        print(f"replay: {len(replay.items)} examples from {config.replay.data}, {config.replay.fraction:.0%} of each epoch")
    summary = train_and_save(config, tokenizer, train, evals, run_dir, resume, replay)
    summary["length_policy"] = {name: vars(report) for name, report in reports.items()}
    summary["planned_train_seconds"] = planned_seconds(plan)
    planned = summary["planned_train_seconds"]
    print(f"trained {summary['steps']} steps in {summary['train_seconds']:.1f} s"
          + (f" (planned {planned:.1f} s)" if planned is not None else ""))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if config.eval.compare:
        compare_with_base(run_dir, config)
    return run_dir


def planned_seconds(plan) -> float | None:
    """The plan's optimizer-step seconds for this machine, when it made a finite one."""
    if plan is None or not math.isfinite(plan.this_machine_train_seconds):
        return None
    return round(plan.this_machine_train_seconds, 3)


def compare_with_base(run_dir: Path, config: RunConfig) -> None:
    """Every run ends measured against its base model: report.html + report.json in the run folder."""
    from hone.eval.compare import compare_models, format_comparison_table

    print("\ncomparing with the base model on the held-out examples")
    report = compare_models(None, str(run_dir), None, run_dir, config.eval)
    print(format_comparison_table(report))
    print(f"report: {run_dir / 'report.html'}")


def save_outputs(run_dir: Path, model, tokenizer, config: RunConfig) -> None:
    """Adapter (PEFT format) or full weights (safetensors) at the run folder's top, with the tokenizer."""
    if config.adapter.method == "full":
        model.save_pretrained(run_dir, safe_serialization=True)
    else:
        model.save_pretrained(run_dir)  # adapter_config.json + adapter_model.safetensors
    tokenizer.save_pretrained(run_dir)


def last_eval_loss(run_dir: Path) -> float | None:
    from hone.train.metrics import read_metrics

    losses = [r["eval_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in r]
    return losses[-1] if losses else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

