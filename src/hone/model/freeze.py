"""Layer freezing: full fine-tuning of chosen base weights, the rest frozen as loaded.

The transfer-learning picture: lower layers hold general features that transfer unchanged,
the upper layers adapt. `adapter.train_layers` trains the top N decoder layers (and
`adapter.train_patterns` any parameter whose name matches). What it saves against full
fine-tuning: no gradient or optimizer state for the frozen weights (AdamW's 8 bytes per
weight), the frozen base stored in the compute dtype, and no activations kept for backward
below the lowest trained layer (nothing there needs a gradient). The trained weights stay
fp32 while they train. A run saves only the trained tensors (`trained.safetensors`):
`hone export` writes them over the base into a standalone model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hone.config import AdapterArgs
from hone.errors import HoneError
from hone.model.sizing import Sizing, set_rates

TRAINED_FILE = "trained.safetensors"
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def chosen(names: list[str], args) -> set[str]:
    """The parameter names that train: those of the top `train_layers` decoder layers, and
    those matching one of `train_patterns`. Shared by `wrap` and the plan's count."""
    layers = {int(m.group(1)) for m in map(LAYER.search, names) if m}
    top = set(sorted(layers)[len(layers) - args.train_layers:]) if args.train_layers else set()
    try:
        patterns = [re.compile(p) for p in args.train_patterns]
    except re.error as exc:
        raise HoneError(f"config key adapter.train_patterns: {exc.pattern!r} is not a regular expression ({exc})",
                        "fix the pattern, e.g. norm\\.weight$") from None
    out = set()
    for name in names:
        layer = LAYER.search(name)
        if (layer and int(layer.group(1)) in top) or any(p.search(name) for p in patterns):
            out.add(name)
    return out


def freeze_layers(model, args):
    """Only the chosen weights train, kept in fp32 (the frozen rest stays in the compute dtype)."""
    names = [name for name, _ in model.named_parameters()]
    train = chosen(names, args)
    if not train:
        raise HoneError("adapter.method=freeze: no parameter would train",
                        "set adapter.train_layers to 1 or more, or adapter.train_patterns to match some weights")
    for name, param in model.named_parameters():
        param.requires_grad_(name in train)
        if name in train:
            param.data = param.data.float()
    set_rates(model, args, DEFAULT_LR_RATIO)
    return model


DEFAULT_LR_RATIO = 0.1
"""Trained base weights step at a tenth of the run's rate unless `adapter.lr_ratio` says
otherwise: full fine-tuning wants ~10x smaller steps than adapters (2e-5 against 2e-4)."""


def save_trained(model, run_dir: Path) -> None:
    from safetensors.torch import save_file

    tensors = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(Path(run_dir) / TRAINED_FILE), metadata={"format": "hone-freeze"})


def write_trained(base, run_dir: Path):
    """`base` with the run's trained tensors written over its own (in the base's dtypes)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(run_dir) / TRAINED_FILE))
    params = dict(base.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise HoneError(f"{run_dir / TRAINED_FILE} holds {unknown[0]}, which the base model has no weight named",
                        "load the run over the base model it was trained on (model.path in its config.yaml)")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    return base


def freeze_size(arch, settings) -> Sizing:
    """The chosen weights, counted from the architecture's parameter names (nothing is added)."""
    args = settings.adapter or AdapterArgs(method="freeze")
    trainable = sum(arch.parameters[name] for name in chosen(list(arch.parameters), args))
    return Sizing(trainable=trainable, added=0, saved_per_token=0.0)
