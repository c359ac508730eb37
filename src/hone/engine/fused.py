"""Leaner forward and backward for the layers a fine-tuning step spends its time in, for
the duration of training. Each replacement computes the same function as the module it
stands in for (tested against it); modules it cannot vouch for keep their own forward.

LoRA linear layers, as one autograd node each:

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: under autocast that is a
cast of each adapter weight, two extra passes over the `tokens x out_features` output (the
scaling and the addition) forward and one more backward, and five autograd nodes per
layer. Here the scaling is applied to the `tokens x rank` intermediate instead, the
adapter product is accumulated into the base output in place (`addmm_`), and backward is
written out by hand: the same three matrix products forward and five backward, nothing
else of the output's size, and only `x` and the rank-sized intermediate saved.

Only plain LoRA is rerouted: one active adapter, no dropout, no DoRA or other variant, an
unquantised `nn.Linear` base. Anything else keeps PEFT's own forward. The saved adapter is
PEFT's, unchanged: only how its forward and backward are computed differs.

Where one input feeds several of them, they share one node: an attention layer's q, k and
v projections (`SharedInputLora`), and a Llama-style SwiGLU MLP's gate, up and down with
the activation between them (`SwiGluLora`). Llama's rotary embedding runs as `Rotary`.
Inside those nodes the adapter's rank-sized products ride along in the base products:
the frozen weights are moved, while training, into joined matrices [W | B] (gate/up and
q/k/v forward, `JoinedProjections`) and [W; A] (the down projection's input gradient,
`StackedDown`), views of which stand in for the weights; on exit they are copied out again.
The products left with the rank on one side (x A^T, g B, and the adapter gradients summed
over the tokens) run on the CPU's AMX tiles where it has them (`kernels.rank_product`,
`kernels.token_sum_product`), else as torch products.

RMSNorm layers whose forward is transformers' Llama one (Llama, Qwen2, Mistral, Phi-3 and
the other copies of it) run as `RMSNorm`: the same fp32 arithmetic, but backward keeps the
input in the compute dtype plus one fp32 scale per token, not an fp32 copy of the input
(16 MB less per 1K tokens on a 512-wide, 8-layer model), and it runs 2x faster forward
and backward than the module (measured, bf16, 1024 x 512 on 2 CPU cores).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys

import torch
import torch.nn.functional as F
from torch import nn

from hone.engine import kernels
from hone.engine.heap import give_back_free_memory
from hone.engine.reroute import reroute

log = logging.getLogger(__name__)


def _rank_mm(x, w):
    """x @ w for a rank-wide w (tokens x in @ in x rank): in fp32 from the AMX kernel where it
    applies (`kernels.rank_product`), else torch's product in x's dtype."""
    out = kernels.rank_product(x, w)
    return x @ w if out is None else out


def _token_mm(x, y, transposed: bool = False):
    """x^T y, summed over the tokens (the rows of both), or its transpose y^T x: the adapter
    gradients. fp32 from the AMX kernel where it applies (`kernels.token_sum_product`)."""
    out = kernels.token_sum_product(x, y, transposed)
    if out is not None:
        return out
    return y.t() @ x if transposed else x.t() @ y


class LoraLinear(torch.autograd.Function):
    """y = x W^T + bias + scale * (x A^T) B^T, with W frozen and A, B trained."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale):
        dtype = weight.dtype
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        hidden = _rank_mm(flat, a.t()).mul_(scale).to(dtype)  # tokens x rank
        out = torch.addmm(bias.to(dtype), flat, weight.t()) if bias is not None else flat @ weight.t()
        out.addmm_(hidden, b.t())
        ctx.save_for_backward(flat, hidden, weight, a, b)
        ctx.scale, ctx.x_dtype, ctx.param_dtypes = scale, x.dtype, (lora_a.dtype, lora_b.dtype)
        ctx.bias_grad = bias is not None and bias.requires_grad
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        flat, hidden, weight, a, b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
        grad_b = _token_mm(g, hidden)  # out x rank (the scale is already inside `hidden`)
        grad_hidden = _rank_mm(g, b).mul_(ctx.scale).to(g.dtype)  # tokens x rank
        grad_a = _token_mm(flat, grad_hidden, transposed=True)  # rank x in
        grad_x = None
        if ctx.needs_input_grad[0]:  # not for the first layer's projections of frozen embeddings
            grad_x = g @ weight
            grad_x = grad_x.addmm_(grad_hidden, a).view(*grad.shape[:-1], grad_x.shape[-1]).to(ctx.x_dtype)
        grad_bias = g.sum(0) if ctx.bias_grad else None
        a_dtype, b_dtype = ctx.param_dtypes
        return (grad_x, None, grad_bias,
                grad_a.to(a_dtype), grad_b.to(b_dtype), None)


class SharedInputLora(torch.autograd.Function):
    """Several plain LoRA linears applied to the same input (an attention layer's q, k and v
    projections) as one node: one product with all their A matrices stacked, and one
    input-gradient product with them in backward, where separate nodes make one each."""

    @staticmethod
    def forward(ctx, x, scales, joined, *tensors):  # tensors: (weight, bias, lora_a, lora_b) per linear
        layers = [tensors[i : i + 4] for i in range(0, len(tensors), 4)]
        dtype = layers[0][0].dtype
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        ranks = [a.shape[0] for _, _, a, _ in layers]
        a_all = torch.cat([a.to(dtype) for _, _, a, _ in layers])
        hidden = _rank_mm(flat, a_all.t())  # tokens x (sum of ranks)
        for piece, scale in zip(hidden.split(ranks, dim=1), scales):
            piece.mul_(scale)
        hidden = hidden.to(dtype)
        pieces = hidden.split(ranks, dim=1)
        bs = [b.to(dtype) for _, _, _, b in layers]
        biases = [bias.to(dtype) if bias is not None else None for _, bias, _, _ in layers]
        if joined is not None:  # see `JoinedProjections`
            outs = joined.products(flat, hidden, bs, biases)
        else:
            outs = [(flat @ weight.t() if bias is None else torch.addmm(bias, flat, weight.t())).addmm_(piece, b.t())
                    for (weight, _, _, _), bias, piece, b in zip(layers, biases, pieces, bs)]
        outs = [out.view(*x.shape[:-1], out.shape[-1]) for out in outs]
        ctx.save_for_backward(flat, hidden, a_all, *bs, *(weight for weight, _, _, _ in layers))
        ctx.scales, ctx.x_dtype, ctx.n = scales, x.dtype, len(layers)
        ctx.ranks = ranks
        ctx.param_dtypes = [(a.dtype, b.dtype) for _, _, a, b in layers]
        ctx.bias_grad = [bias is not None and bias.requires_grad for _, bias, _, _ in layers]
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        flat, hidden, a_all, *rest = ctx.saved_tensors
        bs, weights = rest[: ctx.n], rest[ctx.n :]
        gs = [g.reshape(-1, g.shape[-1]).to(flat.dtype) for g in grads]
        pieces = hidden.split(ctx.ranks, dim=1)
        grad_hidden, param_grads = [], []
        for g, b, scale, piece, (_, b_dtype), bias_grad in zip(gs, bs, ctx.scales, pieces, ctx.param_dtypes, ctx.bias_grad):
            grad_b = _token_mm(g, piece).to(b_dtype)
            grad_hidden.append(_rank_mm(g, b).mul_(scale))
            param_grads.append([None, g.sum(0) if bias_grad else None, None, grad_b])
        grad_hidden = torch.cat(grad_hidden, dim=1).to(flat.dtype)
        grad_a_all = _token_mm(flat, grad_hidden, transposed=True)
        for grads_of, grad_a, (a_dtype, _) in zip(param_grads, grad_a_all.split(ctx.ranks), ctx.param_dtypes):
            grads_of[2] = grad_a.to(a_dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = gs[0] @ weights[0]
            for g, weight in zip(gs[1:], weights[1:]):
                grad_x.addmm_(g, weight)
            grad_x = grad_x.addmm_(grad_hidden, a_all).view(*grads[0].shape[:-1], grad_x.shape[-1]).to(ctx.x_dtype)
        return grad_x, None, None, *(t for grads_of in param_grads for t in grads_of)


class RMSNorm(torch.autograd.Function):
    """weight * (x / rms(x)), normalised in fp32 and rounded to x's dtype before the weight,
    exactly as transformers' Llama RMSNorm computes it."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        if kernels.usable(x, weight):  # one pass, the same roundings (tested)
            out, scale = kernels.rms_norm_forward(x, weight, eps)
            ctx.save_for_backward(x, weight, scale)
            return out
        # mean(x^2) as |x|^2 / n: the norm reads x once, in fp32 arithmetic, without an fp32
        # copy of x and its square (0.67 -> 0.48 ms for 1536 x 512 in bf16, 2 cores)
        source = x if x.dtype in (torch.bfloat16, torch.float16) else x.float()  # float64 rounds to fp32, as transformers does
        norm = torch.linalg.vector_norm(source, dim=-1, keepdim=True, dtype=torch.float32)
        scale = norm.pow_(2).div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, scale)
        return weight * RMSNorm.normed(x, scale)

    @staticmethod
    def normed(x, scale):
        """x * scale in fp32, rounded to x's dtype (before the weight, as Llama's norm rounds)."""
        return x.to(torch.float32, copy=True).mul_(scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, scale = ctx.saved_tensors
        grad = grad.contiguous()
        if kernels.usable(grad, x, weight):
            grad_x = kernels.rms_norm_backward(grad, x, weight, scale)
        else:
            grad_normed = grad * weight  # in the compute dtype, as autograd of `weight * normed` has it
            # d/dx of x * s with s = rsqrt(mean(x^2) + eps): s * g - x * s^3 * mean(g * x), in fp32
            # (6 passes over the input, where the textbook form makes 10)
            dot = (grad_normed * x).sum(-1, keepdim=True, dtype=torch.float32)
            grad_x = torch.mul(grad_normed, scale).addcmul_(x, scale.pow(3).mul_(dot).div_(x.shape[-1]), value=-1)
            grad_x = grad_x.to(x.dtype)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * RMSNorm.normed(x, scale)).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


class SwiGluLora(torch.autograd.Function):
    """down(silu(gate(x)) * up(x)) where gate, up and down are plain LoRA linears, as one
    node. Saves x, the gate and up outputs and the rank-sized intermediates; the product
    fed to `down` is recomputed in backward rather than kept (3 bytes x intermediate size
    per token less than the module path keeps)."""

    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down, a_gate, b_gate, a_up, b_up, a_down, b_down, scales, joined=None, stacked=None):
        dtype = w_gate.dtype
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        casts = [t.to(dtype) for t in (a_gate, b_gate, a_up, b_up, a_down, b_down)]
        ag, bg, au, bu, ad, bd = casts
        s_gate, s_up, s_down = scales
        rank = ag.shape[0]
        a_gate_up = torch.cat([ag, au])  # both adapters' A in one product
        hidden = _rank_mm(flat, a_gate_up.t())
        hidden[:, :rank].mul_(s_gate)
        hidden[:, rank:].mul_(s_up)
        hidden = hidden.to(dtype)
        if joined is not None:  # [x, hidden] @ [W | B]^T: the adapter inside the base product
            gate, up = joined.products(flat, hidden, (bg, bu), (None, None))
        else:
            gate = (flat @ w_gate.t()).addmm_(hidden[:, :rank], bg.t())
            up = (flat @ w_up.t()).addmm_(hidden[:, rank:], bu.t())
        act = kernels.swiglu_forward(gate, up) if kernels.usable(gate, up) else F.silu(gate).mul_(up)
        hidden_down = _rank_mm(act, ad.t()).mul_(s_down).to(dtype)
        out = (act @ w_down.t()).addmm_(hidden_down, bd.t())
        ctx.save_for_backward(flat, gate, up, hidden, hidden_down, w_gate, w_up, w_down, a_gate_up, *casts[1:])
        ctx.scales, ctx.rank, ctx.x_dtype, ctx.stacked = scales, rank, x.dtype, stacked
        ctx.param_dtypes = [t.dtype for t in (a_gate, b_gate, a_up, b_up, a_down, b_down)]
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        flat, gate, up, hidden, hidden_down, w_gate, w_up, w_down, a_gate_up, bg, au, bu, ad, bd = ctx.saved_tensors
        s_gate, s_up, s_down = ctx.scales
        rank = ctx.rank
        g = grad.reshape(-1, grad.shape[-1]).to(w_down.dtype)
        # down
        grad_bd = _token_mm(g, hidden_down)
        grad_hidden_down = _rank_mm(g, bd).mul_(s_down).to(g.dtype)
        if ctx.stacked is not None:  # [g, grad_hidden] @ [W; A] (`StackedDown`)
            grad_act = ctx.stacked.input_gradient(g, grad_hidden_down, ad)
        else:
            grad_act = (g @ w_down).addmm_(grad_hidden_down, ad)
        # silu(gate) * up, and the activation itself again for the down adapter's gradient
        if kernels.usable(grad_act, gate, up):
            grad_gate, grad_up, act = kernels.swiglu_backward(grad_act, gate, up)
        else:
            silu = F.silu(gate)
            act = silu * up
            grad_up = grad_act * silu
            del silu
            grad_gate = torch.ops.aten.silu_backward(grad_act.mul_(up), gate)
        del grad_act
        grad_ad = _token_mm(act, grad_hidden_down, transposed=True)
        del act
        # gate and up
        grad_bg = _token_mm(grad_gate, hidden[:, :rank])
        grad_bu = _token_mm(grad_up, hidden[:, rank:])
        grad_hidden = torch.cat([_rank_mm(grad_gate, bg).mul_(s_gate), _rank_mm(grad_up, bu).mul_(s_up)], dim=1)
        grad_hidden = grad_hidden.to(flat.dtype)
        grad_a_gate_up = _token_mm(flat, grad_hidden, transposed=True)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_gate @ w_gate).addmm_(grad_up, w_up).addmm_(grad_hidden, a_gate_up)
            grad_x = grad_x.view(*grad.shape[:-1], grad_x.shape[-1]).to(ctx.x_dtype)
        grads = (grad_a_gate_up[:rank], grad_bg, grad_a_gate_up[rank:], grad_bu, grad_ad, grad_bd)
        return (grad_x, None, None, None, *(t.to(d) for t, d in zip(grads, ctx.param_dtypes)), None, None, None)


class Rotary(torch.autograd.Function):
    """transformers' `apply_rotary_pos_emb(q, k, cos, sin)`, i.e. x * cos + rotate_half(x) * sin
    for q and k, as one node. Each half of the output is one product and one fused
    multiply-add, where the module path negates, concatenates, multiplies twice and adds,
    forward and again backward; backward is the transposed rotation."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, False), _rotate(k, cos, sin, False)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos, sin = ctx.saved_tensors
        return _rotate(grad_q, cos, sin, True), _rotate(grad_k, cos, sin, True), None, None


def _rotate(x, cos, sin, transposed: bool):
    """[x1 c1 - x2 s1, x2 c2 + x1 s2] (= x * cos + cat(-x2, x1) * sin); `transposed`: the
    transposed map, [x1 c1 + x2 s2, x2 c2 - x1 s1], which is the gradient."""
    done = kernels.rotary(x, cos, sin, transposed)
    if done is not None:
        return done
    half = x.shape[-1] // 2
    out = torch.empty_like(x)  # keeps x's memory layout
    (x1, x2), (c1, c2), (s1, s2), (o1, o2) = ((t[..., :half], t[..., half:]) for t in (x, cos, sin, out))
    torch.mul(x1, c1, out=o1).addcmul_(x2, s2 if transposed else s1, value=1 if transposed else -1)
    torch.mul(x2, c2, out=o2).addcmul_(x1, s1 if transposed else s2, value=-1 if transposed else 1)
    return out


@functools.cache
def _llama_source(path: str) -> str:
    """Source of `path` (e.g. "LlamaMLP.forward") in transformers' modeling_llama."""
    from transformers.models.llama import modeling_llama

    return inspect.getsource(_unwrapped(functools.reduce(getattr, path.split("."), modeling_llama)))


def _unwrapped(function):
    """The plain function behind a wrapper: `functools.wraps` ones, and the `kernels`
    library's function modules (transformers 5.25 turns `apply_rotary_pos_emb` into one,
    calling the original through the closure variable `func` of its forward)."""
    if isinstance(function, nn.Module):
        forward = type(function).forward
        cells = dict(zip(forward.__code__.co_freevars, forward.__closure__ or ()))
        function = cells["func"].cell_contents if "func" in cells else forward
    return inspect.unwrap(function)


def _is_llama_code(function, path: str) -> bool:
    """True when `function`'s source is, word for word, transformers' Llama `path`."""
    try:
        return function is not None and inspect.getsource(_unwrapped(function)) == _llama_source(path)
    except (OSError, TypeError, ImportError, ValueError):
        return False


def _rotary_modules(model) -> list:
    """The modeling modules (modeling_llama, modeling_qwen2, ...) of `model` whose
    `apply_rotary_pos_emb` and `rotate_half` are, word for word, Llama's."""
    modules = {sys.modules.get(type(m).__module__) for m in model.modules()}
    return [module for module in modules if all(_is_llama_code(getattr(module, name, None), name)
                                                for name in ("apply_rotary_pos_emb", "rotate_half"))]


def _rotary_for(original):
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if unsqueeze_dim != 1 or len({q.dtype, k.dtype, cos.dtype, sin.dtype}) != 1 or q.dim() != 4 \
                or not (q.shape[-1] == k.shape[-1] == cos.shape[-1] == sin.shape[-1]) or q.shape[-1] % 2:
            return original(q, k, cos, sin, unsqueeze_dim)
        return Rotary.apply(q, k, cos, sin)

    return apply_rotary_pos_emb


def _plain_lora(module) -> str | None:
    """The adapter name when `module` is a PEFT LoRA linear this file can run, else None."""
    base = getattr(module, "base_layer", None)
    adapters = getattr(module, "active_adapters", None)
    if type(base) is not nn.Linear or not adapters or len(adapters) != 1 or getattr(module, "merged", False) \
            or "forward" in module.__dict__:
        return None
    name = adapters[0]
    if getattr(module, "disable_adapters", False) or name not in getattr(module, "lora_A", {}) \
            or name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name):
        return None
    dropout = module.lora_dropout[name]
    if not isinstance(dropout, nn.Identity) and getattr(dropout, "p", 1.0) != 0.0:
        return None
    if base.weight.requires_grad or type(module.lora_A[name]) is not nn.Linear or module.lora_A[name].bias is not None \
            or module.lora_B[name].bias is not None:
        return None
    return name


def _forward_for(module, name: str):
    base, lora_a, lora_b = module.base_layer, module.lora_A[name], module.lora_B[name]
    scale = float(module.scaling[name])

    def forward(x, *args, **kwargs):
        # extra arguments (adapter_names, ...), or the adapter switched off (`disable_adapter()`,
        # e.g. a preference objective's reference pass): PEFT's path
        if args or kwargs or module.disable_adapters:
            return type(module).forward(module, x, *args, **kwargs)
        return LoraLinear.apply(x, base.weight, base.bias, lora_a.weight, lora_b.weight, scale)

    return forward


def _plain_rms_norm(module) -> bool:
    """True when `module` is an RMSNorm whose forward is, word for word, transformers' Llama one."""
    return type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "variance_epsilon", None), float) \
        and _is_llama_code(type(module).forward, "LlamaRMSNorm.forward")


def _rms_norm_forward(module):
    weight, eps = module.weight, module.variance_epsilon

    def forward(hidden_states):
        return RMSNorm.apply(hidden_states, weight, eps)

    return forward


MLP = ("gate_proj", "up_proj", "down_proj")


def _swiglu_lora_mlp(module) -> bool:
    """True when `module` computes down(silu(gate(x)) * up(x)) (its forward is, word for word,
    transformers' Llama MLP one) and its three projections are plain, bias-free LoRA linears
    of one rank."""
    projections = [getattr(module, name, None) for name in MLP]
    names = [_plain_lora(p) if p is not None else None for p in projections]
    if None in names or any(p.base_layer.bias is not None for p in projections):
        return False
    (gate, up, _), (gate_name, up_name, _) = projections, names
    return type(getattr(module, "act_fn", None)).__name__ in ("SiLU", "SiLUActivation") \
        and gate.lora_A[gate_name].weight.shape[0] == up.lora_A[up_name].weight.shape[0] \
        and _is_llama_code(type(module).forward, "LlamaMLP.forward")


class JoinedProjections:
    """Frozen weights of LoRA linears that read one input (an MLP's gate and up, an
    attention layer's q, k and v), moved for the duration of training into joined matrices
    [W_i | 0 .. B_i .. 0], one per linear, whose extra columns line up with the columns of
    `hidden`, all the adapters' scaled x A^T side by side. Each output is then one product
    of [x, hidden] with its joined matrix, where it was a base product plus a rank-sized
    `addmm_` over the whole output. Measured on 2 CPU cores, bf16, 512-1408 tokens of a
    512-wide model, rank 16: gate and up (to 1536) 1.19-1.27x faster, q, k and v (512, 256,
    256) 1.23-1.32x. The weights become views into the joined matrices (no second copy of
    them is kept) and are made contiguous again by `restore`. Only the B columns change
    while training; each forward writes them from the adapters."""

    def __init__(self, layers: list, ranks: list[int]):
        self.layers, self.in_features = layers, layers[0].weight.shape[1]
        self.matrices = [_move_weight(layer, extra_columns=sum(ranks)) for layer in layers]
        ends = [self.in_features + sum(ranks[: i + 1]) for i in range(len(ranks))]
        self.columns = [(end - rank, end) for end, rank in zip(ends, ranks)]

    @staticmethod
    def possible(layers: list) -> bool:
        weights = [layer.weight for layer in layers]
        return len({(w.shape[1], w.dtype, w.device) for w in weights}) == 1 and all(w.is_contiguous() for w in weights)

    def products(self, flat, hidden, bs, biases):
        """[flat, hidden] @ [W_i | B_i]^T (+ bias_i) for each linear; `bs`, `biases` in its dtype."""
        inputs = torch.cat([flat, hidden], dim=1)
        outs = []
        for joined, (start, end), b, bias in zip(self.matrices, self.columns, bs, biases):
            joined[:, start:end].copy_(b)
            outs.append(inputs @ joined.t() if bias is None else torch.addmm(bias, inputs, joined.t()))
        return outs

    def restore(self):
        for layer in self.layers:
            _copy_weight_out(layer)


class StackedDown:
    """A LoRA linear's frozen weight moved, for the duration of training, into the top rows
    of [W; A], so that the input gradient g W + grad_hidden A is one product of
    [g, grad_hidden] with it instead of a product plus a rank-sized `addmm_` over the whole
    `tokens x in_features` gradient. Measured on 2 CPU cores, bf16, an MLP's down
    projection (1536 -> 512), rank 16, 512-1408 tokens: 1.12-1.58x faster. (Forward, the
    same stacking to get x A^T out of the base product measured 0.82-1.11x: not used.)
    The weight is a view into the stack; `restore` copies it out again. The A rows are
    written from the adapter at each use."""

    def __init__(self, layer, rank: int):
        self.layer, self.out_features = layer, layer.weight.shape[0]
        self.matrix = _move_weight(layer, extra_rows=rank)

    def input_gradient(self, grad, grad_hidden, a):
        self.matrix[self.out_features :].copy_(a)
        return torch.cat([grad, grad_hidden], dim=1) @ self.matrix

    def restore(self):
        _copy_weight_out(self.layer)


def _move_weight(layer, extra_rows: int = 0, extra_columns: int = 0) -> torch.Tensor:
    """A zero matrix with `layer`'s weight in its top-left corner, which the weight then
    becomes a view of (no second copy of it is kept)."""
    weight = layer.weight
    rows, columns = weight.shape
    matrix = weight.new_zeros(rows + extra_rows, columns + extra_columns)
    matrix[:rows, :columns] = weight.detach()
    weight.data = matrix[:rows, :columns]
    return matrix


def _copy_weight_out(layer) -> None:
    """Undoes `_move_weight`: the weight gets contiguous memory of its own again. The matrix
    stays with its owner while a graph built inside still needs it."""
    layer.weight.data = layer.weight.data.clone(memory_format=torch.contiguous_format)


def _joined(layers: list, ranks: list[int], undo: list) -> JoinedProjections | None:
    if not JoinedProjections.possible(layers):
        return None
    joined = JoinedProjections(layers, ranks)
    undo.append(joined.restore)
    return joined


def _stacked(layer, rank: int, undo: list) -> StackedDown | None:
    if not layer.weight.is_contiguous():
        return None
    stacked = StackedDown(layer, rank)
    undo.append(stacked.restore)
    return stacked


def _swiglu_forward(module, undo: list):
    gate, up, down = (getattr(module, name) for name in MLP)
    adapters = [(p.lora_A[n], p.lora_B[n], float(p.scaling[n])) for p, n in ((p, _plain_lora(p)) for p in (gate, up, down))]
    (ag, bg, sg), (au, bu, su), (ad, bd, sd) = adapters
    joined = _joined([gate.base_layer, up.base_layer], [ag.weight.shape[0], au.weight.shape[0]], undo)
    stacked = _stacked(down.base_layer, ad.weight.shape[0], undo)

    def forward(x):
        if gate.disable_adapters:  # switched off (`disable_adapter()`): the module's own forward, through PEFT's
            return type(module).forward(module, x)
        return SwiGluLora.apply(x, gate.base_layer.weight, up.base_layer.weight, down.base_layer.weight,
                                ag.weight, bg.weight, au.weight, bu.weight, ad.weight, bd.weight, (sg, su, sd), joined,
                                stacked)

    return forward


QKV = ("q_proj", "k_proj", "v_proj")


def _shared_input_group(module) -> list | None:
    """An attention module's q, k and v projections when all three are plain LoRA linears
    reading the same width (transformers' attention modules call them on one tensor)."""
    projections = [getattr(module, name, None) for name in QKV]
    if any(p is None or _plain_lora(p) is None for p in projections) \
            or len({p.base_layer.in_features for p in projections}) != 1:
        return None
    return projections


def _group_forwards(projections, undo: list):
    """Forwards for the projections of one shared-input group: the first computes every
    output in one `SharedInputLora` node and keeps the others for the calls that follow on
    the same input tensor; a call on any other input computes its own output alone."""
    names = [_plain_lora(p) for p in projections]
    tensors = [t for p, n in zip(projections, names)
               for t in (p.base_layer.weight, p.base_layer.bias, p.lora_A[n].weight, p.lora_B[n].weight)]
    scales = tuple(float(p.scaling[n]) for p, n in zip(projections, names))
    joined = _joined([p.base_layer for p in projections], [p.lora_A[n].weight.shape[0] for p, n in zip(projections, names)], undo)
    alone = [_forward_for(p, n) for p, n in zip(projections, names)]
    kept: dict = {}

    def first(x, *args, **kwargs):
        if args or kwargs or projections[0].disable_adapters:
            return alone[0](x, *args, **kwargs)
        outs = SharedInputLora.apply(x, scales, joined, *tensors)
        kept.clear()
        kept.update(x=x, outs=dict(enumerate(outs[1:], start=1)))
        return outs[0]

    def later(i):
        def forward(x, *args, **kwargs):
            if not args and not kwargs and kept.get("x") is x and i in kept["outs"]:
                out = kept["outs"].pop(i)
                if not kept["outs"]:  # all handed out: let go of the input
                    kept.clear()
                return out
            return alone[i](x, *args, **kwargs)

        return forward

    return [first] + [later(i) for i in range(1, len(projections))]


@contextlib.contextmanager
def fused(model):
    """Until exit: Llama-style SwiGLU MLPs of plain LoRA linears run as `SwiGluLora`, an
    attention layer's plain LoRA q/k/v as one `SharedInputLora`, other plain LoRA linears as
    `LoraLinear`, Llama-style RMSNorms as `RMSNorm`, and Llama's rotary function as
    `Rotary`. Yields how many modules were rerouted."""
    undo: list = []  # what puts the model back, in the order it was done
    try:
        patched = _install(model, undo)
        give_back_free_memory()  # the blocks of the weights moved into joined matrices
        yield patched
    finally:
        for action in reversed(undo):
            action()
        undo.clear()  # lets go of the joined matrices (unless a graph built inside still holds them)
        give_back_free_memory()


def _install(model, undo: list) -> int:
    patched, inside = 0, set()
    for module in model.modules():
        if id(module) in inside or "forward" in module.__dict__:
            continue  # inside a fused MLP, or someone else's forward already: step aside
        try:
            patched += _install_one(module, inside, undo)
        except Exception as exc:  # noqa: BLE001 - a module we misread keeps its own forward
            log.info("fused layers: %s keeps its own forward (%s)", type(module).__name__, exc)
    for module in _rotary_modules(model):
        original = module.apply_rotary_pos_emb
        module.apply_rotary_pos_emb = _rotary_for(original)
        undo.append(functools.partial(setattr, module, "apply_rotary_pos_emb", original))
    return patched


def _install_one(module, inside: set, undo: list) -> int:
    """Reroute `module` (or its projections) where it is one this file runs; the count rerouted."""
    if _swiglu_lora_mlp(module):
        reroute(module, _swiglu_forward(module, undo), undo)
        inside.update(id(m) for m in module.modules())
        return 1
    patched = 0
    group = _shared_input_group(module)
    if group is not None:
        for projection, forward in zip(group, _group_forwards(group, undo)):
            reroute(projection, forward, undo)
            inside.add(id(projection))
            patched += 1
    name = _plain_lora(module)
    if name is not None:
        reroute(module, _forward_for(module, name), undo)
        return patched + 1
    if _plain_rms_norm(module):
        reroute(module, _rms_norm_forward(module), undo)
        return patched + 1
    return patched
