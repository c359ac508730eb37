"""The model and cases the planner's accuracy is checked on (tests and bench/plan_accuracy.py)."""

from __future__ import annotations

from pathlib import Path


def make_medium_model(folder: Path) -> Path:
    """A ~22M-parameter Llama (6 layers, width 512, vocab 8000): big enough that memory is
    dominated by weights, optimizer state and activations rather than allocator noise."""
    import torch
    import transformers

    config = transformers.LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                                      tie_word_embeddings=True, eos_token_id=0, bos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def accuracy_cases() -> list[tuple[str, bool, int, int]]:
    """(method, gradient_checkpointing, batch_size, seq_len): every method at two lengths and two batch sizes."""
    return [(method, False, batch, seq) for method in ("lora", "full", "qlora") for batch in (2, 4) for seq in (128, 256)]


def predict_case(folder: Path, method: str, checkpointing: bool, batch: int, seq: int,
                 trained_fraction: float = 0.5) -> tuple[float, float]:
    """(predicted peak bytes, predicted seconds per step) for one synthetic-batch case."""
    from transformers import AutoConfig

    from hone.config import RunConfig
    from hone.plan.estimate import CPU_EFFICIENCY, hone_settings, measured_flops_per_s, measured_layer_overhead
    from hone.plan.memory import BatchShape, describe_model, estimate_memory, step_flops

    config = RunConfig()
    config.adapter.method = method
    config.train.gradient_checkpointing = checkpointing
    arch = describe_model(AutoConfig.from_pretrained(folder))
    settings = hone_settings(config, "cpu", 2.0)
    labelled = batch * max(1, int(seq * trained_fraction))
    memory = estimate_memory(arch, settings, BatchShape(batch, seq, labelled)).peak
    rate = measured_flops_per_s.__wrapped__(arch.hidden)
    overhead = measured_layer_overhead.__wrapped__("llama", method) * arch.layers
    seconds = overhead + step_flops(arch, settings, batch * seq, labelled, seq) / (rate * CPU_EFFICIENCY)
    return memory, seconds
