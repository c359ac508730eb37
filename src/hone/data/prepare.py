"""A run's data, prepared once: read, split, rendered and tokenized, then handed down to the
plan, training and the comparison (`hone.pipeline` wires it; nothing reads the files again)."""

from __future__ import annotations

from dataclasses import dataclass

from hone.config import DataArgs
from hone.data.dataset import LengthReport, Loaded, Renderings, read_examples, require_clean, tokenize_examples
from hone.data.formats import Example
from hone.data.render import Tokenized
from hone.data.split import split_examples
from hone.errors import HoneError


@dataclass
class RunData:
    """A run's data, read once and tokenized once, handed down to the plan, training and the
    comparison with the base model."""

    train_examples: list[Example]
    eval_examples: list[Example]
    train: list[Tokenized]
    evals: list[Tokenized]
    reports: dict[str, LengthReport]
    tokenizer: object
    """The tokenizer that rendered them (the run saves it, and renders its replay data with it)."""


def prepare_run_data(args: DataArgs, seed: int, tokenizer, loaded: dict[str, Loaded] | None = None,
                     render: Renderings | None = None, tokenize=tokenize_examples) -> RunData:
    """Examples of `args.train` and `args.eval` (from `loaded` where the run read them already),
    the held-out split when there is no eval file, tokenized with the length policy applied.
    `tokenize`: how the objective's examples become items (SFT rendering by default; preference
    pairs for DPO and its family, see `hone.train.objectives.tokenizer_of`).
    Unusable rows stop the run with the first one named (`hone check` lists them all)."""
    if not args.train:
        raise HoneError("no training data given", "set data.train=PATH in the config or on the command line")
    loaded = loaded or {}

    def examples_of(path: str) -> list[Example]:
        return require_clean(loaded.get(str(path)) or read_examples(path), path)

    train_examples = examples_of(args.train)
    if args.eval:
        eval_examples = examples_of(args.eval)[: args.max_eval_examples]
    else:
        train_examples, eval_examples = split_examples(train_examples, args.eval_fraction, seed, args.max_eval_examples)
    render = render or Renderings(tokenizer)
    train, train_report = tokenize(tokenizer, train_examples, args.max_length, args.overlength, render)
    evals, eval_report = tokenize(tokenizer, eval_examples, args.max_length, args.overlength, render)
    if not train:
        raise HoneError(f"{args.train}: no example is left to train on after the length policy",
                        "raise data.max_length or set data.overlength=truncate")
    return RunData(train_examples, eval_examples, train, evals, {"train": train_report, "eval": eval_report}, tokenizer)
