"""Load what is being evaluated: a base model (folder, hub id, `embedded`, or a merged
folder), or a hone run folder (a LoRA/QLoRA adapter, or full weights).

A run folder describes itself: its `config.yaml` names the base model, how it was loaded
for training and the method, whose entry (hone.model.methods) loads the trained model the
same way (same dtype, same 4-bit quantization for QLoRA); the run's saved tokenizer keeps
its chat template.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from hone.config import EMBEDDED, ModelArgs, RunConfig, load_config, read_yaml
from hone.errors import HoneError
from hone.model import load
from hone.model.load import load_model, pick_device, pick_dtype, resolve_model_path
from hone.model.methods import get as get_method

RUN_CONFIG = "config.yaml"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class EvalModel:
    """A model ready for evaluation (eval mode, no gradients) and how it was found."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    """What the user passed (path, hub id or `embedded`)."""
    kind: str
    """`base`, or what a run folder holds (its method's `run_kind`): `adapter` (a PEFT adapter) or `full` (whole weights)."""
    device: torch.device
    compute_dtype: torch.dtype
    run_config: RunConfig | None = None
    """The run's resolved config when `name` is a hone run folder."""

    @property
    def run_dir(self) -> Path | None:
        return Path(self.name) if self.run_config is not None else None


def read_run_config(folder: str | Path) -> RunConfig | None:
    """The resolved config of a hone run folder, or None when `folder` is not one."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        return None
    return load_config(None, base=read_yaml(path))


def describe(name: str) -> tuple[str, RunConfig | None]:
    """(kind, run config) of what `name` points at, without loading weights."""
    folder = Path(name).expanduser()
    config = read_run_config(folder) if folder.is_dir() else None
    if config is None:
        if folder.is_dir() and (folder / ADAPTER_CONFIG).is_file():
            raise HoneError(f"{folder} holds an adapter but no {RUN_CONFIG} naming its base model",
                            "evaluate the hone run folder the adapter was trained in, or merge it first")
        return "base", None
    method = get_method(config.adapter.method)
    if not (folder / method.saved_file).is_file():
        raise HoneError(f"run folder {folder} has no adapter or model weights yet", "let `hone train` finish, or pass a checkpoint-free model folder")
    return method.run_kind, config


def model_args_for(name: str, like: ModelArgs | None = None, dtype: str | None = None) -> ModelArgs:
    """ModelArgs for `name`; loading options (dtype, chat template, trust) copied from `like`."""
    args = dataclasses.replace(like, path=name, tokenizer=None, from_scratch=False) if like else ModelArgs(path=name)
    return dataclasses.replace(args, dtype=dtype) if dtype else args


def load_for_eval(name: str, like: ModelArgs | None = None, dtype: str | None = None) -> EvalModel:
    """Load `name` (base model, adapter run folder, or full-weights folder) in eval mode.

    `like`: loading options to reuse for a base model (e.g. the tuned run's, so both sides
    render prompts with the same chat template); `dtype` overrides the compute dtype.
    """
    kind, config = describe(name if name != EMBEDDED else resolve_model_path(name))
    if config is not None:
        model, tokenizer, args = _load_run(Path(name), config, dtype)
    else:
        args = model_args_for(name, like, dtype)
        tokenizer, model = load_tokenizer(args), load_model(args)
    model.eval()
    model.requires_grad_(False)
    device = pick_device(args)
    return EvalModel(model, tokenizer, name, kind, device, pick_dtype(args, device), config)


def load_tokenizer(args: ModelArgs, folder: Path | None = None):
    """The tokenizer of `args` (hone's loader), or the one saved in a run `folder`."""
    if folder is None:
        return load.load_tokenizer(args)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=args.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_run(folder: Path, config: RunConfig, dtype: str | None):
    """(trained model, tokenizer, base-model args) of a run folder, loaded by its method's entry."""
    base_args = dataclasses.replace(model_args_for(config.model.path, config.model, dtype), tokenizer=config.model.tokenizer)
    model = get_method(config.adapter.method).load_trained(folder, base_args)
    # The run saved the tokenizer it trained with (chat template included): prefer it.
    tokenizer = load_tokenizer(base_args, folder=folder if (folder / "tokenizer_config.json").is_file() else None)
    return model, tokenizer, base_args
