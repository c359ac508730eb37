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
from hone.model import bottleneck, freeze, ia3, prompts
from hone.model.lora import add_lora, lora_params, lora_size, save_adapter  # noqa: F401  (lora_params: kept importable here)
from hone.model.sizing import Sizing, set_rates  # noqa: F401  (Sizing: the entries' `size` type, kept importable here)

if TYPE_CHECKING:
    from hone.config import AdapterArgs, ModelArgs
    from hone.plan.memory import Arch, MemorySettings


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
    set_rates(model, args)
    return model


def save_whole_model(model, run_dir: Path) -> None:
    model.save_pretrained(run_dir, safe_serialization=True)  # config.json + model.safetensors


def load_whole_model(run_dir: Path, base_args: ModelArgs):
    return load_model(dataclasses.replace(base_args, path=str(run_dir), tokenizer=None))


def full_size(arch: Arch, settings: MemorySettings) -> Sizing:
    return Sizing(trainable=arch.total_params, added=0, saved_per_token=0.0)


# --- LoRA and QLoRA: a frozen base (4-bit for QLoRA) with PEFT's LoRA matrices beside it ---

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

# --- the adapter family beyond LoRA (issue 24): one entry each, their code in its own module ---

def load_prompt_run(run_dir: Path, base_args: ModelArgs):
    """The PEFT prompt/prefix adapter over the base, with the virtual tokens put before every
    example of a direct decoder call as in training (hone.model.prompts)."""
    model = load_adapter_run(run_dir, base_args)
    prompts.install_virtual_tokens(model)
    return model


def load_over_base(attach: Callable[[Any, Path], Any], run_dir: Path, base_args: ModelArgs):
    """The base in the compute dtype with `attach(base, run_dir)` applied (bottleneck, freeze)."""
    return attach(load_model(base_args), run_dir)


VIRTUAL_TOKENS = dict(save=save_adapter, saved_file="adapter_config.json", run_kind="prompt", load_trained=load_prompt_run,
                      merge=prompts.refuse_merge, merge_refusal="use the run folder itself: it loads over its base")

register(Method(name="ia3", wrap=ia3.add_ia3, load_trained=load_adapter_run, size=ia3.ia3_size, gpu_utilisation=0.35,
                save=save_adapter, saved_file="adapter_config.json", run_kind="adapter", merge=merge_adapter))
register(Method(name="prompt_tuning", wrap=prompts.add_prompt_tuning, size=prompts.prompt_size, gpu_utilisation=0.35,
                **VIRTUAL_TOKENS))
register(Method(name="prefix_tuning", wrap=prompts.add_prefix_tuning, size=prompts.prefix_size, gpu_utilisation=0.35,
                **VIRTUAL_TOKENS))
register(Method(name="bottleneck", wrap=bottleneck.add_bottlenecks, save=bottleneck.save_bottlenecks,
                saved_file=bottleneck.CONFIG_FILE, run_kind="bottleneck",
                load_trained=partial(load_over_base, bottleneck.load_bottlenecks), merge=bottleneck.refuse_merge,
                merge_refusal="use the run folder itself: it loads over its base", size=bottleneck.bottleneck_size,
                gpu_utilisation=0.35))
register(Method(name="freeze", wrap=freeze.freeze_layers, save=freeze.save_trained, saved_file=freeze.TRAINED_FILE,
                run_kind="layers", load_trained=partial(load_over_base, freeze.write_trained), merge=freeze.write_trained,
                size=freeze.freeze_size, gpu_utilisation=0.40))

LORA_VARIANTS: dict[str, dict[str, Any]] = {
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "loraplus": {"loraplus_lr_ratio": 16.0},
    "pissa": {"init": "pissa"},
    "olora": {"init": "olora"},
}
"""The LoRA variants, as the `adapter` keys that select them over `lora` (or `qlora`, all but
the initialisations): what a benchmark that measures every method also runs."""
