"""`hone advise` and `hone plan`: turn flags, an answers file or a questionnaire into Answers; print."""

from __future__ import annotations

import dataclasses
import json
import sys
import typing

from hone.config import build, read_yaml
from hone.data.dataset import read_examples
from hone.errors import HoneError
from hone.plan.advise import GOALS, Answers, advise

QUESTIONS = {
    "needs_current_knowledge": "Does the task need current information or internal documents the model has not seen?",
    "frequently_changing": "Does that information change often (prices, policies, inventory)?",
    "goal": f"What should change? ({'/'.join(GOALS)})",
    "prompt_works": "Does a good prompt already give acceptable results?",
    "n_examples": "How many good input -> output examples do you have? (a number, or a path to a dataset)",
    "clear_examples": "Can you write down the correct answer for a typical input?",
    "complex_reasoning": "Does the task depend on long multi-step reasoning?",
    "rarely_used": "Will this feature be used rarely (a handful of calls a day)?",
    "gpu_memory_gb": "Memory of the largest GPU you can use, in GB (0 = CPU only)?",
    "model_params_b": "Size of the base model you have in mind, in billions of parameters?",
    "low_latency": "Must answers be fast or cheap per call?",
    "low_budget": "Is the training budget tight (one consumer GPU)?",
    "license_allows": "Does the base model's license allow your intended use?",
    "many_tasks": "Will one base serve many tasks, each with its own small adapter?",
    "keep_lower_layers": "Is the task close to what the base already does (keep its lower layers as they are)?",
    "lora_underfits": "Did an earlier LoRA run underfit?",
}


def build_answers(raw: dict) -> Answers:
    """Answers from a dict (answers file or flags), checking keys and types like the run config does.
    An `n_examples` that is a path (`--n-examples data.jsonl`) is the dataset to count."""
    if isinstance(raw.get("n_examples"), str):
        raw = {**raw, "dataset": raw["n_examples"], "n_examples": 0}
    answers = build(Answers, raw, prefix="")
    if answers.dataset:
        answers.n_examples = count_examples(answers.dataset)
    return answers


def count_examples(path: str) -> int:
    """Usable examples in a dataset, counted by hone's own reader (bad rows are not counted);
    a missing file, or one with no usable example, is a HoneError."""
    from pathlib import Path

    if not Path(path).is_file():
        raise HoneError(f"dataset not found: {path}", "pass a number of examples, or the path of a .jsonl/.csv/.parquet file")
    loaded = read_examples(path)
    if not loaded.examples:
        first = loaded.problems[0] if loaded.problems else None
        where = f" (first problem, line {first.line}: {first.reason})" if first else " (the file is empty)"
        raise HoneError(f"{path}: no usable examples{where}", f"run `hone check {path}` to see every problem")
    return len(loaded.examples)


def ask(ask_line=input) -> dict:
    """The interactive questionnaire: one question per field, Enter keeps the default."""
    raw: dict = {}
    defaults = Answers()
    hints = typing.get_type_hints(Answers)
    for name, question in QUESTIONS.items():
        default = getattr(defaults, name)
        while True:
            reply = ask_line(f"{question} [{_show(default)}] ").strip()
            if not reply:
                break
            try:
                raw.update(_parse(name, reply, hints[name]))
                break
            except ValueError as exc:
                print(f"  {exc}")
    return raw


def _show(value) -> str:
    return {True: "y", False: "n"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def _parse(name: str, reply: str, hint) -> dict:
    if hint is bool:
        if reply.lower() in ("y", "yes", "true", "1"):
            return {name: True}
        if reply.lower() in ("n", "no", "false", "0"):
            return {name: False}
        raise ValueError("answer y or n")
    if name == "n_examples" and not reply.isdigit():
        return {"dataset": reply}
    if name == "goal":
        if reply not in GOALS:
            raise ValueError(f"one of {', '.join(GOALS)}")
        return {name: reply}
    try:
        return {name: int(reply) if hint is int else float(reply)}
    except ValueError:
        raise ValueError("a number, please") from None


def advise_command(answers_file: str | None, flags: dict, as_json: bool, interactive: bool) -> int:
    raw = read_yaml(answers_file) if answers_file else {}
    raw.update({k: v for k, v in flags.items() if v is not None})
    if not raw and interactive:
        raw = ask()
    advice = advise(build_answers(raw))
    print(json.dumps(advice.to_dict(), indent=1) if as_json else advice.text())
    return 0


def advise_flags(parser) -> None:
    """One --flag per Answers field (booleans take yes/no)."""
    for f in dataclasses.fields(Answers):
        hint = typing.get_type_hints(Answers)[f.name]
        flag = "--" + f.name.replace("_", "-")
        if hint is bool:
            parser.add_argument(flag, dest=f.name, type=_yes_no, default=None, metavar="yes|no", help=_doc(f.name))
        elif f.name == "goal":
            parser.add_argument(flag, dest=f.name, choices=GOALS, default=None, help=_doc(f.name))
        elif f.name == "n_examples":  # a count, or a dataset whose usable examples are counted
            parser.add_argument(flag, dest=f.name, type=_count_or_path, default=None, metavar="N|PATH", help=_doc(f.name))
        else:
            kind = {int: int, float: float}.get(hint, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=_doc(f.name))


def _count_or_path(value: str) -> int | str:
    """`800` -> 800; anything else is a dataset path, counted (or refused) by build_answers."""
    return int(value) if value.isdigit() else value


def _yes_no(value: str) -> bool:
    if value.lower() in ("y", "yes", "true", "1"):
        return True
    if value.lower() in ("n", "no", "false", "0"):
        return False
    raise ValueError(value)


def _doc(name: str) -> str:
    return QUESTIONS.get(name, "a dataset file whose usable examples are counted" if name == "dataset" else name)


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
