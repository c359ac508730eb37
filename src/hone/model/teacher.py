"""A frozen whole model from a model folder or a hone run folder: the teacher of distillation
and the source `hone derive` cuts a student from.

A run folder's trained weights are folded into its base (LoRA merged, full weights loaded as
they are), so the result is one plain causal LM: no adapter indirection in every forward.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from hone.config import ModelArgs, load_config, read_yaml
from hone.errors import HoneError
from hone.model.load import load_model, load_tokenizer, pick_device, pick_dtype, resolve_model_path
from hone.model.methods import get as get_method

RUN_CONFIG = "config.yaml"
MERGED_KINDS = ("adapter", "layers")  # run kinds folded into the base; "full" and "bottleneck" load as they trained


def is_run_folder(path: str) -> bool:
    return (Path(path).expanduser() / RUN_CONFIG).is_file()


def teacher_args(path: str, dtype: str = "auto", like: ModelArgs | None = None) -> ModelArgs:
    """ModelArgs that load `path` (the run's base for a run folder) in `dtype` (`nf4`: 4-bit storage)."""
    if is_run_folder(path):
        base = load_config(None, base=read_yaml(Path(path) / RUN_CONFIG)).model
    else:
        base = dataclasses.replace(like or ModelArgs(), path=path, tokenizer=None, from_scratch=False, chat_template=None)
    return dataclasses.replace(base, dtype="auto" if dtype == "nf4" else dtype)


def load_whole(path: str, dtype: str = "auto", like: ModelArgs | None = None):
    """(model in eval mode without gradients, tokenizer, compute dtype) of a model folder, hub id,
    `embedded` or hone run folder. `dtype`: `auto` is the fastest the device multiplies."""
    args = teacher_args(path, dtype, like)
    device = pick_device(args)
    compute = pick_dtype(args, device)
    if is_run_folder(path):
        model = _load_run(Path(path), args, dtype == "nf4")
        tokenizer = load_tokenizer(dataclasses.replace(args, path=str(path), tokenizer=None))
    else:
        model = load_model(args, quantize_4bit=dtype == "nf4")
        tokenizer = load_tokenizer(args)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, compute


def _load_run(run: Path, base_args: ModelArgs, nf4: bool):
    config = load_config(None, base=read_yaml(run / RUN_CONFIG))
    method = get_method(config.adapter.method)
    if not (run / method.saved_file).is_file():
        raise HoneError(f"{run} has no {method.saved_file} yet", "let its `hone train` finish, or resume it")
    if nf4:
        raise HoneError(f"{run}: a run folder is merged in full precision, not loaded in nf4",
                        f"export it first (`hone export {run} --out DIR`) and point the path at DIR")
    if method.run_kind == "prompt":
        raise HoneError(f"{run} was trained with {config.adapter.method}: its virtual tokens are not part of the model",
                        "use a LoRA, full or freeze run")
    if method.run_kind in MERGED_KINDS:
        compute = pick_dtype(base_args, pick_device(base_args))
        full = load_model(dataclasses.replace(base_args, dtype="float32"), weights_dtype=torch.float32)
        return method.merge(full, run).to(compute)  # merged in fp32, then held in the compute dtype
    return method.load_trained(run, base_args)


def vocabulary_of(path: str) -> tuple[dict[str, int], int]:
    """(token -> id of the tokenizer, rows of the output layer) of a model or run folder, without weights."""
    args = teacher_args(path)
    tokenizer = load_tokenizer(dataclasses.replace(args, path=str(path), tokenizer=None) if is_run_folder(path) else args)
    folder = Path(resolve_model_path(args.path))
    rows = json.loads((folder / "config.json").read_text()).get("vocab_size") if (folder / "config.json").is_file() else None
    return tokenizer.get_vocab(), rows or len(tokenizer)
