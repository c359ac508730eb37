"""Prompts for online RL: each example's prompt as token ids, with its reference answer kept
for rewards that compare with it (`field_match`). Pure functions, no I/O.

The prompt is everything before the example's last assistant turn, followed by the chat
template's assistant header, exactly as evaluation renders what a model answers from
(`hone.data.render.render_prompt`); the reference is that last turn's text.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.data.dataset import LengthReport
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
