"""`hone check DATA --show N`: examples as the model sees them, trained tokens highlighted."""

from __future__ import annotations

from hone.data.check.views import SFT_KINDS
from hone.data.formats import Example
from hone.data.render import IGNORE, RenderError, render_example

GREEN, RESET = "\033[1;32m", "\033[0m"


def show_example(tokenizer, example: Example, colour: bool) -> str:
    """The rendered text with trained spans in green (TTY) or between [[ and ]] (elsewhere)."""
    try:
        item = render_example(tokenizer, example)
    except RenderError as exc:
        return f"(cannot render: {exc})"
    parts, run, trained = [], [], False
    for token, label in zip(item.input_ids, item.labels):
        if (label != IGNORE) != trained and run:
            parts.append(_span(tokenizer.decode(run), trained, colour))
            run = []
        trained = label != IGNORE
        run.append(token)
    if run:
        parts.append(_span(tokenizer.decode(run), trained, colour))
    return "".join(parts)


def _span(text: str, trained: bool, colour: bool) -> str:
    if not trained:
        return text
    return f"{GREEN}{text}{RESET}" if colour else f"[[{text}]]"


def show_examples(tokenizer, examples: list[Example], count: int, colour: bool) -> str:
    shown = [e for e in examples if e.kind in SFT_KINDS][:count]
    blocks = []
    for example in shown:
        header = f"--- {example.source}:{example.line} ({example.format}); trained tokens " + \
                 ("in green" if colour else "between [[ and ]]")
        blocks.append(header + "\n" + show_example(tokenizer, example, colour))
    return "\n".join(blocks) if blocks else "(no chat or prompt/completion examples to show)"
