"""Causal LM loss over labelled positions only, in chunks.

The `tokens x vocab` logits are never materialised for the whole batch: hidden states of
labelled positions are gathered first, then projected and scored a chunk at a time, each
chunk recomputed in the backward pass instead of kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hone.data.render import IGNORE
from hone.train.attention import packing_kwargs

CHUNK_ELEMENTS = 4 * 2**20  # logits per chunk: 16 MB in fp32, whatever the vocabulary
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
    hidden = decoder(**kwargs, use_cache=False).last_hidden_state  # B, T, C
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
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
    total = hidden.new_zeros((), dtype=torch.float32)
    step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0] // ROWS_MULTIPLE * ROWS_MULTIPLE)
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
