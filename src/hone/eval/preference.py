"""Preference data in `hone compare`: held-out pairs scored by both models, and answers rated by a reward model.

- Preference accuracy: the share of held-out pairs whose chosen answer the model finds more
  likely than the rejected one (summed log-probability of the answer tokens; per token too),
  for base and tuned, paired per pair with a bootstrap CI of the change.
- Implicit reward (DPO's view, with the base as reference): r = beta * (log p_tuned - log p_base)
  of each answer; its accuracy (r_chosen > r_rejected) and mean margin, with bootstrap CIs, and
  the chosen and rejected log-probability trends, flagged when the chosen answer grows less
  likely while the margin rises (both pushed down, the rejected more: a common surprise).
- Win rate: tuned's generated answer against base's, judged by a reward model
  (`eval.reward_model`): wins + ties / 2 per example, with a bootstrap CI.

Generation metrics run on pairs as on chat rows, with the chosen answer as the reference.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hone.data.collate import pad_batch
from hone.data.formats import Example
from hone.data.pairs import render_pair
from hone.data.render import RenderError
from hone.eval.score import load_reward_model, score_answers
from hone.eval.stats import bootstrap_ci, compare_paired
from hone.train.logprobs import sequence_logprobs
from hone.train.loop import Setup, autocast, to_device

PairLogps = tuple[float, float, float, float] | None  # chosen logp, rejected logp, chosen tokens, rejected tokens


def generation_view(example: Example) -> Example | None:
    """The example as generation evaluates it: a pair as its prompt + chosen answer, a desirable
    unpaired row as its prompt + answer; None for an undesirable one (no reference to aim at)."""
    if example.kind == "preference":
        return dataclasses.replace(example, kind="chat", messages=example.messages + example.chosen, chosen=[], rejected=[])
    if example.kind == "unpaired":
        if not example.label:
            return None
        return dataclasses.replace(example, kind="chat", messages=example.messages + example.answer, answer=[], label=None)
    return example


@torch.inference_mode()
def pair_logprobs(loaded, pairs: list[Example], batch_size: int = 8, max_length: int = 4096) -> list[PairLogps]:
    """Per pair, the model's summed log-probabilities of its chosen and rejected answers and their
    token counts; None for a pair the template cannot render or longer than `max_length`."""
    items: list = []
    for example in pairs:
        try:
            pair = render_pair(loaded.tokenizer, example)
        except RenderError:
            pair = None
        fits = pair is not None and max(len(s.input_ids) for s in pair.sequences()) <= max_length
        items.append(pair if fits else None)
    setup = Setup(loaded.model, loaded.tokenizer.pad_token_id, loaded.device, loaded.compute_dtype, run_dir=None)
    kept = [i for i, item in enumerate(items) if item is not None]
    out: list[PairLogps] = [None] * len(pairs)
    for start in range(0, len(kept), batch_size):
        chunk = kept[start : start + batch_size]
        sequences = [items[i].chosen for i in chunk] + [items[i].rejected for i in chunk]
        batch = to_device(pad_batch(sequences, setup.pad_id), setup.device)
        with autocast(setup):
            logps, tokens = sequence_logprobs(loaded.model, batch, len(sequences))
        n = len(chunk)
        for row, index in enumerate(chunk):
            out[index] = (float(logps[row]), float(logps[n + row]), float(tokens[row]), float(tokens[n + row]))
    return out


def preference_report(base: list[PairLogps], tuned: list[PairLogps], beta: float, samples: int, seed: int) -> dict:
    """Every preference number of the comparison, JSON-ready (see the module docstring)."""
    both = [(b, t) for b, t in zip(base, tuned) if b is not None and t is not None]
    if not both:
        return {"pairs": len(base), "scored": 0}

    def right(values, per_token=False):  # 1 where the model finds chosen more likely than rejected
        if per_token:
            return [float(v[0] / max(v[2], 1) > v[1] / max(v[3], 1)) for v in values]
        return [float(v[0] > v[1]) for v in values]

    out = {"pairs": len(base), "scored": len(both), "beta": beta}
    for name, per_token in (("logp_accuracy", False), ("avg_logp_accuracy", True)):
        stats = compare_paired(right([b for b, _ in both], per_token), right([t for _, t in both], per_token), samples, seed)
        out[name] = {**stats.to_dict(), "baseline_ci": list(bootstrap_ci(right([b for b, _ in both], per_token), samples, seed=seed)),
                     "tuned_ci": list(bootstrap_ci(right([t for _, t in both], per_token), samples, seed=seed))}
    chosen = [beta * (t[0] - b[0]) for b, t in both]  # implicit rewards, the base as reference
    rejected = [beta * (t[1] - b[1]) for b, t in both]
    margins = [c - r for c, r in zip(chosen, rejected)]
    accuracy = [float(m > 0) for m in margins]
    out["implicit_reward"] = {
        "accuracy": _mean(accuracy), "accuracy_ci": list(bootstrap_ci(accuracy, samples, seed=seed)),
        "margin": _mean(margins), "margin_ci": list(bootstrap_ci(margins, samples, seed=seed)),
        "chosen_reward": _mean(chosen), "rejected_reward": _mean(rejected)}
    out["logp_change"] = {"chosen": _mean([t[0] - b[0] for b, t in both]), "rejected": _mean([t[1] - b[1] for b, t in both])}
    out["chosen_falls_while_margin_rises"] = out["logp_change"]["chosen"] < 0 and out["implicit_reward"]["margin"] > 0
    return out


def reward_win_rate(reward_model: str, examples: list[Example], baseline: list[str], tuned: list[str],
                    samples: int, seed: int, batch_size: int = 8) -> dict:
    """Tuned's answers against base's by `reward_model`: per example 1 (tuned scored higher), 0.5 (tie)
    or 0, its mean with a bootstrap CI, and the paired reward change."""
    reward = load_reward_model(reward_model)
    base_scores = score_answers(reward, examples, baseline, batch_size)
    tuned_scores = score_answers(reward, examples, tuned, batch_size)
    del reward
    outcomes = [0.5 if t == b else float(t > b) for b, t in zip(base_scores, tuned_scores) if b is not None and t is not None]
    low, high = bootstrap_ci(outcomes, samples, seed=seed)
    change = compare_paired(base_scores, tuned_scores, samples, seed)
    return {"reward_model": reward_model, "n": len(outcomes), "win_rate": _mean(outcomes), "ci_low": low, "ci_high": high,
            "tuned_wins": sum(o == 1.0 for o in outcomes), "baseline_wins": sum(o == 0.0 for o in outcomes),
            "ties": sum(o == 0.5 for o in outcomes), "reward": change.to_dict() if change else None,
            "per_example": {"baseline": base_scores, "tuned": tuned_scores}}


def preference_verdict(preference: dict | None, win: dict | None) -> list[str]:
    """Plain-language lines for the report's verdict."""
    lines = []
    if preference and preference.get("scored"):
        a, r = preference["logp_accuracy"], preference["implicit_reward"]
        lines.append(f"Preference accuracy on {preference['scored']} held-out pairs (chosen more likely than rejected): "
                     f"{a['baseline']:.3f} -> {a['tuned']:.3f} ({a['delta']:+.3f}, 95% CI {a['ci_low']:+.3f} to {a['ci_high']:+.3f}); "
                     f"implicit reward accuracy {r['accuracy']:.3f} (95% CI {r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f}), "
                     f"margin {r['margin']:+.3f}.")
        if preference["chosen_falls_while_margin_rises"]:
            change = preference["logp_change"]
            lines.append(f"Note: the chosen answers grew LESS likely ({change['chosen']:+.2f} nats) while the margin rose; the "
                         f"rejected fell further ({change['rejected']:+.2f}). Common under DPO, but check the answers the tuned "
                         "model writes (an SFT term, preference.sft_weight, holds the chosen answers up).")
    if win and win.get("n"):
        lines.append(f"Win rate of tuned over base by reward model {win['reward_model']}: {win['win_rate']:.3f} "
                     f"(95% CI {win['ci_low']:.3f}-{win['ci_high']:.3f}; 0.5 = no preference; {win['tuned_wins']} wins, "
                     f"{win['ties']} ties, {win['baseline_wins']} losses).")
    return lines


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
