"""Per-answer pieces of decoding: choosing the next token, and turning the tokens so far into
text that is safe to send (never half a character, never the start of a stop string)."""

from __future__ import annotations

import torch

from hone.serve.schema import JsonConstraint


def sample(logits: torch.Tensor, params, generator: torch.Generator | None, constraint: JsonConstraint | None) -> int:
    """The next token from one row's logits (`V`): greedy at temperature 0, else nucleus
    sampling from `params.top_p` of the mass, drawn from the answer's own generator."""
    if constraint is not None:
        allowed = constraint.mask()
        logits = logits.masked_fill(~allowed[: logits.shape[0]], float("-inf"))
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1:
        ordered, order = probs.sort(descending=True)
        # drop a token once the mass before it already reaches top_p (the first always stays)
        outside = ordered.cumsum(0) - ordered >= params.top_p
        probs = probs.scatter(0, order[outside], 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))


class Detokenizer:
    """Text of one answer as its tokens arrive, cut at the first stop string."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.sent = 0  # characters of `text` already emitted

    def add(self, ids: list[int], final: bool = False) -> tuple[str, bool]:
        """(new text to send, whether a stop string ended the answer). `final`: no more tokens come."""
        self.text = self.tokenizer.decode(ids, skip_special_tokens=True)
        hit = self._first_stop()
        if hit is not None:
            out, self.sent = self.text[self.sent:hit], hit
            self.text = self.text[:hit]
            return out, True
        end = len(self.text)
        if not final:
            while end > self.sent and self.text[end - 1] == "\ufffd":  # a character split across tokens
                end -= 1
            end -= self._held_back(end)
        out, self.sent = self.text[self.sent:end], end
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out

    def _first_stop(self) -> int | None:
        start = max(0, self.sent - self.longest)
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def _held_back(self, end: int) -> int:
        """Characters at the end of the text that could begin a stop string: kept until decided."""
        for size in range(min(self.longest - 1, end - self.sent), 0, -1):
            tail = self.text[end - size:end]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0
