"""A pair's prompt computed once (`preference.share_prompt`): the rejected answer borrows the
chosen sequence's prompt rows as its attention prefix. Everything must equal scoring the two
sequences separately: log-probabilities, the DPO loss, and the gradients that flow back
through the borrowed keys and values."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, get_peft_model

from hone.config import ModelArgs
from hone.data.collate import MIN_SHARED_PREFIX, pack_pairs, shared_prefix
from hone.engine import engine
from hone.engine.attention import PackedAttention, _sdpa_per_example
from hone.model.load import load_model, load_tokenizer
from hone.train import dpo
from hone.train.logprobs import sequence_logprobs
from test_preference_losses import pairs


def long_prompt_pairs(tokenizer, n=4, seed=0):
    return pairs(tokenizer, n, seed, system_words=12, user_words=(8, 30))


@pytest.fixture(scope="module")
def lora_model(tiny_llama):
    torch.manual_seed(0)
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                                             init_lora_weights=False))
    return model, load_tokenizer(ModelArgs(path=str(tiny_llama)))


def test_the_shared_prefix_is_the_common_prompt_and_never_reaches_a_labelled_token(lora_model):
    _, tokenizer = lora_model
    for item in long_prompt_pairs(tokenizer, 6):
        n = shared_prefix(item.chosen, item.rejected)
        first_label = next(t for t, label in enumerate(item.rejected.labels) if label >= 0)
        assert MIN_SHARED_PREFIX <= n <= first_label
        assert item.chosen.input_ids[:n] == item.rejected.input_ids[:n]
        assert all(label < 0 for label in item.chosen.labels[:n] + item.rejected.labels[:n])
    short = dataclasses.replace(item.rejected, input_ids=item.rejected.input_ids[:5], labels=item.rejected.labels[:5])
    assert shared_prefix(item.chosen, short) == 0  # too short to be worth borrowing
    batch = pack_pairs([i.chosen for i in [item]], [i.rejected for i in [item]])
    assert batch["input_ids"].shape[1] == len(item.chosen.input_ids) + len(item.rejected.input_ids) - shared_prefix(item.chosen, item.rejected)


def scored(model, batch, n):
    """(log-probabilities, gradient of their weighted sum w.r.t. every LoRA weight)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with engine(model, torch.device("cpu"), torch.float32, packing=True):
        logps, tokens = sequence_logprobs(model, batch, n)
        weights = torch.linspace(-1, 1, n)
        grads = torch.autograd.grad((logps * weights).sum(), params)
    return logps.detach(), tokens, grads


def test_shared_prompt_log_probabilities_and_gradients_equal_two_separate_sequences(lora_model):
    model, tokenizer = lora_model
    items = long_prompt_pairs(tokenizer, 4)
    pad = tokenizer.pad_token_id
    shared = dpo.DPO.batch(items, pad, "pack") | {}
    apart = dataclasses.replace(dpo.DPO, share_prompt=False).batch(items, pad, "pack")
    together = dataclasses.replace(dpo.DPO, share_prompt=True).batch(items, pad, "pack")
    assert "borrow" in together and "borrow" not in shared
    saved = sum(shared_prefix(i.chosen, i.rejected) for i in items)
    assert saved > 4 * MIN_SHARED_PREFIX and int(together["seq_lengths"][: 2 * len(items)].sum()) == \
        int(apart["seq_lengths"][: 2 * len(items)].sum()) - saved
    want, want_tokens, want_grads = scored(model, apart, 2 * len(items))
    got, got_tokens, got_grads = scored(model, together, 2 * len(items))
    torch.testing.assert_close(got_tokens, want_tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert max(float(w.abs().max()) for w in want_grads) > 1e-3  # the gradients compared are not all zero


def test_the_dpo_loss_is_the_same_with_the_prompt_shared(lora_model):
    model, tokenizer = lora_model
    items = long_prompt_pairs(tokenizer, 5, seed=1)
    losses = []
    for share in (False, True):
        objective = dataclasses.replace(dpo.DPO, share_prompt=share)
        with torch.no_grad(), engine(model, torch.device("cpu"), torch.float32, packing=True):
            out = objective.loss(model, objective.batch(items, tokenizer.pad_token_id, "pack"))
        losses.append((float(out.total), out.metrics))
    assert losses[0][0] == pytest.approx(losses[1][0], abs=1e-5)
    for key in losses[0][1]:
        assert losses[0][1][key] == pytest.approx(losses[1][1][key], abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_borrowed_prefix_attention_equals_attending_over_the_concatenation(dtype):
    """Both packed paths (the CPU flash layout and the per-example SDPA loop other devices use)
    against plain causal attention over [prefix rows, segment rows], forward and backward."""
    torch.manual_seed(0)
    heads, kv_heads, dim = 4, 2, 16
    lengths = [40, 30, 9, 25]  # segment 2 borrows 20 rows of segment 0, segment 3 the first 30 of segment 1
    bounds = [0, 40, 70, 79, 104]
    borrow = ((0, 0), (0, 0), (0, 20), (40, 30))
    tensors = [torch.randn(1, h, bounds[-1], dim, dtype=dtype, requires_grad=True) for h in (heads, kv_heads, kv_heads)]
    grad_out = torch.randn(1, bounds[-1], heads, dim, dtype=dtype)

    def reference(q, k, v):
        outs = []
        for (start, end), (first, prefix) in zip(zip(bounds[:-1], bounds[1:]), borrow):
            parts = [torch.cat([t[:, :, first : first + prefix], t[:, :, start:end]], dim=2).float() for t in (q, k, v)]
            out = torch.nn.functional.scaled_dot_product_attention(*parts, is_causal=True, enable_gqa=True)
            outs.append(out[:, :, prefix:])
        return torch.cat(outs, dim=2).transpose(1, 2)

    want = reference(*tensors)
    want_grads = torch.autograd.grad(want, tensors, grad_out.float())
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-4)
    for name, attend in (("flash layout", lambda q, k, v: PackedAttention.apply(q, k, v, bounds, None, borrow)),
                         ("sdpa loop", lambda q, k, v: _sdpa_per_example(q, k, v, bounds, None, borrow))):
        got = attend(*tensors)
        grads = torch.autograd.grad(got, tensors, grad_out)
        torch.testing.assert_close(got.float(), want, **tol, msg=name)
        for g, w in zip(grads, want_grads):
            torch.testing.assert_close(g.float(), w.float(), **tol, msg=lambda m: f"{name}: {m}")


def test_reward_model_scores_are_the_same_with_the_prompt_shared(lora_model):
    from hone.train import reward

    model, tokenizer = lora_model
    reward.attach_score_head(model, seed=0)
    items = long_prompt_pairs(tokenizer, 4, seed=2)
    scores = []
    for share in (False, True):
        objective = dataclasses.replace(reward.RewardModel(), share_prompt=share)
        with torch.no_grad(), engine(model, torch.device("cpu"), torch.float32, packing=True):
            scores.append(reward.sequence_rewards(model, objective.batch(items, tokenizer.pad_token_id, "pack"), 8))
    torch.testing.assert_close(scores[1], scores[0], atol=1e-5, rtol=1e-5)
    assert float(scores[0].std()) > 0


def test_reference_scores_computed_once_are_the_same_with_the_prompt_shared(lora_model):
    from types import SimpleNamespace

    from hone.config import load_config
    from hone.train.preference import score_items

    model, tokenizer = lora_model
    items = long_prompt_pairs(tokenizer, 6, seed=3)
    setup = SimpleNamespace(model=model, device=torch.device("cpu"), compute_dtype=torch.float32, pad_id=tokenizer.pad_token_id)
    scores = [score_items(setup, items, load_config(None, [f"preference.share_prompt={share}", "train.batch_size=4"]))
              for share in ("false", "true")]
    torch.testing.assert_close(scores[1], scores[0], atol=1e-5, rtol=1e-5)
    assert scores[0].shape == (6, 2) and float(scores[0].std()) > 0
