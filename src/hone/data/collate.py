"""Group tokenized examples into batches and pad them. The order is a pure function of
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted run would."""

from __future__ import annotations

import torch

from hone.data.render import IGNORE, Tokenized

MEGA_BATCHES = 32  # sort by length inside windows of this many batches: little padding, still shuffled


def epoch_batches(items: list[Tokenized], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices of `items` per batch for one epoch, length-grouped to cut padding."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(items), generator=generator).tolist()
    window = batch_size * MEGA_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(items[i].input_ids), reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def pad_batch(items: list[Tokenized], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest item. Labels of padding are IGNORE; attention_mask marks real tokens."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[row, cols] = torch.tensor(item.input_ids)
        labels[row, cols] = torch.tensor(item.labels)
        mask[row, cols] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
