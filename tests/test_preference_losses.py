"""Each preference loss equals TRL's on the same tiny model and batch, to 1e-5: TRL's own loss
code runs (DPOTrainer/KTOTrainer `_compute_loss` and RewardTrainer `compute_loss` on a model
with TRL's fused head, CPOTrainer.cpo_loss for SimPO, ORPOTrainer.odds_ratio_loss), hone's on
its packed rows and chunked head."""

import dataclasses
import os
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification

from hone.config import ModelArgs, PreferenceArgs
from hone.data.collate import pad_batch
from hone.data.formats import Example
from hone.data.pairs import PairTokenized, UnpairedTokenized, render_pair, with_mismatched
from hone.data.render import IGNORE
from hone.engine import engine
from hone.model.load import load_model, load_tokenizer
from hone.train import dpo, kto, orpo, reward, simpo
from hone.train.logprobs import HeadLogProbs, _chunk_logprobs, sequence_logprobs

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl = pytest.importorskip("trl")
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402
from trl.trainer.utils import add_fused_lm_head  # noqa: E402

WORDS = "the cat dog sat on mat red blue order refund ship login error yes no".split()
TOL = 1e-5


def pairs(tokenizer, n=4, seed=0, system_words=0, user_words=(3, 9)) -> list[PairTokenized]:
    """n random pairs (with a system prompt of `system_words` words when above 0)."""
    rng = random.Random(seed)

    def say(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    system = [{"role": "system", "content": say(system_words)}] if system_words else []
    examples = [Example("preference", messages=system + [{"role": "user", "content": say(rng.randint(*user_words))}],
                        chosen=[{"role": "assistant", "content": say(rng.randint(2, 6))}],
                        rejected=[{"role": "assistant", "content": say(rng.randint(2, 8))}]) for _ in range(n)]
    items = [render_pair(tokenizer, e) for e in examples]
    for item in items:
        item.reference = (-rng.uniform(5, 30), -rng.uniform(5, 30))
    return items


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32")).eval()
    return model, load_tokenizer(ModelArgs(path=str(tiny_llama)))


@pytest.fixture(scope="module")
def fused(tiny_llama):
    """The same model with TRL's fused head (what its trainers add before training)."""
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32")).eval()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    return model


class Accelerator:
    """The single-process accelerator TRL's loss code talks to."""

    device = torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def unwrap_model(self, model):
        return model


def trainer(model, **fields):
    base = dict(model=model, accelerator=Accelerator(), aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
                _total_train_tokens=0, _tp_size=1, ref_model=None, router_aux_loss_coef=0.0,
                args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    return SimpleNamespace(**{**base, **fields})


def padded(sequences, pad_id):
    batch = pad_batch(sequences, pad_id)
    return batch["input_ids"], batch["attention_mask"], (batch["labels"] != IGNORE).long()


def hone_loss(objective, model, items, pad_id, layout="pack") -> float:
    batch = objective.batch(items, pad_id, layout)
    with torch.no_grad(), engine(model, torch.device("cpu"), torch.float32, packing=layout == "pack"):
        out = objective.loss(model, batch)
    return float(out.total) / out.count


def test_sequence_logprobs_match_trl_get_batch_logps_packed_and_padded_with_gradients(tiny):
    model, tokenizer = tiny
    items = pairs(tokenizer, 3)
    sequences = [i.chosen for i in items] + [i.rejected for i in items]
    ids, mask, _ = padded(sequences, tokenizer.pad_token_id)
    labels = pad_batch(sequences, tokenizer.pad_token_id)["labels"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    expected = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=False)
    for layout in ("pack", "pad"):
        batch = dpo.DPO.batch(items, tokenizer.pad_token_id, layout)
        with torch.no_grad(), engine(model, torch.device("cpu"), torch.float32, packing=layout == "pack"):
            got = sequence_logprobs(model, batch, len(sequences))[0]
        torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
    # the fused head's gradient (computed in its forward) is autograd's through the plain head
    rows = torch.randn(70, model.config.hidden_size, requires_grad=True)
    goal = torch.randint(0, model.config.vocab_size, (70,))
    goal[::7] = IGNORE
    weights = torch.randn(70)
    head = model.get_output_embeddings()
    fast = torch.autograd.grad((reward_free_token_logprobs(rows, goal, head, fast=True) * weights).sum(), rows)[0]
    slow = torch.autograd.grad((reward_free_token_logprobs(rows, goal, head, fast=False) * weights).sum(), rows)[0]
    torch.testing.assert_close(fast, slow, atol=TOL, rtol=TOL)


def reward_free_token_logprobs(rows, goal, head, fast):
    if fast:
        return HeadLogProbs.apply(rows, goal, head.weight.detach(), 64, torch.float32)
    return _chunk_logprobs(rows, goal, lambda x: x @ head.weight.detach().t(), None)


@pytest.mark.parametrize("loss, smoothing", [("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.2)])
def test_dpo_losses_equal_trl(tiny, fused, loss, smoothing):
    model, tokenizer = tiny
    items = pairs(tokenizer, 4, seed=1)
    args = PreferenceArgs(beta=0.3, loss=loss, label_smoothing=smoothing)
    ours = hone_loss(dataclasses.replace(dpo.DPO, args=args), model, items, tokenizer.pad_token_id)
    ids, mask, completion = padded([i.chosen for i in items] + [i.rejected for i in items], tokenizer.pad_token_id)
    inputs = {"input_ids": ids, "attention_mask": mask, "completion_mask": completion,
              "ref_chosen_logps": torch.tensor([i.reference[0] for i in items]),
              "ref_rejected_logps": torch.tensor([i.reference[1] for i in items])}
    them = trainer(fused, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss],
                   loss_weights=[1.0], beta=0.3, label_smoothing=smoothing, use_weighting=False, f_alpha_divergence_coef=1.0)
    with torch.no_grad():
        expected = trl.DPOTrainer._compute_loss(them, fused, inputs, False)
    assert abs(ours - float(expected)) < TOL


def average_logps(model, items, pad_id):
    sequences = [i.chosen for i in items] + [i.rejected for i in items]
    batch = pad_batch(sequences, pad_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = CPOTrainer.get_batch_logps(logits, batch["labels"], average_log_prob=True)
    return logps[: len(items)], logps[len(items):]


def test_simpo_equals_trl_cpo_simpo(tiny):
    model, tokenizer = tiny
    items = pairs(tokenizer, 4, seed=2)
    args = PreferenceArgs(beta=2.0, gamma=0.7, label_smoothing=0.1)
    ours = hone_loss(dataclasses.replace(simpo.SIMPO, args=args), model, items, tokenizer.pad_token_id)
    them = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.7, beta=2.0, label_smoothing=0.1, accelerator=Accelerator())
    losses, _, _ = CPOTrainer.cpo_loss(them, *average_logps(model, items, tokenizer.pad_token_id))
    assert abs(ours - float(losses.mean())) < TOL


def test_orpo_equals_trl_odds_ratio_loss_plus_the_chosen_answers_nll(tiny):
    model, tokenizer = tiny
    items = pairs(tokenizer, 4, seed=3)
    ours = hone_loss(dataclasses.replace(orpo.ORPO, args=PreferenceArgs(beta=0.25)), model, items, tokenizer.pad_token_id)
    chosen, rejected = average_logps(model, items, tokenizer.pad_token_id)
    them = SimpleNamespace(beta=0.25, accelerator=Accelerator())
    losses = ORPOTrainer.odds_ratio_loss(them, chosen, rejected)[0]
    # TRL: loss = nll - mean(beta * log sigmoid(log odds)); hone's nll is the chosen answer's (per pair, per token)
    assert abs(ours - float((-chosen).mean() - losses.mean())) < TOL


def test_kto_equals_trl(tiny, fused):
    model, tokenizer = tiny
    rng = random.Random(4)
    answers = [s for p in pairs(tokenizer, 2, seed=4) for s in p.sequences()]
    items = with_mismatched([UnpairedTokenized(s, d, s) for s, d in zip(answers, (True, False, False, True))])
    for item in items:
        item.reference = (-rng.uniform(5, 30), -rng.uniform(5, 30))
    args = PreferenceArgs(beta=0.2, desirable_weight=1.3, undesirable_weight=0.8)
    ours = hone_loss(dataclasses.replace(kto.KTO_OBJECTIVE, args=args), model, items, tokenizer.pad_token_id)
    ids, mask, completion = padded([i.answer for i in items], tokenizer.pad_token_id)
    kl_ids, kl_mask, kl_completion = padded([i.mismatched for i in items], tokenizer.pad_token_id)
    inputs = {"input_ids": ids, "attention_mask": mask, "completion_mask": completion, "KL_input_ids": kl_ids,
              "KL_attention_mask": kl_mask, "KL_completion_mask": kl_completion,
              "label": torch.tensor([i.desirable for i in items]),
              "ref_logps": torch.tensor([i.reference[0] for i in items]),
              "ref_KL_logps": torch.tensor([i.reference[1] for i in items])}
    them = trainer(fused, precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=0.2,
                   desirable_weight=1.3, undesirable_weight=0.8)
    them._compute_kl_logps = lambda model, batch: trl.KTOTrainer._compute_kl_logps(them, model, batch)
    with torch.no_grad():
        expected = trl.KTOTrainer._compute_loss(them, fused, inputs, False)
    assert abs(ours - float(expected)) < TOL


@pytest.mark.parametrize("adapter", [False, True])
def test_reward_loss_equals_trl_and_saved_model_loads_in_transformers(tiny_llama, tiny, tmp_path, adapter):
    _, tokenizer = tiny
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32")).eval()
    if adapter:
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    reward.attach_score_head(model, seed=0)
    items = pairs(tokenizer, 4, seed=6)
    args = PreferenceArgs(margin=0.3, center_rewards=0.05)
    ours = hone_loss(dataclasses.replace(reward.REWARD, args=args), model, items, tokenizer.pad_token_id)
    reward.RewardModel().save(model, tmp_path, None)
    if adapter:
        base = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1)
        loaded = PeftModel.from_pretrained(base, tmp_path).eval()
    else:
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, _ = padded([i.chosen for i in items] + [i.rejected for i in items], tokenizer.pad_token_id)
    them = trainer(loaded, args=SimpleNamespace(center_rewards_coefficient=0.05))
    with torch.no_grad():
        expected = trl.RewardTrainer.compute_loss(them, loaded, {"input_ids": ids, "attention_mask": mask,
                                                                 "margin": torch.full((4,), 0.3)})
    assert abs(ours - float(expected)) < TOL


def test_live_reference_switches_the_adapter_off_inside_the_engine(tiny_llama, tiny):
    """`preference.reference=live` under the fused layers equals the base's log-probabilities
    computed once without them (the fused LoRA forwards step aside while the adapter is off)."""
    from peft import LoraConfig, get_peft_model

    _, tokenizer = tiny
    torch.manual_seed(0)
    model = get_peft_model(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)).eval()
    items = pairs(tokenizer, 4, seed=7)
    batch = pad_batch([i.chosen for i in items] + [i.rejected for i in items], tokenizer.pad_token_id)
    with torch.no_grad(), model.disable_adapter():
        base = sequence_logprobs(model, batch, 8)[0]
    for item, chosen, rejected in zip(items, base[:4].tolist(), base[4:].tolist()):
        item.reference = (chosen, rejected)
    precomputed = hone_loss(dpo.DPO, model, items, tokenizer.pad_token_id)
    for item in items:
        item.reference = None
    live = hone_loss(dpo.DPO, model, items, tokenizer.pad_token_id)
    assert abs(live - precomputed) < TOL and abs(live - 0.6931) > 1e-3  # the adapter does move the policy
