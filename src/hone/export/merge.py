"""`hone export RUN --out DIR`: fold a run's trained weights (a LoRA adapter) into its base
model and save a standalone model folder (safetensors, config, tokenizer) that any Hugging
Face loader reads. How a run folds in is its method's `merge` (hone.model.methods)."""

from __future__ import annotations

from pathlib import Path

import torch

from hone.config import load_config
from hone.errors import HoneError
from hone.model.load import load_model
from hone.model.methods import get as get_method


def merge_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise HoneError(f"{run_dir} is not a hone run folder (no config.yaml)", "pass the folder given as train.output_dir")
    config = load_config(saved)
    method = get_method(config.adapter.method)
    if method.merge is None:
        raise HoneError(f"{run_dir} was trained with adapter.method={method.name}: there is nothing to merge", method.merge_refusal)
    if not (run_dir / method.saved_file).is_file():
        raise HoneError(f"{run_dir} has no {method.saved_file}", "the run may not have finished; resume it first")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HoneError(f"{out_dir} exists and is not empty", "choose a new --out folder")
    from transformers import AutoTokenizer

    # Merging into a 4-bit base would re-quantise the sum; merge into full precision instead.
    config.model.dtype = dtype
    base = load_model(config.model, quantize_4bit=False, weights_dtype=getattr(torch, dtype))
    merged = method.merge(base, run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(run_dir).save_pretrained(out_dir)
    return out_dir
