"""Turn a loaded model into a trainable one: full fine-tuning, LoRA or QLoRA (via PEFT)."""

from __future__ import annotations

import torch

from hone.config import AdapterArgs


def apply_method(model, args: AdapterArgs):
    """Full: every weight trains. LoRA/QLoRA: the base is frozen and LoRA matrices are added."""
    if args.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules,
        task_type="CAUSAL_LM",
    )
    # PEFT keeps adapter weights in fp32 even over a bf16 or 4-bit base (autocast_adapter_dtype).
    return get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total). 4-bit weights are stored two per byte, so count them twice."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights that training changes: what a checkpoint must hold."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
