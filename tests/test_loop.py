"""Invariants of the training loop's pieces."""

import pytest
import torch

from hone.config import AdapterArgs, ModelArgs, TrainArgs
from hone.data.render import render_conversation
from hone.model.adapters import apply_method
from hone.model.load import load_model, load_tokenizer
from hone.train.loop import Setup, plan_steps, train_step
from hone.train.schedule import warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_plan_steps_counts_accumulation():
    assert plan_steps(100, TrainArgs(batch_size=8, gradient_accumulation_steps=2, epochs=3)) == (7, 21)
    assert plan_steps(100, TrainArgs(max_steps=5)) == (13, 5)


def grads_after_one_step(model_dir, micro_batches):
    model = load_model(ModelArgs(path=str(model_dir), dtype="float32"))
    tokenizer = load_tokenizer(ModelArgs(path=str(model_dir)))
    torch.manual_seed(0)
    model = apply_method(model, AdapterArgs(method="full"))
    setup = Setup(model, tokenizer.pad_token_id, torch.device("cpu"), torch.float32, None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    convos = [[{"role": "user", "content": "the cat " * (i + 1)}, {"role": "assistant", "content": "red " * (2 * i + 1)}] for i in range(4)]
    items = [render_conversation(tokenizer, c) for c in convos]
    size = len(items) // micro_batches
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    loss, tokens = train_step(setup, batches, optimizer, max_grad_norm=0)
    return loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}


def test_gradient_accumulation_equals_one_big_batch(tiny_llama):
    loss_one, delta_one = grads_after_one_step(tiny_llama, micro_batches=1)
    loss_acc, delta_acc = grads_after_one_step(tiny_llama, micro_batches=4)
    assert loss_one == pytest.approx(loss_acc, rel=1e-5)
    for name in delta_one:
        torch.testing.assert_close(delta_one[name], delta_acc[name], rtol=1e-4, atol=1e-6)
