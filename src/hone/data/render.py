"""Render examples to token ids and labels. Pure functions: no I/O, no global state.

Chat masking is computed from the tokenizer's own chat template so it cannot drift from
what the template renders: each assistant turn's character span is found by rendering the
conversation up to that turn, the whole conversation is tokenized once with offsets, and
a token is trained when it overlaps a span. The span runs from the turn's content through
the template's end-of-turn marker (e.g. `<|im_end|>`), without the whitespace after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hone.data.formats import Example

IGNORE = -100  # label of positions that carry no loss


class RenderError(ValueError):
    """The template rendered something the mask cannot be aligned with."""


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def render_example(tokenizer, example: Example) -> Tokenized:
    if example.kind == "chat":
        return render_conversation(tokenizer, example.messages, example.tools)
    if example.kind == "completion":
        return render_completion(tokenizer, example.prompt, example.completion)
    raise RenderError(f"cannot render an example of kind {example.kind!r} for supervised training")


def render_conversation(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> Tokenized:
    """`messages -> (input_ids, labels)`: only assistant turns with weight 1 carry labels.

    `tools` (OpenAI function definitions) go to the template's `tools` variable; an assistant
    turn that calls tools is trained on the calls as the template renders them."""
    if not getattr(tokenizer, "chat_template", None):
        raise RenderError("the tokenizer has no chat template; set model.chat_template or use prompt/completion data")
    clean, tools = template_messages(messages), tools or None
    text = _render(tokenizer, clean, add_generation_prompt=False, tools=tools)
    if tools and _render(tokenizer, clean, add_generation_prompt=False) == text:
        raise RenderError("the chat template ignores `tools`: the tool definitions would never reach the model; "
                          f"{TOOLS_FIX}")
    spans = assistant_spans(tokenizer, clean, messages, text, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [IGNORE] * len(input_ids)
    # Offsets and spans are both in text order: walk them together in one pass.
    spans_left = iter(spans)
    span = next(spans_left, None)
    for index, (start, end) in enumerate(encoded["offset_mapping"]):
        while span is not None and start >= span[1]:
            span = next(spans_left, None)
        if span is None:
            break
        if end > start and end > span[0]:  # overlaps the span (start < span end by the loop above)
            labels[index] = input_ids[index]
    return Tokenized(input_ids, labels)


TOOLS_FIX = "use a model whose chat template supports tools, or set model.chat_template to one that does"


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: no `weight`, and tool-call `arguments` as objects.

    OpenAI stores arguments as a JSON string; templates (Qwen, Llama 3.1, Mistral) write them
    with `tojson`, which would encode such a string a second time."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "weight"}
        if message.get("tool_calls"):
            message["tool_calls"] = [_decoded_call(call) for call in message["tool_calls"]]
        out.append(message)
    return out


def _decoded_call(call: dict) -> dict:
    function = call.get("function")
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not isinstance(arguments, str):
        return call
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return call
    return {**call, "function": {**function, "arguments": parsed}} if isinstance(parsed, dict) else call


def assistant_spans(tokenizer, clean: list[dict], messages: list[dict], text: str,
                    tools: list[dict] | None = None) -> list[tuple[int, int]]:
    """Character spans of `text` to train on, one per assistant turn with weight 1."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        before = _render(tokenizer, clean[:index], add_generation_prompt=True, tools=tools) if index else ""
        through = _render(tokenizer, clean[: index + 1], add_generation_prompt=False, tools=tools)
        if not text.startswith(through):
            raise RenderError(f"the chat template renders turn {index} differently inside the full conversation; cannot align the mask")
        # The turn starts where `through` leaves the generation-prompt render behind.
        header_end = _common_prefix(before, through)
        _check_calls_rendered(message, through[header_end:], index)
        content = (message.get("content") or "").strip()
        start = through.find(content, header_end) if content else header_end
        if start < 0:
            raise RenderError(f"assistant turn {index}'s content was not found in the rendered template output")
        end = len(through.rstrip())
        spans.append((start, end))
    return spans


def _check_calls_rendered(message: dict, turn_text: str, index: int) -> None:
    """A template that knows no `tool_calls` renders the turn without them: training would teach
    an empty answer, so refuse instead."""
    for call in message.get("tool_calls") or []:
        name = call["function"]["name"]
        if name not in turn_text:
            raise RenderError(f"the chat template drops assistant turn {index}'s tool call {name!r} "
                              f"(it does not render tool_calls); {TOOLS_FIX}")


def _common_prefix(a: str, b: str) -> int:
    """Length of the shared prefix; the generation prompt may differ from the rendered turn header."""
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # a chat template is the model author's code: anything it raises means "cannot render this row"
        raise RenderError(_template_failure(messages, tools, exc)) from None


def _template_failure(messages: list[dict], tools: list[dict] | None, exc: Exception) -> str:
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
    if tools or any(m.get("tool_calls") for m in messages):
        return f"the chat template cannot render tools or tool calls ({reason}); {TOOLS_FIX}"
    return f"the chat template fails on this conversation ({reason}); check the turns, or set model.chat_template"


def render_completion(tokenizer, prompt: str, completion: str) -> Tokenized:
    """Raw-text completion: `prompt + completion + EOS`, labels on the completion and EOS."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(prompt + completion, add_special_tokens=True)["input_ids"]
    # Tokenize the concatenation once so merges across the boundary match inference;
    # the shared prefix of ids is the prompt.
    shared = 0
    while shared < min(len(prompt_ids), len(full)) and prompt_ids[shared] == full[shared]:
        shared += 1
    input_ids = list(full) + [tokenizer.eos_token_id]
    labels = [IGNORE] * shared + input_ids[shared:]
    return Tokenized(input_ids, labels)


def render_prompt(tokenizer, example: Example) -> list[int]:
    """Ids of the prompt to generate from: everything before the last assistant turn."""
    if example.kind == "completion":
        return tokenizer(example.prompt, add_special_tokens=True)["input_ids"]
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    return render_generation_prompt(tokenizer, example.messages[:last], example.tools)


def render_generation_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Ids of `messages` followed by the template's assistant header: what a model answers from
    (evaluation and `hone serve` render prompts exactly as training rendered conversations)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RenderError("the tokenizer has no chat template; set model.chat_template or use prompt/completion data")
    text = _render(tokenizer, template_messages(messages), add_generation_prompt=True, tools=tools or None)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_answer(example: Example) -> str:
    if example.kind == "completion":
        return example.completion
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    return example.messages[last].get("content") or ""


def fit_length(item: Tokenized, max_length: int, policy: str) -> Tokenized | None:
    """Apply the over-length policy: None when dropped (or nothing left to learn)."""
    if len(item.input_ids) <= max_length:
        return item
    if policy == "drop":
        return None
    cut = Tokenized(item.input_ids[:max_length], item.labels[:max_length])
    return cut if cut.trained_tokens else None
