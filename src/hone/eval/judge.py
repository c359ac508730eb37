"""Optional LLM-as-judge: a local judge model picks the better of two answers.

Each pair is shown in both orders (base first, then tuned first) and the judge's
probability for "A" vs "B" is read from its next-token logits, so no sampling is involved
and a judge that always prefers the first answer ends up at exactly 0.5.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hone.data.collate import pad_batch
from hone.data.formats import Example
from hone.data.render import Tokenized, reference_answer
from hone.eval.models import load_for_eval
from hone.eval.stats import bootstrap_ci

DEFAULT_RUBRIC = ("You compare two answers to the same request. Prefer the answer that is correct, follows the "
                  "requested format exactly, and is complete without padding. Reply with a single letter: A or B.")


def judge_prompt(tokenizer, rubric: str, request: str, reference: str, first: str, second: str) -> list[int]:
    question = (f"Request:\n{request}\n\nReference answer:\n{reference}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
                "Which answer is better, A or B?")
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": rubric}, {"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(f"{rubric}\n\n{question}\nBetter answer:", add_special_tokens=True)["input_ids"]


@torch.inference_mode()
def prob_first(model, tokenizer, prompts: list[list[int]], batch_size: int = 8) -> list[float]:
    """P("A") / (P("A") + P("B")) as the judge's next token, per prompt."""
    letter_a = tokenizer("A", add_special_tokens=False)["input_ids"][0]
    letter_b = tokenizer("B", add_special_tokens=False)["input_ids"][0]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = pad_batch([Tokenized(p, p) for p in prompts[start : start + batch_size]], pad_id, padding_side="left")
        mask = batch["attention_mask"].to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, position_ids=positions).logits[:, -1]  # B, V
        pair = torch.stack([logits[:, letter_a], logits[:, letter_b]], dim=-1).float().softmax(-1)  # B, 2
        out += pair[:, 0].tolist()
    return out


def judge_pairwise(judge: str, examples: list[Example], baseline: list[str], tuned: list[str], rubric: str | None = None) -> dict:
    """Preference for the tuned answers by `judge` (path or hub id), averaged over both orders."""
    loaded = load_for_eval(judge)
    rubric_text = Path(rubric).read_text() if rubric and Path(rubric).is_file() else rubric or DEFAULT_RUBRIC
    tok = loaded.tokenizer
    requests = [_request(e) for e in examples]
    refs = [reference_answer(e) for e in examples]
    base_first = prob_first(loaded.model, tok, [judge_prompt(tok, rubric_text, q, r, b, t) for q, r, b, t in zip(requests, refs, baseline, tuned)])
    tuned_first = prob_first(loaded.model, tok, [judge_prompt(tok, rubric_text, q, r, t, b) for q, r, b, t in zip(requests, refs, baseline, tuned)])
    return summarize_judgements(judge, base_first, tuned_first)


def summarize_judgements(judge: str, base_first: list[float], tuned_first: list[float]) -> dict:
    """base_first[i]: P(judge picks A) with base as A; tuned_first[i]: the same with tuned as A."""
    # Tuned is B in the first order and A in the second: average the two views.
    preference = [((1 - a) + b) / 2 for a, b in zip(base_first, tuned_first)]
    tuned_wins = sum(1 for a, b in zip(base_first, tuned_first) if a < 0.5 and b > 0.5)
    baseline_wins = sum(1 for a, b in zip(base_first, tuned_first) if a > 0.5 and b < 0.5)
    low, high = bootstrap_ci(preference) if preference else (float("nan"), float("nan"))
    first_bias = sum((a + b) / 2 for a, b in zip(base_first, tuned_first)) / max(1, len(preference)) - 0.5
    return {"judge": judge, "n": len(preference), "tuned_preference": sum(preference) / max(1, len(preference)),
            "ci_low": low, "ci_high": high, "tuned_wins": tuned_wins, "baseline_wins": baseline_wins,
            "ties": len(preference) - tuned_wins - baseline_wins, "first_position_bias": first_bias,
            "per_example": preference}


def _request(example: Example) -> str:
    if example.kind == "completion":
        return example.prompt
    return "\n".join(m.get("content") or "" for m in example.messages if m["role"] == "user")
