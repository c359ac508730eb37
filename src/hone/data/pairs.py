"""Preference examples as token ids: pairs (chosen and rejected answers to one prompt) and
unpaired answers labelled desirable or not (KTO). Pure functions, no I/O.

Each answer is rendered with the prompt through the chat template exactly as SFT renders a
conversation (`hone.data.render.render_conversation`), so the labels mark the answer's
tokens and its end-of-turn marker only; assistant turns inside a multi-turn prompt are
context, never trained. The length policy applies to each sequence: `drop` drops the whole
pair when either side is over `max_length`, `truncate` cuts each side at `max_length`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.data.dataset import LengthReport
from hone.data.formats import Example
from hone.data.render import IGNORE, RenderError, Tokenized, fit_length, render_conversation
from hone.errors import HoneError


@dataclass
class PairTokenized:
    """One preference pair: prompt + chosen answer, prompt + rejected answer (labels on the answers)."""

    chosen: Tokenized
    rejected: Tokenized
    reference: tuple[float, float] | None = None
    """The reference model's summed log-probabilities of (chosen, rejected) answers, once computed."""

    @property
    def input_ids(self) -> list[int]:
        """Both sequences back to back: what batching and row packing measure."""
        return self.chosen.input_ids + self.rejected.input_ids

    @property
    def labels(self) -> list[int]:
        return self.chosen.labels + self.rejected.labels

    @property
    def trained_tokens(self) -> int:
        return self.chosen.trained_tokens + self.rejected.trained_tokens

    def sequences(self) -> tuple[Tokenized, Tokenized]:
        return self.chosen, self.rejected


@dataclass
class UnpairedTokenized:
    """One KTO example: prompt + answer, whether the answer is desirable, and the same prompt with
    another example's answer (`mismatched`, for the KL estimate; no gradient flows through it)."""

    answer: Tokenized
    desirable: bool
    mismatched: Tokenized
    reference: tuple[float, float] | None = None
    """The reference model's summed log-probabilities of (answer, mismatched answer), once computed."""

    @property
    def input_ids(self) -> list[int]:
        return self.answer.input_ids  # the mismatched sequence runs without gradient, in its own pass

    @property
    def labels(self) -> list[int]:
        return self.answer.labels

    @property
    def trained_tokens(self) -> int:
        return self.answer.trained_tokens

    def sequences(self) -> tuple[Tokenized, Tokenized]:
        return self.answer, self.mismatched


def prompt_turns(messages: list[dict]) -> list[dict]:
    """The prompt's turns as context: earlier assistant turns carry weight 0 (not trained)."""
    return [{**m, "weight": 0} if m["role"] == "assistant" else m for m in messages]


def render_answer(tokenizer, prompt: list[dict], answer: list[dict], tools=None) -> Tokenized:
    """prompt + answer rendered with the chat template; labels on the answer's turns only."""
    return render_conversation(tokenizer, prompt_turns(prompt) + list(answer), tools)


def render_pair(tokenizer, example: Example) -> PairTokenized:
    if example.kind != "preference":
        raise RenderError(f"a preference objective needs preference pairs (chosen/rejected), got a {example.kind} row")
    return PairTokenized(render_answer(tokenizer, example.messages, example.chosen, example.tools or None),
                         render_answer(tokenizer, example.messages, example.rejected, example.tools or None))


def render_unpaired(tokenizer, example: Example) -> tuple[Tokenized, bool]:
    """(prompt + answer, desirable) of an unpaired row; a preference pair gives its chosen answer
    (desirable) here and its rejected one through `unpaired_from_pairs`."""
    if example.kind != "unpaired" or example.label is None:
        raise RenderError(f"kto needs unpaired rows (prompt, completion, boolean label) or pairs, got a {example.kind} row")
    return render_answer(tokenizer, example.messages, example.answer, example.tools or None), bool(example.label)


def tokenize_pairs(tokenizer, examples: list[Example], max_length: int, policy: str,
                   render=None) -> tuple[list[PairTokenized], LengthReport]:
    """Render each preference example as a pair and apply the length policy to both sides.
    `render` (the SFT renderings the data doctor shared) is not used: pairs render on their own."""
    report = LengthReport(policy=policy, max_length=max_length, examples=len(examples))
    items = []
    for example in examples:
        try:
            pair = render_pair(tokenizer, example)
        except RenderError as exc:
            raise HoneError(f"{example.source}:{example.line}: {exc}",
                            "preference objectives train on rows with chosen/rejected answers; "
                            "set train.objective=causal_lm for chat data") from None
        fitted = fit_sequences(pair.sequences(), max_length, policy, report)
        if fitted is not None:
            items.append(PairTokenized(*fitted))
    return items, report


def tokenize_unpaired(tokenizer, examples: list[Example], max_length: int, policy: str,
                      render=None) -> tuple[list[UnpairedTokenized], LengthReport]:
    """KTO items: unpaired rows as they are, preference pairs split into a desirable and an
    undesirable answer. Each item's mismatched answer is the previous item's answer (cycled, as
    TRL's KTO builds its KL sequences), fixed here so reference values can be computed once."""
    report = LengthReport(policy=policy, max_length=max_length, examples=len(examples))
    rendered: list[tuple[Example, list[dict], list[dict], bool]] = []
    for example in examples:
        if example.kind == "preference":
            rendered += [(example, example.messages, example.chosen, True), (example, example.messages, example.rejected, False)]
        elif example.kind == "unpaired" and example.label is not None:
            rendered.append((example, example.messages, example.answer, bool(example.label)))
        else:
            raise HoneError(f"{example.source}:{example.line}: kto needs unpaired rows (prompt, completion, label) "
                            f"or preference pairs, got a {example.kind} row", "set train.objective=causal_lm for chat data")
    items = []
    for example, prompt, answer, desirable in rendered:
        try:
            sequence = render_answer(tokenizer, prompt, answer, example.tools or None)
        except RenderError as exc:
            raise HoneError(f"{example.source}:{example.line}: {exc}") from None
        fitted = fit_sequences((sequence,), max_length, policy, report)
        if fitted is not None:
            items.append(UnpairedTokenized(fitted[0], desirable, fitted[0]))
    return with_mismatched(items), report


def with_mismatched(items: list[UnpairedTokenized]) -> list[UnpairedTokenized]:
    """Give item i the prompt of item i and the answer of item i-1 (cycled); the prompt is
    everything before the first trained token (the assistant header included)."""
    starts = [first_trained(item.answer) for item in items]
    for i, item in enumerate(items):
        other, start = items[i - 1].answer, starts[i - 1]
        prompt_ids = item.answer.input_ids[: starts[i]]
        item.mismatched = Tokenized(prompt_ids + other.input_ids[start:], [IGNORE] * len(prompt_ids) + other.labels[start:])
    return items


def first_trained(item: Tokenized) -> int:
    return next(i for i, label in enumerate(item.labels) if label != IGNORE)


def fit_sequences(sequences, max_length: int, policy: str, report: LengthReport) -> tuple[Tokenized, ...] | None:
    """Each sequence fitted to `max_length`; None (counted as dropped) when any cannot be kept."""
    if any(not s.trained_tokens for s in sequences):
        report.no_trained_tokens += 1
        report.dropped += 1
        return None
    fitted = tuple(fit_length(s, max_length, policy) for s in sequences)
    if any(len(s.input_ids) > max_length for s in sequences):
        report.over_length += 1
        kept = sum(f.trained_tokens for f in fitted if f is not None)
        report.lost_trained_tokens += sum(s.trained_tokens for s in sequences) - kept
        if any(f is None for f in fitted):
            report.dropped += 1
            return None
        report.truncated += 1
    report.trained_tokens += sum(f.trained_tokens for f in fitted)
    return fitted
