"""Attention over packed rows: each example attends only to itself.

A packed row holds several examples back to back (see `hone.data.collate.pack_batch`).
The model receives `cu_seq_lens_q/k` (cumulative example lengths, the flash-attention
varlen convention) and `position_ids` restarting per example. On CUDA with flash-attn
installed, transformers' own `flash_attention_2` consumes them directly. Elsewhere the
`hone_packed` implementation below runs causal SDPA once per example: measured on a
2-core CPU it is faster than one SDPA call over the whole row with a block-diagonal
mask, which pays for the full T x T score matrix.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

NAME = "hone_packed"
# Each example is padded at its end to a multiple of this before SDPA. The CPU flash kernel
# JIT-builds and keeps oneDNN kernels for every sequence length it sees (measured: resident
# memory grew ~40 MB per step, without bound, with one shape per example length); a few
# shapes keep it flat. Exact: under the causal mask no real query sees the trailing filler.
LENGTH_MULTIPLE = 64


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (B=1, H, T, D), key/value (1, H_kv, T, D) -> output (1, T, H, D), no weights."""
    bounds = kwargs["cu_seq_lens_q"].tolist()
    groups = query.shape[1] // key.shape[1]
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        filler = -n % LENGTH_MULTIPLE
        q, k, v = (F.pad(t[:, :, start:end], (0, 0, 0, filler)) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=groups > 1)
        outs.append(out[:, :, :n])
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # 1, H, T, D
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # isolation comes from the per-example loop, not from a mask


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _no_mask)


def flash_attention_available(device: torch.device) -> bool:
    """flash-attention (varlen) runs only on CUDA, and only when the package is installed."""
    if device.type != "cuda":
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def packed_implementation(device: torch.device) -> str:
    """flash-attention varlen on CUDA when installed, else hone's per-example SDPA."""
    return "flash_attention_2" if flash_attention_available(device) else NAME


@contextlib.contextmanager
def attention_for_packing(model, device: torch.device):
    """Switch the model to a packing-aware attention for the duration, then restore it,
    so generation and evaluation code after training see the model as it was loaded."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    configs = [m.config for m in base.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    previous = [c._attn_implementation for c in configs]
    wanted = packed_implementation(device)
    if wanted == NAME:
        register()
    for config in configs:
        config._attn_implementation = wanted
    try:
        yield
    finally:
        for config, name in zip(configs, previous):
            config._attn_implementation = name


def packing_kwargs(seq_lengths: torch.Tensor) -> dict:
    """Model keyword arguments describing the examples of a packed row."""
    cu = F.pad(seq_lengths.cumsum(0), (1, 0)).to(torch.int32)
    longest = int(seq_lengths.max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
