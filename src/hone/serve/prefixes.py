"""Keys and values of recent prompts, so a new prompt that starts the same way (the same system
prompt and chat-template header, the same few-shot examples) prefills only what differs.

Per served model (an adapter changes every layer's keys and values), the last prompts are kept
whole, least recently used first out, up to a number of tokens in all. A prompt reuses the
longest start it shares with any of them, always leaving its last token to run (its logits
give the first answer token). A prompt's cached keys depend only on the tokens before them
(causal attention), so reusing them changes nothing but rounding. What vLLM calls automatic
prefix caching, sized for a CPU: a linear scan over a handful of prompts, no hashing of blocks.
"""

from __future__ import annotations

import collections

import torch

MIN_REUSE = 8  # tokens: below this the bookkeeping costs more than the prefill it saves


class PrefixStore:
    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.tokens = 0
        self.entries: collections.OrderedDict[tuple[str, tuple[int, ...]], list[tuple[torch.Tensor, torch.Tensor]]] = (
            collections.OrderedDict())
        self.reused = 0  # prompt tokens not prefilled thanks to the store

    def find(self, model: str, prompt: list[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """(tokens reused, per-layer (keys, values) `heads, tokens, dim`) for `prompt` on `model`; (0, None): none."""
        best, found = 0, None
        for key in self.entries:
            if key[0] == model:
                shared = _shared_start(key[1], prompt)
                if shared > best:
                    best, found = shared, key
        best = min(best, len(prompt) - 1)
        if best < MIN_REUSE:
            return 0, None
        self.entries.move_to_end(found)
        self.reused += best
        return best, [(k[:, :best], v[:, :best]) for k, v in self.entries[found]]

    def add(self, model: str, prompt: list[int], pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep `prompt`'s per-layer (keys, values), each `heads, len(prompt), dim` (tensors of their own, not views)."""
        if self.max_tokens < len(prompt) or len(prompt) < MIN_REUSE:
            return
        key = (model, tuple(prompt))
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = pairs
        self.tokens += len(prompt)
        while self.tokens > self.max_tokens:
            (_, old), _ = self.entries.popitem(last=False)
            self.tokens -= len(old)


def _shared_start(a: tuple[int, ...], b: list[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return min(len(a), len(b))
