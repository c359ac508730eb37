"""Objectives: how examples become a batch, and how a batch becomes a loss.

The training loop (`hone.train.loop`) talks only to this seam, so checkpointing, resume, the
divergence guard, early stopping and eval scheduling work the same whatever is optimised.
An objective is any object with:

    name                                  the `train.objective` key that selects it
    count(item) -> int                    what `item` adds to the step's normaliser (e.g. scored tokens)
    batch(items, pad_id, layout) -> dict  a batch of tensors; layout is "pack" (one padding-free
                                          row, see hone.data.collate.pack_batch) or "pad"
    loss(model, batch) -> Loss            summed loss, its count, summed metrics

The loop divides the summed loss (and each summed metric) by the step's total count, so
gradient accumulation, batch size and row splitting never change what is optimised. Items
only need an `input_ids` list: its length is what batching and packing measure.

Causal-LM cross-entropy over labelled tokens is the first objective: SFT and pre-training
both run on it. A new objective is a new module with one `register(...)` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from hone.data.collate import PACK_MULTIPLE, pack_batch, pad_batch
from hone.data.dataset import tokenize_examples
from hone.data.render import IGNORE
from hone.registry import Registry
from hone.train.loss import token_loss


@dataclass
class Loss:
    total: torch.Tensor
    """Summed loss over the batch (a scalar the loop backpropagates, divided by the step's count)."""
    count: int
    """Units summed in `total` (scored tokens, pairs, ...)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Summed per-unit metrics; the loop logs each divided by the step's count."""


class Objective(Protocol):
    name: str

    def count(self, item: Any) -> int: ...

    def batch(self, items: list[Any], pad_id: int, layout: str) -> dict[str, torch.Tensor]: ...

    def loss(self, model, batch: dict[str, torch.Tensor]) -> Loss: ...


class CausalLM:
    """Next-token cross-entropy over labelled positions (SFT's assistant turns, every token in
    pre-training), with hone's fused head: logits never held for the whole batch."""

    name = "causal_lm"

    def count(self, item) -> int:
        return sum(1 for label in item.labels[1:] if label != IGNORE)  # nothing predicts token 0

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        return pack_batch(items, pad_id, PACK_MULTIPLE) if layout == "pack" else pad_batch(items, pad_id)

    def loss(self, model, batch) -> Loss:
        total, count = token_loss(model, batch)
        return Loss(total, count)


OBJECTIVES: Registry[Objective] = Registry("train.objective", "objective")
"""Every objective `train.objective` accepts, by name."""


def register(objective: Objective) -> Objective:
    """Make `objective` selectable as `train.objective: <its name>` (a name may be registered once)."""
    return OBJECTIVES.add(objective.name, objective)


def unregister(name: str) -> None:
    OBJECTIVES.remove(name)


def get(name: str) -> Objective:
    """The objective named `name`; a HoneError naming `train.objective` when there is none."""
    return OBJECTIVES.find(name)


# Optional parts of an objective, each with the default that causal LM uses:
#   tokenize(tokenizer, examples, max_length, policy, render) -> (items, LengthReport)
#       how its examples become items (default: SFT rendering, `hone.data.dataset.tokenize_examples`)
#   start(setup, config, train, evals, resume) -> setup
#       before the first step: read its settings, add modules, compute what it needs once
#   save(model, run_dir, config)
#       write the trained model its own way (default: the method's `save`)
#   watch_eval(record)
#       see each evaluation's `eval_*` metrics (warnings about trends)
#   check(config)
#       before any data or weights are read: refuse settings that cannot work (a one-line HoneError)
#   begin_step(step)
#       the optimizer step about to run (1-based; a resumed run goes on counting): what online
#       RL seeds its samples with, so a resumed run samples as an uninterrupted one would

def check_settings(objective: Objective, config) -> None:
    """The objective's own `check(config)`, when it has one (`hone train` calls it first)."""
    check = getattr(objective, "check", None)
    if check:
        check(config)


def tokenizer_of(objective: Objective):
    """How `objective`'s examples are tokenized."""
    return getattr(objective, "tokenize", tokenize_examples)


def started(setup, config, train: list, evals: list, resume: bool):
    """`setup` after the objective's `start` (unchanged when it has none)."""
    start = getattr(setup.objective, "start", None)
    return start(setup, config, train, evals, resume) if start else setup


CAUSAL_LM = register(CausalLM())
