"""Recognise a record's format and normalise it to one internal `Example`.

Every format people bring is read: OpenAI chat (`messages`), TRL conversational and
standard prompt/completion, Alpaca, ShareGPT, preference pairs (TRL and OpenAI) and plain
text. Detection is a "first match wins" table over the record's keys; the normalisers
live in `hone.data.normalize`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    """One example, format-independent.

    kind `chat`: `messages` (roles system/user/assistant/tool, optional per-turn `weight`) and
    `tools`, the OpenAI-style function definitions the chat template renders (may be empty).
    kind `completion`: raw-text `prompt` and `completion` (rendered without a chat template).
    kind `preference`: `messages` is the prompt, `chosen`/`rejected` the assistant turns.
    kind `text`: `text` for continued pre-training.
    `format` names the source format (e.g. `alpaca`), `line` the 1-based line in `source`.
    """

    kind: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    completion: str = ""
    text: str = ""
    line: int = 0
    source: str = ""
    chosen: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    format: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)


class FormatError(ValueError):
    """A record that does not fit its format. `kind` is the data doctor's finding kind:
    `schema` (missing/mistyped field, unknown role), `empty_content` (blank turn) or
    `role_order` (no assistant turn to learn from, a conversation ending unanswered, ...)."""

    def __init__(self, message: str, kind: str = "schema"):
        super().__init__(message)
        self.kind = kind


def _has(*keys: str) -> Callable[[dict], bool]:
    return lambda record: all(key in record for key in keys)


def _prompt_completion(record: dict) -> bool:
    return "prompt" in record and "completion" in record


# First match wins; order matters where key sets overlap (preference rows may carry `prompt`).
DETECTORS: list[tuple[str, Callable[[dict], bool]]] = [
    ("openai_preference", _has("input", "preferred_output", "non_preferred_output")),
    ("preference", _has("chosen", "rejected")),
    ("chat", _has("messages")),
    ("sharegpt", _has("conversations")),
    ("alpaca", _has("instruction", "output")),
    ("prompt_completion", _prompt_completion),
    ("text", _has("text")),
]

FORMAT_NAMES = ("chat", "conversational_prompt_completion", "prompt_completion", "alpaca", "sharegpt",
                "preference", "standard_preference", "openai_preference", "text")


def detect_format(record: dict[str, Any]) -> str:
    """The family of `record` by its keys (the normaliser refines it, e.g. standard vs conversational)."""
    for name, matches in DETECTORS:
        if matches(record):
            return name
    keys = ", ".join(sorted(map(str, record))[:6]) or "none"
    raise FormatError(f"unrecognised record (keys: {keys}); expected 'messages', 'prompt'+'completion', "
                      "'instruction'+'output', 'conversations', 'chosen'+'rejected' or 'text'")


def to_example(record: dict[str, Any], line: int = 0, source: str = "") -> Example:
    """Normalise one record; raises FormatError (with its finding kind) naming the problem."""
    from hone.data.normalize import NORMALIZERS

    example = NORMALIZERS[detect_format(record)](record)
    example.line, example.source = line, source
    return example
