"""Checkpoints that are never half-written.

A checkpoint is written into a temporary folder and renamed into place (rename is atomic
on POSIX), then `latest` is switched to it the same way. A kill at any moment leaves the
previous checkpoint usable. Loading uses safetensors and `torch.load(weights_only=True)`,
which refuses arbitrary pickled objects.

With several processes every rank writes into the same temporary folder (a filesystem all
ranks see), and rank 0 renames it once all have written. Under DDP the weights and optimizer
are the same on every rank, so rank 0 writes them as above; under FSDP each rank holds a shard
and they go through `torch.distributed.checkpoint` (`dcp/`), which reshards on load: a run
resumes on the same number of ranks, another number, or one process. Each rank keeps its own
random state (`rng-rank{r}.safetensors`; rank 0's is `rng.safetensors`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from hone.errors import HoneError
from hone.model.adapters import load_trainable_state, trainable_state
from hone.train.distributed import SINGLE, World, barrier, collective

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
    global_micro_batch: int = 0  # examples per micro-batch over all ranks (batch_size x ranks); 0: not recorded


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState, keep: int, world: World = SINGLE) -> Path:
    final = folder / f"step-{state.step:07d}"
    # one name every rank agrees on (rank 0's process id would not be known to the others)
    tmp = folder / (f".tmp-step-{state.step:07d}-{os.getpid()}" if not world.parallel else f".tmp-step-{state.step:07d}")
    if world.main:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(world)
    if world.mode == "fsdp" and world.parallel:
        options = StateDictOptions(ignore_frozen_params=True)
        state_dict = {"model": get_model_state_dict(model, options=options),
                      "optimizer": get_optimizer_state_dict(model, optimizer, options=options)}
        collective(world, lambda: dcp.save(state_dict, checkpoint_id=tmp / "dcp"))
    elif world.main:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(_rng_state(), tmp / _rng_file(world.rank))
    barrier(world)  # every rank's files are in before the folder becomes a checkpoint
    if world.main:
        _write_json(tmp / "scheduler.json", scheduler.state_dict())
        _write_json(tmp / STATE_FILE, asdict(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_json(folder / "latest", {"checkpoint": final.name})
        if state.best_step == state.step:
            _write_json(folder / "best", {"checkpoint": final.name, "step": state.step, "eval_loss": state.best_eval_loss})
        _prune(folder, keep, protect={final.name, _best_name(folder)})
    barrier(world)
    return final


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"


def _rng_state() -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


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


def read_state(path: Path) -> TrainState:
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


def load_checkpoint(path: Path, model, optimizer, scheduler, world: World = SINGLE) -> TrainState:
    """Restore weights, optimizer, schedule and this rank's random state (rank 0's for a rank the
    checkpoint did not have)."""
    if (path / "dcp").is_dir():
        _load_sharded(path, model, optimizer, world, with_optimizer=True)
    elif world.mode == "fsdp" and world.parallel:
        raise HoneError(f"{path} was written by one process or by DDP; this run shards the model with FSDP",
                        "resume it with train.distributed=ddp (any number of processes), or with one process")
    else:
        load_trainable_state(model, load_file(path / "trainable.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    own = path / _rng_file(world.rank)
    rng = load_file(own if own.is_file() else path / _rng_file(0))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return read_state(path)


def _load_sharded(path: Path, model, optimizer, world: World, with_optimizer: bool) -> None:
    """A `torch.distributed.checkpoint` state into `model` (sharded or not: DCP reshards)."""
    options = StateDictOptions(ignore_frozen_params=True, strict=False)  # frozen weights come from the base, not the checkpoint
    state = {"model": get_model_state_dict(model, options=options)}
    if with_optimizer:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer, options=options)
    collective(world, lambda: dcp.load(state, checkpoint_id=path / "dcp"))
    set_model_state_dict(model, state["model"], options=options)
    if with_optimizer:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)


def load_weights(path: Path, model, world: World = SINGLE) -> None:
    """Only the trainable weights of a checkpoint (e.g. the best one, at the end of a run)."""
    if (path / "dcp").is_dir():
        _load_sharded(path, model, None, world, with_optimizer=False)
    else:
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
