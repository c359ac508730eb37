"""Per-format normalisers: `record -> Example`. Pure functions.

Every problem is a `FormatError` whose message names the field (`messages[2].role`,
`history[0]`, ...) and whose `kind` is the finding it becomes in `hone check`.
"""

from __future__ import annotations

import json
from typing import Any

from hone.data.example import ROLES, Example, FormatError

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant", "model": "assistant",
    "system": "system",
    "function_call": "assistant",  # a tool call, its value the JSON {"name", "arguments"}
    "observation": "tool", "tool": "tool", "function_response": "tool",
}


# ---- messages -------------------------------------------------------------------------------

def clean_message(message: Any, label: str) -> dict[str, Any]:
    """Validate one chat turn; drop null fields but `content` (parquet struct columns fill absent keys with null)."""
    if not isinstance(message, dict):
        raise FormatError(f"{label} is not an object")
    if any(value is None for key, value in message.items() if key != "content"):
        message = {key: value for key, value in message.items() if value is not None or key == "content"}
    role = message.get("role")
    if role not in ROLES:
        raise FormatError(f"{label}.role is {role!r}; expected one of {', '.join(ROLES)}")
    content, calls = message.get("content"), message.get("tool_calls")
    if content is not None and not isinstance(content, str):
        raise FormatError(f"{label}.content must be a string, got {type(content).__name__}")
    if calls is not None:
        _check_tool_calls(calls, label, role)
    for key in ("name", "tool_call_id"):
        if key in message and not isinstance(message[key], str):
            raise FormatError(f"{label}.{key} must be a string, got {type(message[key]).__name__}")
    if message.get("weight", 1) not in (0, 1):
        raise FormatError(f"{label}.weight is {message['weight']!r}; expected 0 or 1")
    if not calls and not (content or "").strip():
        raise FormatError(f"{label} ({role}) is blank", "empty_content")
    return message


def _check_tool_calls(calls: Any, label: str, role: str) -> None:
    if role != "assistant":
        raise FormatError(f"{label} has tool_calls but role {role!r}; only assistant turns call tools")
    if not isinstance(calls, list) or not calls:
        raise FormatError(f"{label}.tool_calls must be a non-empty list")
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise FormatError(f"{label}.tool_calls[{index}] needs a 'function' object with a string 'name'")
        if not isinstance(function.get("arguments", ""), (str, dict)):
            raise FormatError(f"{label}.tool_calls[{index}].function.arguments must be a JSON string or an object")


def clean_messages(messages: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"'{field}' must be a non-empty list of messages")
    return [clean_message(m, f"{field}[{i}]") for i, m in enumerate(messages)]


def check_role_order(messages: list[dict[str, Any]]) -> None:
    """Raise `role_order` when the conversation cannot teach anything sensible."""
    roles = [m["role"] for m in messages]
    for i, role in enumerate(roles):
        previous = messages[i - 1] if i else None
        if role == "system" and i > 0:
            raise FormatError(f"turn {i} is a system turn after the conversation started", "role_order")
        if role == "tool" and not (previous and (previous["role"] == "tool" or previous.get("tool_calls"))):
            raise FormatError(f"turn {i} is a tool result with no assistant tool call before it", "role_order")
        if role == "assistant" and previous and previous["role"] == "assistant":
            raise FormatError(f"turns {i - 1} and {i} are two assistant turns in a row", "role_order")
    first = next((i for i, role in enumerate(roles) if role != "system"), None)
    if first is None:
        raise FormatError("only a system prompt: no turn to learn from", "role_order")
    if roles[first] == "assistant":
        raise FormatError(f"turn {first} is an assistant turn that nothing prompts", "role_order")
    if roles[-1] != "assistant":
        raise FormatError(f"ends on a {roles[-1]} turn that nothing answers", "role_order")
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        raise FormatError("no assistant turn to learn from (every assistant weight is 0)", "role_order")


def chat_example(messages: list[dict[str, Any]], format_name: str, tools: list[dict[str, Any]] | None = None) -> Example:
    check_role_order(messages)
    return Example("chat", messages=messages, format=format_name, tools=tools or [])


def clean_tools(tools: Any) -> list[dict[str, Any]]:
    """A row's `tools`: OpenAI function definitions `{"type": "function", "function": {"name", ...}}`
    (a bare `{"name", "parameters"}` is accepted too). Absent or null: no tools."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise FormatError(f"'tools' must be a list of function definitions, got {type(tools).__name__}")
    for index, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise FormatError(f"tools[{index}] needs a 'function' object with a string 'name'")
    return tools


# ---- fields ---------------------------------------------------------------------------------

def required_str(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise FormatError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def optional_str(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise FormatError(f"{what} is blank", "empty_content")
    return value


# ---- one normaliser per format --------------------------------------------------------------

def normalize_chat(record: dict) -> Example:
    return chat_example(clean_messages(record["messages"], "messages"), "chat", clean_tools(record.get("tools")))


def normalize_prompt_completion(record: dict) -> Example:
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, list):
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        turns = clean_messages(prompt, "prompt") + clean_messages(completion, "completion")
        return chat_example(turns, "conversational_prompt_completion", clean_tools(record.get("tools")))
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise FormatError("'prompt' and 'completion' must both be strings (or both message lists)")
    not_blank(prompt, "'prompt'")
    not_blank(completion, "'completion'")
    return Example("completion", prompt=prompt, completion=completion, format="prompt_completion")


def normalize_alpaca(record: dict) -> Example:
    instruction = required_str(record, "instruction")
    extra_input = optional_str(record, "input")
    output = not_blank(required_str(record, "output"), "'output'")
    system = optional_str(record, "system")
    user = not_blank("\n\n".join(part for part in (instruction, extra_input) if part.strip()), "'instruction' (with 'input')")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += history_messages(record.get("history"))
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return chat_example(messages, "alpaca")


def history_messages(history: Any) -> list[dict[str, str]]:
    """Alpaca `history`: earlier [instruction, response] pairs, oldest first."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise FormatError("'history' must be a list of [instruction, response] pairs")
    messages = []
    for index, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise FormatError(f"history[{index}] must be a pair of strings [instruction, response]")
        not_blank(pair[0], f"history[{index}][0]")
        not_blank(pair[1], f"history[{index}][1]")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return messages


def normalize_sharegpt(record: dict) -> Example:
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise FormatError("'conversations' must be a non-empty list")
    system = optional_str(record, "system")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for index, turn in enumerate(turns):
        label = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise FormatError(f"{label} is not an object")
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
            raise FormatError(f"{label}.from is {speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise FormatError(f"{label}.value must be a string, got {type(value).__name__}")
        message = sharegpt_message(speaker, value)
        if turn.get("weight") is not None:
            message["weight"] = turn["weight"]
        messages.append(clean_message(message, label))
    return chat_example(messages, "sharegpt")


def sharegpt_message(speaker: str, value: str) -> dict[str, Any]:
    role = SHAREGPT_ROLES[speaker]
    if speaker == "function_call":
        calls = _parse_tool_calls(value)
        if calls:
            return {"role": role, "content": None, "tool_calls": calls}
    return {"role": role, "content": value}


def _parse_tool_calls(value: str) -> list[dict] | None:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    return [{"type": "function", "function": {"name": i["name"], "arguments": i.get("arguments", "")}} for i in items]


def normalize_preference(record: dict) -> Example:
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str):
            raise FormatError("'prompt' must be a string when 'chosen' and 'rejected' are strings")
        messages = [{"role": "user", "content": not_blank(prompt, "'prompt'")}]
        pair = [{"role": "assistant", "content": not_blank(text, f"'{key}'")} for key, text in (("chosen", chosen), ("rejected", rejected))]
        return Example("preference", messages=messages, chosen=[pair[0]], rejected=[pair[1]], format="standard_preference")
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise FormatError("'chosen' and 'rejected' must both be strings or both message lists")
    if prompt is None:  # implicit prompt: the turns both conversations share
        shared = _shared_prefix(chosen, rejected)
        if shared == len(chosen) == len(rejected):  # one conversation twice: keep the pair for the doctor to flag
            shared = max((i for i, m in enumerate(chosen) if isinstance(m, dict) and m.get("role") == "assistant"), default=shared)
        for side, turns in (("chosen", chosen), ("rejected", rejected)):
            if shared == len(turns):
                raise FormatError(f"'{side}' has no turns after the prompt it shares with the other side", "empty_content")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    elif not isinstance(prompt, list):
        raise FormatError("'prompt' must be a message list when 'chosen' and 'rejected' are message lists")
    return preference_example(prompt, chosen, rejected, ("prompt", "chosen", "rejected"), "preference")


def normalize_openai_preference(record: dict) -> Example:
    source = record["input"]
    if not isinstance(source, dict) or "messages" not in source:
        raise FormatError("'input' must be an object with 'messages'")
    fields = ("input.messages", "preferred_output", "non_preferred_output")
    return preference_example(source["messages"], record["preferred_output"], record["non_preferred_output"], fields, "openai_preference")


def preference_example(prompt: Any, chosen: Any, rejected: Any, fields: tuple[str, str, str], format_name: str) -> Example:
    prompt_turns = clean_messages(prompt, fields[0])
    answers = [clean_messages(turns, field) for turns, field in ((chosen, fields[1]), (rejected, fields[2]))]
    for turns in answers:
        check_role_order(prompt_turns + turns)
    return Example("preference", messages=prompt_turns, chosen=answers[0], rejected=answers[1], format=format_name)


def _shared_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def normalize_unpaired(record: dict) -> Example:
    """KTO's unpaired row: a prompt, one completion and whether that completion is desirable.
    Strings (TRL's standard form) become a user turn and an assistant turn, as preference pairs do."""
    prompt, completion = record["prompt"], record["completion"]
    label = unpaired_label(record["label"])
    if isinstance(prompt, str) and isinstance(completion, str):
        messages = [{"role": "user", "content": not_blank(prompt, "'prompt'")}]
        answer = [{"role": "assistant", "content": not_blank(completion, "'completion'")}]
        return Example("unpaired", messages=messages, answer=answer, label=label, format="standard_unpaired")
    if not isinstance(prompt, list):
        raise FormatError("'prompt' and 'completion' must both be strings or both message lists")
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    prompt_turns, answer = clean_messages(prompt, "prompt"), clean_messages(completion, "completion")
    check_role_order(prompt_turns + answer)
    return Example("unpaired", messages=prompt_turns, answer=answer, label=label, format="unpaired",
                   tools=clean_tools(record.get("tools")))


LABEL_WORDS = {"true": True, "false": False}  # CSV cells hold the label as text


def unpaired_label(value) -> bool:
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    if not isinstance(value, bool):
        raise FormatError(f"'label' is {value!r}; expected true (a desirable completion) or false (an undesirable one)")
    return value


def normalize_text(record: dict) -> Example:
    text = not_blank(required_str(record, "text"), "'text'")
    return Example("text", text=text, format="text")


NORMALIZERS = {
    "openai_preference": normalize_openai_preference,
    "preference": normalize_preference,
    "unpaired": normalize_unpaired,
    "chat": normalize_chat,
    "sharegpt": normalize_sharegpt,
    "alpaca": normalize_alpaca,
    "prompt_completion": normalize_prompt_completion,
    "text": normalize_text,
}
