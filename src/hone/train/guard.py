"""Guards that keep a run from silently going wrong.

- `DivergenceGuard`: a non-finite loss or gradient, or a loss spike beyond
  `spike_factor` x the running average, rolls the run back to the last good state kept in
  memory and lowers the learning rate; after `max_retries` failed retries it stops with
  an error that says what to change.
- `watch_eval`: early stopping on eval loss with patience, and the overfitting signal
  (eval loss rising while train loss falls).
- `memory_error`: turns an allocator failure into a message naming the knobs.

All the state these decisions need lives in `TrainState`, so a resumed run decides
exactly as the uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

import torch

from hone.config import TrainArgs
from hone.errors import HoneError
from hone.train.checkpoint import TrainState

EMA_DECAY = 0.9  # running average of recent healthy step losses
WARM_STEPS = 5  # no spike verdicts before this many healthy steps: early losses move fast


class DivergenceGuard:
    """Judges each step before its update is applied; keeps the last good state."""

    def __init__(self, args: TrainArgs):
        self.args = args
        self.snapshot = None
        self.snapshot_step = -1

    def verdict(self, state: TrainState, loss: float, grad_norm: float) -> str | None:
        """None when the step is healthy, else the reason it is not."""
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            return f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} ({loss:.4g})"
        factor = self.args.spike_factor
        if factor > 0 and state.loss_ema is not None and state.healthy_steps >= WARM_STEPS and loss > factor * state.loss_ema:
            return f"loss spike {loss:.4g} > {factor:g} x recent average {state.loss_ema:.4g}"
        return None

    def healthy(self, state: TrainState, loss: float) -> None:
        state.loss_ema = loss if state.loss_ema is None else EMA_DECAY * state.loss_ema + (1 - EMA_DECAY) * loss
        state.healthy_steps += 1

    def remember(self, model, optimizer, scheduler, state: TrainState) -> None:
        """Keep a copy of everything a rollback restores (trainable weights only)."""
        weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        self.snapshot = (weights, copy.deepcopy(optimizer.state_dict()), scheduler.state_dict(), asdict(state), torch.get_rng_state())
        self.snapshot_step = state.step
        state.retries = 0  # got past the step that failed: a fresh budget of retries

    def should_remember(self, state: TrainState) -> bool:
        """Every `guard_every` steps, but not again at the step just rolled back to."""
        return self.snapshot is None or (state.step % max(1, self.args.guard_every) == 0 and state.step > self.snapshot_step)

    def rollback(self, model, optimizer, scheduler, state: TrainState, reason: str) -> str:
        """Restore the last good state with a lowered learning rate; raise after too many tries."""
        retries = state.retries + 1
        failed_step = state.step + 1
        if retries > self.args.max_retries or self.snapshot is None:
            lr = optimizer.param_groups[0]["lr"]
            raise HoneError(
                f"training diverged at step {failed_step}: {reason}, and still did after {retries - 1} rollbacks "
                f"with the learning rate lowered to {lr:.3g}",
                f"lower train.learning_rate (e.g. {self.args.learning_rate * self.args.lr_backoff ** retries:.3g}), "
                "raise train.warmup_ratio, keep train.max_grad_norm at 1.0; if it is always the same step, check that batch's examples",
            )
        weights, optim_state, sched_state, saved, rng = self.snapshot
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(copy.deepcopy(optim_state))
        scheduler.load_state_dict(sched_state)
        torch.set_rng_state(rng)
        lr_scale = state.lr_scale * self.args.lr_backoff
        rollbacks = state.rollbacks + 1
        for key, value in saved.items():
            setattr(state, key, value)
        state.lr_scale, state.rollbacks, state.retries = lr_scale, rollbacks, retries
        apply_lr_scale(optimizer, scheduler, lr_scale)
        return (f"step {failed_step}: {reason}; rolled back to step {state.step} and lowered the learning rate "
                f"x{lr_scale:.3g} (retry {retries} of {self.args.max_retries})")


def apply_lr_scale(optimizer, scheduler, lr_scale: float) -> None:
    """Scale the schedule's base rates so every later step runs at `lr_scale` of the plan."""
    scheduler.base_lrs = [group["initial_lr"] * lr_scale for group in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, [f(scheduler.last_epoch) for f in scheduler.lr_lambdas]):
        group["lr"] = group["initial_lr"] * lr_scale * factor


def watch_eval(state: TrainState, eval_loss: float, args: TrainArgs) -> dict:
    """Update best / patience / overfitting tracking after an evaluation; returns metric fields."""
    out = {}
    train_loss = state.window_loss / max(state.window_steps, 1)
    state.window_loss, state.window_steps = 0.0, 0
    if state.last_eval_loss is not None and state.last_train_loss is not None:
        if eval_loss > state.last_eval_loss and train_loss < state.last_train_loss:
            out["overfitting"] = True
            state.overfitting_step = state.overfitting_step or state.step
            print(f"overfitting signal at step {state.step}: eval loss rose {state.last_eval_loss:.4f} -> {eval_loss:.4f} "
                  f"while train loss fell {state.last_train_loss:.4f} -> {train_loss:.4f}; "
                  "consider fewer epochs, train.early_stopping_patience, or more data")
    state.last_eval_loss, state.last_train_loss = eval_loss, train_loss
    if state.best_eval_loss is None or eval_loss < state.best_eval_loss - args.early_stopping_min_delta:
        state.best_eval_loss, state.best_step = eval_loss, state.step
        state.evals_without_improvement = 0
        out["best"] = True
    else:
        state.evals_without_improvement += 1
        patience = args.early_stopping_patience
        if patience > 0 and state.evals_without_improvement >= patience:
            state.stopped_early = True
            print(f"early stopping at step {state.step}: no eval improvement in {patience} evaluations; "
                  f"best eval loss {state.best_eval_loss:.4f} at step {state.best_step}")
    return out


OOM_MARKERS = ("out of memory", "not enough memory", "can't allocate memory", "failed to allocate")


def is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in OOM_MARKERS)


def memory_error(exc: BaseException, args: TrainArgs, tokens: int, step: int) -> HoneError:
    where = "GPU" if isinstance(exc, torch.OutOfMemoryError) or "CUDA" in str(exc) else "system"
    return HoneError(
        f"ran out of {where} memory at step {step} (a micro-batch of {tokens} tokens)",
        f"lower train.batch_size (now {args.batch_size}) and raise train.gradient_accumulation_steps to keep the "
        "effective batch, lower data.max_length, set train.gradient_checkpointing=true, or use adapter.method=qlora",
    )
