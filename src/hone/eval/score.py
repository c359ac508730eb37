"""Reward models: load one as transformers and PEFT save it, and rate answers with it.

A reward model is either a whole `*ForSequenceClassification` folder with one label (what
`AutoModelForSequenceClassification` loads), or a PEFT adapter with task_type SEQ_CLS whose
score head is in `modules_to_save`, over the base its adapter_config names. hone's
`train.objective: reward` writes both (hone.train.reward); any other trainer's (TRL's
RewardTrainer) load the same way.

The reward of an answer is the score head on the last token of prompt + answer rendered with
the chat template exactly as reward training rendered it (`hone.data.pairs.render_answer`).
The last token is found from each row's length, not from the pad id as transformers' pooling
does, so a template that ends on the pad token is scored where training scored it.
"""

from __future__ import annotations

import numpy as np

from hone.data.formats import Example
from hone.errors import HoneError
from hone.eval.stats import bootstrap_ci
from hone.model.reward_model import RewardModel, answer_ids, load_reward_model, rewards, score_answers  # noqa: F401 - this module's API too


# ---- `hone score` -----------------------------------------------------------------------------

def score_examples(reward: RewardModel, examples: list[Example], batch_size: int = 8,
                   max_length: int | None = None) -> list[dict]:
    """One row per example: a pair's two rewards and margin, an unpaired row's reward and label,
    or a conversation's (or completion's) final answer's reward."""
    kinds = {e.kind for e in examples}
    if kinds - {"preference", "unpaired", "chat", "completion"}:
        raise HoneError("plain-text rows have no answer to score", "give preference pairs, unpaired rows, chat or prompt/completion data")
    answers, owners = [], []
    for index, example in enumerate(examples):
        for side in candidate_answers(example):
            answers.append(side)
            owners.append(index)
    scores = score_answers(reward, [examples[i] for i in owners], answers, batch_size, max_length)
    per_example: dict[int, list] = {}
    for index, value in zip(owners, scores):
        per_example.setdefault(index, []).append(value)
    return [score_row(example, per_example[index]) for index, example in enumerate(examples)]


def candidate_answers(example: Example) -> list[list[dict] | str]:
    if example.kind == "preference":
        return [example.chosen, example.rejected]
    if example.kind == "unpaired":
        return [example.answer]
    if example.kind == "completion":
        return [example.completion]
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    return [example.messages[last:]]


def score_row(example: Example, values: list[float | None]) -> dict:
    row = {"line": example.line}
    if example.kind == "preference":
        chosen, rejected = values
        margin = None if chosen is None or rejected is None else chosen - rejected
        return {**row, "chosen_reward": chosen, "rejected_reward": rejected, "margin": margin}
    if example.kind == "unpaired":
        return {**row, "label": example.label, "reward": values[0]}
    return {**row, "reward": values[0]}


def summarize_scores(rows: list[dict], samples: int = 2000, seed: int = 0) -> dict:
    """Pairs: accuracy (chosen above rejected) with a bootstrap CI and the mean margin; unpaired rows:
    mean reward per label and AUC; answers: mean, min and max reward. Rows too long to score are counted."""
    margins = [r["margin"] for r in rows if r.get("margin") is not None]
    if "margin" in (rows[0] if rows else {}):
        right = [1.0 if m > 0 else 0.0 for m in margins]
        low, high = bootstrap_ci(right, samples, seed=seed)
        return {"pairs": len(rows), "scored": len(margins), "accuracy": _mean(right), "ci_low": low, "ci_high": high,
                "mean_margin": _mean(margins)}
    scored = [r for r in rows if r.get("reward") is not None]
    values = [r["reward"] for r in scored]
    summary = {"rows": len(rows), "scored": len(scored), "mean_reward": _mean(values),
               "min_reward": min(values, default=None), "max_reward": max(values, default=None)}
    if scored and "label" in scored[0]:
        good = [r["reward"] for r in scored if r["label"]]
        bad = [r["reward"] for r in scored if not r["label"]]
        summary |= {"desirable_mean": _mean(good), "undesirable_mean": _mean(bad), "auc": auc(good, bad)}
    return summary


def auc(positive: list[float], negative: list[float]) -> float | None:
    """P(a random desirable answer outranks a random undesirable one), ties counting half."""
    if not positive or not negative:
        return None
    neg = np.sort(np.asarray(negative))
    pos = np.asarray(positive)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def format_summary(summary: dict) -> str:
    skipped = summary.get("pairs", summary.get("rows", 0)) - summary["scored"]
    note = f" ({skipped} over --max-length skipped)" if skipped else ""
    if "accuracy" in summary:
        return (f"{summary['scored']} pairs{note}: chosen scored above rejected in {summary['accuracy']:.1%} "
                f"(95% CI {summary['ci_low']:.1%}-{summary['ci_high']:.1%}), mean margin {summary['mean_margin']:+.3f}")
    line = f"{summary['scored']} answers{note}: mean reward {summary['mean_reward']:+.3f} " \
           f"(min {summary['min_reward']:+.3f}, max {summary['max_reward']:+.3f})"
    if summary.get("auc") is not None:
        line += (f"; desirable {summary['desirable_mean']:+.3f} vs undesirable {summary['undesirable_mean']:+.3f}, "
                 f"AUC {summary['auc']:.3f}")
    return line
