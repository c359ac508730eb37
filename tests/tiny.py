"""Tiny models and tokenizers built inside the tests: two layers, width 64, seeded."""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
WORDS = ("the a cat dog sat on mat red blue green hello world yes no order refund ship login error "
         "please help thanks quick brown fox jumps over lazy json product category urgency summary").split()


def sample_text(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


def make_tokenizer(folder: Path, chat_template: str = CHATML, extra_specials: tuple[str, ...] = (), vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few hundred random sentences, saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIALS + list(extra_specials)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sample_text(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   additional_special_tokens=specials[1:3] + list(extra_specials))
    fast.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return fast


FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "gemma": ("GemmaConfig", {"head_dim": 16}),
    "phi3": ("Phi3Config", {"pad_token_id": 3}),
}


def make_model(folder: Path, family: str = "llama", vocab_size: int = 300, seed: int = 0, **overrides) -> Path:
    """A randomly initialised 2-layer, width-64 model of `family` with a tokenizer, saved to `folder`."""
    import torch
    import transformers

    class_name, extra = FAMILIES[family]
    config_class = getattr(transformers, class_name)
    kwargs = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=family != "phi3", eos_token_id=0, bos_token_id=None, pad_token_id=3)
    kwargs.update(extra)
    kwargs.update(overrides)
    config = config_class(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    make_tokenizer(folder, vocab_size=vocab_size)
    return folder


def make_chat_data(path: Path, n: int = 64, seed: int = 0) -> Path:
    """A learnable toy task: a fixed answer frame around the user's first word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        rows.append({"messages": [
            {"role": "system", "content": "repeat the first word"},
            {"role": "user", "content": " ".join(words) + f" {i}"},
            {"role": "assistant", "content": f"yes the {words[0]} sat on the mat"},
        ]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
