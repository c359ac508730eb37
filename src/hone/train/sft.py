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
from hone.data.prepare import RunData, prepare_run_data
from hone.errors import HoneError
from hone.model.adapters import count_parameters
from hone.model.load import check_weights, load_model, load_tokenizer, pick_device, pick_dtype, resolve_model_path
from hone.model.methods import get as get_method
from hone.train import distributed, objectives, tracking
from hone.train.distributed import World
from hone.train.loop import Setup, fit
from hone.train.metrics import read_metrics

CONFIG_FILE = "config.yaml"


def build_trainable(config: RunConfig, seed: int):
    """Load the model as `config.adapter.method`'s entry says and make it trainable.

    Returns (model, compute_dtype). LoRA keeps the frozen base in the compute dtype, QLoRA
    in 4-bit; full fine-tuning keeps fp32 master weights and computes under autocast.
    """
    device = distributed.device_for(distributed.current(), pick_device(config.model))
    compute = pick_dtype(config.model, device)
    method = get_method(config.adapter.method)
    weights = torch.float32 if method.fp32_master_weights else compute
    model = load_model(config.model, quantize_4bit=method.quantize_4bit, weights_dtype=weights)
    torch.manual_seed(seed)  # adapter initialisation is part of the seeded run
    model = method.wrap(model, config.adapter)
    # Non-reentrant checkpointing works whether or not the inputs need gradients, so the frozen
    # embeddings' output does not get one (no `enable_input_require_grads`): the first layer's
    # input gradient, which nothing would read, is never computed.
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, compute


def start_run(config: RunConfig, resume: bool) -> Path:
    """Refuse to overwrite a run, check the model before any data work, save the resolved config."""
    run_dir, world = Path(config.train.output_dir), distributed.current()
    if (run_dir / "checkpoints").exists() and not resume:
        raise HoneError(f"{run_dir} already holds a run", "add --resume to continue it, or set train.output_dir to a new folder")
    check_weights(resolve_model_path(config.model.path), config.model)
    pick_device(config.model)
    distributed.barrier(world)  # every rank has looked before rank 0 writes
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)
    distributed.barrier(world)
    return run_dir


def train_and_save(config: RunConfig, tokenizer, train, evals, run_dir: Path, resume: bool, replay=None) -> dict:
    """Build the trainable model, fit it, save it; returns the summary fields every run shares."""
    world = distributed.current()
    model, compute = build_trainable(config, config.train.seed)
    trainable, total = count_parameters(model)
    print(f"method {config.adapter.method}: {trainable:,} trainable of {total:,} parameters, compute {str(compute).removeprefix('torch.')}")
    if world.parallel:
        print(f"{world.size} processes ({world.mode}): global batch {config.train.batch_size} per process x {world.size} "
              f"x {config.train.gradient_accumulation_steps} accumulation = "
              f"{config.train.batch_size * world.size * config.train.gradient_accumulation_steps} examples per step")
    device = distributed.device_for(world, pick_device(config.model))
    trackers = tracking.open_trackers(config, run_dir, world.main)
    setup = Setup(model, tokenizer.pad_token_id, device, compute, run_dir, objectives.get(config.train.objective), world, trackers)
    setup = objectives.started(setup, config, train, evals, resume)  # the objective's own settings and one-off work
    try:
        state = fit(setup, train, evals, config.train, resume=resume, replay=replay)
    finally:
        if trackers is not None:
            trackers.close()
    save_outputs(run_dir, model, tokenizer, config, setup.objective, world)
    memory = distributed.all_sum(world, [peak_rss_mb() if rank == world.rank else 0.0 for rank in range(world.size)], device)
    return {
        "method": config.adapter.method,
        "trained_tokens": state.trained_tokens,
        "train_seconds": round(state.train_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "processes": world.size,
        "distributed": world.mode if world.parallel else None,
        "peak_rss_mb_per_process": [round(value, 1) for value in memory],
        "tokens_per_s_per_process": round(state.trained_tokens / max(state.train_seconds, 1e-9) / world.size, 1),
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


def run_sft(config: RunConfig, resume: bool = False, plan=None, data: RunData | None = None) -> Path:
    """Train per `config`; returns the run folder. `data`: the run's data as the pipeline prepared
    it (read and tokenized once); without it, it is prepared here. `plan` (hone.plan.estimate.Plan,
    made before the run) puts its predicted training time beside the measured one in summary.json."""
    run_dir = start_run(config, resume)
    data = data or prepare_run_data(config.data, config.train.seed, load_tokenizer(config.model),
                                    tokenize=objectives.tokenizer_of(objectives.get(config.train.objective)))
    tokenizer, train, evals, reports = data.tokenizer, data.train, data.evals, data.reports
    for name, report in reports.items():
        print(report.line(name))
    replay = load_replay(config.replay, tokenizer, config.data.max_length)
    if replay:
        print(f"replay: {len(replay.items)} examples from {config.replay.data}, {config.replay.fraction:.0%} of each epoch")
    summary = train_and_save(config, tokenizer, train, evals, run_dir, resume, replay)
    if not distributed.current().main:
        return run_dir
    summary["length_policy"] = {name: vars(report) for name, report in reports.items()}
    summary["planned_train_seconds"] = planned_seconds(plan)
    planned = summary["planned_train_seconds"]
    print(f"trained {summary['steps']} steps in {summary['train_seconds']:.1f} s"
          + (f" (planned {planned:.1f} s)" if planned is not None else ""))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return run_dir


def planned_seconds(plan) -> float | None:
    """The plan's optimizer-step seconds for this machine, when it made a finite one."""
    if plan is None or not math.isfinite(plan.this_machine_train_seconds):
        return None
    return round(plan.this_machine_train_seconds, 3)


def save_outputs(run_dir: Path, model, tokenizer, config: RunConfig, objective=None,
                 world: World = distributed.SINGLE) -> None:
    """The method's weights (a PEFT adapter, or a whole model) at the run folder's top, with the
    tokenizer; an objective that saves its own way (a reward model's score head) does instead.
    From rank 0; a model FSDP sharded is gathered first (every rank takes part) into an unsharded
    copy, so the saved files are the ones one process would write."""
    if world.parallel and world.mode == "fsdp":
        model = distributed.gathered(model, world, lambda: build_trainable(config, config.train.seed)[0])
    if world.main:
        if hasattr(objective, "save"):
            objective.save(model, run_dir, config)
        else:
            get_method(config.adapter.method).save(model, run_dir)
        tokenizer.save_pretrained(run_dir)
    distributed.barrier(world)


def last_eval_loss(run_dir: Path) -> float | None:
    losses = [r["eval_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in r]
    return losses[-1] if losses else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

