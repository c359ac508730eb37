"""The internal `Example` every format is normalised to, and the `FormatError` a bad record raises.

Kept apart from the format table (`formats.py`) and the normalisers (`normalize.py`), which
both build on these types: neither has to import the other back.
"""

from __future__ import annotations

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
    kind `unpaired` (KTO): `messages` is the prompt, `answer` the assistant turns, `label`
    True when the answer is desirable and False when it is not.
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
    answer: list[dict[str, Any]] = field(default_factory=list)
    label: bool | None = None


class FormatError(ValueError):
    """A record that does not fit its format. `kind` is the data doctor's finding kind:
    `schema` (missing/mistyped field, unknown role), `empty_content` (blank turn) or
    `role_order` (no assistant turn to learn from, a conversation ending unanswered, ...)."""

    def __init__(self, message: str, kind: str = "schema"):
        super().__init__(message)
        self.kind = kind
