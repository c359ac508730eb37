"""What `hone serve` holds in memory: one base model with every LoRA adapter loaded onto it by
name (PEFT), the tokenizer each served model trained with, and their stop tokens.

A request names its model the way vLLM does: the base's id, or an adapter's id whose
`parent` is the base. Rows for different adapters share a forward pass: each LoRA layer
applies each row's own adapter (`hone.serve.rows`; PEFT's `adapter_names=` where it cannot).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hone.config import EMBEDDED, ModelArgs
from hone.errors import HoneError
from hone.model.generate import stop_token_ids
from hone.eval.models import describe, load_tokenizer, model_args_for
from hone.model.load import load_model, pick_device, resolve_model_path
from hone.model.multi import load_adapters
from hone.serve.rows import RowAdapters

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter on this row"


@dataclass
class ServedModel:
    """One id of `/v1/models`."""

    id: str
    root: str
    """The folder it was loaded from."""
    parent: str | None
    """The base's id for an adapter; None for the base."""
    tokenizer: object
    stop_ids: list[int]
    peft_name: str = BASE_ADAPTER


@dataclass
class Served:
    model: torch.nn.Module
    models: dict[str, ServedModel]
    base_id: str
    context_length: int
    device: torch.device
    created: int = field(default_factory=lambda: int(time.time()))
    rows: RowAdapters | None = None
    """Every adapter stacked per LoRA layer (None: PEFT's `adapter_names=` path)."""

    @property
    def has_adapters(self) -> bool:
        return len(self.models) > 1


def parse_adapter_flag(text: str) -> tuple[str, str]:
    """`NAME=RUN` -> (name, run folder)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise HoneError(f"--adapter {text!r} is not NAME=RUN", "write e.g. --adapter tickets=runs/tickets")
    if not re.fullmatch(r"[A-Za-z0-9._:/-]+", name):
        raise HoneError(f"--adapter name {name!r} has characters a model id cannot carry", "use letters, digits, . _ - : /")
    return name, path


def load_served(run: str, adapters: list[tuple[str, str]], dtype: str | None = None) -> Served:
    """The base of `run` (a model folder, `embedded`, or a run folder) with `run`'s own adapter
    (named after its folder) and every `--adapter NAME=RUN` loaded onto it."""
    base_args, base_id, runs = plan_served(run, adapters, dtype)
    # One base in memory, every adapter on it under its own PEFT name (hone.model.multi). A QLoRA
    # adapter runs over the unquantized base here, as vLLM serves them.
    peft_runs = {f"adapter{index}": folder for index, (_, folder, _) in enumerate(runs)}
    model = load_adapters(base_args, peft_runs) if runs else load_model(base_args)
    base_tokenizer = load_tokenizer(base_args)
    models = {base_id: ServedModel(base_id, str(resolve_model_path(base_args.path)), None, base_tokenizer,
                                   stop_token_ids(base_tokenizer, model))}
    for index, (name, folder, _) in enumerate(runs):
        tokenizer = load_tokenizer(base_args, folder if (folder / "tokenizer_config.json").is_file() else None)
        _check_vocabulary(name, tokenizer, base_tokenizer)
        models[name] = ServedModel(name, str(folder), base_id, tokenizer, stop_token_ids(tokenizer, model),
                                   peft_name=f"adapter{index}")
    model.eval()
    model.requires_grad_(False)
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    rows = RowAdapters.install(model, [m.peft_name for m in models.values() if m.parent]) if runs else None
    return Served(model, models, base_id, int(context), pick_device(base_args), rows=rows)


def plan_served(run: str, adapters: list[tuple[str, str]], dtype: str | None = None):
    """(base model args, base id, [(adapter id, run folder, run config)]) of a serve command line,
    checked without loading weights: every adapter is a LoRA run on the same base."""
    kind, config = describe(run if run != EMBEDDED else resolve_model_path(run))
    if kind == "adapter":
        base_args = model_args_for(config.model.path, config.model, dtype)
        adapters = [(Path(run).resolve().name, run), *adapters]
    else:
        base_args = model_args_for(run, None, dtype)
    base_id = _base_id(base_args.path)
    runs = [(name, Path(path), _adapter_config(name, path, base_args)) for name, path in adapters]
    names = [base_id] + [name for name, _, _ in runs]
    if len(set(names)) != len(names):
        raise HoneError(f"two served models share the id {_first_duplicate(names)!r}", "give each --adapter its own NAME")
    return base_args, base_id, runs


def _base_id(path: str) -> str:
    return EMBEDDED if path == EMBEDDED else Path(path).name or path


def _first_duplicate(names: list[str]) -> str:
    return next(name for name in names if names.count(name) > 1)


def _adapter_config(name: str, path: str, base_args: ModelArgs):
    """The run config of adapter `name`, checked to be a LoRA run on the served base."""
    folder = Path(path)
    if not folder.is_dir():
        raise HoneError(f"--adapter {name}={path}: no such run folder", "pass a folder written by hone train")
    kind, config = describe(path)
    if kind != "adapter":
        raise HoneError(f"--adapter {name}={path} is not a LoRA/QLoRA run folder ({kind})",
                        "serve a full fine-tune as the base model: hone serve RUN")
    if resolve_model_path(config.model.path) != resolve_model_path(base_args.path):
        raise HoneError(f"--adapter {name}={path} was trained on {config.model.path}, not on the served base {base_args.path}",
                        "serve adapters of one base together (start one server per base)")
    return config


def _check_vocabulary(name: str, tokenizer, base_tokenizer) -> None:
    if len(tokenizer) != len(base_tokenizer):
        raise HoneError(f"adapter {name}'s tokenizer has {len(tokenizer)} tokens, the base's {len(base_tokenizer)}",
                        "serve adapters trained on this base with its tokenizer")
