"""Fused CPU kernels (kernels.c) for the elementwise work of a bf16 training step.

torch runs an RMSNorm or a SwiGLU activation as a chain of operators, each a separate pass
over memory with fp32 intermediates; on a 2-core CPU the RMSNorms and activations of a
LoRA step took ~14% of its time that way. kernels.c does the same arithmetic (the same
bf16 roundings) in one pass per direction.

The C file is compiled with the system C compiler at first use (well under a second) into
a per-user cache, one build per kernel tier (`hone.engine.tiers`: amx, avx512, avx2, c),
keyed by the source and the flags, and loaded with ctypes: no build step at install, no
torch headers. Where no compiler is found, or in the torch tier (HONE_KERNELS=0),
`library()` is None and callers keep their torch path, which computes the same function.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from hone.engine import tiers

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-fno-math-errno", "-fPIC", "-shared"]  # plus the instruction set of the tier (hone.engine.tiers)
# OpenMP where the compiler has it: linked as libgomp.so.1, which is the runtime torch's Linux
# wheels already loaded, so the kernels share torch's threads. Without it, one thread.
THREADING = (["-fopenmp"], ["-fopenmp-simd"])
_p, _i64, _int, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "hone_rms_norm_forward": [_p, _p, _p, _p, _i64, _i64, _f32, _int],
    "hone_rms_norm_backward": [_p, _p, _p, _p, _p, _i64, _i64, _int],
    "hone_swiglu_forward": [_p, _p, _p, _i64, _int],
    "hone_swiglu_backward": [_p, _p, _p, _p, _p, _p, _i64, _int],
    "hone_attention_widen": [_p, _p, _p, _p, *[_i64] * 9, _f32, _f32, _int],
    "hone_exp_causal": [_p, _i64, _i64, _int],
    "hone_gather_rows": [_p, _i64, _p, _p, _i64, _i64, _int],
    "hone_cross_entropy": [_p, _p, _p, _p, _i64, _i64, _i64, _int],
    "hone_rotary": [_p, _p, _p, _p, *[_i64] * 9, _f32, _int],
    "hone_amx_ready": [],
    "hone_lora_nn": [_p, _i64, _p, _i64, _i64, _p, *[_i64] * 3, _int],
    "hone_lora_tn": [_p, _i64, _p, _i64, _p, *[_i64] * 3, _int, _int],
    "hone_attention_forward": [_p, _p, _p, *[_i64] * 6, _p, _p, _p, *[_i64] * 5, _f32, _int],
    "hone_attention_backward": [*[_p] * 5, *[_i64] * 10, *[_p] * 5, *[_i64] * 5, _f32, _int],
}
# these return an int: 1 ready or done, 0 not (no AMX, no memory)
RETURNING = {"hone_amx_ready", "hone_lora_nn", "hone_lora_tn", "hone_attention_forward", "hone_attention_backward"}


def _cache_dir() -> Path:
    root = os.environ.get("HONE_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "hone" / "kernels"


def _compile(source: Path, target: Path, tier_flags: tuple[str, ...]) -> None:
    """Compile `source` into the shared library `target`, atomically (a temporary file renamed)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc, gcc or clang) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        built = Path(folder) / target.name
        for i, threading in enumerate(THREADING):
            try:
                subprocess.run([compiler, *FLAGS, *tier_flags, *threading, str(source), "-o", str(built), "-lm"],
                               check=True, capture_output=True, text=True, timeout=120)
                break
            except subprocess.CalledProcessError:
                if i == len(THREADING) - 1:
                    raise
        os.replace(built, target)


def library() -> ctypes.CDLL | None:
    """The kernels built for the tier in force (`hone.engine.tiers.active`), or None where
    that tier is `torch` or they cannot be built (callers then keep their torch path)."""
    return load(tiers.active())


@functools.cache
def load(tier: str) -> ctypes.CDLL | None:
    """The kernels built for `tier`, compiled at first use into the per-user cache."""
    if tier == "torch" or platform.system() == "Windows":
        return None
    tier_flags = tiers.by_name(tier).flags
    flags = " ".join(FLAGS + list(tier_flags) + [flag for variant in THREADING for flag in variant])
    key = hashlib.sha256(SOURCE.read_bytes() + flags.encode()).hexdigest()[:16]
    target = _cache_dir() / f"kernels-{tier}-{key}.so"
    try:
        if not target.exists():
            _compile(SOURCE, target, tier_flags)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        log.info("fused CPU kernels (tier %s) unavailable, using torch's operators: %s", tier, str(detail).strip()[:300])
        return None
    for name, argtypes in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, _int if name in RETURNING else None
    lib.tier = tier
    lib.amx = bool(lib.hone_amx_ready())  # asks the OS for the tile state once; 0 unless built for AMX
    return lib


library.cache_clear = load.cache_clear  # type: ignore[attr-defined]  # tests rebuild after changing the cache folder


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels are built and every tensor is a contiguous bf16 CPU tensor."""
    return _bf16_cpu(tensors) and all(t.is_contiguous() for t in tensors) and library() is not None


def usable_rows(*tensors: torch.Tensor) -> bool:
    """As `usable`, for kernels that take strides: unit stride over the last dimension suffices."""
    return _bf16_cpu(tensors) and all(t.stride(-1) == 1 for t in tensors) and library() is not None


def _bf16_cpu(tensors) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., n) bf16, weight (n,) bf16 -> (weight * bf16(x * scale), scale (..., 1) fp32)."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    scale = torch.empty(*x.shape[:-1], 1, dtype=torch.float32)
    library().hone_rms_norm_forward(_ptr(x), _ptr(weight), _ptr(out), _ptr(scale), x.numel() // n, n, eps,
                                    torch.get_num_threads())
    return out, scale


def rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to x of rms_norm_forward; grad, x (..., n) bf16; scale from the forward."""
    n = x.shape[-1]
    grad_x = torch.empty_like(x)
    library().hone_rms_norm_backward(_ptr(grad), _ptr(x), _ptr(weight), _ptr(scale), _ptr(grad_x),
                                     x.numel() // n, n, torch.get_num_threads())
    return grad_x


def swiglu_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """bf16(bf16(silu(gate)) * up), as F.silu(gate).mul_(up) computes it."""
    act = torch.empty_like(gate)
    library().hone_swiglu_forward(_ptr(gate), _ptr(up), _ptr(act), gate.numel(), torch.get_num_threads())
    return act


def swiglu_backward(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Given the gradient of act = silu(gate) * up: (grad_gate, grad_up, act recomputed)."""
    grad_gate, grad_up, act = (torch.empty_like(gate) for _ in range(3))
    library().hone_swiglu_backward(_ptr(grad), _ptr(gate), _ptr(up), _ptr(grad_gate), _ptr(grad_up), _ptr(act),
                                   gate.numel(), torch.get_num_threads())
    return grad_gate, grad_up, act


def attention_widen(x: torch.Tensor, groups: int, width: int, multiplier: float = 1.0,
                    column: torch.Tensor | None = None, dot_with: torch.Tensor | None = None,
                    sign: float = 1.0) -> torch.Tensor:
    """x (B, H, L, D) bf16, unit stride over D -> (B * H / groups, groups * L, width) bf16:
    rows [bf16(x * multiplier), hi, lo, 0, ...] with hi + lo = sign * column[b, h, l] (fp32
    (B, H, L)), or sign * (x * dot_with).sum(-1) (dot_with laid out as x), else 1, 1."""
    batch, heads, length, dim = x.shape
    assert dot_with is None or (dot_with.shape == x.shape and dot_with.stride() == x.stride())
    out = x.new_empty(batch * heads // groups, groups * length, width)
    column = column.contiguous() if column is not None else None
    library().hone_attention_widen(_ptr(x), _ptr(dot_with), _ptr(column), _ptr(out), batch, heads, length, dim,
                                   *x.stride()[:3], groups, width, multiplier, sign, torch.get_num_threads())
    return out


def exp_causal_(scores: torch.Tensor) -> torch.Tensor:
    """scores (..., L, L) bf16, contiguous, in place: exp on and below the diagonal, 0 above."""
    length = scores.shape[-1]
    library().hone_exp_causal(_ptr(scores), scores.numel() // (length * length), length, torch.get_num_threads())
    return scores


def gather_rows(src: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """src (N, ...) 16-bit with each row contiguous; rows (M,) int64 -> (M, ...): src[rows[i]],
    or zeros where rows[i] < 0."""
    width = src[0].numel()
    assert src.element_size() == 2 and rows.dtype == torch.int64 and src[0].is_contiguous()
    out = src.new_empty(rows.shape[0], *src.shape[1:])
    library().hone_gather_rows(_ptr(src), src.stride(0), _ptr(rows), _ptr(out), rows.shape[0], width,
                               torch.get_num_threads())
    return out


def cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, ignore: int) -> torch.Tensor:
    """logits (n, V) bf16, contiguous, replaced in place by d(summed loss)/d(logits) =
    softmax - one_hot (zero rows where the target is `ignore`); returns the losses (n,) fp32."""
    rows, vocab = logits.shape
    threads = torch.get_num_threads()
    targets = targets.to(torch.int64).contiguous()
    losses = torch.empty(rows, dtype=torch.float32)
    scratch = torch.empty(threads, vocab, dtype=torch.float32)
    library().hone_cross_entropy(_ptr(logits), _ptr(targets), _ptr(losses), _ptr(scratch), rows, vocab, ignore, threads)
    return losses


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transposed: bool) -> torch.Tensor | None:
    """hone.engine.fused._rotate for x (B, H, L, D) bf16 and cos/sin (B or 1, 1, L, D) bf16 with
    unit stride over D; None where the layout does not fit (the caller keeps torch's path)."""
    if x.dim() != 4 or cos.dim() != 4:
        return None
    batch, heads, length, dim = x.shape
    if (dim % 2 or cos.shape != sin.shape or cos.stride() != sin.stride() or cos.shape[1] != 1
            or cos.shape[2:] != (length, dim) or cos.shape[0] not in (1, batch) or not usable_rows(x, cos, sin)):
        return None
    out = torch.empty_like(x)  # keeps x's memory layout
    if out.stride() != x.stride():
        return None
    cb = cos.stride(0) if cos.shape[0] == batch and batch > 1 else 0
    library().hone_rotary(_ptr(x), _ptr(cos), _ptr(sin), _ptr(out), batch, heads, length, dim, *x.stride()[:3],
                          cb, cos.stride(2), 1.0 if transposed else -1.0, torch.get_num_threads())
    return out


def amx() -> bool:
    """True when the rank-product kernels below run here: built for a CPU with AMX tiles
    (Sapphire Rapids and later Xeons), and the OS granted this process the tile state."""
    lib = library()
    return lib is not None and lib.amx


RANKS = (16, 32, 48)  # the rank widths the kernels take: one to three 16-column tiles


def rank_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """x (T, K) @ w (K, R) in fp32 for a rank-wide w (any strides), x bf16 with unit-stride
    rows; None where the AMX kernel does not apply (the caller keeps torch's product)."""
    rows, inner = x.shape
    if w.shape[1] not in RANKS or rows % 16 or inner % 32 or not usable_rows(x) or not _bf16_cpu((w,)) or not amx():
        return None
    out = torch.empty(rows, w.shape[1], dtype=torch.float32)
    done = library().hone_lora_nn(_ptr(x), x.stride(0), _ptr(w), *w.stride(), _ptr(out), rows, inner, w.shape[1],
                                  torch.get_num_threads())
    return out if done else None


def token_sum_product(x: torch.Tensor, y: torch.Tensor, transposed: bool = False) -> torch.Tensor | None:
    """x^T y, (M, R) fp32, or its transpose (R, M), for x (T, M) and a rank-wide y (T, R), both
    bf16 with unit-stride rows: a sum over the T tokens. None where the AMX kernel does not apply."""
    tokens, columns = x.shape
    if y.shape[1] not in RANKS or tokens % 32 or columns % 16 or not usable_rows(x, y) or not amx():
        return None
    rank = y.shape[1]
    out = torch.empty(*((rank, columns) if transposed else (columns, rank)), dtype=torch.float32)
    done = library().hone_lora_tn(_ptr(x), x.stride(0), _ptr(y), y.stride(0), _ptr(out), tokens, columns, rank,
                                  int(transposed), torch.get_num_threads())
    return out if done else None


ATTENTION_DIMS = (32, 64)  # head dims the attention kernels take: one or two 32-wide tiles per row


def attention_applies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """True when `attention_forward`/`attention_backward` run for these (1, H, T, D) tensors:
    bf16 on a CPU with AMX, head dim 32 or 64, unit stride over it, whole groups of query heads."""
    return (query.dim() == 4 and query.shape[0] == 1 and query.shape[-1] in ATTENTION_DIMS
            and key.shape[-1] == query.shape[-1] and query.shape[1] % key.shape[1] == 0
            and usable_rows(query, key, value) and amx())


def _token_head_strides(*tensors: torch.Tensor) -> list[int]:
    """(token stride, head stride) of each (1, H, T, D) tensor, flattened."""
    return [stride for t in tensors for stride in (t.stride(2), t.stride(1))]


def attention_forward(query, key, value, bounds: torch.Tensor,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Causal attention within each example [bounds[e], bounds[e + 1]) of one packed row: q
    (1, H, T, D), k and v (1, H_kv, T, D), any token and head strides -> (out (T, H, D) bf16,
    lse (H, T) fp32), or None when the kernel could not run (out of memory)."""
    _, heads, tokens, dim = query.shape
    out = query.new_empty(tokens, heads, dim)
    lse = torch.empty(heads, tokens, dtype=torch.float32)
    strides = _token_head_strides(query, key, value)
    done = library().hone_attention_forward(_ptr(query), _ptr(key), _ptr(value), *strides, _ptr(out), _ptr(lse),
                                            _ptr(bounds), bounds.numel() - 1, tokens, heads, key.shape[1], dim, scale,
                                            torch.get_num_threads())
    return (out, lse) if done else None


def attention_backward(grad, query, key, value, out, lse, bounds: torch.Tensor, scale: float):
    """(grad_q (T, H, D), grad_k, grad_v (T, H_kv, D)) for `attention_forward`'s out and lse;
    grad (T, H, D) at any token and head strides. None when out of memory."""
    _, heads, tokens, dim = query.shape
    grads = [query.new_empty(tokens, t.shape[1], dim) for t in (query, key, value)]
    strides = [*_token_head_strides(query, key, value), *out.stride()[:2], *grad.stride()[:2]]
    done = library().hone_attention_backward(_ptr(query), _ptr(key), _ptr(value), _ptr(out), _ptr(grad), *strides,
                                             *(_ptr(g) for g in grads), _ptr(lse), _ptr(bounds), bounds.numel() - 1,
                                             tokens, heads, key.shape[1], dim, scale, torch.get_num_threads())
    return grads if done else None
