"""From files to tokenized training sets: read, normalise, render, apply the length policy
(the held-out split is `hone.data.split.split_examples`).

Nothing is silent: every dropped or truncated example is counted in a `LengthReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hone.data.formats import Example, FormatError, to_example
from hone.data.io import BadLine, iter_records
from hone.data.render import RenderError, Tokenized, fit_length, render_example
from hone.errors import HoneError


@dataclass
class Problem:
    """A record that could not be used, with its 1-based line."""

    file: str
    line: int
    reason: str


@dataclass
class LengthReport:
    """What the over-length policy cost."""

    policy: str
    max_length: int
    examples: int = 0
    over_length: int = 0
    dropped: int = 0
    truncated: int = 0
    trained_tokens: int = 0
    lost_trained_tokens: int = 0
    no_trained_tokens: int = 0

    def line(self, name: str) -> str:
        kept = self.examples - self.dropped
        text = f"{name}: {kept}/{self.examples} examples, {self.trained_tokens:,} trained tokens"
        if self.over_length:
            share = self.lost_trained_tokens / max(1, self.lost_trained_tokens + self.trained_tokens)
            text += (f"; {self.over_length} longer than {self.max_length} tokens ({self.policy}: "
                     f"{self.dropped} dropped, {self.truncated} truncated, "
                     f"{self.lost_trained_tokens:,} trained tokens lost = {share:.1%})")
        if self.no_trained_tokens:
            text += f"; {self.no_trained_tokens} with nothing left to train on were dropped"
        return text


@dataclass
class Loaded:
    examples: list[Example]
    problems: list[Problem] = field(default_factory=list)


def read_examples(path: str | Path, complete: Callable[[dict], dict] | None = None) -> Loaded:
    """Read and normalise every record of `path`; unusable records become Problems, never crashes.
    `complete`, if given, may fill in each record before it is normalised."""
    path = Path(path)
    loaded = Loaded([])
    for line, record in iter_records(path):
        if isinstance(record, BadLine):
            loaded.problems.append(Problem(str(path), line, record.reason))
            continue
        try:
            loaded.examples.append(to_example(complete(record) if complete else record, line=line, source=str(path)))
        except FormatError as exc:
            loaded.problems.append(Problem(str(path), line, str(exc)))
    return loaded


def require_clean(loaded: Loaded, path: str) -> list[Example]:
    """Refuse data with unusable records: the first is named with its line, the count given."""
    if loaded.problems:
        first = loaded.problems[0]
        more = f" (and {len(loaded.problems) - 1} more)" if len(loaded.problems) > 1 else ""
        raise HoneError(f"{first.file}:{first.line}: {first.reason}{more}",
                        f"run `hone check {path}` for every finding, or `hone check {path} --fix OUT` to drop bad rows")
    if not loaded.examples:
        raise HoneError(f"{path}: no examples found", "the file is empty or has no usable records")
    return loaded.examples


def apply_length_policy(item: Tokenized, max_length: int, policy: str, report: LengthReport) -> Tokenized | None:
    """Fit `item` to `max_length` per `policy` and count what that cost in `report`.

    Returns None when the example is dropped (too long under `drop`, or nothing left to train on)."""
    if not item.trained_tokens:
        report.no_trained_tokens += 1
        report.dropped += 1
        return None
    fitted = fit_length(item, max_length, policy)
    if len(item.input_ids) > max_length:
        report.over_length += 1
        report.lost_trained_tokens += item.trained_tokens - (fitted.trained_tokens if fitted else 0)
        if fitted is None:
            report.dropped += 1
        else:
            report.truncated += 1
    if fitted is not None:
        report.trained_tokens += fitted.trained_tokens
    return fitted


class Renderings:
    """Each example rendered once per run: the data doctor's token checks and training read the
    same `Tokenized` (rendering through the chat template is most of the data work)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.done: dict[int, tuple[Example, Tokenized | RenderError]] = {}  # by id(example); the example is kept

    def __call__(self, example: Example) -> Tokenized:
        """`render_example(tokenizer, example)`, from the first call's result; raises its RenderError."""
        key = id(example)
        if key not in self.done:
            try:
                self.done[key] = (example, render_example(self.tokenizer, example))
            except RenderError as exc:
                self.done[key] = (example, exc)
        result = self.done[key][1]
        if isinstance(result, RenderError):
            raise result
        return result


def tokenize_examples(tokenizer, examples: list[Example], max_length: int, policy: str,
                      render: Renderings | None = None) -> tuple[list[Tokenized], LengthReport]:
    """Render each example (through `render` where the run already has one) and apply the length policy."""
    report = LengthReport(policy=policy, max_length=max_length, examples=len(examples))
    render = render or Renderings(tokenizer)
    items = []
    for example in examples:
        try:
            item = render(example)
        except RenderError as exc:
            raise HoneError(f"{example.source}:{example.line}: {exc}") from None
        fitted = apply_length_policy(item, max_length, policy, report)
        if fitted is not None:
            items.append(fitted)
    return items, report
