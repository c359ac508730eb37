"""Rewards for online RL (`rl.rewards`): built-ins, a user's `module:function`, a reward model,
combined as a weighted sum.

Each entry of `rl.rewards` is `{name, weight, args}`. `name` is a built-in of `BUILT_INS`, or
`module:function` for a function of your own called as `function(completion, reference, **args)
-> float` (the completion's text and the example's reference answer, as `eval.metrics`
functions are), or `reward_model` for a model trained with `train.objective: reward`
(`args: {path: RUN}`). Every built-in scores one completion at a time and is pure:

    json_valid       1 when the completion parses as JSON (a ```json fence allowed), else 0
    json_schema      1 when it parses and satisfies the schema file `args.schema`, else 0
    field_match      the share of the reference JSON object's fields the completion has equal
    regex            1 when the stripped completion fully matches `args.pattern`, else 0
    length_penalty   -(characters beyond `args.max_chars`) / `args.max_chars`, 0 within it
                     (default max_chars: the reference's length)
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

import torch

from hone.data.json_answer import field_matches, load_schema_validator, try_json
from hone.errors import HoneError
from hone.model.reward_model import load_reward_model, score_answers

KEY = "rl.rewards"
REWARD_MODEL = "reward_model"


# --- the built-ins: (completion, reference, **args) -> float ---

def json_valid(completion: str, reference: str) -> float:
    return float(try_json(completion)[0])


def regex(completion: str, reference: str, pattern: re.Pattern) -> float:
    return float(bool(pattern.fullmatch(completion.strip())))


def field_match(completion: str, reference: str) -> float:
    ok, expected = try_json(reference)
    if not ok or not isinstance(expected, dict) or not expected:
        return 0.0
    matches = field_matches(try_json(completion)[1], expected)
    return sum(matches.values()) / len(matches)


def length_penalty(completion: str, reference: str, max_chars: int | None = None) -> float:
    limit = max_chars or max(len(reference), 1)
    return -max(0, len(completion) - limit) / limit


def schema_valid(completion: str, reference: str, validator) -> float:
    ok, value = try_json(completion)
    return float(ok and validator.is_valid(value))


def compile_pattern(where: str, pattern: str | None = None) -> dict:
    if not isinstance(pattern, str):
        raise HoneError(f"{where}: the regex reward needs args.pattern", f"add args: {{pattern: '...'}} to {where}")
    try:
        return {"pattern": re.compile(pattern, re.DOTALL)}
    except re.error as exc:
        raise HoneError(f"{where}: args.pattern {pattern!r} is not a valid regular expression ({exc})") from None


def schema_args(where: str, schema: str | None = None) -> dict:
    if not schema:
        raise HoneError(f"{where}: the json_schema reward needs args.schema", f"add args: {{schema: FILE.json}} to {where}")
    return {"validator": load_schema_validator(schema)}


def length_args(where: str, max_chars: int | None = None) -> dict:
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise HoneError(f"{where}: args.max_chars {max_chars!r} is not a positive integer", "e.g. args: {max_chars: 200}")
    return {"max_chars": max_chars}


def no_args(where: str) -> dict:
    return {}


@dataclass(frozen=True)
class BuiltIn:
    score: Callable[..., float]
    """(completion, reference, **prepared) -> float."""
    prepare: Callable[..., dict]
    """(where, **args) -> the keyword arguments of `score`, checked once (a bad one is a HoneError)."""


BUILT_INS: dict[str, BuiltIn] = {
    "json_valid": BuiltIn(json_valid, no_args),
    "json_schema": BuiltIn(schema_valid, schema_args),
    "field_match": BuiltIn(field_match, no_args),
    "regex": BuiltIn(regex, compile_pattern),
    "length_penalty": BuiltIn(length_penalty, length_args),
}


# --- the entries of rl.rewards ---

Scorer = Callable[[list[str], list], list[float]]
"""(completion texts, their prompt items (`.reference`, `.example`)) -> one reward per completion."""


@dataclass
class Reward:
    name: str
    weight: float
    score: Scorer


def per_completion(function: Callable[..., float], kwargs: dict, name: str) -> Scorer:
    def score(completions: list[str], items: list) -> list[float]:
        out = []
        for completion, item in zip(completions, items):
            try:
                out.append(float(function(completion, item.reference, **kwargs)))
            except HoneError:
                raise
            except Exception as exc:  # a user's function: say which one failed and how
                raise HoneError(f"reward {name} raised {type(exc).__name__}: {exc}", "fix the reward function") from None
        return out
    return score


def load_function(where: str, reference: str) -> Callable:
    """`package.module:function` -> the function; a one-line HoneError when it is not there."""
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise HoneError(f"{where}: {reference!r} is not of the form module:function", "e.g. name: myrewards:concise")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HoneError(f"{where}: cannot import {module_name} for {reference} ({exc})",
                        "put the module on PYTHONPATH or in the working directory") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise HoneError(f"{where}: module {module_name} has no function {function_name}",
                        f"define {function_name}(completion, reference, **args) -> float in {module_name}")
    return function


def reward_model_scorer(where: str, path: str | None = None, batch_size: int = 8) -> Scorer:
    """Scores from a reward model (`train.objective: reward`), read at the last token of the
    prompt + completion rendered with the chat template, as `hone score` reads them."""
    if not path:
        raise HoneError(f"{where}: the reward_model reward needs args.path", f"add args: {{path: RUN}} to {where}")
    model = load_reward_model(path)

    def score(completions: list[str], items: list) -> list[float]:
        answers = [[{"role": "assistant", "content": text}] for text in completions]
        values = score_answers(model, [item.example for item in items], answers, batch_size)
        return [float(v) for v in values]
    return score


def build_reward(index: int, entry) -> Reward:
    where = f"{KEY}[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise HoneError(f"{where}: {entry!r} is not a mapping with a name", "e.g. - {name: json_valid, weight: 1.0}")
    unknown = sorted(set(entry) - {"name", "weight", "args"})
    if unknown:
        raise HoneError(f"unknown key {where}.{unknown[0]}", "an entry holds name, weight and args")
    name, weight, args = str(entry["name"]), entry.get("weight", 1.0), entry.get("args") or {}
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise HoneError(f"{where}.weight: {weight!r} is not a number", f"set {where}.weight to a number, e.g. 1.0")
    if not isinstance(args, dict):
        raise HoneError(f"{where}.args: {args!r} is not a mapping", "e.g. args: {pattern: '...'}")
    where = f"{where} ({name})"
    if name == REWARD_MODEL:
        return Reward(name, float(weight), call_with(reward_model_scorer, where, args))
    if ":" in name:
        return Reward(name, float(weight), per_completion(load_function(where, name), args, name))
    if name not in BUILT_INS:
        raise HoneError(f"{KEY}[{index}].name: unknown reward {name!r}",
                        f"use one of {', '.join([*BUILT_INS, REWARD_MODEL])}, or module:function")
    built_in = BUILT_INS[name]
    return Reward(name, float(weight), per_completion(built_in.score, call_with(built_in.prepare, where, args), name))


def call_with(function: Callable, where: str, args: dict):
    try:
        return function(where, **args)
    except TypeError:
        raise HoneError(f"{where}: unexpected args {sorted(args)}", "see the reward's args in hone.train.rewards") from None


def build_rewards(entries: list) -> list[Reward]:
    """The rewards of `rl.rewards`, each named for the log by its function's name (a name used
    twice gets its index: `regex_2`)."""
    if not entries:
        raise HoneError(f"{KEY} is empty: nothing to reward", f"set {KEY}, e.g. [{{name: json_valid, weight: 1.0}}]")
    rewards = [build_reward(i, entry) for i, entry in enumerate(entries)]
    labels = [reward.name.rpartition(":")[2] for reward in rewards]
    for i, reward in enumerate(rewards):
        reward.name = labels[i] if labels.count(labels[i]) == 1 else f"{labels[i]}_{i}"
    return rewards


def score_completions(rewards: list[Reward], completions: list[str], items: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted sum of the rewards (N,) fp32, each reward's values by name (N,))."""
    each = {reward.name: torch.tensor(reward.score(completions, items), dtype=torch.float32) for reward in rewards}
    total = sum(reward.weight * each[reward.name] for reward in rewards)
    return total, each
