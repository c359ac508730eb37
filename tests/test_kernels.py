"""The fused C kernels (hone.engine.kernels) against the torch operators they stand in for."""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from hone.engine import kernels, tiers

COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


COMPILED = [name for name in tiers.NAMES if name != "torch"]


@pytest.fixture(params=COMPILED)
def built(request):
    """The kernels of each compiled tier this CPU can execute, in force for the test; the
    tiers it cannot execute are skipped with the reason."""
    reason = tiers.why_not(request.param)
    if reason:
        pytest.skip(reason)
    if COMPILER is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: only the torch tier runs here")
    with tiers.forced(request.param):
        lib = kernels.library()
        assert lib is not None, f"a C compiler is on PATH but the {request.param} kernels did not build"
        assert lib.tier == request.param and lib.amx == (request.param == "amx")
        yield lib


def test_kernels_build_once_per_tier_into_the_cache_and_can_be_turned_off(tmp_path, monkeypatch):
    if COMPILER is None:
        pytest.skip("no C compiler on PATH")
    monkeypatch.setenv("HONE_CACHE", str(tmp_path))
    monkeypatch.delenv(tiers.ENV, raising=False)
    kernels.library.cache_clear()
    try:
        lib = kernels.library()
        built = list((tmp_path / "hone" / "kernels").glob("*.so"))
        assert lib is not None and len(built) == 1 and built[0].name.startswith(f"kernels-{tiers.best()}-")
        stamp = built[0].stat().st_mtime_ns
        kernels.library.cache_clear()
        assert kernels.library() is not None and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
        assert not [p for p in built[0].parent.iterdir() if p.is_dir()]  # no temporary folder left behind
        with tiers.forced("c"):
            assert kernels.library().tier == "c"
        assert len(list((tmp_path / "hone" / "kernels").glob("*.so"))) == 1 + (tiers.best() != "c")  # one build per tier
        monkeypatch.setenv("HONE_KERNELS", "0")
        assert kernels.library() is None and not kernels.usable(torch.zeros(2, dtype=torch.bfloat16))
        with tiers.forced("torch"):
            assert kernels.library() is None
    finally:
        kernels.library.cache_clear()


def test_a_tier_this_cpu_cannot_run_is_refused_by_name(monkeypatch):
    unavailable = [name for name in tiers.NAMES if tiers.why_not(name)]
    if not unavailable:
        pytest.skip("this CPU executes every tier")
    monkeypatch.setenv(tiers.ENV, unavailable[0])
    with pytest.raises(ValueError, match=unavailable[0]):
        tiers.active()


def test_tiers_are_listed_fastest_first_and_the_best_is_the_default(monkeypatch):
    monkeypatch.delenv(tiers.ENV, raising=False)
    monkeypatch.delenv("HONE_KERNELS", raising=False)
    runnable = tiers.executable()
    assert runnable[-2:] == ("c", "torch") and list(runnable) == [n for n in tiers.NAMES if n in runnable]
    assert tiers.active() == runnable[0] == tiers.best()
    with pytest.raises(ValueError, match="unknown kernel tier"):
        tiers.by_name("sse9")


def test_usable_only_for_contiguous_bf16_cpu_tensors(built):
    x = torch.zeros(4, 8, dtype=torch.bfloat16)
    assert kernels.usable(x)
    assert not kernels.usable(x.float())
    assert not kernels.usable(x.t())


def test_rms_norm_kernel_matches_llama_rms_norm(built):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    module = LlamaRMSNorm(83, eps=1e-6).to(torch.bfloat16)  # an odd width exercises the vector loops' tails
    torch.nn.init.normal_(module.weight, 1.0, 0.3)
    x = (torch.randn(3, 41, 83) * 4).to(torch.bfloat16)
    out, scale = kernels.rms_norm_forward(x, module.weight.detach(), 1e-6)
    assert torch.equal(out, module(x).detach())  # the same roundings, bit for bit
    want_scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(scale, want_scale, rtol=1e-6, atol=0)
    # backward against float64 autograd of the same function, as tight as the bf16 output allows
    grad = torch.randn(3, 41, 83).to(torch.bfloat16)
    exact = x.double().requires_grad_()
    w = module.weight.double()
    (w * exact * torch.rsqrt(exact.pow(2).mean(-1, keepdim=True) + 1e-6)).backward(grad.double())
    got = kernels.rms_norm_backward(grad, x, module.weight.detach(), scale)
    assert got.dtype == torch.bfloat16
    assert ((got.double() - exact.grad).abs().max() / exact.grad.abs().max()).item() < 1e-2


def test_swiglu_kernels_match_torch_bit_for_bit(built):
    torch.manual_seed(0)
    gate = (torch.randn(37, 53) * 4).to(torch.bfloat16)
    up, grad = (torch.randn(37, 53).to(torch.bfloat16) for _ in range(2))
    act = kernels.swiglu_forward(gate, up)
    assert torch.equal(act, F.silu(gate).mul_(up))
    grad_gate, grad_up, again = kernels.swiglu_backward(grad, gate, up)
    assert torch.equal(again, act)
    assert torch.equal(grad_up, grad * F.silu(gate))
    assert torch.equal(grad_gate, torch.ops.aten.silu_backward(grad * up, gate))
    # every bf16 value as the gate (inf, the exp clamps, subnormals, -0): still bit for bit
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).contiguous()
    ones = torch.ones_like(every)
    got, want = kernels.swiglu_forward(every, ones), F.silu(every)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~want.isnan()], want[~want.isnan()])
    got, want = kernels.swiglu_backward(ones * 0.75, every, ones)[0], torch.ops.aten.silu_backward(ones * 0.75, every)
    assert torch.equal(got[~want.isnan()], want[~want.isnan()])
    gate[1, 1] = float("nan")  # a NaN must reach the loss, where the divergence guard sees it
    assert kernels.swiglu_forward(gate, up)[1, 1].isnan()
    assert kernels.swiglu_backward(grad, gate, up)[0][1, 1].isnan()


def test_exp_causal_is_exp_below_the_diagonal_and_zero_above(built):
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    scores = every.view(4, 128, 128).clone()  # every bf16 value, a quarter of them in the masked half
    got = kernels.exp_causal_(scores.clone())
    want = torch.exp(scores).tril()
    shown = (scores.float() >= -86.5) | scores.isnan()  # below, exp is under 3e-38: the kernel gives 0, torch subnormals
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got[shown & ~want.isnan()], want[shown & ~want.isnan()])
    assert (got[~shown] == 0).all() and (got.triu(1) == 0).all()


def test_attention_widen_lays_out_and_carries_the_extra_column(built):
    torch.manual_seed(0)
    batch, heads, length, dim, groups, width = 2, 4, 5, 8, 2, 12
    # (B, H, L, D) views of a (B * L, H, D) buffer, as the packed layout hands them over
    x, other = ((torch.randn(batch * length, heads, dim) * 3).to(torch.bfloat16) for _ in range(2))
    x, other = (t.view(batch, length, heads, dim).transpose(1, 2) for t in (x, other))
    column = torch.randn(batch, heads, length) * 5
    rows = x.reshape(batch, heads // groups, groups, length, dim).reshape(-1, groups * length, dim)
    for kwargs, want in [(dict(column=column, sign=-1.0), -column),
                         (dict(dot_with=other, sign=-1.0), -(x.float() * other.float()).sum(-1))]:
        got = kernels.attention_widen(x, groups, width, **kwargs)
        assert got.shape == (batch * heads // groups, groups * length, width)
        assert torch.equal(got[..., :dim], rows)
        carried = got[..., dim].float() + got[..., dim + 1].float()  # hi + lo: 16 bits of mantissa
        want = want.reshape(batch, heads // groups, groups, length).reshape(carried.shape)
        torch.testing.assert_close(carried, want, rtol=2**-15, atol=1e-6)
        assert (got[..., dim + 2 :] == 0).all()
    got = kernels.attention_widen(x, 1, width, multiplier=0.3)  # keys: scaled, and columns of ones
    assert torch.equal(got[..., :dim], (x * 0.3).reshape(batch * heads, length, dim))
    assert (got[..., dim : dim + 2] == 1).all() and (got[..., dim + 2 :] == 0).all()


def test_gather_rows_takes_rows_by_index_and_zeros_where_told(built):
    src = torch.randn(7, 3, 5).to(torch.bfloat16)
    rows = torch.tensor([6, -1, 0, 0, 3, -1])
    got = kernels.gather_rows(src, rows)
    assert got.shape == (6, 3, 5)
    assert torch.equal(got[[0, 2, 3, 4]], src[[6, 0, 0, 3]]) and (got[[1, 5]] == 0).all()
    spaced = torch.randn(14, 3, 5).to(torch.bfloat16)[::2]  # each row contiguous, rows further apart
    assert torch.equal(kernels.gather_rows(spaced, rows.clamp(min=0)), spaced[rows.clamp(min=0)])


def test_cross_entropy_gives_loss_and_gradient_in_one_pass(built):
    torch.manual_seed(0)
    logits = (torch.randn(37, 1000) * 4).bfloat16()  # odd sizes exercise the vector loops' tails
    targets = torch.randint(0, 1000, (37,))
    targets[::4] = -100
    grad = logits.clone()
    losses = kernels.cross_entropy_(grad, targets, ignore=-100)
    exact = logits.double().requires_grad_()
    want = F.cross_entropy(exact, targets, reduction="none", ignore_index=-100)
    want.sum().backward()
    torch.testing.assert_close(losses.double(), want.detach(), rtol=1e-6, atol=1e-5)
    assert losses[::4].abs().max() == 0 and grad[::4].abs().max() == 0  # ignored rows: no loss, no gradient
    # one rounding to bf16 of softmax - one_hot (within exp's last bits: one bf16 step at most)
    assert ((grad.double() - exact.grad).abs() <= exact.grad.abs() * 2**-8 + 1e-30).float().mean() > 0.999
    assert ((grad.double() - exact.grad).abs() <= exact.grad.abs() * 2**-7 + 1e-30).all()
    poisoned = logits[1:2].clone()
    poisoned[0, 5] = float("nan")
    assert kernels.cross_entropy_(poisoned, targets[1:2], ignore=-100).isnan().all()  # NaN reaches the guard


@pytest.mark.parametrize("batch, cos_batch", [(1, 1), (2, 2), (2, 1)])
def test_rotary_matches_the_torch_rotation_bit_for_bit(built, monkeypatch, batch, cos_batch):
    import hone.engine.fused as fused

    torch.manual_seed(0)
    x = torch.randn(batch, 37, 3, 10).bfloat16().transpose(1, 2)  # (B, H, L, D) over (B, L, H, D) memory, as the model has it
    cos, sin = (torch.randn(cos_batch, 37, 10).bfloat16().unsqueeze(1) for _ in range(2))
    got = [kernels.rotary(x, cos, sin, transposed) for transposed in (False, True)]
    monkeypatch.setattr(kernels, "rotary", lambda *args: None)
    want = [fused._rotate(x, cos, sin, transposed) for transposed in (False, True)]
    for a, b in zip(got, want):
        assert a.stride() == x.stride() and torch.equal(a, b)
    assert not torch.equal(got[0], got[1])  # the transposed map is another map
    assert kernels.rotary(x.float(), cos.float(), sin.float(), False) is None  # fp32: the torch path
    assert kernels.rotary(x[0], cos[0], sin[0], False) is None  # not (B, H, L, D): the torch path


def test_rank_products_match_fp32_products_or_step_aside(built):
    """x @ w with a rank-wide w, and the token sums x^T y, on AMX tiles: the fp32 sums of
    the bf16 inputs, for each layout the LoRA nodes hand over (w as A^T, as B, as a column
    slice; y as a column slice). Where the kernels do not apply they return None and the
    callers keep torch's product."""
    if not built.amx:
        pytest.skip("the tile kernels are built only in the amx tier (test_rank_products_step_aside_without_amx)")
    torch.manual_seed(0)
    x = torch.randn(96, 160).to(torch.bfloat16)

    def close(got, want):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()

    for rank in kernels.RANKS:
        a = torch.randn(rank, 160).to(torch.bfloat16)  # an adapter's A: x A^T takes it transposed
        b = torch.randn(160, rank).to(torch.bfloat16)  # an adapter's B
        wide = torch.randn(160, rank + 16).to(torch.bfloat16)[:, 8 : 8 + rank]  # rows wider than the rank
        for w in (a.t(), b, wide):
            close(kernels.rank_product(x, w), x.double() @ w.double())
        y = torch.randn(96, 2 * rank).to(torch.bfloat16)[:, rank:]  # a column slice, as of `hidden`
        close(kernels.token_sum_product(x, y), x.double().t() @ y.double())
        close(kernels.token_sum_product(x, y, transposed=True), y.double().t() @ x.double())
    rows = torch.randn(96, 2 * 160).to(torch.bfloat16)[:, 160:]  # x with rows further apart than its width
    close(kernels.rank_product(rows, b), rows.double() @ b.double())
    close(kernels.token_sum_product(rows, y), rows.double().t() @ y.double())
    # shapes the tiles do not take
    assert kernels.rank_product(x[:40], b) is None  # rows not a multiple of 16
    assert kernels.rank_product(x[:, :150], b[:150]) is None  # inner size not a multiple of 32
    assert kernels.rank_product(x, torch.zeros(160, 8, dtype=torch.bfloat16)) is None  # rank 8
    assert kernels.token_sum_product(x[:80], y[:80]) is None  # tokens not a multiple of 32
    assert kernels.rank_product(x.float(), b.float()) is None  # fp32


def test_rank_products_step_aside_without_amx(built):
    """Outside the amx tier the tile kernels return None, and the callers keep torch's product."""
    if built.amx:
        pytest.skip("the amx tier runs them (test_rank_products_match_fp32_products_or_step_aside)")
    x = torch.randn(96, 160).to(torch.bfloat16)
    assert kernels.rank_product(x, torch.zeros(160, 16, dtype=torch.bfloat16)) is None
    assert kernels.token_sum_product(x, torch.zeros(96, 16, dtype=torch.bfloat16)) is None
    q = torch.zeros(1, 4, 64, 32, dtype=torch.bfloat16)
    assert not kernels.attention_applies(q, q, q)
