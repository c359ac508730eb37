"""Several PEFT adapters on one base model, by name: load them, switch between them, and
combine them with PEFT's weighted-adapter merge.

One base in memory serves every adapter: `set_adapter(name)` picks one, `disable_adapter()`
gives the base alone. `hone compare --runs` evaluates adapters side by side this way,
`hone adapters combine` merges them, and a server can switch adapters per request with the
same `load_adapters`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from hone.config import ModelArgs
from hone.errors import HoneError
from hone.model.load import load_model, pick_device, pick_dtype
from hone.model.offline import import_adapter_libraries

ADAPTER_CONFIG = "adapter_config.json"
COMBINATIONS = ("linear", "cat", "svd", "ties", "dare_ties")
"""`--how` values: PEFT's `add_weighted_adapter` combination types that hone offers."""
SAME_RANK = ("linear", "ties", "dare_ties")
"""Combinations that add the sources' LoRA factors entry by entry, so every rank must match."""


def read_adapter_config(run_dir: Path) -> dict:
    """A run folder's PEFT `adapter_config.json`; a HoneError when it holds no PEFT adapter."""
    path = Path(run_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise HoneError(f"{run_dir} holds no PEFT adapter ({ADAPTER_CONFIG})",
                        "pass run folders trained with a PEFT method (lora, qlora, ...)")
    return json.loads(path.read_text())


def adapter_names(runs: list[Path]) -> list[str]:
    """A distinct PEFT adapter name per run folder, from its folder name (PEFT names hold no dots)."""
    names: list[str] = []
    for run in runs:
        name = re.sub(r"\W", "_", Path(run).resolve().name) or "adapter"
        while name in names or name == "default":
            name += "_"
        names.append(name)
    return names


def load_adapters(base_args: ModelArgs, adapters: dict[str, Path], quantize_4bit: bool = False):
    """The base of `base_args`, loaded once, with each PEFT adapter of `adapters` (name -> run
    folder) on it; the first is active. Adapter weights follow the base's dtype, as one run's do."""
    import_adapter_libraries()  # PEFT imports bitsandbytes: with the hub offline
    from peft import PeftModel

    base = load_model(base_args, quantize_4bit=quantize_4bit)
    items = list(adapters.items())
    model = None
    for name, folder in items:
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(folder), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise HoneError(f"could not load the adapter in {folder}: {str(exc).splitlines()[0]}",
                            f"check that {folder} was trained on {base_args.path}") from None
    if model is None:
        raise HoneError("no adapters given", "pass at least one run folder")
    model.set_adapter(items[0][0])
    dtype = pick_dtype(base_args, pick_device(base_args))
    if dtype != torch.float32 and not quantize_4bit:
        model.to(dtype)  # PEFT keeps adapters in fp32; one dtype for every matmul
    model.eval()
    model.requires_grad_(False)
    return model


def check_combinable(configs: dict[str, dict], how: str) -> None:
    """Refuse, in one line, sources PEFT cannot combine `how`: non-LoRA adapters, DoRA's magnitude
    vectors, and unequal ranks for the entry-by-entry combinations."""
    if how not in COMBINATIONS:
        raise HoneError(f"--how {how} is not a combination hone offers", f"use one of: {', '.join(COMBINATIONS)}")
    for name, config in configs.items():
        if config.get("peft_type") != "LORA":
            raise HoneError(f"{name} is a {config.get('peft_type')} adapter: only LoRA adapters can be combined",
                            "combine runs trained with a LoRA method (lora, qlora, rslora, ...)")
        if config.get("use_dora"):
            raise HoneError(f"{name} is a DoRA adapter: PEFT's weighted combination has no rule for its magnitude vectors",
                            "combine plain LoRA runs, or merge the DoRA run on its own with `hone export`")
    ranks = {name: config["r"] for name, config in configs.items()}
    if how in SAME_RANK and len(set(ranks.values())) > 1:
        listed = ", ".join(f"{name} r={rank}" for name, rank in ranks.items())
        raise HoneError(f"--how {how} adds the LoRA factors entry by entry, so the ranks must match ({listed})",
                        "use --how cat or --how svd, which combine adapters of any rank")


def combine_adapters(model, names: list[str], weights: list[float], how: str, combined: str,
                     density: float | None = None, svd_rank: int | None = None, seed: int = 0) -> None:
    """Add adapter `combined` = PEFT's weighted combination of `names` (the method is PEFT's, not ours)."""
    if len(weights) != len(names):
        raise HoneError(f"{len(weights)} weights for {len(names)} adapters", "give one --weights value per run, or none")
    extra = {"density": density} if how in ("ties", "dare_ties") else {}
    torch.manual_seed(seed)  # DARE drops entries at random: the same command gives the same adapter
    with torch.no_grad():
        model.add_weighted_adapter(names, weights, combined, combination_type=how, svd_rank=svd_rank, **extra)
    model.set_adapter(combined)
