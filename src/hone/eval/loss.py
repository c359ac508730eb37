"""Loss and perplexity on the assistant tokens of the evaluation examples.

Reuses the training loop's `evaluate`, so eval loss here is the very number training
logged as `eval_loss` (same masks, same token weighting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hone.data.dataset import tokenize_examples
from hone.data.formats import Example
from hone.data.render import Tokenized
from hone.train.loop import Setup, evaluate


@dataclass
class LossResult:
    loss: float
    """Mean next-token cross-entropy (nats per token) over the scored tokens."""
    perplexity: float
    tokens: int
    """Tokens scored."""


def score_items(model, pad_id: int, device, compute_dtype, items: list[Tokenized], batch_size: int = 8) -> LossResult:
    """Token-weighted mean loss of `items` (labels mark the tokens scored)."""
    tokens = sum(item.trained_tokens for item in items)
    if not tokens:
        return LossResult(math.nan, math.nan, 0)
    setup = Setup(model, pad_id, device, compute_dtype, run_dir=Path("."))
    loss = evaluate(setup, items, batch_size)
    return LossResult(loss, math.exp(min(loss, 50.0)), tokens)


def assistant_loss(model, tokenizer, examples: list[Example], device, compute_dtype, max_length: int = 2048, batch_size: int = 8) -> LossResult:
    """Loss on what the model is trained to say: assistant turns (or completions) only."""
    items, _ = tokenize_examples(tokenizer, examples, max_length, "truncate")
    return score_items(model, tokenizer.pad_token_id, device, compute_dtype, items, batch_size)
