"""The adapter family (issue 24), one table row per method or LoRA variant, on a tiny Llama:

- hone's loss is the same on packed rows, padded rows and with the speed layer installed
  (the engine fuses plain LoRA and steps aside, or handles the rest);
- every trainable parameter gets a gradient through hone's loss (which calls the decoder
  directly, not PEFT's forward: virtual tokens must still be there);
- what `save` writes, `load_trained` reads back to the same loss; where PEFT has a format,
  plain PEFT (`PeftModel.from_pretrained`) loads it to the same logits as hone's model;
- the plan's trainable count is the wrapped model's.
"""

from __future__ import annotations

import json

import pytest
import torch

from hone.config import AdapterArgs, ModelArgs, TrainArgs
from hone.data.collate import pack_batch, pad_batch
from hone.data.render import Tokenized
from hone.engine import engine
from hone.errors import HoneError
from hone.model import methods
from hone.model.adapters import count_parameters
from hone.model.load import load_model
from hone.plan.memory import MemorySettings, describe_model
from hone.train.loop import build_optimizer
from hone.train.loss import split_model, token_loss

CPU = torch.device("cpu")
FP32 = "float32"
ITEMS = [Tokenized(list(range(5, 5 + n)), list(range(5, 5 + n))) for n in (7, 12, 5)]
IDS = torch.tensor([[5, 17, 42, 99, 7, 23, 61]])

# (row name, adapter.method, its keys): every method, and each LoRA variant as the keys that select it
CASES = [
    ("dora", "lora", {"use_dora": True}),
    ("rslora", "lora", {"use_rslora": True}),
    ("pissa", "lora", {"init": "pissa"}),
    ("olora", "lora", {"init": "olora"}),
    ("ia3", "ia3", {}),
    ("prompt_tuning", "prompt_tuning", {"num_virtual_tokens": 4}),
    ("prefix_tuning", "prefix_tuning", {"num_virtual_tokens": 4}),
    ("bottleneck-houlsby", "bottleneck", {"bottleneck_size": 8, "bottleneck_placement": "houlsby"}),
    ("freeze", "freeze", {"train_layers": 1, "train_patterns": [r"^model\.norm\."]}),
]
PEFT_FORMAT = {"dora", "rslora", "pissa", "olora", "ia3", "prompt_tuning", "prefix_tuning"}


@pytest.fixture(scope="module")
def arch(tiny_llama):
    from transformers import AutoConfig

    return describe_model(AutoConfig.from_pretrained(tiny_llama))


def trained(tiny_llama, method: str, keys: dict):
    """The method wrapped on the tiny model, its parameters moved as training would (LoRA's B,
    a bottleneck's up-projection start at zero: a zero would hide a wrong load)."""
    args = AdapterArgs(method=method, lora_rank=4, **keys)
    torch.manual_seed(0)
    model = methods.get(method).wrap(load_model(ModelArgs(path=str(tiny_llama), dtype=FP32, device="cpu")), args)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    return model, args


def hone_logits(model, ids):
    """Logits as hone's loss computes them: the decoder called directly, then the head."""
    decoder, head, _ = split_model(model)
    return head(decoder(input_ids=ids, use_cache=False).last_hidden_state)


@pytest.mark.parametrize("row, method, keys", CASES, ids=[c[0] for c in CASES])
def test_method_trains_saves_loads_and_is_planned(row, method, keys, tiny_llama, arch, tmp_path):
    model, args = trained(tiny_llama, method, keys)
    entry = methods.get(method)
    alone = sum(token_loss(model, pad_batch([item], 0))[0] for item in ITEMS)
    packed, _ = token_loss(model, pack_batch(ITEMS, 0, 1))
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-4)  # each example as if alone
    with engine(model, CPU, torch.float32):
        fused, _ = token_loss(model, pack_batch(ITEMS, 0, 64))
        fused_padded, _ = token_loss(model, pad_batch(ITEMS, 0))
    torch.testing.assert_close(fused, alone, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fused_padded, alone, rtol=1e-5, atol=1e-4)

    packed.backward()
    silent = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert silent == []  # hone's loss reaches every trained parameter

    sizing = entry.size(arch, MemorySettings(method, lora_rank=4, adapter=args))
    assert count_parameters(model) == (sizing.trainable, arch.total_params + sizing.added)

    entry.save(model, tmp_path)
    assert (tmp_path / entry.saved_file).is_file()
    base_args = ModelArgs(path=str(tiny_llama), dtype=FP32, device="cpu")
    loaded = entry.load_trained(tmp_path, base_args)
    with torch.no_grad():
        torch.testing.assert_close(token_loss(loaded, pack_batch(ITEMS, 0, 1))[0], alone.detach(), rtol=1e-5, atol=1e-4)
        if row in PEFT_FORMAT:
            assert_plain_peft_agrees(tmp_path, base_args, loaded, args)


def assert_plain_peft_agrees(run_dir, base_args, loaded, args):
    """PEFT alone, on a fresh base, gives hone's logits (prompt tuning's output carries the
    virtual positions first)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(load_model(base_args), str(run_dir)).eval()
    theirs = peft_model(input_ids=IDS).logits
    if args.method == "prompt_tuning":
        theirs = theirs[:, args.num_virtual_tokens:]
    assert (theirs - hone_logits(loaded.eval(), IDS)).abs().max() < 1e-4


def test_dora_over_a_4bit_base_trains_through_hones_loss(tiny_llama):
    """DoRA composes over qlora: PEFT's 4-bit DoRA layers, the magnitude trained."""
    pytest.importorskip("bitsandbytes")
    model = methods.get("qlora").wrap(load_model(ModelArgs(path=str(tiny_llama), dtype=FP32, device="cpu"), quantize_4bit=True),
                                      AdapterArgs(method="qlora", lora_rank=4, use_dora=True))
    loss, _ = token_loss(model, pack_batch(ITEMS, 0, 1))
    loss.backward()
    magnitudes = [p for name, p in model.named_parameters() if "magnitude" in name]
    assert magnitudes and all(p.grad is not None and p.grad.any() for p in magnitudes)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "ia3"])
def test_generation_continues_as_the_trained_forward_pass_does(method):
    """`model.generate` (what evaluation, chat and the RL sampler call) gives, on left-padded rows
    of different lengths, the greedy tokens of hone's own forward pass over each prompt alone:
    PEFT's generate of virtual tokens drifts from it after the first token (transformers 5.25)."""
    from hone.model.generate import GenerationArgs, generate_batch
    from hone.model.load import load_tokenizer

    args = ModelArgs(path="embedded", dtype=FP32, device="cpu")
    torch.manual_seed(0)
    model = methods.get(method).wrap(load_model(args), AdapterArgs(method=method, num_virtual_tokens=8)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    tokenizer = load_tokenizer(args)
    prompts = [tokenizer(text)["input_ids"] for text in ("The printer on floor three", "Hello, my order", "Refund")]
    new = 12
    answers = generate_batch(model, prompts, GenerationArgs(max_new_tokens=new), [], tokenizer.pad_token_id, CPU)
    decoder, head, _ = split_model(model)
    for prompt, answer in zip(prompts, answers):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(new):
                ids.append(int(head(decoder(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state)[0, -1].argmax()))
        assert answer == ids[len(prompt):]


def test_loraplus_trains_b_at_its_own_rate_and_init_is_refused_over_4bit(tiny_llama):
    model, _ = trained(tiny_llama, "lora", {"loraplus_lr_ratio": 16.0})
    optimizer, _ = build_optimizer(model, TrainArgs(learning_rate=1e-3, warmup_ratio=0.0), total_steps=10)
    names = {id(p): name for name, p in model.named_parameters()}
    rates = sorted((round(group["initial_lr"], 9), {"B" if "lora_B" in names[id(p)] else "A" for p in group["params"]})
                   for group in optimizer.param_groups)
    assert rates == [(1e-3, {"A"}), (16e-3, {"B"})]
    base = load_model(ModelArgs(path=str(tiny_llama), dtype=FP32, device="cpu"))
    base.is_loaded_in_4bit = True  # what transformers sets on a 4-bit model
    with pytest.raises(HoneError, match="adapter.init=pissa"):
        methods.get("lora").wrap(base, AdapterArgs(init="pissa"))


def test_default_learning_rates_of_virtual_tokens_and_frozen_layers(tiny_llama):
    for method, ratio in (("prompt_tuning", 10.0), ("freeze", 0.1), ("ia3", 10.0), ("bottleneck", 1.0)):
        model, _ = trained(tiny_llama, method, {"num_virtual_tokens": 2} if method == "prompt_tuning" else {})
        optimizer, _ = build_optimizer(model, TrainArgs(learning_rate=1e-3, warmup_ratio=0.0), total_steps=10)
        assert [g["initial_lr"] for g in optimizer.param_groups] == [pytest.approx(1e-3 * ratio)]


def test_bottleneck_format_describes_itself_and_export_refuses_with_the_reason(tiny_llama, tmp_path):
    from hone.export.merge import merge_run

    model, _ = trained(tiny_llama, "bottleneck", {"bottleneck_size": 8})
    methods.get("bottleneck").save(model, tmp_path)
    saved = json.loads((tmp_path / "bottleneck_config.json").read_text())
    assert saved["format"] == "hone-bottleneck/1" and saved["after"] == ["mlp"] and saved["activation"] == "relu"
    assert saved["bottleneck_size"] == 8 and saved["base_model"] == str(tiny_llama)
    (tmp_path / "config.yaml").write_text(f"model:\n  path: {tiny_llama}\nadapter:\n  method: bottleneck\n")
    with pytest.raises(HoneError, match="relu between their two projections is not linear"):
        merge_run(tmp_path, tmp_path / "merged")


def test_frozen_layers_export_as_a_standalone_model(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hone.export.merge import merge_run

    model, _ = trained(tiny_llama, "freeze", {"train_layers": 1})
    (tmp_path / "run").mkdir()
    methods.get("freeze").save(model, tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(f"model:\n  path: {tiny_llama}\nadapter:\n  method: freeze\n")
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(tmp_path / "run")
    merged = AutoModelForCausalLM.from_pretrained(merge_run(tmp_path / "run", tmp_path / "merged"), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=IDS).logits, model(input_ids=IDS).logits, rtol=1e-5, atol=1e-5)


# PiSSA/OLoRA count as LoRA (checked on the tiny model above); their SVD/QR of every weight is left out here
PLANNED = [case for case in CASES if case[0] not in ("pissa", "olora")] + [("loraplus", "lora", {"loraplus_lr_ratio": 16.0}),
    ("prompt_tuning-default", "prompt_tuning", {}), ("prefix_tuning-default", "prefix_tuning", {})]


@pytest.mark.parametrize("method, default", [("prompt_tuning", 100), ("prefix_tuning", 20)])
def test_each_virtual_token_method_has_its_own_default_length(tiny_llama, method, default):
    """`num_virtual_tokens` unset: 100 for prompt tuning (with 20 its demo answers scored below
    the base's), 20 for prefix tuning; a value given wins for either."""
    args = ModelArgs(path=str(tiny_llama), device="cpu", dtype=FP32)
    model = methods.get(method).wrap(load_model(args), AdapterArgs(method=method))
    assert model.active_peft_config.num_virtual_tokens == default
    model = methods.get(method).wrap(load_model(args), AdapterArgs(method=method, num_virtual_tokens=7))
    assert model.active_peft_config.num_virtual_tokens == 7


def test_plan_counts_what_each_method_trains_on_the_embedded_model():
    """`hone plan`'s trainable and total parameters (from config.json alone) are the wrapped
    embedded model's, for every method and variant."""
    from hone.config import load_config
    from hone.plan.estimate import plan_run
    from hone.train.sft import build_trainable

    for row, method, keys in PLANNED:
        overrides = ["model.path=embedded", "model.device=cpu", "model.dtype=float32", f"adapter.method={method}"]
        overrides += [f"adapter.{key}={json.dumps(value)}" for key, value in keys.items()]
        config = load_config(None, overrides)
        plan = plan_run(config, calibrate=False)
        model, _ = build_trainable(config, seed=0)
        assert (plan.trainable_params, plan.total_params) == count_parameters(model), row


ADVICE = [
    # (answers beyond a format task with 800 examples, advised method, the method `hone train` runs, a key it sets)
    (dict(many_tasks=True, gpu_memory_gb=24, model_params_b=7), "ia3", "ia3", None),
    (dict(many_tasks=True, gpu_memory_gb=80, model_params_b=13), "prompt_tuning", "prompt_tuning", "num_virtual_tokens"),
    (dict(lora_underfits=True, gpu_memory_gb=24, model_params_b=7), "dora", "lora", "use_dora"),
    (dict(lora_underfits=True, gpu_memory_gb=8, model_params_b=7), "dora", "qlora", "use_dora"),
    (dict(keep_lower_layers=True, gpu_memory_gb=24, model_params_b=7), "freeze", "freeze", "train_layers"),
    (dict(keep_lower_layers=True, gpu_memory_gb=8, model_params_b=7), "qlora", "qlora", None),  # bf16 does not fit: 4-bit first
]


@pytest.mark.parametrize("raw, advised, trained, key", ADVICE, ids=[a[1] + "-" + a[2] for a in ADVICE])
def test_advisor_recommends_the_family_with_a_reason_and_a_config_that_trains(raw, advised, trained, key, tmp_path):
    from hone.config import load_config
    from hone.plan.advise import Answers, advise

    advice = advise(Answers(goal="format", n_examples=800, **raw))
    assert advice.method == advised and advice.reasons[-1]
    path = tmp_path / "run.yaml"
    path.write_text(advice.config_yaml)
    config = load_config(path)
    assert config.adapter.method == trained
    if key:
        assert f"\n  {key}: " in advice.config_yaml
