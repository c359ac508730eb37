"""Choose each epoch's examples and batches, and lay a batch out as tensors.

Everything here is a pure function of (items, seed, epoch), so a resumed run sees exactly
the batches an uninterrupted run would. Two layouts:

- packed (the default): a micro-batch's examples are concatenated into one row with no
  padding; `position_ids` restart at 0 for each example and `seq_lengths` marks where
  each starts, so attention never crosses from one example into another;
- padded: one row per example, padded to the longest, with length-grouped batches so the
  padding stays small.
"""

from __future__ import annotations

import torch

from hone.data.render import IGNORE, Tokenized

MEGA_BATCHES = 32  # sort by length inside windows of this many batches: little padding, still shuffled


def epoch_order(n_train: int, n_replay: int, fraction: float, seed: int, epoch: int) -> list[int]:
    """Indices into `train + replay` for one epoch: every training example once, plus enough
    replay examples (cycled deterministically) that they are `fraction` of the epoch."""
    order = list(range(n_train))
    if n_replay and fraction > 0:
        wanted = round(n_train * fraction / (1 - fraction))
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + 1)
        cycles = -(-wanted // n_replay)
        picks = torch.cat([torch.randperm(n_replay, generator=generator) for _ in range(cycles)])[:wanted]
        order += (picks + n_train).tolist()
    return order


def epoch_batches(items: list[Tokenized], batch_size: int, seed: int, epoch: int, order: list[int] | None = None,
                  group_by_length: bool = True) -> list[list[int]]:
    """Indices of `items` per batch for one epoch, shuffled by (seed, epoch). With
    `group_by_length`, examples of similar length share a batch (cuts padding)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    pool = list(range(len(items))) if order is None else order
    shuffled = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]
    if not group_by_length:
        return [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]
    window = batch_size * MEGA_BATCHES
    batches = []
    for start in range(0, len(shuffled), window):
        chunk = sorted(shuffled[start : start + window], key=lambda i: len(items[i].input_ids), reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    reorder = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in reorder]


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


def split_rows(items: list[Tokenized], max_tokens: int) -> list[list[Tokenized]]:
    """Consecutive runs of `items` holding at most `max_tokens` tokens each (an item longer
    than that is a run of its own); `max_tokens` 0 keeps them all in one. Activation memory
    grows with the tokens of a row, so this is what caps peak memory when packing."""
    if max_tokens <= 0:
        return [items]
    rows, row, used = [], [], 0
    for item in items:
        if row and used + len(item.input_ids) > max_tokens:
            rows.append(row)
            row, used = [], 0
        row.append(item)
        used += len(item.input_ids)
    return rows + [row] if row else rows


# Packed rows are rounded up to a multiple of at least this many tokens (see row_length).
# Measured on the benchmark: 128 instead of 64 halves the distinct row shapes, and with them
# the kernels the matmul library caches (~20 MB each), which paid for rows of 1536.
PACK_MULTIPLE = 128


def row_length(tokens: int, minimum: int = 64) -> int:
    """`tokens` rounded up to the length a packed row gets: a multiple of an eighth of the
    power of two at or below it, and of `minimum` (64 -> 64, 700 -> 704, 1100 -> 1152, 2100 -> 2304).
    Rows then take at most ~8 lengths per doubling: on CPU the matmul library keeps compiled
    kernels for every shape it meets (~20 MB per new row length on a 512-wide model), and
    the filler stays under `minimum`, or under 1/8 of a row past 8x `minimum`."""
    if tokens <= minimum:
        return minimum
    step = max(minimum, (1 << (tokens.bit_length() - 1)) // 8)
    return -(-tokens // step) * step


def pack_batch(items: list[Tokenized], pad_id: int = 0, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Concatenate `items` into one row (1, T) with no padding between examples.

    Each example's first label is set to IGNORE: nothing before it in its own sequence
    predicts it, and it must not be scored from the previous example's last token.
    `seq_lengths` (n_examples,) lets attention isolate examples; `position_ids` restart.
    With `multiple` > 1 a filler segment (no labels) rounds T up to `row_length(T, multiple)`:
    a few distinct shapes instead of one per batch, which on CPU saves the matmul library's
    per-shape kernels (see `row_length`)."""
    return packed_row([(item.input_ids, item.labels, 0) for item in items], pad_id, multiple)


def packed_row(segments: list[tuple[list[int], list[int], int]], pad_id: int, multiple: int) -> dict[str, torch.Tensor]:
    """`pack_batch`'s row from (ids, labels, first position) segments; each segment's first label
    becomes IGNORE, a filler segment rounds the row up when `multiple` > 1."""
    ids, labels, positions, lengths = [], [], [], []
    for segment_ids, segment_labels, first in segments:
        ids += segment_ids
        labels += [IGNORE] + list(segment_labels[1:])
        positions += range(first, first + len(segment_ids))
        lengths.append(len(segment_ids))
    filler = row_length(len(ids), multiple) - len(ids) if multiple > 1 else 0
    if filler:
        ids += [pad_id] * filler
        labels += [IGNORE] * filler
        positions += range(filler)
        lengths.append(filler)
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        "seq_lengths": torch.tensor(lengths),
    }


# A pair shares its prompt only from this many tokens on: below it, the borrowed copy's
# padding to the attention kernel's block costs more than the rows it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix(first: Tokenized, second: Tokenized) -> int:
    """How many leading tokens `second` can take from `first`: their common prefix, up to the
    first labelled token of either (labelled tokens are scored in each sequence's own row),
    leaving `second` at least one token; 0 when under MIN_SHARED_PREFIX."""
    limit = min(len(first.input_ids), len(second.input_ids) - 1)
    for labels in (first.labels, second.labels):
        limit = min(limit, next((t for t, label in enumerate(labels) if label != IGNORE), len(labels)))
    n = 0
    while n < limit and first.input_ids[n] == second.input_ids[n]:
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def pack_pairs(firsts: list[Tokenized], seconds: list[Tokenized], pad_id: int = 0, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pairs of sequences with a common prompt in one packed row, the prompt computed once:
    `firsts` whole, as `pack_batch` lays them out, then each of `seconds` without the prefix
    it shares with its first (`shared_prefix`). `borrow` (segments, 2) names each segment's
    prefix (start row, length; (0, 0) for none): attention puts those rows in front of the
    segment (`hone.engine.attention._Layout`) and positions continue after them.
    `first_labels` (segments,) holds each borrowing segment's first label, predicted from
    the prefix's last row (`hone.train.logprobs.borrowed_firsts`), IGNORE elsewhere."""
    shared = [shared_prefix(first, second) for first, second in zip(firsts, seconds)]
    starts = [0]
    for first in firsts:
        starts.append(starts[-1] + len(first.input_ids))
    segments = [(first.input_ids, first.labels, 0) for first in firsts]
    segments += [(second.input_ids[n:], second.labels[n:], n) for second, n in zip(seconds, shared)]
    batch = packed_row(segments, pad_id, multiple)
    filler = [(0, 0)] * (len(batch["seq_lengths"]) - len(segments))
    batch["borrow"] = torch.tensor([(0, 0)] * len(firsts) + [(start, n) for start, n in zip(starts, shared)] + filler)
    batch["first_labels"] = torch.tensor([IGNORE] * len(firsts) + [second.labels[n] if n else IGNORE for second, n in zip(seconds, shared)]
                                         + [IGNORE] * len(filler))
    return batch
