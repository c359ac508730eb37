"""Time a few real training steps of the run's own model on this CPU.

FLOPs divided by a matmul rate misses what dominates small models on a CPU (op dispatch,
autograd, attention over packed examples, the 4096-wide logits, the optimizer): bench/plan_accuracy.py
measured -35% to -61% errors that way. So for models small enough to build in a second or two,
the plan builds the model from its config.json (random weights: speed does not depend on the
values), applies the run's method, and times optimizer steps of hone's own `train_step` on
batches of the run's real tokenized examples, with the layout `fit` uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from hone.data.collate import PACK_MULTIPLE, row_length, split_rows
from hone.data.formats import FormatError, to_example
from hone.data.io import BadLine
from hone.data.render import Tokenized
from hone.data.replay import Replay, iter_replay_records, replay_items
from hone.model.adapters import apply_method
from hone.model.load import load_config_only, pick_device, pick_dtype
from hone.model.methods import get
from hone.train.checkpoint import TrainState
from hone.train.loop import Batches, Setup, build_optimizer, evaluate, plan_steps, prepared, train_step

MAX_CALIBRATED_PARAMS = 200_000_000
"""Above this a CPU run falls back to the FLOPs estimate: building ~200M fp32/bf16 parameters
from config takes a few seconds and one step of it tens of seconds on a 2-core CPU, so timing
it would make `hone plan` itself slow; such runs take days on a CPU, where ±30% matters less."""

BUDGET_S = 4.0
"""Seconds the timed steps may take (after the warm-up): keeps the plan under ~10 s. The warm-up
and evaluation steps are not timed against it, so hone.plan.estimate.untimed_seconds predicts
them from FLOPs first and leaves a run to the FLOPs estimate when they would not fit in it."""


@dataclass
class StepTiming:
    """What the timed steps showed; seconds scale with the tokens a step processes."""

    seconds_per_token: float
    """Training (forward + backward + optimizer) seconds per processed token, padding or packing filler included."""
    eval_seconds_per_token: float
    """Forward-only seconds per processed token, as `evaluate` runs it."""
    steps: int
    tokens: int


def processed_tokens(items: list[Tokenized], packing: bool, max_row_tokens: int = 0) -> int:
    """Tokens the model runs over for one micro-batch, as `hone.train.loop.backward_pass` builds
    it: padded, or packed into rows of at most `max_row_tokens` (each rounded up to its length)."""
    if packing:
        return sum(row_length(sum(len(item.input_ids) for item in row), PACK_MULTIPLE) for row in split_rows(items, max_row_tokens))
    return max(len(item.input_ids) for item in items) * len(items)


def build_random_trainable(config):
    """The run's model and method (as `hone.train.sft.build_trainable` builds them) with random weights."""
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(config.model)
    compute = pick_dtype(config.model, device)
    weights = torch.float32 if get(config.adapter.method).fp32_master_weights else compute
    model = AutoModelForCausalLM.from_config(load_config_only(config.model), dtype=weights).to(device)
    model = apply_method(model, config.adapter)
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, compute, device


def time_steps(config, batches: list[list[Tokenized]], eval_batch: list[Tokenized] | None, budget_s: float = BUDGET_S) -> StepTiming:
    """One warm-up step on two examples of `batches[0]`, then timed steps on the next whole
    batches while they fit in `budget_s` (at least one); the mean seconds per processed token
    (the slowest step left out).
    Only a first batch larger than the whole budget is cut to fewer examples: per-step fixed
    costs are then a small share of a step anyway."""
    model, compute, device = build_random_trainable(config)
    setup = Setup(model, 0, device, compute, None)
    args = config.train
    optimizer, _ = build_optimizer(model, args, total_steps=10)
    layout = "pack" if args.packing else "pad"

    def processed(items: list[Tokenized]) -> int:
        return processed_tokens(items, args.packing, args.max_row_tokens)

    # the run's own switches (fused layers, C kernels, kept heap), without compiling: the plan
    # times steps as `fit` runs them, and a compile would eat its budget
    with prepared(setup, replace(args, compile=False)):
        start = time.perf_counter()  # warm-up on two examples: a big model's full batch could take a minute
        train_step(setup, [batches[0][:2]], optimizer, args.max_grad_norm, layout, args.max_row_tokens)
        warm = (time.perf_counter() - start) / processed(batches[0][:2])
        seconds, tokens, rates = 0.0, 0, []
        for batch in batches[1:] or batches:
            size = processed(batch)
            guess = (rates[-1] if rates else warm) * size
            if rates and seconds + guess > budget_s:
                break  # whole batches only: a cut one is a shape the run never trains on, and slower per token
            if not rates and guess > budget_s:  # a big model: time one step on part of the batch
                batch = batch[: max(1, int(len(batch) * budget_s / guess))]
                size = processed(batch)
            start = time.perf_counter()
            train_step(setup, [batch], optimizer, args.max_grad_norm, layout, args.max_row_tokens)
            elapsed = time.perf_counter() - start
            rates.append(elapsed / size)
            seconds += elapsed
            tokens += size
        # the mean, not the median: the run pays for its slow steps (new shapes, the machine's
        # slow phases), and the median read 10% under real runs; but without the slowest step when
        # there are a few, as one step in many can run 10x slower when another process takes a core
        kept = sorted(rates)[:-1] if len(rates) >= 4 else rates
        rate = sum(kept) / len(kept)
        eval_rate = rate / 3  # forward only: about a third of a training step
        if eval_batch:
            start = time.perf_counter()
            evaluate(setup, eval_batch, len(eval_batch), args.packing)
            eval_rate = (time.perf_counter() - start) / processed_tokens(eval_batch, args.packing)
    return StepTiming(rate, eval_rate, steps=len(rates), tokens=tokens)


@dataclass
class RunTokens:
    """What the whole run will process, batch by batch as `fit` draws them."""

    steps: int
    train_tokens: int
    """Processed tokens over all optimizer steps (replay, padding and packing filler included)."""
    eval_tokens: int
    """Processed tokens over all evaluation passes."""
    first_batches: list[list[Tokenized]]
    """The run's first micro-batches: what the timed steps train on."""


def run_tokens(train: list[Tokenized], evals: list[Tokenized], replay, args, keep: int = 16) -> RunTokens:
    """Walk the run's batches exactly as `fit` does (same seed, replay mix and layout)."""
    batches = Batches(train, replay, args)
    _, total = plan_steps(batches.per_epoch() * args.batch_size, args)
    state, tokens, first = TrainState(), 0, []
    for _ in range(total):
        micro = batches.next_step(state)
        state.batch_in_epoch += len(micro)
        tokens += sum(processed_tokens(batch, args.packing, args.max_row_tokens) for batch in micro)
        first += micro[: keep - len(first)]
    passes = (total // args.eval_every + (total % args.eval_every != 0)) if evals else 0
    ordered = sorted(evals, key=lambda item: len(item.input_ids))
    per_pass = sum(processed_tokens(ordered[i : i + args.batch_size], args.packing) for i in range(0, len(ordered), args.batch_size))
    return RunTokens(total, tokens, passes * per_pass, first)


def replay_sample(config, tokenizer, documents: int = 200):
    """The run's replay mix with items from the first `documents` records of `replay.data` only:
    how many replay items an epoch draws depends only on the fraction, and their lengths on
    the block size; tokenizing a whole corpus would take seconds (6 s for the quickstart's)."""
    args = config.replay
    if not args.data or not 0 < args.fraction < 1:
        return None
    items = []
    for count, (line, record) in enumerate(iter_replay_records(args.data)):
        if count >= documents:
            break
        if isinstance(record, BadLine):
            continue
        try:
            items += replay_items(tokenizer, to_example(record, line, str(args.data)), config.data.max_length)
        except FormatError:
            continue
    return Replay(items, args.fraction) if items else None
