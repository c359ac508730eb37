"""Attention over packed rows: each example attends only to itself.

A packed row holds several examples back to back (see `hone.data.collate.pack_batch`).
The model receives `cu_seq_lens_q/k` (cumulative example lengths, the flash-attention
varlen convention) and `position_ids` restarting per example. On CUDA with flash-attn
installed, transformers' own `flash_attention_2` consumes them directly. On a CPU with AMX
tiles (bf16, head dim 32 or 64), `hone_packed` runs the C kernels of
`hone.engine.kernels.attention_forward/backward`: each example and key/value head on tiles,
read in place from the row, only over the keys each query block sees (2.1x the forward and
2.7x the backward below, measured on the benchmark's rows). Elsewhere on CPU it
calls the CPU flash kernel once per group of examples
of equal padded length, forward and backward, as one autograd node per layer: measured on
a 2-core CPU it is faster than one SDPA call over the whole row with a block-diagonal mask
(which pays for the full T x T score matrix) and, with the backward choice below, about
twice as fast as calling SDPA once per example. Other devices without flash-attn run
SDPA once per example.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from hone.engine import kernels

NAME = "hone_packed"
BORROW = "hone_borrow"  # the attention keyword that carries borrowed prefixes
# Each example is padded at its end to a multiple of this before SDPA. The CPU flash kernel
# JIT-builds and keeps oneDNN kernels for every sequence length it sees (measured: resident
# memory grew ~40 MB per step, without bound, with one shape per example length); a few
# shapes keep it flat. Exact: under the causal mask no real query sees the trailing filler.
LENGTH_MULTIPLE = 64


# The CPU flash kernel's bf16 backward has a large fixed cost per call: measured on a 2-core
# CPU, 0.79 ms at 64 tokens against 0.21 ms for the same backward in fp32, 1.55 vs 0.61 ms at
# 128; from ~800 tokens on, bf16 wins. Examples up to this padded length run their backward
# in fp32 (also closer to the exact gradient), longer ones in the compute dtype.
FP32_BACKWARD_MAX = 512

# bf16 groups with at least this many scores per head (examples x length^2) and at most
# MATMUL_BACKWARD_MAX tokens per example run their backward as batched bf16 matrix products
# (`_matmul_backward`) instead of the flash kernel's. Measured on 2 cores (flash time /
# matmul time, interleaved calls, with `hone.engine.heap.kept_heap`): 2 x 128 tokens 1.10,
# 4 x 128 1.28, 1 x 256 1.26, 1 x 512 1.65, 1 x 832 1.06; below the line, 1 x 128 0.88
# and 3 x 64 0.71.
MATMUL_BACKWARD_MIN_SCORES = 2 * 128 * 128
MATMUL_BACKWARD_MAX = 1024

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


class _Layout:
    """Where each example of a packed row goes in a padded, length-grouped buffer.

    Every example is padded at its end to a multiple of LENGTH_MULTIPLE tokens; examples of
    the same padded length sit next to each other, so each group is one batched kernel
    call of shape (examples, heads, length, dim) instead of one call per example.

    `borrow` (start, length) per example puts a copy of rows [start, start + length) of the
    row in front of the example in the buffer: the example attends to them as its prefix
    (a rejected answer to its pair's prompt, which the chosen sequence computed). The copies'
    outputs are not read; their key/value gradients add into the rows they were copied from."""

    def __init__(self, bounds: list[int], device: torch.device, borrow: tuple | None = None):
        lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
        borrow = borrow or ((0, 0),) * len(lengths)
        padded = [n + m + (-(n + m) % LENGTH_MULTIPLE) for n, (_, m) in zip(lengths, borrow)]
        order = sorted(range(len(lengths)), key=lambda i: padded[i])
        self.groups: list[tuple[int, int, int]] = []  # (buffer offset, examples, padded length)
        destination, source, owners = [0] * bounds[-1], [], []
        self.copies: list[tuple[int, int, int]] = []  # (buffer offset, first row, rows) of each borrowed prefix
        offset = 0
        for i in order:
            if self.groups and self.groups[-1][2] == padded[i]:
                first, count, size = self.groups[-1]
                self.groups[-1] = (first, count + 1, size)
            else:
                self.groups.append((offset, 1, padded[i]))
            start, prefix = borrow[i]
            rows = list(range(bounds[i], bounds[i + 1]))
            filler = [-1] * (padded[i] - prefix - lengths[i])
            source += list(range(start, start + prefix)) + rows + filler
            owners += [-1] * prefix + rows + filler
            destination[bounds[i] : bounds[i + 1]] = range(offset + prefix, offset + prefix + lengths[i])
            if prefix:
                self.copies.append((offset, start, prefix))
            offset += padded[i]
        self.size = offset
        self.index = torch.tensor(destination, device=device)  # row -> the buffer row holding its output
        self.source = torch.tensor(source, device=device)  # buffer row -> the row it copies; -1: filler
        self.owners = torch.tensor(owners, device=device) if self.copies else self.source  # -1 at the copies too
        filler = [b for b, r in enumerate(source) if r < 0]
        self.filler = torch.tensor(filler, device=device) if filler else None

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def of(bounds: tuple[int, ...], device: torch.device, borrow: tuple | None = None) -> "_Layout":
        """The layout for `bounds`, built once for the consecutive calls (the layers of one row) that share them."""
        return _Layout(list(bounds), device, borrow)

    def scatter(self, rows: torch.Tensor, owners_only: bool = False) -> torch.Tensor:
        """(T, H, D) in row order -> (size, H, D) buffer, zero in the filler (and, with
        `owners_only`, in the borrowed copies). The filler must be zero, not just unseen: the
        backward kernel multiplies filler queries' zero output gradient with their outputs,
        and 0 * NaN from uninitialised memory would spread."""
        if kernels.usable_rows(rows) and rows[0].is_contiguous():  # one pass, filler zeroed on the way
            return kernels.gather_rows(rows, self.owners if owners_only else self.source)
        buffer = rows.new_empty(self.size, *rows.shape[1:])
        if self.filler is not None:
            buffer.index_fill_(0, self.filler, 0)
        buffer.index_copy_(0, self.index, rows)
        for offset, first, n in self.copies:  # contiguous slices: far cheaper than an index op over the buffer
            buffer[offset : offset + n] = 0 if owners_only else rows[first : first + n]
        return buffer

    def gather(self, buffer: torch.Tensor) -> torch.Tensor:
        if kernels.usable_rows(buffer) and buffer[0].is_contiguous():
            return kernels.gather_rows(buffer, self.index)
        return buffer.index_select(0, self.index)

    def gather_gradient(self, buffer: torch.Tensor) -> torch.Tensor:
        """(size, H, D) gradients -> (T, H, D): each row's, plus those of its borrowed copies."""
        rows = self.gather(buffer)
        for offset, first, n in self.copies:
            rows[first : first + n] += buffer[offset : offset + n]
        return rows

    def group(self, buffer: torch.Tensor, g: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Group g of a (size, H, D) buffer as (examples, H, length, D)."""
        first, count, size = self.groups[g]
        piece = buffer[first : first + count * size].view(count, size, *buffer.shape[1:]).transpose(1, 2)
        return piece.to(dtype) if dtype is not None and dtype != piece.dtype else piece


class PackedAttention(torch.autograd.Function):
    """Causal attention within each example of a packed row, with the CPU flash kernel, as
    one autograd node per layer. Tensors are taken as (1, H, T, D) and the output is laid
    out (1, T, H, D), as the model wants it."""

    @staticmethod
    def forward(ctx, query, key, value, bounds, scale, borrow=None):
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        if not borrow and bounds[0] == 0 and bounds[-1] == query.shape[2] and kernels.attention_applies(query, key, value):
            ends = torch.tensor(bounds, dtype=torch.int64)
            done = kernels.attention_forward(query, key, value, ends, scale)
            if done is not None:
                out, lse = done
                ctx.save_for_backward(query, key, value, out, lse, ends)
                ctx.tiles, ctx.scale = True, scale
                return out.unsqueeze(0)
        ctx.tiles = False
        layout = _Layout.of(tuple(bounds), query.device, borrow)
        q, k, v = (layout.scatter(t[0].transpose(0, 1)) for t in (query, key, value))
        out = q.new_empty(q.shape)
        lses = []
        for g, (first, count, size) in enumerate(layout.groups):
            o, lse = _flash_forward(layout.group(q, g), layout.group(k, g), layout.group(v, g), 0.0, True, scale=scale)
            out[first : first + count * size].view(count, size, *out.shape[1:]).copy_(o.transpose(1, 2))
            lses.append(lse)
        ctx.save_for_backward(q, k, v, out, *lses)
        ctx.layout, ctx.scale = layout, scale
        return layout.gather(out).unsqueeze(0)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.tiles:
            query, key, value, out, lse, ends = ctx.saved_tensors
            grads = kernels.attention_backward(grad_out[0], query, key, value, out, lse, ends, ctx.scale)
            if grads is None:
                raise MemoryError("no memory for the attention backward's scratch")
            return *(t.transpose(0, 1).unsqueeze(0) for t in grads), None, None, None
        q, k, v, out, *lses = ctx.saved_tensors
        layout = ctx.layout
        # Filler rows get zero output gradient, so they add nothing to the key/value gradients.
        grad = layout.scatter(grad_out[0], owners_only=True)
        grads = [torch.empty_like(t) for t in (q, k, v)]
        for g, lse in enumerate(lses):
            _, count, size = layout.groups[g]
            if q.dtype == torch.bfloat16 and size <= MATMUL_BACKWARD_MAX \
                    and count * size * size >= MATMUL_BACKWARD_MIN_SCORES:
                pieces = [layout.group(t, g) for t in (grad, q, k, v, out)]
                for buffer, piece in zip(grads, _matmul_backward(*pieces, lse, ctx.scale)):
                    layout.group(buffer, g).copy_(piece)
                continue
            dtype = torch.float32 if size <= FP32_BACKWARD_MAX else None
            pieces = [layout.group(t, g, dtype) for t in (grad, q, k, v, out)]
            for buffer, piece in zip(grads, _flash_backward(*pieces, lse, 0.0, True, scale=ctx.scale)):
                layout.group(buffer, g).copy_(piece)
        return *(layout.gather_gradient(t).transpose(0, 1).unsqueeze(0) for t in grads), None, None, None


_WIDTH = 16  # extra columns that carry the log-sum-exp and delta terms into the products


def _widened(x, first, second):
    """(..., R, D) -> (..., R, D + _WIDTH): [x, first, second, 0, ...]; `first`/`second` are (..., R)."""
    filler = x.new_zeros(*x.shape[:-1], _WIDTH - 2)
    return torch.cat([x, first.unsqueeze(-1).to(x.dtype), second.unsqueeze(-1).to(x.dtype), filler], dim=-1)


def _split(x):
    """fp32 x as bf16 hi + lo (16 mantissa bits between them)."""
    hi = x.to(torch.bfloat16)
    return hi, (x - hi.float()).to(torch.bfloat16)


def _matmul_backward(grad, q, k, v, out, lse, scale):
    """Gradients (q, k, v) of causal attention from batched bf16 matrix products. q, grad,
    out: (B, H, L, D); k, v: (B, H_kv, L, D); lse: (B, H, L) fp32 from the forward.
    The probabilities are recomputed as exp(scale q.k - lse) from one product, with -lse
    carried as two bf16 columns (hi + lo) so the only rounding is that of the product's
    bf16 output; P (dP - delta) likewise comes out of one product with -delta carried in."""
    batch, heads, length, dim = q.shape
    scale = dim**-0.5 if scale is None else scale
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    n = batch * kv_heads
    if kernels.usable_rows(grad, q, k, v, out) and grad.stride() == out.stride():
        # the same operands in one pass each, straight from the strided layout buffers
        width = dim + _WIDTH
        q_wide = kernels.attention_widen(q, groups, width, column=lse, sign=-1.0)
        k_wide = kernels.attention_widen(k, 1, width, multiplier=scale)
        v_wide = kernels.attention_widen(v, 1, width)
        grad_wide = kernels.attention_widen(grad, groups, width, dot_with=out, sign=-1.0)  # -rowsum(dO * O)
    else:
        shape = (batch, kv_heads, groups, length)
        ones = q.new_ones(batch, kv_heads, length)
        lse_hi, lse_lo = _split(lse.neg().view(shape))
        q_wide = _widened(q.view(*shape, dim), lse_hi, lse_lo).view(n, groups * length, -1)
        k_wide = _widened(k * scale, ones, ones).view(n, length, -1)
        delta = (grad.float() * out.float()).sum(-1).neg_().view(shape)  # -rowsum(dO * O)
        delta_hi, delta_lo = _split(delta)
        grad_wide = _widened(grad.view(*shape, dim), delta_hi, delta_lo).view(n, groups * length, -1)
        v_wide = _widened(v, ones, ones).view(n, length, -1)
    probs = torch.bmm(q_wide, k_wide.transpose(1, 2))  # n, G*L, L
    if kernels.usable(probs):
        kernels.exp_causal_(probs.view(n * groups, length, length))
    else:
        probs.exp_().view(n * groups, length, length).tril_()
    grad_v = torch.bmm(probs.transpose(1, 2), grad_wide[..., :dim])
    grad_scores = torch.bmm(grad_wide, v_wide.transpose(1, 2)).mul_(probs)  # P (dP - delta)
    grad_q = torch.bmm(grad_scores, k_wide[..., :dim])
    grad_k = torch.bmm(grad_scores.transpose(1, 2), q_wide[..., :dim]).mul_(scale)
    return (grad_q.view(batch, heads, length, dim), grad_k.view(batch, kv_heads, length, dim),
            grad_v.view(batch, kv_heads, length, dim))


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (B=1, H, T, D), key/value (1, H_kv, T, D) -> output (1, T, H, D), no weights.
    A batch that is not packed (no `cu_seq_lens_q`: an objective's padded batch) gets plain
    causal attention per row: right padding is never seen by the real tokens before it."""
    if "cu_seq_lens_q" not in kwargs:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    bounds = kwargs["cu_seq_lens_q"].tolist()
    borrow = kwargs.get(BORROW)  # prefixes shared by a pair's answers, see _Layout
    if query.device.type != "cpu":  # the loop of SDPA calls, for any device without flash-attn
        return _sdpa_per_example(query, key, value, bounds, scaling, borrow), None
    return PackedAttention.apply(query, key, value, bounds, scaling, borrow), None


def _sdpa_per_example(query, key, value, bounds, scaling, borrow=None):
    groups = query.shape[1] // key.shape[1]
    borrow = borrow or ((0, 0),) * (len(bounds) - 1)
    outs = []
    for (start, end), (first, prefix) in zip(zip(bounds[:-1], bounds[1:]), borrow):
        n = prefix + end - start
        filler = -n % LENGTH_MULTIPLE
        q, k, v = (F.pad(torch.cat([t[:, :, first : first + prefix], t[:, :, start:end]], dim=2), (0, 0, 0, filler))
                   for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=groups > 1)
        outs.append(out[:, :, prefix:n])
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # 1, H, T, D
    return out.transpose(1, 2).contiguous()


def _no_mask(*args, **kwargs):
    return None  # isolation comes from the per-example loop, not from a mask


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _no_mask)


def flash_attention_available(device: torch.device) -> bool:
    """flash-attention (varlen) runs only on CUDA, and only when the package is installed."""
    if device.type != "cuda":
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def packed_implementation(device: torch.device) -> str:
    """flash-attention varlen on CUDA when installed, else hone's per-example SDPA."""
    return "flash_attention_2" if flash_attention_available(device) else NAME


@contextlib.contextmanager
def attention_for_packing(model, device: torch.device):
    """Switch the model to a packing-aware attention for the duration, then restore it,
    so generation and evaluation code after training see the model as it was loaded."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    configs = [m.config for m in base.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    previous = [c._attn_implementation for c in configs]
    wanted = packed_implementation(device)
    if wanted == NAME:
        register()
    for config in configs:
        config._attn_implementation = wanted
    try:
        yield
    finally:
        for config, name in zip(configs, previous):
            config._attn_implementation = name


def packing_kwargs(seq_lengths: torch.Tensor, borrow: torch.Tensor | None = None) -> dict:
    """Model keyword arguments describing the examples of a packed row; `borrow` (examples, 2)
    gives each example's borrowed prefix (start row, length; see _Layout), which only hone's
    own attention reads (`shares_prefixes`)."""
    cu = F.pad(seq_lengths.cumsum(0), (1, 0)).to(torch.int32)
    longest = int(seq_lengths.max())
    kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
    if borrow is not None and bool(borrow[:, 1].any()):
        kwargs[BORROW] = tuple(map(tuple, borrow.tolist()))
    return kwargs


def shares_prefixes(device: torch.device) -> bool:
    """Whether packed rows on `device` may borrow prefixes: hone's attention reads them;
    flash-attention's varlen layout cannot express them."""
    return packed_implementation(device) == NAME
