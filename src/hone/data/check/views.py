"""Text views of an Example that the checks compare: its prompt, its answer, its content.

Near-duplicate detection looks at the non-system turns only: a long system prompt shared by
every row would otherwise make all rows look alike.
"""

from __future__ import annotations

import json

from hone.data.formats import Example

SFT_KINDS = ("chat", "completion")
PAIRED_KINDS = ("preference", "unpaired")  # kinds whose `messages` is the prompt and whose answers live apart


def normalized(text: str) -> str:
    """Lower-case with whitespace runs collapsed: the key of "exact" duplicates."""
    return " ".join(text.lower().split())


def turn_text(message: dict) -> str:
    text = message.get("content") or ""
    if message.get("tool_calls"):
        text += " " + json.dumps(message["tool_calls"], sort_keys=True, ensure_ascii=False)
    return text


def last_answer_index(messages: list[dict]) -> int:
    return max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))


def system_prompt(example: Example) -> str:
    messages = example.messages
    return messages[0].get("content") or "" if messages and messages[0]["role"] == "system" else ""


def prompt_text(example: Example) -> str:
    """The turns before the final answer, without the system prompt."""
    if example.kind == "completion":
        return example.prompt
    if example.kind == "text":
        return ""
    paired = example.kind in PAIRED_KINDS  # `messages` holds the prompt alone
    messages = example.messages if paired else example.messages[: last_answer_index(example.messages)]
    return "\n".join(turn_text(m) for m in messages if m["role"] != "system")


def answer_text(example: Example) -> str:
    """The final answer (the chosen one for preference pairs, the labelled one for unpaired rows)."""
    if example.kind == "completion":
        return example.completion
    if example.kind == "text":
        return example.text
    messages = {"preference": example.chosen, "unpaired": example.answer}.get(example.kind, example.messages)
    return turn_text(messages[last_answer_index(messages)]) if messages else ""


def content_text(example: Example) -> str:
    """Everything but the system prompt: what near-duplicate detection compares."""
    if example.kind == "completion":
        return example.prompt + "\n" + example.completion
    if example.kind == "text":
        return example.text
    turns = example.messages + example.chosen + example.rejected + example.answer
    return "\n".join(turn_text(m) for m in turns if m["role"] != "system")


def exact_key(example: Example) -> str:
    """Whitespace/case-normalised rendering of the whole example, roles and system prompt included."""
    if example.kind == "completion":
        return "completion\x00" + normalized(example.prompt) + "\x00" + normalized(example.completion)
    if example.kind == "text":
        return "text\x00" + normalized(example.text)
    parts = [example.kind]
    for group, turns in (("", example.messages), ("chosen", example.chosen), ("rejected", example.rejected),
                         (f"answer-{example.label}", example.answer)):
        parts += [f"{group}{m['role']}:{m.get('weight', 1)}:{normalized(turn_text(m))}" for m in turns]
    if example.tools:  # the same turns with other tools on offer teach a different choice
        parts.append("tools:" + json.dumps(example.tools, sort_keys=True, ensure_ascii=False))
    return "\x00".join(parts)


def parse_json_value(text: str):
    """The answer parsed as a JSON object or array (code fences allowed), else None."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if not text or text[0] not in "[{":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, (dict, list)) else None
