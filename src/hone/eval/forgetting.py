"""Forgetting: perplexity on general text the fine-tune never saw, before and after.

A fine-tune that helps the task but makes the model worse at plain language shows up
here as a perplexity rise on the held-out slice of the general corpus (or the user's text).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from hone.data.render import Tokenized
from hone.errors import HoneError
from hone.eval.loss import LossResult, score_items
from hone.model.load import ASSETS

DEFAULT_GENERAL = ASSETS / "corpus" / "heldout.txt.gz"
DOCUMENT_SEPARATOR = "<|endoftext|>"


@dataclass
class Forgetting:
    baseline_perplexity: float
    tuned_perplexity: float
    relative_change: float
    """(tuned - baseline) / baseline: +0.05 means 5% more perplexed by general text."""
    threshold: float
    flagged: bool
    tokens: int
    text: str


def resolve_general(general: str | None) -> Path | None:
    """The general-text file to use, or None when the check is off (or the default is absent)."""
    if general is None or general == "none":
        return None
    if general == "default":
        return DEFAULT_GENERAL if DEFAULT_GENERAL.is_file() else None
    path = Path(general)
    if not path.is_file():
        raise HoneError(f"general text file not found: {general}", "pass --general a .txt or .txt.gz file, or --general none")
    return path


def read_documents(path: Path) -> list[str]:
    """Documents of a text file; a line holding only `<|endoftext|>` separates documents."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    documents, current = [], []
    for line in text.splitlines():
        if line.strip() == DOCUMENT_SEPARATOR:
            documents.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    documents.append("\n".join(current).strip())
    return [d for d in documents if d]


def text_blocks(tokenizer, documents: list[str], block_size: int = 256, max_tokens: int = 32768) -> list[Tokenized]:
    """Documents joined by eos and cut into blocks; every token after the first is scored."""
    ids: list[int] = []
    for document in documents:
        ids += tokenizer(document, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    return [Tokenized(ids[i : i + block_size], ids[i : i + block_size]) for i in range(0, len(ids), block_size) if len(ids[i : i + block_size]) > 1]


def general_perplexity(model, tokenizer, device, compute_dtype, path: Path, max_tokens: int = 32768, batch_size: int = 8) -> LossResult:
    blocks = text_blocks(tokenizer, read_documents(path), max_tokens=max_tokens)
    return score_items(model, tokenizer.pad_token_id, device, compute_dtype, blocks, batch_size)


def measure_forgetting(baseline: LossResult, tuned: LossResult, threshold: float, text: str) -> Forgetting:
    change = (tuned.perplexity - baseline.perplexity) / baseline.perplexity
    return Forgetting(baseline.perplexity, tuned.perplexity, change, threshold, change > threshold, tuned.tokens, text)
