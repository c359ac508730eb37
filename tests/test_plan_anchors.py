"""The memory model against published numbers (within 25%), each with its source and the
settings that produced it written out as MemorySettings."""

import pytest
from transformers import LlamaConfig

from hone.plan.memory import GIB, BatchShape, MemorySettings, describe_model, estimate_memory

LLAMA31_8B = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)
LLAMA2_7B = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False)
LLAMA1_65B = LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_hidden_layers=80,
                         num_attention_heads=64, num_key_value_heads=64, tie_word_embeddings=False)

# torchtune README, "Memory and training speed" table: Llama 3.1 8B on one RTX 4090, batch 2,
# packed sequences of 2048 tokens, torch.compile on, each recipe's default memory settings
# (recipes/configs/llama3_1/8B_{full,lora,qlora}_single_device.yaml): bf16 weights everywhere,
# activation checkpointing on; full uses bitsandbytes PagedAdamW8bit with optimizer_in_bwd;
# LoRA/QLoRA use fused AdamW on rank-8 adapters (attention projections + MLP), chunked CE with
# bf16 logits for every position; torchtune's QLoRA stores the output projection in NF4 too.
TORCHTUNE_BATCH = BatchShape(batch_size=2, seq_len=2048, labelled=2 * 2048)
TORCHTUNE = [
    ("full", 18.9, MemorySettings("full", weight_bytes=2, optimizer="paged_adamw8bit", optimizer_in_backward=True,
                                  gradient_checkpointing=True, loss="all_positions_chunks", foreach_step=False)),
    ("lora", 16.2, MemorySettings("lora", adapter_bytes=2, gradient_checkpointing=True, loss="all_positions_chunks",
                                  lora_targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), foreach_step=False)),
    ("qlora", 7.4, MemorySettings("qlora", adapter_bytes=2, gradient_checkpointing=True, loss="all_positions_chunks",
                                  lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                                  quantized_head=True, foreach_step=False)),
]


@pytest.fixture(scope="module")
def llama31_8b():
    return describe_model(LLAMA31_8B)


@pytest.mark.parametrize("method,published_gib,settings", TORCHTUNE, ids=[t[0] for t in TORCHTUNE])
def test_torchtune_llama31_8b_rtx4090(llama31_8b, method, published_gib, settings):
    assert llama31_8b.total_params == 8_030_261_248
    predicted = estimate_memory(llama31_8b, settings, TORCHTUNE_BATCH).peak / GIB
    assert abs(predicted / published_gib - 1) <= 0.25, (method, predicted, published_gib)


def test_seeds_7b_lora_needs_16gb():
    """Seeds: "LoRA on a 7B model requires a GPU with 16GB VRAM". hone's LoRA defaults (rank 8,
    all linear layers, bf16 base, fp32 adapters, AdamW) with gradient checkpointing, 4 x 512 tokens."""
    arch = describe_model(LLAMA2_7B)
    settings = MemorySettings("lora", gradient_checkpointing=True)
    predicted_gb = estimate_memory(arch, settings, BatchShape(4, 512, 4 * 256)).peak / 1e9
    assert abs(predicted_gb / 16 - 1) <= 0.25, predicted_gb


def test_qlora_paper_65b_fits_in_48gb():
    """QLoRA paper (Dettmers et al. 2023, abstract): "finetune a 65B parameter model on a single
    48GB GPU". Their setup: NF4 with double quantisation, LoRA rank 64 on every linear layer in
    bf16, paged AdamW, gradient checkpointing; one 512-token sequence per micro-batch."""
    arch = describe_model(LLAMA1_65B)
    settings = MemorySettings("qlora", adapter_bytes=2, lora_rank=64, optimizer="paged_adamw8bit",
                              gradient_checkpointing=True)
    predicted_gb = estimate_memory(arch, settings, BatchShape(1, 512, 256)).peak / 1e9
    assert 33 < predicted_gb < 48, predicted_gb  # the 4-bit weights alone are ~34 GB
