"""The fine-tuning methods, one table entry each: how the model is loaded, made trainable,
saved, loaded back, merged and sized.

`adapter.method` is a key of `METHODS`; every other module asks the entry (`get(name)`)
instead of comparing the name. A new method is one `register(Method(...))`: nothing else
changes. The config only names a method; `hone train` asks this table for it before any data
or model work, so an unknown name is a one-line error naming `adapter.method`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hone.errors import HoneError
from hone.registry import Registry
from hone.model.load import load_model
from hone.model.offline import import_adapter_libraries

if TYPE_CHECKING:
    from hone.config import AdapterArgs, ModelArgs
    from hone.plan.memory import Arch, MemorySettings


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


@dataclass(frozen=True, kw_only=True)
class Method:
    """One fine-tuning method: what `adapter.method: <name>` means at each stage, in pipeline
    order (load, make trainable, save, load back, merge, plan)."""

    name: str
    """The value of `adapter.method` that selects it."""
    quantize_4bit: bool = False
    """The base's linear layers are loaded as 4-bit NF4 (bitsandbytes) and de-quantised one at a
    time in each pass; such a base needs real weights, so the plan times it from FLOPs."""
    fp32_master_weights: bool = False
    """Weights are kept in fp32 and steps compute under autocast; else the base is stored in the compute dtype."""
    wrap: Callable[[Any, AdapterArgs], Any]
    """(loaded model, adapter args) -> the model with exactly the method's parameters trainable."""
    trains_base: bool = False
    """Every base weight trains: the base is stored at `MemorySettings.weight_bytes` with a gradient
    per weight (backward costs twice the forward), and nothing is added beside it."""
    save: Callable[[Any, Path], None]
    """Write the trained weights at the top of a run folder (the caller saves tokenizer and config)."""
    saved_file: str
    """A file `save` always writes: a run folder holding it has finished saving."""
    run_kind: str
    """What a saved run folder holds, as evaluation reports name it (`EvalModel.kind`)."""
    load_trained: Callable[[Path, ModelArgs], Any]
    """(run folder, the run's base-model args) -> the trained model, loaded as the run trained it."""
    merge: Callable[[Any, Path], Any] | None = None
    """(base model in full precision, run folder) -> a standalone model with the run folded in.
    None: the run folder already is a whole model, or the method has nothing to fold."""
    merge_refusal: str = ""
    """What to do instead when `merge` is None (the fix `hone export` prints)."""
    size: Callable[[Arch, MemorySettings], Sizing]
    """The method's parameter counts for `hone plan` (see `hone.plan.memory`)."""
    gpu_utilisation: float = 0.35
    """Assumed model-FLOPs utilisation on a GPU: the share of its peak that real steps of this
    method reach (the plan's GPU hours)."""


METHODS: Registry[Method] = Registry("adapter.method", "method")
"""Every method `adapter.method` accepts, by name."""


def register(method: Method) -> Method:
    """Add `method` to the table (a name may be registered once)."""
    return METHODS.add(method.name, method)


def unregister(name: str) -> None:
    METHODS.remove(name)


def get(name: str) -> Method:
    """The method named `name`; a HoneError naming `adapter.method` when there is none."""
    return METHODS.find(name)


# --- full fine-tuning: every weight trains, the run folder is a whole model ---

def train_every_weight(model, args: AdapterArgs):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def save_whole_model(model, run_dir: Path) -> None:
    model.save_pretrained(run_dir, safe_serialization=True)  # config.json + model.safetensors


def load_whole_model(run_dir: Path, base_args: ModelArgs):
    return load_model(dataclasses.replace(base_args, path=str(run_dir), tokenizer=None))


def full_size(arch: Arch, settings: MemorySettings) -> Sizing:
    return Sizing(trainable=arch.total_params, added=0, saved_per_token=0.0)


# --- LoRA and QLoRA: a frozen base (4-bit for QLoRA) with PEFT's LoRA matrices beside it ---

def add_lora(model, args: AdapterArgs):
    """Freeze the base and add rank-`lora_rank` matrices to the targeted linear layers (PEFT)."""
    import_adapter_libraries()  # PEFT imports bitsandbytes: with the hub offline
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=args.target_modules, task_type="CAUSAL_LM")
    # PEFT keeps adapter weights in fp32 even over a bf16 or 4-bit base (autocast_adapter_dtype).
    return get_peft_model(model, config)


def save_adapter(model, run_dir: Path) -> None:
    model.save_pretrained(run_dir)  # adapter_config.json + adapter_model.safetensors


def load_adapter_run(run_dir: Path, base_args: ModelArgs, quantize_4bit: bool = False):
    """The base as the run trained it (4-bit for QLoRA) with the run's adapter on top."""
    import_adapter_libraries()
    from peft import PeftModel

    base = load_model(base_args, quantize_4bit=quantize_4bit)
    try:
        model = PeftModel.from_pretrained(base, str(run_dir), is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise HoneError(f"could not load the adapter in {run_dir}: {str(exc).splitlines()[0]}",
                        f"check that {run_dir} was trained on {base_args.path}") from None
    # PEFT keeps adapter weights in fp32; match the base so matmuls run in one dtype.
    if base_args.dtype != "float32" and not quantize_4bit:
        model.to(next(base.parameters()).dtype)
    return model


def merge_adapter(base, run_dir: Path):
    import_adapter_libraries()
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(run_dir)).merge_and_unload()


def lora_params(arch: Arch, settings: MemorySettings) -> int:
    """Trainable LoRA parameters: rank x (in + out) for every targeted linear layer."""
    targets = set(settings.lora_targets)
    every = "all-linear" in targets
    return sum(settings.lora_rank * (n_in + n_out) * count for name, (n_in, n_out, count) in arch.lora_pairs.items()
               if every or name in targets)


def lora_size(arch: Arch, settings: MemorySettings) -> Sizing:
    """LoRA's matrices, and each adapted linear's rank-r intermediate saved for backward."""
    params = lora_params(arch, settings)
    linears_per_layer = sum(count for _, _, count in arch.lora_pairs.values()) / max(arch.layers, 1)
    return Sizing(trainable=params, added=params, saved_per_token=2 * settings.lora_rank * linears_per_layer)


ADAPTER_ENTRY = dict(wrap=add_lora, save=save_adapter, saved_file="adapter_config.json", run_kind="adapter",
                     size=lora_size, merge=merge_adapter)
"""What LoRA and QLoRA share: they differ only in how the base is stored."""

# LoRA does less work per kernel launch than full fine-tuning, and QLoRA also de-quantises
# every weight each pass: each reaches a smaller share of a GPU's peak.
register(Method(name="full", wrap=train_every_weight, save=save_whole_model, saved_file="config.json", run_kind="full",
                load_trained=load_whole_model, size=full_size,
                merge_refusal="the run folder is a whole model already: load it directly",
                fp32_master_weights=True, trains_base=True, gpu_utilisation=0.40))
register(Method(name="lora", load_trained=load_adapter_run, gpu_utilisation=0.35, **ADAPTER_ENTRY))
register(Method(name="qlora", load_trained=partial(load_adapter_run, quantize_4bit=True), quantize_4bit=True,
                gpu_utilisation=0.25, **ADAPTER_ENTRY))
