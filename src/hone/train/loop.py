"""hone's own training loop (not the transformers Trainer: owning it is what lets us make
it faster, leaner and safer). `fit` runs optimizer steps; logging, evaluation and
checkpointing are separate functions it calls."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hone.config import TrainArgs
from hone.data.collate import epoch_batches, pad_batch
from hone.data.render import Tokenized
from hone.train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from hone.train.loss import token_loss
from hone.train.metrics import MetricsLog, ProgressBar
from hone.train.schedule import warmup_cosine


class Interrupted(Exception):
    """Training stopped on Ctrl-C after saving a checkpoint."""


@dataclass
class Setup:
    """Everything `fit` needs besides the data and the arguments."""

    model: torch.nn.Module
    pad_id: int
    device: torch.device
    compute_dtype: torch.dtype
    run_dir: Path


def plan_steps(n_items: int, args: TrainArgs) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    micro = math.ceil(n_items / args.batch_size)
    per_epoch = max(1, math.ceil(micro / args.gradient_accumulation_steps))
    total = args.max_steps if args.max_steps is not None else max(1, math.ceil(args.epochs * per_epoch))
    return per_epoch, total


def build_optimizer(model, args: TrainArgs, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    warmup = math.ceil(args.warmup_ratio * total_steps) if args.warmup_ratio > 0 else 0
    return optimizer, warmup_cosine(optimizer, total_steps, min(warmup, total_steps - 1), args.min_lr_ratio)


def fit(setup: Setup, train: list[Tokenized], evals: list[Tokenized], args: TrainArgs, resume: bool = False) -> TrainState:
    """Train `setup.model` in place and return the final state. Raises Interrupted on Ctrl-C."""
    _, total = plan_steps(len(train), args)
    optimizer, scheduler = build_optimizer(setup.model, args, total)
    checkpoints = setup.run_dir / "checkpoints"
    state = TrainState()
    found = latest_checkpoint(checkpoints) if resume else None
    if found:
        state = load_checkpoint(found, setup.model, optimizer, scheduler)
        print(f"resuming from {found} (step {state.step} of {total})")
    log = MetricsLog(setup.run_dir / "metrics.jsonl", keep_through_step=state.step)
    bar = ProgressBar(total, state.step, enabled=args.progress)
    stop = StopFlag()
    with stop.installed():
        while state.step < total:
            for micro_batches in step_groups(train, args, state):
                record = run_step(setup, train, micro_batches, optimizer, scheduler, args, state)
                if evals and (state.step % args.eval_every == 0 or state.step == total):
                    record["eval_loss"] = evaluate(setup, evals, args.batch_size)
                    track_best(state, record["eval_loss"])
                log.write(record)
                bar.update(record)
                if state.step % args.save_every == 0 or state.step == total or stop.requested:
                    save_checkpoint(checkpoints, setup.model, optimizer, scheduler, state, args.keep_checkpoints)
                if stop.requested:
                    bar.close()
                    raise Interrupted(f"interrupted at step {state.step}; checkpoint saved in {checkpoints}")
                if state.step >= total:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
    bar.close()
    return state


def step_groups(train: list[Tokenized], args: TrainArgs, state: TrainState):
    """Yield the micro-batches (index lists) of each optimizer step, from `state.batch_in_epoch` on."""
    batches = epoch_batches(train, args.batch_size, args.seed, state.epoch)
    accumulate = args.gradient_accumulation_steps
    for start in range(state.batch_in_epoch, len(batches), accumulate):
        yield batches[start : start + accumulate]


def run_step(setup: Setup, train, micro_batches, optimizer, scheduler, args: TrainArgs, state: TrainState) -> dict:
    """One optimizer step; advances `state` and returns the step's metrics record."""
    started = time.perf_counter()
    loss, tokens = train_step(setup, [[train[i] for i in batch] for batch in micro_batches], optimizer, args.max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    scheduler.step()
    seconds = time.perf_counter() - started
    state.step += 1
    state.batch_in_epoch += len(micro_batches)
    state.trained_tokens += tokens
    state.train_seconds += seconds
    return {"step": state.step, "loss": loss, "lr": lr, "trained_tokens": state.trained_tokens,
            "tokens_per_s": tokens / max(seconds, 1e-9)}


def train_step(setup: Setup, micro_batches: list[list[Tokenized]], optimizer, max_grad_norm: float) -> tuple[float, int]:
    """Accumulate gradients over the micro-batches, clip, step. Loss is the mean over trained tokens
    of the whole step, so accumulation and batch size do not change what is optimised."""
    model = setup.model
    model.train()
    n_tokens = sum(item.trained_tokens for batch in micro_batches for item in batch)
    loss_sum = 0.0
    for items in micro_batches:
        batch = to_device(pad_batch(items, setup.pad_id), setup.device)
        with autocast(setup):
            total, _ = token_loss(model, batch)
        (total / max(n_tokens, 1)).backward()
        loss_sum += total.item()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / max(n_tokens, 1), n_tokens


@torch.no_grad()
def evaluate(setup: Setup, items: list[Tokenized], batch_size: int) -> float:
    """Mean next-token loss over the trained tokens of `items`."""
    model = setup.model
    was_training = model.training
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    loss_sum, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = to_device(pad_batch([items[i] for i in order[start : start + batch_size]], setup.pad_id), setup.device)
        with autocast(setup):
            total, n = token_loss(model, batch)
        loss_sum, count = loss_sum + total.item(), count + n
    model.train(was_training)
    return loss_sum / max(count, 1)


def track_best(state: TrainState, eval_loss: float) -> None:
    if state.best_eval_loss is None or eval_loss < state.best_eval_loss:
        state.best_eval_loss, state.best_step = eval_loss, state.step


def autocast(setup: Setup):
    """bf16/fp16 compute where chosen; weights that train stay fp32."""
    if setup.compute_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.compute_dtype)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


class StopFlag:
    """First Ctrl-C asks the loop to checkpoint and stop at the next step boundary; a second one aborts."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)")

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
