"""Write Examples back out in any supported format. Pure `Example -> (record, warnings)`.

Lossless where the target can carry everything; otherwise the record is written with what
fits and a warning names what was left out, or (when nothing sensible fits, e.g. a plain
text row as a preference pair) the row is skipped with a warning. A preference pair written
as unpaired rows becomes two rows.
"""

from __future__ import annotations

import json
from typing import Any

from hone.data.formats import Example
from hone.data.normalize import SHAREGPT_ROLES

TARGETS = ("chat", "prompt-completion", "alpaca", "sharegpt", "preference", "unpaired")
TO_SHAREGPT = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
Converted = tuple[dict[str, Any] | list[dict[str, Any]] | None, list[str]]  # a list: one example, several rows


def as_chat(example: Example) -> tuple[list[dict] | None, list[str]]:
    """The example as one conversation, with a warning when that loses something."""
    if example.kind == "chat":
        return example.messages, []
    if example.kind == "completion":
        return ([{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.completion}],
                ["raw prompt/completion text becomes a user/assistant conversation (rendered with the chat template)"])
    if example.kind == "preference":
        return example.messages + example.chosen, ["the rejected answer is dropped (only the chosen one is kept)"]
    if example.kind == "unpaired":
        if example.label:
            return example.messages + example.answer, ["the desirable answers of unpaired rows become conversations"]
        return None, ["an undesirable (label false) answer is nothing to imitate: skipped"]
    return None, ["plain-text rows have no prompt and answer: skipped"]


def with_tools(record: dict[str, Any], example: Example) -> dict[str, Any]:
    """`record` plus the example's tool definitions, when it has any (chat and TRL prompt/completion carry them)."""
    return {**record, "tools": example.tools} if example.tools else record


def tools_dropped(example: Example, target: str) -> list[str]:
    return [f"tool definitions ('tools') do not fit {target}: dropped"] if example.tools else []


def to_chat(example: Example) -> Converted:
    messages, warnings = as_chat(example)
    return (with_tools({"messages": messages}, example) if messages else None), warnings


def to_prompt_completion(example: Example) -> Converted:
    if example.kind == "completion":
        return {"prompt": example.prompt, "completion": example.completion}, []
    messages, warnings = as_chat(example)
    if not messages:
        return None, warnings
    cut = max(i for i, m in enumerate(messages) if m["role"] != "assistant") + 1
    return with_tools({"prompt": messages[:cut], "completion": messages[cut:]}, example), warnings


def to_alpaca(example: Example) -> Converted:
    if example.kind == "completion":
        return {"instruction": example.prompt, "input": "", "output": example.completion}, []
    messages, warnings = as_chat(example)
    if not messages:
        return None, warnings
    warnings = warnings + tools_dropped(example, "alpaca")
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    roles = [m["role"] for m in turns]
    if len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        return None, warnings + ["alpaca holds alternating user/assistant turns only (no tool turns): skipped"]
    if any(set(m) - {"role", "content"} - ({"weight"} if m.get("weight", 1) == 1 else set()) for m in turns):
        warnings = warnings + ["tool calls, names and weights do not fit alpaca: dropped"]
    pairs = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns), 2)]
    record = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if system is not None:
        record["system"] = system
    if len(pairs) > 1:
        record["history"] = pairs[:-1]
    return record, warnings


def to_sharegpt(example: Example) -> Converted:
    messages, warnings = as_chat(example)
    if not messages:
        return None, warnings
    warnings = warnings + tools_dropped(example, "sharegpt")
    turns = []
    for message in messages:
        turn = {"from": TO_SHAREGPT[message["role"]], "value": message.get("content") or ""}
        if message.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"].get("arguments", "")} for c in message["tool_calls"]]
            turn = {"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)}
            if message.get("content") or any(set(c) - {"type", "function"} for c in message["tool_calls"]):
                warnings = warnings + ["text beside a tool call and tool call ids do not fit sharegpt: dropped"]
        if "weight" in message:
            turn["weight"] = message["weight"]
        if "name" in message:
            warnings = warnings + ["message names do not fit sharegpt: dropped"]
        turns.append(turn)
    return {"conversations": turns}, warnings


def to_preference(example: Example) -> Converted:
    if example.kind == "unpaired":
        return None, ["an unpaired row has no second answer to pair with (pairing by prompt is not guessed): skipped"]
    if example.kind != "preference":
        return None, ["only preference pairs have a rejected answer: skipped"]
    if example.format == "standard_preference":
        return {"prompt": example.messages[0]["content"], "chosen": example.chosen[0]["content"],
                "rejected": example.rejected[0]["content"]}, []
    return {"prompt": example.messages, "chosen": example.chosen, "rejected": example.rejected}, []


def to_unpaired(example: Example) -> Converted:
    """KTO's `prompt / completion / label` rows: a pair becomes its chosen (true) and rejected (false) rows."""
    if example.kind == "unpaired":
        return unpaired_record(example.messages, example.answer, example.label, example), []
    if example.kind == "preference":
        return [unpaired_record(example.messages, example.chosen, True, example),
                unpaired_record(example.messages, example.rejected, False, example)], []
    return None, ["only preference pairs and unpaired rows carry a desirable/undesirable label: skipped"]


def unpaired_record(prompt: list[dict], answer: list[dict], label: bool, example: Example) -> dict[str, Any]:
    if example.format in ("standard_preference", "standard_unpaired"):
        return {"prompt": prompt[0]["content"], "completion": answer[0]["content"], "label": label}
    return with_tools({"prompt": prompt, "completion": answer, "label": label}, example)


CONVERTERS = {"chat": to_chat, "prompt-completion": to_prompt_completion, "alpaca": to_alpaca,
              "sharegpt": to_sharegpt, "preference": to_preference, "unpaired": to_unpaired}
assert set(TO_SHAREGPT.values()) <= set(SHAREGPT_ROLES)


def to_record(example: Example, target: str) -> Converted:
    return CONVERTERS[target](example)


def canonical_record(example: Example) -> dict[str, Any]:
    """The normalised training record `--fix` writes: chat, prompt/completion, preference or text."""
    if example.kind == "chat":
        return with_tools({"messages": example.messages}, example)
    if example.kind == "completion":
        return {"prompt": example.prompt, "completion": example.completion}
    if example.kind in ("preference", "unpaired"):
        return CONVERTERS[example.kind](example)[0]
    return {"text": example.text}
