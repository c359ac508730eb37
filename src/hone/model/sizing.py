"""What a method's table entry reports to `hone plan`, and what it asks of the optimizer.

Kept apart from hone.model.methods so that the modules of each method family can build
these without importing the table that registers them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GROUPS = "_hone_param_groups"  # on a wrapped model: lr -> the optimizer's parameter groups


@dataclass(frozen=True)
class Sizing:
    """A method's parameters and extra activations, from the architecture alone (for `hone plan`)."""

    trainable: int
    """Parameters the optimizer steps."""
    added: int
    """Parameters the method adds beside the base model (LoRA's matrices); counted in the total
    parameters, stored at `MemorySettings.adapter_bytes`, 6 FLOPs per token each."""
    saved_per_token: float
    """Bytes per token per decoder layer that the added modules save for backward (at 2-byte compute)."""


def set_param_groups(model, groups: Callable[[float], list[dict]]) -> None:
    """Record how `model`'s trainable parameters split into optimizer groups (each a dict with
    `params` and its own `lr`), given the run's learning rate. `wrap` calls this where a method
    trains some parameters at another rate (LoRA+'s B matrices, prompt vectors)."""
    model.__dict__[GROUPS] = groups


def param_groups(model, lr: float) -> list[dict]:
    """The optimizer's parameter groups for `model` at learning rate `lr`: what its method's
    `wrap` recorded, else every trainable parameter at `lr`."""
    groups = model.__dict__.get(GROUPS)
    if groups is not None:
        return groups(lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def scaled_groups(model, ratio: float, faster: Callable[[str], bool] = lambda name: True):
    """A `set_param_groups` function: trainable parameters whose name `faster` accepts train at
    lr x `ratio`, the others at lr (empty groups are left out)."""

    def groups(lr: float) -> list[dict]:
        chosen, rest = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (chosen if faster(name) else rest).append(param)
        out = [{"params": rest, "lr": lr}, {"params": chosen, "lr": lr * ratio}]
        return [group for group in out if group["params"]]

    return groups


def set_rates(model, args, default_ratio: float = 1.0, faster: Callable[[str], bool] | None = None,
              faster_ratio: float = 1.0) -> None:
    """The method's learning rates: every trainable parameter at lr x `args.lr_ratio` (unset:
    `default_ratio`), those `faster` accepts (LoRA+'s B) `faster_ratio` times that again.
    Records nothing when every ratio is 1 (one group at the run's rate)."""
    ratio = args.lr_ratio if args.lr_ratio is not None else default_ratio
    if ratio == 1.0 and (faster is None or faster_ratio == 1.0):
        return
    if faster is None or faster_ratio == 1.0:
        set_param_groups(model, scaled_groups(model, ratio))
        return
    inner = scaled_groups(model, faster_ratio, faster)
    set_param_groups(model, lambda lr: inner(lr * ratio))
