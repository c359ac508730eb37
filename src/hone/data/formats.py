"""Recognise a record's format and normalise it to one internal `Example`.

Chat (`messages`), prompt/completion (standard strings or conversational lists) and plain
text (`text`) are the training formats; the data doctor adds the others on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    """One training example, format-independent.

    `messages` for chat; `prompt`/`completion` for raw-text completion; `text` for pre-training.
    """

    kind: str  # "chat" | "completion" | "text"
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    completion: str = ""
    text: str = ""
    line: int = 0
    source: str = ""


class FormatError(ValueError):
    """A record that does not fit any known format (message says which field)."""


def detect_format(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        prompt = record["prompt"]
        return "conversational_completion" if isinstance(prompt, list) else "completion"
    if "text" in record:
        return "text"
    raise FormatError(f"unrecognised record with keys {sorted(record)[:6]}; expected 'messages', 'prompt'+'completion' or 'text'")


def to_example(record: dict[str, Any], line: int = 0, source: str = "") -> Example:
    """Normalise one record; raises FormatError naming the problem."""
    kind = detect_format(record)
    if kind == "chat":
        return Example("chat", messages=_check_messages(record["messages"]), line=line, source=source)
    if kind == "conversational_completion":
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        messages = _check_messages(list(prompt) + list(completion))
        return Example("chat", messages=messages, line=line, source=source)
    if kind == "completion":
        prompt, completion = record["prompt"], record["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise FormatError("'prompt' and 'completion' must both be strings (or both message lists)")
        if not completion.strip():
            raise FormatError("'completion' is empty: nothing to learn")
        return Example("completion", prompt=prompt, completion=completion, line=line, source=source)
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise FormatError("'text' must be a non-empty string")
    return Example("text", text=record["text"], line=line, source=source)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise FormatError("'messages' must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise FormatError(f"messages[{index}] is not an object")
        role = message.get("role")
        if role not in ROLES:
            raise FormatError(f"messages[{index}].role is {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise FormatError(f"messages[{index}] has no 'content'")
        if content is not None and not isinstance(content, str):
            raise FormatError(f"messages[{index}].content must be a string")
        weight = message.get("weight", 1)
        if weight not in (0, 1):
            raise FormatError(f"messages[{index}].weight is {weight!r}; expected 0 or 1")
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        raise FormatError("no assistant turn to learn from (every example needs one with weight 1)")
    return messages
