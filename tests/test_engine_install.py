"""The speed layer's one entry point (`hone.engine.engine`): installing and removing it leaves
every family's model exactly as it was, twice in a row or nested, and a replacement that
cannot be installed is skipped, never fatal."""

import sys

import pytest
import torch

from hone.config import AdapterArgs, ModelArgs
from hone.data.collate import pack_batch, pad_batch
from hone.data.render import IGNORE, Tokenized
from hone.engine import engine, installed
from hone.model.adapters import apply_method
from hone.model.load import load_model
from hone.train.loss import token_loss
from tiny import FAMILIES, make_model

CPU = torch.device("cpu")


def items(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(5, 300, (12 + 7 * i,), generator=generator).tolist()
        out.append(Tokenized(ids, [IGNORE] * (len(ids) // 2) + ids[len(ids) // 2 :]))
    return out


def snapshot(model):
    """Everything installing could change: each module's type and attributes (instance
    forwards included), each weight's values, storage and layout, the attention choice,
    and the modeling modules' rotary functions."""
    modules = [(name, type(m).__name__, sorted(vars(m))) for name, m in model.named_modules()]
    # the same Parameter objects, values, layout and dtype (the storage may move: the fused
    # layers copy frozen weights into joined matrices and back out)
    weights = {name: (p.detach().clone(), id(p), p.stride(), p.requires_grad) for name, p in model.named_parameters()}
    configs = [m.config._attn_implementation for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    modeling = {type(m).__module__ for m in model.modules()}
    rotary = {name: getattr(sys.modules[name], "apply_rotary_pos_emb", None) for name in modeling}
    return modules, weights, configs, rotary


def assert_same(before, after):
    assert before[0] == after[0]
    for name, (value, pointer, stride, grad) in before[1].items():
        got = after[1][name]
        assert torch.equal(value, got[0]) and value.dtype == got[0].dtype and (pointer, stride, grad) == got[1:], name
    assert before[2] == after[2] and before[3] == after[3]


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_installing_and_removing_leaves_every_family_as_it_was(tmp_path, family, dtype):
    model = load_model(ModelArgs(path=str(make_model(tmp_path, family)), dtype="float32"), weights_dtype=dtype)
    torch.manual_seed(0)
    model = apply_method(model, AdapterArgs(method="lora", lora_rank=16))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    padded = pad_batch(items(), pad_id=3)
    model.eval()
    before, out_before = snapshot(model), logits(model, padded)
    for _ in range(2):  # twice in a row: the second install finds the model as the first did
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            with engine(model, CPU, dtype) as report:
                assert installed(model) and report["fused"] >= (0 if family in ("gemma", "phi3") else 1)
                forwards = sum("forward" in vars(m) for m in model.modules())
                with engine(model, CPU, dtype) as again:  # nested: changes nothing
                    assert again is report and sum("forward" in vars(m) for m in model.modules()) == forwards
                model.train()
                loss, _ = token_loss(model, pack_batch(items()))
                loss.backward()
                assert torch.isfinite(loss)
        assert not installed(model)
        model.zero_grad(set_to_none=True)
        model.eval()
        assert_same(before, snapshot(model))
        assert torch.equal(out_before, logits(model, padded))


def test_a_replacement_that_fails_to_install_is_skipped_not_fatal(tiny_llama, monkeypatch, caplog):
    import hone.engine.fused as fused_module

    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")), AdapterArgs(method="lora", lora_rank=8))
    batch = pack_batch(items())

    def broken(*args):
        raise RuntimeError("a module laid out in a way this engine did not expect")

    with engine(model, CPU, torch.float32):
        want, _ = token_loss(model, batch)
    monkeypatch.setattr(fused_module, "_swiglu_forward", broken)  # every MLP's install fails
    monkeypatch.setattr(fused_module, "_rotary_modules", broken)  # and the whole fused step, at its end
    with engine(model, CPU, torch.float32) as report:
        assert report["fused"] is None and "forward" not in vars(model.get_base_model().model.layers[0].mlp)
        got, _ = token_loss(model, batch)
    assert "fused not installed" in caplog.text
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not any("forward" in vars(m) for m in model.modules())


def test_a_forward_someone_else_installed_is_left_alone(tiny_llama):
    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")), AdapterArgs(method="lora", lora_rank=8))
    norm = model.get_base_model().model.norm
    theirs = norm.forward  # bound method of the class's forward, as another library might set it
    norm.forward = theirs
    with engine(model, CPU, torch.float32) as report:
        assert norm.__dict__["forward"] is theirs and report["fused"] > 0
        token_loss(model, pack_batch(items()))
    assert norm.__dict__["forward"] is theirs


def test_a_library_that_resets_a_forward_mid_run_does_not_fail_the_undo(tiny_llama):
    """transformers 5.25 re-kernelized layers on model.train(), dropping the forwards hone
    had installed; leaving the engine then raised AttributeError and lost the run."""
    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")), AdapterArgs(method="lora", lora_rank=8))
    with engine(model, CPU, torch.float32):
        for module in model.modules():
            module.__dict__.pop("forward", None)  # what the re-kernelization did
        token_loss(model, pack_batch(items()))
    assert not any("forward" in vars(m) for m in model.modules())
