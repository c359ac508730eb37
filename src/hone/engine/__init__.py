"""hone's speed layer, installed on a model for the duration of training by one entry point.

`engine(model, ...)` applies every replacement in one fixed order and undoes them in the
reverse order on exit, leaving the model exactly as it was (same modules, same weights,
same attributes; tested for every family):

    1. attention: the model's attention implementation switched to a packing-aware one
    2. compiled layers (`compile=True`)
    3. PEFT's LoRA input cast turned off under autocast (`lora_in_compute_dtype`)
    4. fused layers: LoRA linears, SwiGLU MLPs, RMSNorms and rotary as single autograd nodes
       (`hone.engine.fused`), the C kernels of the tier in force (`hone.engine.tiers`)
    5. the last MLP runs only on the rows the loss reads (`hone.engine.pruning`)
    6. freed memory kept in the heap (`hone.engine.heap`)

Why our own layer and not the library's: fine-tuning a small model on a CPU spends its time
in places no library optimises for (LoRA's rank-sized products, packed attention without
padding, the elementwise chains between them). Every replacement computes the same function
as the code it stands in for, recognises the modules it may replace, and steps aside for any
it does not recognise: a replacement that cannot be installed is logged and skipped, never
fatal. Installing is idempotent: inside an engine, a second `engine(...)` changes nothing.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from hone.engine.attention import attention_for_packing, packing_kwargs
from hone.engine.fused import fused as fused_layers_of
from hone.engine.heap import kept_heap
from hone.engine.pruning import only_rows, pruned_last_mlp

log = logging.getLogger(__name__)
MARK = "_hone_engine"  # set on the model while an engine is installed

__all__ = ["engine", "installed", "only_rows", "packing_kwargs"]


def installed(model) -> bool:
    return MARK in model.__dict__


@contextlib.contextmanager
def engine(model, device: torch.device, compute_dtype: torch.dtype, packing: bool = True, compile: bool = False,
           fused_layers: bool = True):
    """Install the speed layer on `model` until exit. Yields what was installed, by name."""
    if installed(model):  # idempotent: the outer engine owns every replacement
        yield model.__dict__[MARK]
        return
    report: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        steps = [
            ("attention", lambda: attention_for_packing(model, device) if packing else contextlib.nullcontext()),
            ("compile", lambda: compiled_layers(model) if compile else contextlib.nullcontext()),
            ("lora_input_cast", lambda: lora_in_compute_dtype(model, compute_dtype)),
            ("fused", lambda: fused_layers_of(model) if fused_layers else contextlib.nullcontext(0)),
            ("pruning", lambda: pruned_last_mlp(model)),
            ("kept_heap", kept_heap),
        ]
        for name, make in steps:
            report[name] = _enter(stack, name, make, essential=name == "attention")
        model.__dict__[MARK] = report
        stack.callback(model.__dict__.pop, MARK, None)
        yield report


def _enter(stack: contextlib.ExitStack, name: str, make, essential: bool):
    """Enter one step; a speed-only step that fails to install is skipped, not fatal
    (packing-aware attention is not speed-only: packed rows need it to stay correct)."""
    if essential:
        return stack.enter_context(make())
    try:
        return stack.enter_context(make())
    except Exception as exc:  # noqa: BLE001 - a speed patch must never fail a run
        log.warning("hone engine: %s not installed, running without it: %s", name, exc)
        return None


@contextlib.contextmanager
def compiled_layers(model):
    """`torch.compile` each decoder layer until exit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = list(getattr(getattr(base, "model", None), "layers", []))
    for layer in layers:
        layer.compile(dynamic=True)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer._compiled_call_impl = None


def lora_in_compute_dtype(model, compute_dtype: torch.dtype):
    """PEFT casts each LoRA input up to the fp32 adapter dtype, and autocast casts it straight
    back down for the matmul: two copies of every activation per adapted layer for nothing.
    Measured ~15% of a bf16 CPU step; under autocast the input cast is skipped."""
    if compute_dtype == torch.float32 or not hasattr(model, "peft_config") \
            or not any(hasattr(m, "lora_A") for m in model.modules()):  # IA3, prompt/prefix tuning: no LoRA input cast
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)
