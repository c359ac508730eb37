"""Replay against catastrophic forgetting: general data mixed into fine-tuning batches.

The seeds' first mitigation for forgetting is to keep showing the model some of what it
already knew. `replay: {data: PATH, fraction: 0.1}` makes 10% of each epoch's trained
examples come from PATH (plain text, or chat / prompt-completion data), picked by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.config import ReplayArgs
from hone.data.dataset import read_examples, require_clean
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
    for example in require_clean(read_examples(args.data), args.data):
        items += replay_items(tokenizer, example, max_length)
    if not items:
        raise HoneError(f"{args.data}: no replay example could be tokenized", "check replay.data")
    return Replay(items, args.fraction)


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
