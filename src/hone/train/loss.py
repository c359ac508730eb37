"""Causal LM loss over labelled positions only, in chunks.

The `tokens x vocab` logits are never materialised for the whole batch: hidden states of
labelled positions are gathered first, then projected and scored a chunk at a time. When
gradients are wanted, each chunk's gradient is computed right away, in the same pass as its
loss (`HeadLoss`): the logits are dropped as soon as they are scored, and backward only
scales the stored `tokens x hidden` gradient; nothing is recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hone.data.render import IGNORE
from hone.engine import kernels, only_rows, packing_kwargs

CHUNK_ELEMENTS = 4 * 2**20  # logits per chunk: 16 MB in fp32 (8 MB on the bf16 kernel path), whatever the vocabulary
ROWS_MULTIPLE = 64  # scored rows are padded to a multiple of this (a few matmul shapes, not one per batch)


def split_model(model):
    """(decoder, head, softcap) of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


def token_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labelled positions, and their count.

    `batch` is padded (`attention_mask`) or packed (`position_ids` + `seq_lengths`, see
    `hone.data.collate.pack_batch`; the model must then use a packing-aware attention)."""
    decoder, head, softcap = split_model(model)
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if "seq_lengths" in batch:
        kwargs.update(packing_kwargs(batch["seq_lengths"]))
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
    with only_rows(decoder, keep):  # the last MLP skips unread rows where the engine is installed
        hidden = decoder(**kwargs, use_cache=False).last_hidden_state  # B, T, C
    rows = hidden[:, :-1][keep]  # N, C
    wanted = targets[keep]  # N
    count = int(wanted.numel())
    # N varies every batch and each new matmul shape makes oneDNN build (and cache) new
    # kernels: measured ~+60 MB of resident memory per new shape. Unscored filler rows
    # round N up to a few shapes; they add exactly 0 to the summed loss.
    filler = -count % ROWS_MULTIPLE
    if filler:
        rows = F.pad(rows, (0, 0, 0, filler))
        wanted = F.pad(wanted, (0, filler), value=IGNORE)
    step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0] // ROWS_MULTIPLE * ROWS_MULTIPLE)
    if torch.is_grad_enabled() and type(head) is torch.nn.Linear and head.bias is None:
        dtype = torch.get_autocast_dtype(rows.device.type) if torch.is_autocast_enabled(rows.device.type) else head.weight.dtype
        return HeadLoss.apply(rows, wanted, head.weight, softcap, step, dtype), count
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], step):
        chunk, goal = rows[start : start + step], wanted[start : start + step]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, chunk, goal, head, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(chunk, goal, head, softcap)
    return total, count


def _chunk_loss(rows, goal, head, softcap):
    logits = head(rows).float()  # n, V
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, goal, reduction="sum", ignore_index=IGNORE)


class HeadLoss(torch.autograd.Function):
    """Summed cross-entropy of `rows @ weight.T` against `targets`, chunk by chunk, with the
    gradients for `rows` (and `weight`, when it trains) computed in the forward pass:
    d loss / d logits = softmax - one_hot, zero on ignored targets."""

    @staticmethod
    def forward(ctx, rows, targets, weight, softcap, step, dtype):
        w = weight.to(dtype)
        grad_rows = torch.empty(rows.shape, dtype=dtype, device=rows.device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        for start in range(0, rows.shape[0], step):
            chunk, goal = rows[start : start + step].to(dtype), targets[start : start + step]
            logits = chunk @ w.t()
            if not softcap and kernels.usable(logits):  # one pass: loss and gradient, in place of the logits
                total += kernels.cross_entropy_(logits, goal, IGNORE).sum()
                grad = logits
            else:
                grad, loss = _entropy_gradient(logits.float(), goal, softcap)
                total += loss
                grad = grad.to(dtype)
            grad_rows[start : start + step] = grad @ w
            if grad_weight is not None:
                grad_weight += (grad.t() @ chunk).float()
        ctx.save_for_backward(grad_rows, grad_weight)
        ctx.rows_dtype, ctx.weight_dtype = rows.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_rows, grad_weight = ctx.saved_tensors
        grad_rows = (grad_rows * grad_total).to(ctx.rows_dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_rows, None, grad_weight, None, None, None


def _entropy_gradient(logits: torch.Tensor, goal: torch.Tensor, softcap) -> tuple[torch.Tensor, torch.Tensor]:
    """(d summed loss / d logits, summed loss) of fp32 logits (n, V) against `goal` (n,):
    softmax - one_hot, zero rows on ignored targets; the logits' memory is reused."""
    squash = None
    if softcap:
        squash = torch.tanh(logits / softcap)
        logits = squash * softcap
    scored = goal != IGNORE
    picked = goal.clamp(min=0).unsqueeze(1)
    logsumexp = torch.logsumexp(logits, dim=-1, keepdim=True)
    loss = ((logsumexp - logits.gather(1, picked)).squeeze(1) * scored).sum()
    grad = logits.sub_(logsumexp).exp_()  # softmax, in place of the logits
    grad.scatter_add_(1, picked, torch.full_like(picked, -1, dtype=grad.dtype))
    grad.mul_(scored.unsqueeze(1))
    if squash is not None:
        grad.mul_(1 - squash * squash)
    return grad, loss
