"""hone's own training loop (not the transformers Trainer: owning it is what lets us make
it faster, leaner and safer). `fit` runs optimizer steps; batching, the divergence guard,
evaluation tracking, logging and checkpointing are separate functions it calls.

Speed comes from: packed padding-free batches with per-example attention (no compute on
padding), cross-entropy only over labelled positions in chunks (hone.train.loss), frozen
weights stored in the compute dtype (bf16 where the CPU multiplies it fast) while trained
weights and optimizer state stay fp32.

With several processes (torchrun; `hone.train.distributed`) the same loop runs on every rank:
each takes its share of every global micro-batch and the sums that decide anything (loss,
metrics, eval loss, the stop flag) are summed across ranks, so every rank decides alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from hone.errors import HoneError
from hone.train import distributed
from hone.train.checkpoint import (TrainState, best_checkpoint, latest_checkpoint, load_checkpoint, load_weights, read_state,
                                   save_checkpoint)
from hone.train.distributed import SINGLE, World
from hone.engine import engine
from hone.model.sizing import param_groups
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
    world: World = field(default=SINGLE)
    """This process among the training processes (`hone.train.distributed`); one by default."""
    tracker: object = None
    """Gets every metrics record besides metrics.jsonl (`hone.train.tracking.Trackers`), rank 0 only."""


class Batches:
    """Which examples each optimizer step trains on: a pure function of (seed, epoch, step).
    With `ranks` processes a micro-batch holds `batch_size x ranks` examples (the global one):
    the same on every rank, each of which trains on its share (`distributed.share`)."""

    def __init__(self, train: list[Tokenized], replay: Replay | None, args: TrainArgs, ranks: int = 1):
        self.items = train + (replay.items if replay else [])
        self.n_train, self.replay, self.args, self.ranks = len(train), replay, args, ranks
        self.cache: dict[int, list[list[int]]] = {}

    def epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self.cache:
            args, replay = self.args, self.replay
            order = epoch_order(self.n_train, len(replay.items) if replay else 0, replay.fraction if replay else 0.0, args.seed, epoch)
            # padding wants length-grouped batches; packing has no padding to save
            self.cache = {epoch: epoch_batches(self.items, args.batch_size * self.ranks, args.seed, epoch, order, group_by_length=not args.packing)}
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


def plan_steps(n_items: int, args: TrainArgs, ranks: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); `batch_size` is per rank."""
    micro = math.ceil(n_items / (args.batch_size * ranks))
    per_epoch = max(1, math.ceil(micro / args.gradient_accumulation_steps))
    total = args.max_steps if args.max_steps is not None else max(1, math.ceil(args.epochs * per_epoch))
    return per_epoch, total


def build_optimizer(model, args: TrainArgs, total_steps: int):
    # the method's parameter groups: some train at their own rate (LoRA+'s B, prompt vectors)
    params = param_groups(model, args.learning_rate)
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    warmup = math.ceil(args.warmup_ratio * total_steps) if args.warmup_ratio > 0 else 0
    return optimizer, warmup_cosine(optimizer, total_steps, min(warmup, total_steps - 1), args.min_lr_ratio)


def fit(setup: Setup, train: list[Tokenized], evals: list[Tokenized], args: TrainArgs, resume: bool = False,
        replay: Replay | None = None) -> TrainState:
    """Train `setup.model` in place and return the final state. Raises Interrupted on Ctrl-C,
    HoneError on divergence that rollbacks could not cure or on running out of memory."""
    world, checkpoints = setup.world, setup.run_dir / "checkpoints"
    found = latest_checkpoint(checkpoints) if resume else None
    args = keep_global_batch(args, read_state(found) if found else None, world)
    batches = Batches(train, replay, args, world.size)
    _, total = plan_steps(batches.per_epoch() * args.batch_size * world.size, args, world.size)
    stop = StopFlag()
    with stop.installed(), prepared(setup, args) as run:
        optimizer, scheduler = build_optimizer(setup.model, args, total)
        state = TrainState(global_micro_batch=args.batch_size * world.size)
        if found:
            state = load_checkpoint(found, setup.model, optimizer, scheduler, world)
            apply_lr_scale(optimizer, scheduler, state.lr_scale)
            print(f"resuming from {found} (step {state.step} of {total})")
        train_steps(setup, run, batches, evals, args, (optimizer, scheduler), state, total, stop)
    if state.stopped_early and best_checkpoint(checkpoints):
        load_weights(best_checkpoint(checkpoints), setup.model, world)  # the run's output is its best model
    return state


def keep_global_batch(args: TrainArgs, saved: TrainState | None, world: World) -> TrainArgs:
    """On resume with another number of ranks, the per-rank batch that keeps the checkpoint's
    global micro-batch (so the remaining steps see exactly the examples they would have)."""
    if saved is None or not saved.global_micro_batch or saved.global_micro_batch == args.batch_size * world.size:
        return args
    if saved.global_micro_batch % world.size:
        raise HoneError(f"the checkpoint trained on micro-batches of {saved.global_micro_batch} examples, which "
                        f"{world.size} processes cannot share evenly",
                        "resume with a number of processes that divides it (e.g. the one it was trained with)")
    per_rank = saved.global_micro_batch // world.size
    print(f"resuming on {world.size} process(es): train.batch_size {args.batch_size} -> {per_rank} per process keeps "
          f"the checkpoint's {saved.global_micro_batch} examples per micro-batch")
    return dataclasses.replace(args, batch_size=per_rank)


def train_steps(setup: Setup, run, batches: Batches, evals, args: TrainArgs, optimization, state: TrainState,
                total: int, stop: "StopFlag") -> None:
    """Optimizer steps from `state` to `total` with the guard, eval schedule and checkpoints."""
    optimizer, scheduler = optimization
    world, checkpoints = setup.world, setup.run_dir / "checkpoints"
    log = MetricsLog(setup.run_dir / "metrics.jsonl", keep_through_step=state.step, enabled=world.main, tracker=setup.tracker)
    bar = ProgressBar(total, state.step, enabled=args.progress and world.main)
    guard = DivergenceGuard(args)
    while state.step < total and not state.stopped_early:
        if guard.should_remember(state):
            guard.remember(setup.model, optimizer, scheduler, state)
        record = run_step(setup, batches.next_step(state), optimizer, scheduler, args, state, guard, run)
        if "rollback" in record:
            log.write(record)
            continue
        if evals and (state.step % args.eval_every == 0 or state.step == total):
            record["eval_loss"] = evaluate(setup, evals, args.batch_size, args.packing, run, metrics=record)
            record.update(watch_eval(state, record["eval_loss"], args))
        log.write(record)
        bar.update(record)
        stop.requested = agreed(world, stop.requested, setup.device)
        if state.step % args.save_every == 0 or state.step == total or stop.requested or state.stopped_early \
                or (record.get("best") and args.early_stopping_patience > 0):
            save_checkpoint(checkpoints, setup.model, optimizer, scheduler, state, args.keep_checkpoints, world)
        if stop.requested:
            bar.close()
            raise Interrupted(f"interrupted at step {state.step}; checkpoint saved in {checkpoints}")
    bar.close()


def agreed(world: World, requested: bool, device: torch.device) -> bool:
    """Ctrl-C reaches the ranks at different moments: any rank's request stops them all at one step."""
    return distributed.all_sum(world, [float(requested)], device)[0] > 0 if world.parallel else requested


@contextlib.contextmanager
def prepared(setup: Setup, args: TrainArgs):
    """The speed layer (`hone.engine`) for the duration of training, packing-aware attention
    included (gradient checkpointing is set when the model is built, `sft.build_trainable`),
    then DDP or FSDP around it with several processes. Yields the callable the objective runs
    through (`distributed.wrap`). Memory errors become a message naming the knobs."""
    # The fused layers join the projections' weights into one buffer (each weight a strided view of it),
    # which FSDP2 cannot shard: under FSDP the engine installs everything but them.
    sharded = setup.world.parallel and setup.world.mode == "fsdp"
    try:
        with engine(setup.model, setup.device, setup.compute_dtype, packing=args.packing, compile=args.compile,
                    fused_layers=not sharded):
            yield distributed.wrap(setup.model, setup.objective, setup.world, setup.device)
    except (RuntimeError, MemoryError) as exc:
        if not is_memory_error(exc):
            raise
        raise memory_error(exc, args, getattr(exc, "hone_tokens", 0), getattr(exc, "hone_step", 0)) from None


def run_step(setup: Setup, micro_batches, optimizer, scheduler, args: TrainArgs, state: TrainState, guard: DivergenceGuard,
             run=None) -> dict:
    """One optimizer step (or a rollback); advances `state` and returns the step's metrics record."""
    started = time.perf_counter()
    if hasattr(setup.objective, "begin_step"):  # an objective that samples seeds its samples by step
        setup.objective.begin_step(state.step + 1)
    try:
        loss, tokens, grad_norm, metrics = accumulate(setup, micro_batches, args, run)
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


def accumulate(setup: Setup, micro_batches: list[list[Tokenized]], args: TrainArgs, run=None) -> tuple[float, int, float, dict]:
    """Forward and backward over the micro-batches; (mean loss, count, clipped-before grad norm, mean metrics)."""
    loss, tokens, metrics = backward_pass(setup, micro_batches, "pack" if args.packing else "pad", args.max_row_tokens, run)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    clip = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    # under FSDP the norm is a DTensor already reduced over the shards: every rank reads the same value
    return loss, tokens, float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm), metrics


def backward_pass(setup: Setup, micro_batches: list[list[Tokenized]], layout: str,
                  max_row_tokens: int = 0, run=None) -> tuple[float, int, dict[str, float]]:
    """Accumulate gradients; the loss is the objective's mean over the whole step's count, so
    accumulation, batch size, layout, splitting packed rows and the number of ranks do not
    change what is optimised. Returns (mean loss, count, mean metrics), summed over the ranks.
    `run`: what the objective runs through (`distributed.wrap`; the objective itself by default)."""
    model, objective, world = setup.model, setup.objective, setup.world
    run = run or (lambda batch: objective.loss(model, batch))
    model.train()
    count = sum(objective.count(item) for batch in micro_batches for item in batch)  # the whole step's, on every rank
    n = max(count, 1) / world.size  # DDP and FSDP average gradients over the ranks: scaled back to a sum
    rows = rank_rows(micro_batches, layout, max_row_tokens, world)
    loss_sum, metric_sums = 0.0, {}
    for index, (items, weight) in enumerate(rows):
        batch = to_device(objective.batch(items, setup.pad_id, layout), setup.device)
        with distributed.no_sync(run, last=index == len(rows) - 1):
            with autocast(setup):
                out = run(batch)
            (out.total * (weight / n)).backward()
        loss_sum += out.total.item() * weight
        for key, value in out.metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * weight
    keys = sorted(metric_sums)
    summed = distributed.all_sum(world, [loss_sum, *(metric_sums[k] for k in keys)], setup.device)
    total = max(count, 1)
    return summed[0] / total, count, {key: value / total for key, value in zip(keys, summed[1:])}


def rank_rows(micro_batches: list[list[Tokenized]], layout: str, max_row_tokens: int, world: World) -> list[tuple[list, float]]:
    """This rank's forward passes of a step as (items, weight): its share of each micro-batch,
    packed into rows when `layout` is "pack". Every rank gets as many as the busiest one (each
    knows all shares): the extra ones repeat an example with weight 0, for the collectives."""
    per_rank: list[list] = [[] for _ in range(world.size)]
    for batch in micro_batches:
        for rank, part in enumerate(distributed.share(batch, world, key=lambda item: len(item.input_ids))):
            if part:
                per_rank[rank] += split_rows(part, max_row_tokens) if layout == "pack" else [part]
    mine = [(items, 1.0) for items in per_rank[world.rank]]
    return mine + [(micro_batches[0][:1], 0.0)] * (max(map(len, per_rank)) - len(mine))


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
def evaluate(setup: Setup, items: list[Tokenized], batch_size: int, packed: bool = False, run=None,
             metrics: dict | None = None) -> float:
    """The objective's mean loss over `items` (next-token loss over the scored tokens for
    causal LM). `packed` needs the model inside `hone.engine.engine` (as it is during `fit`).
    With several ranks each scores every ranks-th batch and the sums are added up. `metrics`
    receives the objective's own metrics as `eval_<name>` means, and the objective's
    `watch_eval(metrics)` (when it has one) sees them."""
    model, world = setup.model, setup.world
    run = run or (lambda batch: setup.objective.loss(model, batch))
    was_training = model.training
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    batches = [[items[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]
    mine = [(batch, 1.0) for batch in batches[world.rank :: world.size]]
    if batches:  # as many forwards on every rank
        mine += [(batches[0], 0.0)] * (-(-len(batches) // world.size) - len(mine))
    loss_sum, count, sums = 0.0, 0, {}
    for chosen, weight in mine:
        batch = to_device(setup.objective.batch(chosen, setup.pad_id, "pack" if packed else "pad"), setup.device)
        with autocast(setup):
            out = run(batch)
        loss_sum, count = loss_sum + out.total.item() * weight, count + out.count * weight
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) * weight
    model.train(was_training)
    loss_sum, count, *totals = distributed.all_sum(world, [loss_sum, count, *sums.values()], setup.device)
    if metrics is not None and sums:
        metrics.update({f"eval_{key}": total / max(count, 1) for key, total in zip(sums, totals)})
        if hasattr(setup.objective, "watch_eval"):
            setup.objective.watch_eval(metrics)
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
