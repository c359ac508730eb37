"""Replay against catastrophic forgetting: general data mixed into fine-tuning batches.

The seeds' first mitigation for forgetting is to keep showing the model some of what it
already knew. `replay: {data: PATH, fraction: 0.1}` makes 10% of each epoch's trained
examples come from PATH (plain text, or chat / prompt-completion data), picked by seed.
A `.txt` (or `.txt.gz`) holds documents separated by `<|endoftext|>` when it contains one
(hone's own corpus), else one document per non-empty line (a file of sentences).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hone.config import ReplayArgs
from hone.data.dataset import read_examples, require_clean
from hone.data.example import Example
from hone.data.formats import to_example
from hone.data.io import BadLine, base_suffix, documents_or_lines, iter_records, open_text
from hone.data.render import RenderError, Tokenized, fit_length, render_example
from hone.errors import HoneError


@dataclass
class Replay:
    items: list[Tokenized]
    fraction: float  # share of each epoch's examples drawn from `items`


def load_replay(args: ReplayArgs, tokenizer, max_length: int) -> Replay | None:
    """Tokenized replay data, or None when `args.data` is unset."""
    if not args.data:
        return None
    if not 0 < args.fraction < 1:
        raise HoneError(f"config key replay.fraction: {args.fraction} is not between 0 and 1", "set replay.fraction to e.g. 0.1")
    items: list[Tokenized] = []
    for example in read_replay_examples(args.data):
        items += replay_items(tokenizer, example, max_length)
    if not items:
        raise HoneError(f"{args.data}: no replay example could be tokenized", "check replay.data")
    return Replay(items, args.fraction)


def read_replay_examples(path: str) -> list[Example]:
    """The examples of replay file `path` (see `iter_replay_records`); unusable records are refused."""
    if base_suffix(Path(path)) != ".txt":
        return require_clean(read_examples(path), path)
    return [to_example(record, line=line, source=path) for line, record in iter_replay_records(path)]


def iter_replay_records(path: str) -> Iterator[tuple[int, dict | BadLine]]:
    """`(line, record)` as `iter_records` yields them, but a .txt is general text: documents
    separated by `<|endoftext|>` when it has that separator, else one per non-empty line
    (`hone pretrain` keeps a separator-free file whole instead: there line breaks are prose)."""
    if base_suffix(Path(path)) != ".txt":
        yield from iter_records(path)
        return
    with open_text(Path(path)) as handle:
        text = handle.read()
    for line, document in documents_or_lines(text):
        yield line, {"text": document}


def replay_items(tokenizer, example, max_length: int) -> list[Tokenized]:
    """Text becomes EOS-terminated blocks of at most `max_length` tokens, every token trained;
    chat and completion examples render as in training, truncated to `max_length`."""
    if example.kind == "text":
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return [Tokenized(ids[i : i + max_length], ids[i : i + max_length]) for i in range(0, len(ids), max_length) if len(ids[i : i + max_length]) > 1]
    try:
        item = fit_length(render_example(tokenizer, example), max_length, "truncate")
    except RenderError:
        return []
    return [item] if item is not None else []
