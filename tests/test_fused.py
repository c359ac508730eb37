"""The engine's hand-written forward/backward paths compute what the modules they replace
compute: LoRA linears, RMSNorm, packed attention and the loss head."""

import contextlib
import random
import sys

import pytest
import torch
import torch.nn.functional as F

from hone.config import AdapterArgs, ModelArgs
from hone.data.collate import pack_batch
from hone.data.render import IGNORE, Tokenized
from hone.model.adapters import apply_method
from hone.model.load import load_model
from hone.engine import kernels, tiers
from hone.engine.attention import FP32_BACKWARD_MAX, PackedAttention, _sdpa_per_example, attention_for_packing
from hone.engine.fused import fused
from hone.train.loss import HeadLoss, _chunk_loss, token_loss


@pytest.fixture(params=tiers.NAMES)
def kernel_path(request):
    """Each test that takes it runs once per kernel tier this CPU can execute (amx, avx512,
    avx2, c: the C kernels built for that instruction set; torch: torch's operators), and
    is skipped, with the reason, for the tiers it cannot."""
    reason = tiers.why_not(request.param)
    if reason:
        pytest.skip(reason)
    with tiers.forced(request.param):
        if request.param != "torch" and kernels.library() is None:
            pytest.skip("no C compiler on PATH: the kernels cannot be built here")
        yield request.param


def items(n=10, seed=0, vocab=300):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(5, vocab) for _ in range(rng.randint(4, 70))]
        cut = rng.randint(1, len(ids) - 1)
        out.append(Tokenized(ids, [IGNORE] * cut + ids[cut:]))
    return out


def loss_and_grads(model, batch, use_fused):
    model.zero_grad()
    with attention_for_packing(model, torch.device("cpu")), (fused(model) if use_fused else contextlib.nullcontext()) as n:
        total, _ = token_loss(model, batch)
    total.backward()
    return total.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}, n


ALL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("targets", [["q_proj", "v_proj", "o_proj", "down_proj"], ALL_LINEARS], ids=["some", "all"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma", "phi3"])
def test_fused_lora_and_norms_match_the_modules_they_replace(tmp_path, monkeypatch, family, targets):
    from tiny import make_model

    import hone.engine.fused as fused_module

    groups = []  # q, k and v adapted together run as one node per layer
    original_group = fused_module.SharedInputLora.forward
    monkeypatch.setattr(fused_module.SharedInputLora, "forward", staticmethod(lambda ctx, *a: groups.append(1) or original_group(ctx, *a)))

    model = load_model(ModelArgs(path=str(make_model(tmp_path, family)), dtype="float32"))
    torch.manual_seed(0)
    model = apply_method(model, AdapterArgs(method="lora", lora_rank=4, target_modules=targets))
    for name, param in model.named_parameters():
        if "lora_B" in name or name.endswith(".bias"):  # both start at zero; give them something to contribute
            torch.nn.init.normal_(param, std=0.05)
    assert family != "qwen2" or any(name.endswith("q_proj.base_layer.bias") for name, _ in model.named_parameters())
    batch = pack_batch(items())
    expected, expected_grads, _ = loss_and_grads(model, batch, use_fused=False)
    got, grads, patched = loss_and_grads(model, batch, use_fused=True)
    lora_layers = sum(1 for m in model.modules() if hasattr(m, "lora_A"))
    # Gemma's RMSNorm scales by (1 + weight), not weight, and its MLP uses GELU: both keep
    # their own forward. Phi-3 has one fused gate_up_proj. Llama and Qwen2 MLPs with all
    # three projections adapted run as one SwiGLU node (standing in for 3 LoRA layers).
    norms = 0 if family == "gemma" else sum(1 for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    mlps = model.config.num_hidden_layers if family in ("llama", "qwen2") and targets == ALL_LINEARS else 0
    assert patched == lora_layers - 3 * mlps + mlps + norms and lora_layers > 0
    assert len(groups) == (model.config.num_hidden_layers if targets == ALL_LINEARS and family != "phi3" else 0)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    # fp32 rounding differs (fused multiply-adds, another summation order), so each gradient
    # is judged against its own scale. Usually within 1e-5 of it, but in about one run in
    # ten, with the same inputs, the q projection's adapter gradients (both layers) read
    # 5.7e-5 to 1.6e-4 (measured over 10 runs of all 8 cases): the bound leaves room for
    # that; a wrong term or a missing scale is off by 1e-2 or more.
    for name, grad in grads.items():
        want = expected_grads[name]
        assert (grad - want).abs().max() <= 1e-3 * want.abs().max(), name
    assert not any("forward" in vars(m) for m in model.modules())  # every module got its own forward back
    # rotary embeddings: Llama's function (copied into Qwen2 and Gemma) runs as one node; Phi-3's differs
    modeling = sys.modules[type(model.get_base_model().model.layers[0].self_attn).__module__]
    original = modeling.apply_rotary_pos_emb
    with fused(model):
        assert (modeling.apply_rotary_pos_emb is not original) == (family != "phi3")
    assert modeling.apply_rotary_pos_emb is original


def test_projection_weights_live_in_their_joined_matrices_only_while_fused(tiny_llama):
    """While fused, each gate/up (and q/k/v) weight is a view into [W | B_i ...] (no second
    copy of it), its row as wide as the input plus the ranks of its group; on exit it is a
    contiguous tensor again, with the same values."""
    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")),
                         AdapterArgs(method="lora", lora_rank=4, target_modules=ALL_LINEARS))
    layer = model.get_base_model().model.layers[0]
    groups = [(2, [layer.mlp.gate_proj, layer.mlp.up_proj]),
              (3, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])]
    weights = [(size, p.base_layer.weight) for size, projections in groups for p in projections]
    before = [w.detach().clone() for _, w in weights]
    with fused(model):
        for (size, weight), value in zip(weights, before):
            assert weight.stride() == (weight.shape[1] + size * 4, 1) and torch.equal(weight, value)
            assert not weight.requires_grad
    for (_, weight), value in zip(weights, before):
        assert weight.is_contiguous() and torch.equal(weight, value)


def test_rank_products_on_amx_tiles_match_torch_products_in_a_bf16_step(tiny_llama, kernel_path):
    """In bf16 with rank 16 and rows a multiple of 32 tokens, the LoRA nodes take their
    rank-wide products from the AMX kernels (where the CPU has them): the loss and every
    adapter gradient match the same step with torch's products, to bf16 rounding."""
    import hone.engine.kernels as kernels

    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="bfloat16")),
                         AdapterArgs(method="lora", lora_rank=16, target_modules=ALL_LINEARS))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    batch = pack_batch(items(), multiple=128)
    calls = []
    real = kernels.rank_product, kernels.token_sum_product

    def counted(function):
        return lambda *args, **kwargs: calls.append(function(*args, **kwargs)) or calls[-1]

    kernels.rank_product, kernels.token_sum_product = counted(real[0]), counted(real[1])
    try:
        got, grads, _ = loss_and_grads(model, batch, use_fused=True)
        tiles = sum(out is not None for out in calls)
        kernels.rank_product = kernels.token_sum_product = lambda *args, **kwargs: None
        expected, expected_grads, _ = loss_and_grads(model, batch, use_fused=True)
    finally:
        kernels.rank_product, kernels.token_sum_product = real
    assert tiles == (len(calls) if kernels.amx() else 0) and len(calls) >= 2 * 7 * 3  # 2 layers, 7 adapters
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=0)
    for name, grad in grads.items():
        want = expected_grads[name]
        assert (grad.float() - want.float()).abs().max() <= 1e-2 * want.float().abs().max(), name  # measured <= 3.2e-3


def test_lora_with_dropout_keeps_peft_forward(tiny_llama):
    model = apply_method(load_model(ModelArgs(path=str(tiny_llama), dtype="float32")),
                         AdapterArgs(method="lora", lora_rank=4, lora_dropout=0.1, target_modules=["q_proj"]))
    with fused(model) as patched:
        assert not any("forward" in vars(m) for m in model.modules() if hasattr(m, "lora_A"))
    assert patched == sum(1 for m in model.modules() if type(m).__name__.endswith("RMSNorm"))


def reference_attention(query, key, value, bounds):
    q, k, v = (t.detach().double().requires_grad_() for t in (query, key, value))
    return (q, k, v), _sdpa_per_example(q, k, v, bounds, None)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_packed_attention_matches_per_example_attention(dtype, tolerance, kernel_path):
    # equal padded lengths (grouped into one call), an exact multiple of 64, a single token,
    # and one example long enough for the compute-dtype backward
    lengths = [37, 50, 64, 1, 130, FP32_BACKWARD_MAX + 40, 9]
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    torch.manual_seed(0)
    heads, kv_heads, dim = 4, 2, 16
    query, key, value = (torch.randn(1, bounds[-1], h, dim).transpose(1, 2).to(dtype).requires_grad_()
                         for h in (heads, kv_heads, kv_heads))
    grad = torch.randn(1, bounds[-1], heads, dim, dtype=dtype)
    out = PackedAttention.apply(query, key, value, bounds, None)
    grads = torch.autograd.grad(out, (query, key, value), grad)
    leaves, ref = reference_attention(query, key, value, bounds)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    assert out.shape == (1, bounds[-1], heads, dim)

    def relative(a, b):
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    assert relative(out, ref) < tolerance
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape and got.dtype == dtype
        assert relative(got, want) < tolerance


def test_matmul_attention_backward_matches_the_exact_gradient(monkeypatch, kernel_path):
    import hone.engine.attention as attention_module

    monkeypatch.setattr(kernels, "attention_applies", lambda *a: False)  # the layout path, as without AMX tiles
    calls = []
    original = attention_module._matmul_backward
    monkeypatch.setattr(attention_module, "_matmul_backward", lambda *a: calls.append(a[1].shape) or original(*a))
    # four examples padded to 128 (one group above the score threshold), one of 320, and two
    # short ones whose group stays on the flash kernel; grouped-query heads; large scores
    lengths = [100, 128, 70, 300, 20, 127, 9]
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    torch.manual_seed(0)
    heads, kv_heads, dim = 4, 2, 64
    query = (3 * torch.randn(1, bounds[-1], heads, dim)).transpose(1, 2).to(torch.bfloat16).requires_grad_()
    key, value = (torch.randn(1, bounds[-1], kv_heads, dim).transpose(1, 2).to(torch.bfloat16).requires_grad_() for _ in range(2))
    grad = torch.randn(1, bounds[-1], heads, dim, dtype=torch.bfloat16)
    out = PackedAttention.apply(query, key, value, bounds, None)
    grads = torch.autograd.grad(out, (query, key, value), grad)
    assert sorted(shape[0] * shape[2] for shape in calls) == [320, 4 * 128]  # (examples, heads, length, dim)
    leaves, ref = reference_attention(query, key, value, bounds)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 2e-2


@pytest.mark.parametrize("dim", kernels.ATTENTION_DIMS)
def test_packed_attention_on_amx_tiles_matches_float64(dim, monkeypatch, kernel_path):
    """bf16 attention over a packed row through the tile kernels, forward and backward, against
    float64 per-example attention: lengths on both sides of the 32-token blocks and the
    16-token tiles, one token alone, grouped-query heads, large scores, and q/k/v read in place
    from one joined projection (token stride wider than the heads). Without AMX tiles the
    kernels must step aside."""
    lengths = [1, 31, 32, 33, 100, 300, 16, 5]
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    torch.manual_seed(0)
    heads, kv_heads = 4, 2
    joined = torch.randn(1, bounds[-1], heads + 2 * kv_heads, dim)
    joined[:, :, :heads] *= 3
    joined = joined.to(torch.bfloat16).requires_grad_()
    query, key, value = (t.transpose(1, 2) for t in joined.split([heads, kv_heads, kv_heads], dim=2))
    if kernel_path != "amx":
        assert not kernels.attention_applies(query, key, value)  # the kernels step aside
        pytest.skip(f"the attention tile kernels run in the amx tier only, not {kernel_path}")
    assert kernels.attention_applies(query, key, value)
    calls = []
    for name in ("attention_forward", "attention_backward"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, original=original, name=name: calls.append(name) or original(*a))
    grad = torch.randn(1, bounds[-1], heads, dim, dtype=torch.bfloat16)
    out = PackedAttention.apply(query, key, value, bounds, None)
    grads = torch.autograd.grad(out, (query, key, value), grad)
    assert calls == ["attention_forward", "attention_backward"]
    leaves, ref = reference_attention(query, key, value, bounds)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    assert out.shape == (1, bounds[-1], heads, dim) and out.dtype == torch.bfloat16
    # measured: output <= 2.3e-3, gradients <= 4.4e-3; with the scale off by 1% 7.4e-3 and >= 1.2e-2
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 5e-3
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape and got.dtype == torch.bfloat16
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 8e-3


@pytest.mark.parametrize("softcap", [None, 20.0])
def test_head_loss_matches_the_chunked_loss_with_a_trained_head(softcap):
    torch.manual_seed(0)
    rows = torch.randn(150, 32, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(32, 90, bias=False).double()
    targets = torch.randint(0, 90, (150,))
    targets[::5] = IGNORE
    want = _chunk_loss(rows, targets, head, softcap)
    want_grads = torch.autograd.grad(want * 0.37, (rows, head.weight))
    got = HeadLoss.apply(rows, targets, head.weight, softcap, 64, torch.float64)  # three chunks, the last partial
    got_grads = torch.autograd.grad(got * 0.37, (rows, head.weight))
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-6, atol=1e-4)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bf16_head_loss_matches_float64(kernel_path):
    """The bf16 path (one C pass for loss and gradient, or the torch operators) against float64
    on the same bf16 logits: the loss to fp32 precision, the gradients to bf16's."""
    torch.manual_seed(0)
    rows = torch.randn(150, 32).bfloat16().requires_grad_()
    weight = (torch.randn(90, 32) / 4).bfloat16()
    targets = torch.randint(0, 90, (150,))
    targets[::5] = IGNORE
    loss = HeadLoss.apply(rows, targets, weight, None, 64, torch.bfloat16)  # three chunks, the last partial
    (grad,) = torch.autograd.grad(loss * 0.37, rows)
    exact = rows.detach().double().requires_grad_()
    logits = (exact @ weight.double().t()).bfloat16().double()  # the bf16 product both paths start from
    want = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)
    (want_grad,) = torch.autograd.grad(want * 0.37, exact)
    assert loss.dtype == torch.float32 and abs(loss.item() - want.item()) <= 1e-5 * want.item()
    assert grad.dtype == torch.bfloat16 and grad[::5].abs().max() == 0
    assert ((grad.double() - want_grad).abs().max() / want_grad.abs().max()).item() < 2e-2


def test_head_loss_ignores_every_ignored_row():
    rows = torch.randn(8, 4, requires_grad=True)
    weight = torch.randn(6, 4)
    targets = torch.full((8,), IGNORE)
    targets[2] = 1
    loss = HeadLoss.apply(rows, targets, weight, None, 64, torch.float32)
    loss.backward()
    assert loss.item() == pytest.approx(F.cross_entropy(rows[2:3] @ weight.t(), targets[2:3], reduction="sum").item(), rel=1e-5)
    assert rows.grad[[0, 1, 3, 4, 5, 6, 7]].abs().max() == 0 and rows.grad[2].abs().max() > 0


# Llama's norm computes in fp32 whatever the input dtype, so float64 inputs agree to fp32 precision
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.bfloat16, 2e-2)])
def test_rms_norm_matches_llama_rms_norm_with_a_trained_weight(dtype, tolerance, kernel_path):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from hone.engine.fused import RMSNorm

    torch.manual_seed(0)
    module = LlamaRMSNorm(48, eps=1e-6).to(dtype)
    torch.nn.init.normal_(module.weight, 1.0, 0.3)
    x = (torch.randn(2, 37, 48) * 3).to(dtype).requires_grad_()
    grad = torch.randn(2, 37, 48).to(dtype)
    want = module(x)
    want_grads = torch.autograd.grad(want, (x, module.weight), grad)
    got = RMSNorm.apply(x, module.weight, module.variance_epsilon)
    got_grads = torch.autograd.grad(got, (x, module.weight), grad)
    for a, b in zip((got, *got_grads), (want, *want_grads)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert ((a.double() - b.double()).abs().max() / b.double().abs().max()).item() <= tolerance


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.bfloat16, 1e-2)])
def test_rotary_matches_transformers_apply_rotary_pos_emb(dtype, tolerance):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from hone.engine.fused import Rotary

    torch.manual_seed(0)
    # q and k as the attention module makes them: (B, T, heads * dim) viewed as (B, heads, T, dim)
    q = torch.randn(1, 29, 4 * 16).to(dtype).view(1, 29, 4, 16).transpose(1, 2).requires_grad_()
    k = torch.randn(1, 29, 2 * 16).to(dtype).view(1, 29, 2, 16).transpose(1, 2).requires_grad_()
    angles = torch.randn(1, 29, 16)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    grads = torch.randn(1, 4, 29, 16).to(dtype), torch.randn(1, 2, 29, 16).to(dtype)
    want = apply_rotary_pos_emb(q, k, cos, sin)
    want_grads = torch.autograd.grad(want, (q, k), grads)
    got = Rotary.apply(q, k, cos, sin)
    got_grads = torch.autograd.grad(got, (q, k), grads)
    for a, b in zip((*got, *got_grads), (*want, *want_grads)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert ((a.double() - b.double()).abs().max() / b.double().abs().max()).item() <= tolerance
