"""Prompts for online RL: each example's prompt as token ids, with its reference answer kept
for rewards that compare with it (`field_match`); and rows a model is to answer (a
distillation transfer set), which may hold prompts only.

The prompt is everything before the example's last assistant turn, followed by the chat
template's assistant header, exactly as evaluation renders what a model answers from
(`hone.data.render.render_prompt`); the reference is that last turn's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hone.data.dataset import LengthReport, Loaded, read_examples
from hone.data.formats import Example
from hone.data.render import RenderError, reference_answer, render_prompt
from hone.errors import HoneError


@dataclass
class PromptItem:
    prompt_ids: list[int]
    reference: str
    """The example's own answer (its last assistant turn, or completion)."""
    example: Example
    """The row it came from (a reward model renders prompt + completion from it)."""
    index: int = 0
    """Its place in the run's prompts: with the step, what seeds its completions."""

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids  # what batching measures

    @property
    def labels(self) -> list[int]:
        return self.prompt_ids

    @property
    def trained_tokens(self) -> int:
        return 0  # the trained tokens are sampled during training


def tokenize_prompts(tokenizer, examples: list[Example], max_length: int, policy: str,
                     render=None) -> tuple[list[PromptItem], LengthReport]:
    """One prompt per example (chat rows with an assistant turn, or prompt/completion rows); a
    prompt longer than `max_length` is dropped under either policy (a cut prompt loses the header
    the model answers after)."""
    report = LengthReport(policy=policy, max_length=max_length, examples=len(examples))
    items = []
    for example in examples:
        if example.kind not in ("chat", "completion") or (example.kind == "chat" and not any(
                m["role"] == "assistant" for m in example.messages)):
            raise HoneError(f"{example.source}:{example.line}: grpo/rloo need prompts with a reference answer "
                            f"(chat rows ending in an assistant turn, or prompt/completion rows), got a {example.kind} row",
                            "use SFT-format data, e.g. src/hone/assets/demo/train.jsonl")
        try:
            prompt = render_prompt(tokenizer, example)
        except RenderError as exc:
            raise HoneError(f"{example.source}:{example.line}: {exc}") from None
        if len(prompt) > max_length:
            report.over_length += 1
            report.dropped += 1
            continue
        items.append(PromptItem(prompt, reference_answer(example), example, len(items)))
    return items, report


UNANSWERED = "(to be answered)"
"""The answer a prompt-only row is read with; whoever reads them replaces it."""


def read_prompt_rows(path: str | Path) -> Loaded:
    """Rows to be answered by a model: SFT rows, or prompt-only rows (`{"prompt": text}`, or
    `messages` ending in a user turn), each read as an SFT row answering UNANSWERED."""
    return read_examples(path, complete=_unanswered)


def _unanswered(record: dict) -> dict:
    """A prompt-only record with the UNANSWERED answer; any other record as it is."""
    if isinstance(record.get("prompt"), str) and "completion" not in record:
        return {**record, "completion": UNANSWERED}
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
        return {**record, "messages": [*messages, {"role": "assistant", "content": UNANSWERED}]}
    return record
