"""Turn a loaded model into a trainable one (the method's `wrap`, hone.model.methods), and
read or restore the weights that training changes."""

from __future__ import annotations

import torch

from hone.config import AdapterArgs
from hone.model.methods import get


def apply_method(model, args: AdapterArgs):
    """`model` with exactly the parameters of `args.method` trainable (full: every weight;
    LoRA/QLoRA: PEFT LoRA matrices over a frozen base)."""
    return get(args.method).wrap(model, args)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total). 4-bit weights are stored two per byte, so count them twice."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights that training changes: what a checkpoint must hold."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
