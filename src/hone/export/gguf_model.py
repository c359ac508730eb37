"""A Hugging Face causal LM's weights and hyper-parameters as llama.cpp reads them from GGUF.

One `Family` entry per `config.model_type` hone trains says how its tensors differ from what
llama.cpp's graph for that architecture expects; tensor names come from gguf-py's own
`TensorNameMap` (llama.cpp's Python library), so they are the names llama.cpp looks up.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np
import torch

from hone.errors import HoneError

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Family:
    """How one Hugging Face architecture maps onto a llama.cpp architecture."""

    arch: gguf.MODEL_ARCH
    interleave_rotary: bool = False
    """llama.cpp's LLAMA graph rotates adjacent pairs of each head (Meta's layout); Hugging Face's
    Llama rotates the two halves, so q/k rows are reordered on the way out."""
    norm_offset: float = 0.0
    """Gemma's RMSNorm multiplies by (1 + weight); llama.cpp multiplies by the stored weight."""
    sliding_window_key: bool = False
    """llama.cpp's Phi-3 reads the window (0: none) to tell Phi-3 from Phi-4."""


FAMILIES = {
    "llama": Family(gguf.MODEL_ARCH.LLAMA, interleave_rotary=True),
    "mistral": Family(gguf.MODEL_ARCH.LLAMA, interleave_rotary=True),  # llama.cpp runs Mistral as Llama
    "qwen2": Family(gguf.MODEL_ARCH.QWEN2),
    "gemma": Family(gguf.MODEL_ARCH.GEMMA, norm_offset=1.0),
    "phi3": Family(gguf.MODEL_ARCH.PHI3, sliding_window_key=True),
}

FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f32": gguf.LlamaFileType.ALL_F32}
"""The types written here, with gguf-py's quantizers; k-quants go through `llama-quantize`."""

MATRIX_TYPES = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "f32": Q.F32}


def family_of(config) -> Family:
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise HoneError(f"GGUF export does not know the model type {config.model_type!r}",
                        f"the families exported are {', '.join(sorted(FAMILIES))}; use the default --format hf")
    rope = rope_parameters(config)
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise HoneError(f"GGUF export does not write rope_type={rope['rope_type']!r} (only default and linear rotary scaling)",
                        "use the default --format hf for this model")
    return family


def rope_parameters(config) -> dict:
    """transformers 5 keeps rotary settings in `rope_parameters` (older configs: `rope_theta`, `rope_scaling`)."""
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    rope.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return rope


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_hparams(writer: gguf.GGUFWriter, config, family: Family, file_type: str) -> None:
    """The architecture's `<arch>.*` keys: llama.cpp sizes the graph from these alone."""
    dim = head_dim(config)
    rope = rope_parameters(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(int(dim * rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if family.sliding_window_key:
        writer.add_sliding_window(getattr(config, "sliding_window", None) or 0)
        original = rope.get("original_max_position_embeddings", getattr(config, "original_max_position_embeddings", None))
        if original:
            writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(FILE_TYPES[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def interleave_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from halves (x0..x{d/2-1} | x{d/2}..) to pairs (x0, x{d/2}, x1, ...).

    Rotary then pairs the same two values in llama.cpp's interleaved rotation as it did in
    transformers' rotate-half one. Works for weights [heads*d, in] and biases [heads*d]."""
    d = weight.shape[0] // heads
    order = torch.arange(d).view(2, d // 2).t().reshape(-1)  # [0, d/2, 1, d/2+1, ...]
    return weight.view(heads, d, *weight.shape[1:])[:, order].reshape(weight.shape)


def gguf_tensors(model, family: Family):
    """(llama.cpp name, float32 array) for every weight llama.cpp loads, in the model's order."""
    config = model.config
    names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when there is no output tensor
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the rope keys
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise HoneError(f"GGUF export has no llama.cpp name for the tensor {hf_name} ({config.model_type})",
                            "use the default --format hf for this model")
        tensor = tensor.detach().float()
        if family.interleave_rotary and ".q_proj." in hf_name:
            tensor = interleave_rows(tensor, config.num_attention_heads)
        elif family.interleave_rotary and ".k_proj." in hf_name:
            tensor = interleave_rows(tensor, kv_heads)
        if family.norm_offset and hf_name.endswith("norm.weight"):
            tensor = tensor + family.norm_offset
        yield name, tensor.numpy()


def stored(array: np.ndarray, file_type: str) -> tuple[np.ndarray, Q]:
    """The array in the file's type: matrices in it, vectors (norms, biases) in f32 as llama.cpp
    keeps them; a matrix whose rows do not fill whole quant blocks falls back to f16."""
    if array.ndim < 2 or file_type == "f32":
        return array.astype(np.float32), Q.F32
    qtype = MATRIX_TYPES[file_type]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        qtype = Q.F16
    if qtype == Q.F16:
        return array.astype(np.float16), qtype
    return gguf.quants.quantize(array, qtype), qtype


def write_tensors(writer: gguf.GGUFWriter, model, family: Family, file_type: str) -> dict[str, int]:
    """Add every tensor; returns how many were stored in each type."""
    counts: dict[str, int] = {}
    for name, array in gguf_tensors(model, family):
        data, qtype = stored(array, file_type)
        writer.add_tensor(name, data, raw_dtype=qtype if qtype not in (Q.F32, Q.F16) else None)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    return counts
