"""Libraries that reach for the network when imported, imported with the hub switched off.

bitsandbytes 0.50, imported by PEFT, asks the Hugging Face hub for a CPU 4-bit kernel on CPUs
with AVX512-BF16 (through the `kernels` library), whatever the run. hone touches the network
only for a model given as an explicit hub id, so these imports run with the hub in offline
mode; bitsandbytes then keeps its own kernel. Later imports find the modules loaded.
"""

from __future__ import annotations

import functools
import importlib


@functools.cache
def import_adapter_libraries() -> None:
    """Import PEFT (and bitsandbytes through it, where installed) with the hub offline."""
    import huggingface_hub.constants as hub

    previous, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        importlib.import_module("peft")
    finally:
        hub.HF_HUB_OFFLINE = previous
