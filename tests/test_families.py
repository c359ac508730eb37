"""Every supported family loads, gets LoRA on all linear layers, and learns."""

import pytest
import torch

from hone.config import AdapterArgs, ModelArgs
from hone.data.render import render_conversation
from hone.model.adapters import apply_method
from hone.model.load import load_model, load_tokenizer
from hone.train.loop import Setup, build_optimizer, train_step
from hone.config import TrainArgs
from tiny import FAMILIES, make_model

MESSAGES = [[{"role": "user", "content": f"the cat {i}"}, {"role": "assistant", "content": "red dog sat on mat"}] for i in range(8)]


def train_losses(model, tokenizer, steps=8, lr=1e-2):
    items = [render_conversation(tokenizer, m) for m in MESSAGES]
    setup = Setup(model, tokenizer.pad_token_id, torch.device("cpu"), torch.float32, None)
    optimizer, _ = build_optimizer(model, TrainArgs(learning_rate=lr, warmup_ratio=0), steps)
    return [train_step(setup, [items], optimizer, 1.0)[0] for _ in range(steps)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_trains_every_family(tmp_path, family):
    folder = make_model(tmp_path / family, family)
    model = load_model(ModelArgs(path=str(folder), dtype="float32"))
    tokenizer = load_tokenizer(ModelArgs(path=str(folder)))
    torch.manual_seed(0)
    model = apply_method(model, AdapterArgs(method="lora", lora_rank=8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = train_losses(model, tokenizer)
    assert losses[-1] < losses[0] - 0.25, losses
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    # every linear projection in the blocks got an adapter (all-linear default)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in changed if "lora_A" in n}
    assert {"q_proj", "o_proj"} <= adapted or {"qkv_proj", "o_proj"} <= adapted


def test_qlora_trains_on_a_4bit_base(tmp_path):
    folder = make_model(tmp_path / "q", "llama")
    model = load_model(ModelArgs(path=str(folder), dtype="float32"), quantize_4bit=True)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    tokenizer = load_tokenizer(ModelArgs(path=str(folder)))
    torch.manual_seed(0)
    model = apply_method(model, AdapterArgs(method="qlora", lora_rank=8))
    losses = train_losses(model, tokenizer)
    assert losses[-1] < losses[0] - 0.25, losses
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
