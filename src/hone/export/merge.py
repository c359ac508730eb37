"""`hone export RUN --out DIR`: fold a run's trained weights (a LoRA adapter) into its base
model and save a standalone model folder (safetensors, config, tokenizer) that any Hugging
Face loader reads. How a run folds in is its method's `merge` (hone.model.methods)."""

from __future__ import annotations

from pathlib import Path

import torch

from hone.config import RunConfig, load_config
from hone.errors import HoneError
from hone.model.load import load_model
from hone.model.methods import get as get_method


def read_run(run_dir: Path) -> RunConfig:
    """The resolved config a run folder carries (config.yaml), or a one-line error."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise HoneError(f"{run_dir} is not a hone run folder (no config.yaml)", "pass the folder given as train.output_dir")
    return load_config(saved)


def merged_model(run_dir: str | Path, dtype: str = "float32", whole_runs: bool = False):
    """The run's model with its trained weights folded in, in memory: (model, tokenizer, config).

    `whole_runs`: a run that trained every weight (its folder is a whole model) is loaded as it
    is instead of refused, for exports that convert the weights to another format."""
    run_dir = Path(run_dir)
    config = read_run(run_dir)
    method = get_method(config.adapter.method)
    whole = whole_runs and method.merge is None and method.trains_base
    if method.merge is None and not whole:
        raise HoneError(f"{run_dir} was trained with adapter.method={method.name}: there is nothing to merge", method.merge_refusal)
    if not (run_dir / method.saved_file).is_file():
        raise HoneError(f"{run_dir} has no {method.saved_file}", "the run may not have finished; resume it first")
    from transformers import AutoTokenizer

    # Merging into a 4-bit base would re-quantise the sum; merge into full precision instead.
    config.model.dtype = dtype
    if whole:
        model = method.load_trained(run_dir, config.model)
    else:
        model = method.merge(load_model(config.model, quantize_4bit=False, weights_dtype=getattr(torch, dtype)), run_dir)
    return model, AutoTokenizer.from_pretrained(run_dir), config


def merge_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    out_dir = Path(out_dir)
    read_run(Path(run_dir))  # a wrong folder is named before the output folder is judged
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HoneError(f"{out_dir} exists and is not empty", "choose a new --out folder")
    merged, tokenizer, _ = merged_model(run_dir, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
