"""Checkpoints that are never half-written.

A checkpoint is written into a temporary folder and renamed into place (rename is atomic
on POSIX), then `latest` is switched to it the same way. A kill at any moment leaves the
previous checkpoint usable. Loading uses safetensors and `torch.load(weights_only=True)`,
which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hone.model.adapters import load_trainable_state, trainable_state

STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


@dataclass
class TrainState:
    """Where training stands; enough, with the weights and optimizer, to resume exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    trained_tokens: int = 0
    train_seconds: float = 0.0
    best_eval_loss: float | None = None
    best_step: int | None = None
    # divergence guard (see hone.train.guard)
    loss_ema: float | None = None  # running average of healthy step losses
    healthy_steps: int = 0
    lr_scale: float = 1.0  # product of the learning-rate cuts made by rollbacks
    rollbacks: int = 0
    retries: int = 0  # rollbacks since the last good state was kept
    # evaluation tracking: early stopping and the overfitting signal
    last_eval_loss: float | None = None
    last_train_loss: float | None = None  # mean train loss between the last two evaluations
    window_loss: float = 0.0
    window_steps: int = 0
    evals_without_improvement: int = 0
    stopped_early: bool = False
    overfitting_step: int | None = None  # first evaluation that showed the overfitting signal


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step:07d}"
    tmp = folder / f".tmp-step-{state.step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, tmp / "rng.safetensors")
    _write_json(tmp / "scheduler.json", scheduler.state_dict())
    _write_json(tmp / STATE_FILE, asdict(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_json(folder / "latest", {"checkpoint": final.name})
    if state.best_step == state.step:
        _write_json(folder / "best", {"checkpoint": final.name, "step": state.step, "eval_loss": state.best_eval_loss})
    _prune(folder, keep, protect={final.name, _best_name(folder)})
    return final


def best_checkpoint(folder: Path) -> Path | None:
    """The checkpoint marked best by eval loss, if it was saved and is complete."""
    return _follow(folder / "best")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint, trusting `latest` only if it points at a complete one."""
    found = _follow(folder / "latest")
    if found:
        return found
    complete = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


def _follow(pointer: Path) -> Path | None:
    if pointer.is_file():
        try:
            candidate = pointer.parent / json.loads(pointer.read_text())["checkpoint"]
            if (candidate / STATE_FILE).is_file():
                return candidate
        except (ValueError, KeyError):
            pass
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    load_trainable_state(model, load_file(path / "trainable.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


def load_weights(path: Path, model) -> None:
    """Only the trainable weights of a checkpoint (e.g. the best one, at the end of a run)."""
    load_trainable_state(model, load_file(path / "trainable.safetensors"))


def _best_name(folder: Path) -> str | None:
    best = best_checkpoint(folder)
    return best.name if best else None


def _prune(folder: Path, keep: int, protect: set) -> None:
    complete = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file())
    for old in complete[:-keep] if keep > 0 else []:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_json(path: Path, data) -> None:
    """Write then rename, so readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
