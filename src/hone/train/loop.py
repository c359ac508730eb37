"""hone's own training loop (not the transformers Trainer: owning it is what lets us make
it faster, leaner and safer). `fit` runs optimizer steps; batching, the divergence guard,
evaluation tracking, logging and checkpointing are separate functions it calls.

Speed comes from: packed padding-free batches with per-example attention (no compute on
padding), cross-entropy only over labelled positions in chunks (hone.train.loss), frozen
weights stored in the compute dtype (bf16 where the CPU multiplies it fast) while trained
weights and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hone.config import TrainArgs
from hone.data.collate import epoch_batches, epoch_order, split_rows
from hone.data.render import Tokenized
from hone.data.replay import Replay
from hone.train.checkpoint import TrainState, best_checkpoint, latest_checkpoint, load_checkpoint, load_weights, save_checkpoint
from hone.engine import engine
from hone.train.guard import DivergenceGuard, apply_lr_scale, is_memory_error, memory_error, watch_eval
from hone.train.objectives import CAUSAL_LM, Objective
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
    objective: Objective = field(default=CAUSAL_LM)
    """How examples become a batch and a batch a loss (`hone.train.objectives`)."""


class Batches:
    """Which examples each optimizer step trains on: a pure function of (seed, epoch, step)."""

    def __init__(self, train: list[Tokenized], replay: Replay | None, args: TrainArgs):
        self.items = train + (replay.items if replay else [])
        self.n_train, self.replay, self.args = len(train), replay, args
        self.cache: dict[int, list[list[int]]] = {}

    def epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self.cache:
            args, replay = self.args, self.replay
            order = epoch_order(self.n_train, len(replay.items) if replay else 0, replay.fraction if replay else 0.0, args.seed, epoch)
            # padding wants length-grouped batches; packing has no padding to save
            self.cache = {epoch: epoch_batches(self.items, args.batch_size, args.seed, epoch, order, group_by_length=not args.packing)}
        return self.cache[epoch]

    def per_epoch(self) -> int:
        return len(self.epoch(0))

    def next_step(self, state: TrainState) -> list[list[Tokenized]]:
        """The micro-batches of the step after `state`, moving `state` to the next epoch if needed."""
        if state.batch_in_epoch >= len(self.epoch(state.epoch)):
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        batches = self.epoch(state.epoch)
        chosen = batches[state.batch_in_epoch : state.batch_in_epoch + self.args.gradient_accumulation_steps]
        return [[self.items[i] for i in batch] for batch in chosen]


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


def fit(setup: Setup, train: list[Tokenized], evals: list[Tokenized], args: TrainArgs, resume: bool = False,
        replay: Replay | None = None) -> TrainState:
    """Train `setup.model` in place and return the final state. Raises Interrupted on Ctrl-C,
    HoneError on divergence that rollbacks could not cure or on running out of memory."""
    batches = Batches(train, replay, args)
    _, total = plan_steps(batches.per_epoch() * args.batch_size, args)
    optimizer, scheduler = build_optimizer(setup.model, args, total)
    checkpoints = setup.run_dir / "checkpoints"
    state = TrainState()
    found = latest_checkpoint(checkpoints) if resume else None
    if found:
        state = load_checkpoint(found, setup.model, optimizer, scheduler)
        apply_lr_scale(optimizer, scheduler, state.lr_scale)
        print(f"resuming from {found} (step {state.step} of {total})")
    log = MetricsLog(setup.run_dir / "metrics.jsonl", keep_through_step=state.step)
    bar = ProgressBar(total, state.step, enabled=args.progress)
    guard, stop = DivergenceGuard(args), StopFlag()
    with stop.installed(), prepared(setup, args):
        while state.step < total and not state.stopped_early:
            if guard.should_remember(state):
                guard.remember(setup.model, optimizer, scheduler, state)
            record = run_step(setup, batches.next_step(state), optimizer, scheduler, args, state, guard)
            if "rollback" in record:
                log.write(record)
                continue
            if evals and (state.step % args.eval_every == 0 or state.step == total):
                record["eval_loss"] = evaluate(setup, evals, args.batch_size, args.packing)
                record.update(watch_eval(state, record["eval_loss"], args))
            log.write(record)
            bar.update(record)
            if state.step % args.save_every == 0 or state.step == total or stop.requested or state.stopped_early \
                    or (record.get("best") and args.early_stopping_patience > 0):
                save_checkpoint(checkpoints, setup.model, optimizer, scheduler, state, args.keep_checkpoints)
            if stop.requested:
                bar.close()
                raise Interrupted(f"interrupted at step {state.step}; checkpoint saved in {checkpoints}")
    bar.close()
    if state.stopped_early and best_checkpoint(checkpoints):
        load_weights(best_checkpoint(checkpoints), setup.model)  # the run's output is its best model
    return state


@contextlib.contextmanager
def prepared(setup: Setup, args: TrainArgs):
    """The speed layer (`hone.engine`) for the duration of training, packing-aware attention
    included (gradient checkpointing is set when the model is built, `sft.build_trainable`);
    memory errors become a message naming the knobs."""
    try:
        with engine(setup.model, setup.device, setup.compute_dtype, packing=args.packing, compile=args.compile):
            yield
    except (RuntimeError, MemoryError) as exc:
        if not is_memory_error(exc):
            raise
        raise memory_error(exc, args, getattr(exc, "hone_tokens", 0), getattr(exc, "hone_step", 0)) from None


def run_step(setup: Setup, micro_batches, optimizer, scheduler, args: TrainArgs, state: TrainState, guard: DivergenceGuard) -> dict:
    """One optimizer step (or a rollback); advances `state` and returns the step's metrics record."""
    started = time.perf_counter()
    try:
        loss, tokens, grad_norm, metrics = accumulate(setup, micro_batches, args)
    except RuntimeError as exc:  # tag memory errors with where they happened (see `prepared`)
        exc.hone_step, exc.hone_tokens = state.step + 1, max(sum(len(i.input_ids) for i in b) for b in micro_batches)
        raise
    reason = guard.verdict(state, loss, grad_norm)
    if reason:
        optimizer.zero_grad(set_to_none=True)
        message = guard.rollback(setup.model, optimizer, scheduler, state, reason)
        print(f"divergence guard: {message}")
        return {"step": state.step, "rollback": message, "lr_scale": state.lr_scale}
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    guard.healthy(state, loss)
    seconds = time.perf_counter() - started
    state.step += 1
    state.batch_in_epoch += len(micro_batches)
    state.trained_tokens += tokens
    state.train_seconds += seconds
    state.window_loss, state.window_steps = state.window_loss + loss, state.window_steps + 1
    return {"step": state.step, "loss": loss, "lr": lr, "trained_tokens": state.trained_tokens,
            "tokens_per_s": tokens / max(seconds, 1e-9), **metrics}


def accumulate(setup: Setup, micro_batches: list[list[Tokenized]], args: TrainArgs) -> tuple[float, int, float, dict]:
    """Forward and backward over the micro-batches; (mean loss, count, clipped-before grad norm, mean metrics)."""
    loss, tokens, metrics = backward_pass(setup, micro_batches, "pack" if args.packing else "pad", args.max_row_tokens)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    clip = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    return loss, tokens, grad_norm, metrics


def backward_pass(setup: Setup, micro_batches: list[list[Tokenized]], layout: str,
                  max_row_tokens: int = 0) -> tuple[float, int, dict[str, float]]:
    """Accumulate gradients; the loss is the objective's mean over the whole step's count, so
    accumulation, batch size, layout and splitting packed rows do not change what is optimised.
    Returns (mean loss, count, mean metrics)."""
    model, objective = setup.model, setup.objective
    model.train()
    count = sum(objective.count(item) for batch in micro_batches for item in batch)
    n = max(count, 1)
    loss_sum, metric_sums = 0.0, {}
    rows = [row for items in micro_batches for row in split_rows(items, max_row_tokens)] if layout == "pack" else micro_batches
    for items in rows:
        batch = to_device(objective.batch(items, setup.pad_id, layout), setup.device)
        with autocast(setup):
            out = objective.loss(model, batch)
        (out.total / n).backward()
        loss_sum += out.total.item()
        for key, value in out.metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
    return loss_sum / n, count, {key: value / n for key, value in metric_sums.items()}


def train_step(setup: Setup, micro_batches: list[list[Tokenized]], optimizer, max_grad_norm: float, layout: str = "pad",
               max_row_tokens: int = 0) -> tuple[float, int]:
    """One plain optimizer step (no guard, no schedule): accumulate, clip, step. Packed
    layout needs the model inside `hone.engine.engine`."""
    loss, tokens, _ = backward_pass(setup, micro_batches, layout, max_row_tokens)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in setup.model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, tokens


@torch.no_grad()
def evaluate(setup: Setup, items: list[Tokenized], batch_size: int, packed: bool = False) -> float:
    """The objective's mean loss over `items` (next-token loss over the scored tokens for
    causal LM). `packed` needs the model inside `hone.engine.engine` (as it is during `fit`)."""
    model = setup.model
    was_training = model.training
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    loss_sum, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        chosen = [items[i] for i in order[start : start + batch_size]]
        batch = to_device(setup.objective.batch(chosen, setup.pad_id, "pack" if packed else "pad"), setup.device)
        with autocast(setup):
            out = setup.objective.loss(model, batch)
        loss_sum, count = loss_sum + out.total.item(), count + out.count
    model.train(was_training)
    return loss_sum / max(count, 1)


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
