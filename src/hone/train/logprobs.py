"""Per-sequence log-probabilities of the labelled tokens, from the chunked head.

Preference losses need, for each sequence of a batch (packed or padded), the summed
log-probability of its answer tokens. As in `hone.train.loss`, the `tokens x vocab` logits
are never held for the whole batch: labelled positions are gathered first and projected a
chunk at a time. With gradients and a frozen head (LoRA), `HeadLogProbs` computes each
chunk's `d log p / d hidden` in the forward pass and drops the logits at once; backward
only scales those rows by the incoming per-token gradient, nothing is recomputed. A head
that trains (full fine-tuning) or a soft-capped one recomputes its chunk in backward instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hone.data.render import IGNORE
from hone.engine import kernels, only_rows, packing_kwargs
from hone.train.loss import CHUNK_ELEMENTS, ROWS_MULTIPLE, split_model


def decoder_hidden(model, batch: dict[str, torch.Tensor], keep: torch.Tensor | None) -> torch.Tensor:
    """The decoder's last hidden states (B, T, C) for a packed or padded batch; `keep` (B, T-1)
    names the positions the caller reads, so the engine's last MLP may skip the others."""
    decoder, _, _ = split_model(model)
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if "seq_lengths" in batch:
        kwargs.update(packing_kwargs(batch["seq_lengths"], batch.get("borrow")))
    if keep is None:
        return decoder(**kwargs, use_cache=False).last_hidden_state
    with only_rows(decoder, keep):
        return decoder(**kwargs, use_cache=False).last_hidden_state


def sequence_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) index of the sequence each position belongs to: packed rows number their
    segments in order (`seq_lengths`), padded batches number their rows."""
    labels = batch["labels"]
    if "seq_lengths" in batch:
        lengths = batch["seq_lengths"]
        return torch.repeat_interleave(torch.arange(len(lengths), device=labels.device), lengths).unsqueeze(0)
    return torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)


def sequence_logprobs(model, batch: dict[str, torch.Tensor], n_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each sequence's labelled tokens (S,) fp32, labelled tokens per
    sequence (S,)) for the first `n_sequences` sequences of `batch`."""
    _, head, softcap = split_model(model)
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
    predictors, firsts, first_owners = borrowed_firsts(batch)
    reads = keep.clone() if len(predictors) else keep
    reads[0, predictors] = True
    hidden = decoder_hidden(model, batch, reads)  # B, T, C
    rows, wanted = hidden[:, :-1][keep], targets[keep]  # N, C and N
    owner = sequence_ids(batch)[:, 1:][keep]  # N: the sequence of each scored token
    if len(predictors):  # answers whose first token is predicted by the end of a borrowed prefix
        rows, wanted, owner = torch.cat([rows, hidden[0, predictors]]), torch.cat([wanted, firsts]), torch.cat([owner, first_owners])
    count = int(wanted.numel())
    filler = -count % ROWS_MULTIPLE  # a few matmul shapes, not one per batch (see hone.train.loss)
    if filler:
        rows = F.pad(rows, (0, 0, 0, filler))
        wanted = F.pad(wanted, (0, filler), value=IGNORE)
    step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0] // ROWS_MULTIPLE * ROWS_MULTIPLE)
    token = token_logprobs(rows, wanted, head, softcap, step)[:count]  # N
    logps = torch.zeros(n_sequences, dtype=torch.float32, device=token.device).index_add(0, owner, token)
    tokens = torch.zeros(n_sequences, dtype=torch.float32, device=token.device).index_add(0, owner, torch.ones_like(token))
    return logps, tokens


def borrowed_firsts(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the segments of a packed row that borrow a prefix (`hone.data.collate.pack_pairs`)
    and whose first token is labelled: (the row predicting it: the prefix's last, the token,
    the segment), each (M,). Empty without borrowing."""
    empty = torch.zeros(0, dtype=torch.long, device=batch["labels"].device)
    if "borrow" not in batch:
        return empty, empty, empty
    starts, lengths = batch["borrow"].unbind(1)
    firsts = batch["first_labels"]
    picked = (lengths > 0) & (firsts != IGNORE)
    return (starts + lengths - 1)[picked], firsts[picked], picked.nonzero().squeeze(1)


def token_logprobs(rows: torch.Tensor, wanted: torch.Tensor, head, softcap, step: int) -> torch.Tensor:
    """log p(wanted | row) for each row (N,) fp32, 0 where `wanted` is IGNORE."""
    plain = type(head) is torch.nn.Linear and head.bias is None and not softcap
    if torch.is_grad_enabled() and plain and not head.weight.requires_grad:
        dtype = torch.get_autocast_dtype(rows.device.type) if torch.is_autocast_enabled(rows.device.type) else head.weight.dtype
        return HeadLogProbs.apply(rows, wanted, head.weight, step, dtype)
    pieces = []
    for start in range(0, rows.shape[0], step):
        chunk, goal = rows[start : start + step], wanted[start : start + step]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logprobs, chunk, goal, head, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(chunk, goal, head, softcap))
    return torch.cat(pieces)


def _chunk_logprobs(rows, goal, head, softcap):
    logits = head(rows).float()  # n, V
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    picked = logits.gather(1, goal.clamp(min=0).unsqueeze(1)).squeeze(1)
    return (picked - torch.logsumexp(logits, dim=-1)) * (goal != IGNORE)


class HeadLogProbs(torch.autograd.Function):
    """log p(targets) of `rows @ weight.T` per row, chunk by chunk, with `d log p / d rows`
    computed in the forward pass: -(softmax - one_hot) @ weight, zero on ignored targets.
    The head's weight must not train (its gradient would need each row's incoming gradient)."""

    @staticmethod
    def forward(ctx, rows, targets, weight, step, dtype):
        w = weight.to(dtype)
        grad_rows = torch.empty(rows.shape, dtype=dtype, device=rows.device)
        out = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
        for start in range(0, rows.shape[0], step):
            chunk, goal = rows[start : start + step].to(dtype), targets[start : start + step]
            logits = chunk @ w.t()
            if kernels.usable(logits):  # one pass: losses and softmax - one_hot, in place of the logits
                out[start : start + step] = -kernels.cross_entropy_(logits, goal, IGNORE)
                grad = logits
            else:
                grad, logp = _softmax_minus_one_hot(logits.float(), goal)
                out[start : start + step] = logp
                grad = grad.to(dtype)
            grad_rows[start : start + step] = grad @ w
        ctx.save_for_backward(grad_rows)
        ctx.rows_dtype = rows.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_rows,) = ctx.saved_tensors
        return (-(grad_rows * grad_out.unsqueeze(1).to(grad_rows.dtype))).to(ctx.rows_dtype), None, None, None, None


def _softmax_minus_one_hot(logits: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax - one_hot (n, V), log p(goal) (n,)) of fp32 logits, zero rows on ignored targets;
    the logits' memory is reused."""
    scored = goal != IGNORE
    picked = goal.clamp(min=0).unsqueeze(1)
    logsumexp = torch.logsumexp(logits, dim=-1, keepdim=True)
    logp = (logits.gather(1, picked) - logsumexp).squeeze(1) * scored
    grad = logits.sub_(logsumexp).exp_()
    grad.scatter_add_(1, picked, torch.full_like(picked, -1, dtype=grad.dtype))
    grad.mul_(scored.unsqueeze(1))
    return grad, logp
