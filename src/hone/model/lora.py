"""LoRA and its variants over PEFT: DoRA, rsLoRA, LoRA+ and the data-free initialisations
PiSSA and OLoRA, each a key of `adapter` that composes over `lora` and `qlora`.

- DoRA (`use_dora`) splits each adapted weight into a magnitude per output row (trained) and
  a direction that LoRA moves; PEFT's own layers compute it (hone's fused path steps aside).
- rsLoRA (`use_rslora`) only changes the scale, alpha / sqrt(r), which the fused path reads.
- LoRA+ (`loraplus_lr_ratio`) is an optimizer matter: B trains faster than A (parameter
  groups, `hone.model.sizing.set_param_groups`).
- PiSSA / OLoRA (`init`) start the adapter from the base's principal singular vectors (an
  orthonormal QR basis) and take that part out of the base weights. A run saves the adapter
  converted to plain LoRA over the *original* base (PEFT's conversion, rank 2r), so every
  later command and plain PEFT load it on the unmodified base model.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from hone.errors import HoneError
from hone.model.offline import import_adapter_libraries
from hone.model.sizing import Sizing, set_rates

INITIAL = "_hone_initial_adapter"  # on a PiSSA/OLoRA model: the folder of its adapter before training
PEFT_INIT = {"default": True, "pissa": "pissa", "olora": "olora"}


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.target_modules, use_dora=args.use_dora, use_rslora=args.use_rslora,
                      init_lora_weights=PEFT_INIT[args.init], task_type="CAUSAL_LM")


def add_lora(model, args):
    """Freeze the base and add rank-`lora_rank` matrices to the targeted linear layers (PEFT),
    with the variants `args` asks for."""
    import_adapter_libraries()  # PEFT imports bitsandbytes: with the hub offline
    from peft import get_peft_model

    if args.init != "default" and getattr(model, "is_loaded_in_4bit", False):
        raise HoneError(f"adapter.init={args.init} rewrites the base weights, which a 4-bit base cannot hold exactly",
                        "use adapter.method=lora with adapter.init, or adapter.init=default with qlora")
    # PEFT keeps adapter weights in fp32 even over a bf16 or 4-bit base (autocast_adapter_dtype).
    model = get_peft_model(model, lora_config(args))
    if args.init != "default":
        keep_initial_adapter(model)
    set_rates(model, args, faster=is_lora_b, faster_ratio=args.loraplus_lr_ratio or 1.0)
    return model


def is_lora_b(name: str) -> bool:
    """LoRA+'s faster half: the B matrices (which start at zero)."""
    return "lora_B" in name or "lora_embedding_B" in name


def keep_initial_adapter(model) -> None:
    """Save the adapter as initialised (PiSSA/OLoRA), for the conversion to plain LoRA at save
    time; the folder lives as long as the model."""
    folder = tempfile.mkdtemp(prefix="hone-initial-adapter-")
    weakref.finalize(model, shutil.rmtree, folder, True)
    config = model.peft_config["default"]
    chosen, config.init_lora_weights = config.init_lora_weights, True  # loading it must not re-initialise
    try:
        model.save_pretrained(folder)
    finally:
        config.init_lora_weights = chosen
    model.__dict__[INITIAL] = folder


def save_adapter(model, run_dir: Path) -> None:
    """adapter_config.json + adapter_model.safetensors; PiSSA/OLoRA converted to LoRA over the original base."""
    initial = model.__dict__.get(INITIAL)
    if initial is None:
        model.save_pretrained(run_dir)
        return
    model.save_pretrained(run_dir, path_initial_model_for_weight_conversion=initial)


def lora_params(arch, settings) -> int:
    """Trainable LoRA parameters: rank x (in + out) for every targeted linear layer, plus DoRA's
    magnitude (one per output row) where asked for."""
    targets = set(settings.lora_targets)
    every = "all-linear" in targets
    dora = bool(settings.adapter is not None and settings.adapter.use_dora)
    return sum((settings.lora_rank * (n_in + n_out) + (n_out if dora else 0)) * count
               for name, (n_in, n_out, count) in arch.lora_pairs.items() if every or name in targets)


def lora_size(arch, settings) -> Sizing:
    """LoRA's matrices, and each adapted linear's rank-r intermediate saved for backward (DoRA
    also keeps the adapted weight's norm input: counted as one more rank-wide tensor)."""
    params = lora_params(arch, settings)
    linears_per_layer = sum(count for _, _, count in arch.lora_pairs.values()) / max(arch.layers, 1)
    dora = bool(settings.adapter is not None and settings.adapter.use_dora)
    saved = 2 * settings.lora_rank * linears_per_layer * (2 if dora else 1)
    return Sizing(trainable=params, added=params, saved_per_token=saved)
