"""Recognise a record's format and normalise it to one internal `Example`.

Every format people bring is read: OpenAI chat (`messages`), TRL conversational and
standard prompt/completion, Alpaca, ShareGPT, preference pairs (TRL and OpenAI), KTO's
unpaired rows (prompt/completion with a boolean `label`) and plain text. Detection is a "first match wins" table over the record's keys; the normalisers
live in `hone.data.normalize`; the `Example` and `FormatError` types in `hone.data.example`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hone.data.example import Example, FormatError  # readers import both from here too
from hone.data.normalize import NORMALIZERS


def _has(*keys: str) -> Callable[[dict], bool]:
    return lambda record: all(key in record for key in keys)


def _prompt_completion(record: dict) -> bool:
    return "prompt" in record and "completion" in record


# First match wins; order matters where key sets overlap (preference rows may carry `prompt`).
DETECTORS: list[tuple[str, Callable[[dict], bool]]] = [
    ("openai_preference", _has("input", "preferred_output", "non_preferred_output")),
    ("preference", _has("chosen", "rejected")),
    ("unpaired", _has("prompt", "completion", "label")),  # before prompt_completion: same keys plus the label
    ("chat", _has("messages")),
    ("sharegpt", _has("conversations")),
    ("alpaca", _has("instruction", "output")),
    ("prompt_completion", _prompt_completion),
    ("text", _has("text")),
]

FORMAT_NAMES = ("chat", "conversational_prompt_completion", "prompt_completion", "alpaca", "sharegpt",
                "preference", "standard_preference", "openai_preference", "unpaired", "standard_unpaired", "text")


def detect_format(record: dict[str, Any]) -> str:
    """The family of `record` by its keys (the normaliser refines it, e.g. standard vs conversational)."""
    for name, matches in DETECTORS:
        if matches(record):
            return name
    keys = ", ".join(sorted(map(str, record))[:6]) or "none"
    raise FormatError(f"unrecognised record (keys: {keys}); expected 'messages', 'prompt'+'completion', "
                      "'instruction'+'output', 'conversations', 'chosen'+'rejected', 'prompt'+'completion'+'label' or 'text'")


def to_example(record: dict[str, Any], line: int = 0, source: str = "") -> Example:
    """Normalise one record; raises FormatError (with its finding kind) naming the problem."""
    example = NORMALIZERS[detect_format(record)](record)
    example.line, example.source = line, source
    return example
