"""Per-example answer metrics, each a pure function of (prediction, reference).

Every metric is computed per example so that base and tuned can be compared pairwise
(see stats.py); a metric that does not apply to an example (JSON metrics on a plain-text
reference) is None there and left out of its mean.
"""

from __future__ import annotations

import importlib
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from hone.data.json_answer import field_matches, load_schema_validator, parse_json, try_json  # noqa: F401 - also this module's API
from hone.errors import HoneError

ARTICLES = re.compile(r"\b(a|an|the)\b")

LOWER_IS_BETTER = {"eval_loss", "perplexity", "general_perplexity", "empty", "truncated"}
NEUTRAL = {"output_chars", "output_tokens", "examples_per_s"}  # reported, but longer is neither better nor worse
ORDER = ["eval_loss", "perplexity", "exact_match", "normalized_exact_match", "token_f1", "rouge_l", "bleu", "chrf",
         "corpus_bleu", "corpus_chrf", "json_valid", "schema_valid", "field_exact_match", "regex_match",
         "empty", "truncated", "output_tokens", "output_chars", "general_perplexity", "examples_per_s"]
"""Display order of the known metrics (the terminal tables and report.html)."""


def direction(name: str) -> str:
    """Which way `name` improves: `higher`, `lower`, or `neutral` (reported, neither better nor worse)."""
    return "neutral" if name in NEUTRAL else "lower" if name in LOWER_IS_BETTER else "higher"


def sorted_metric_names(names) -> list[str]:
    """Display order: the known metrics first, then per-field and custom ones."""
    names = list(names)
    known = [n for n in ORDER if n in names]
    return known + sorted(n for n in names if n not in ORDER)


# ---- text metrics -------------------------------------------------------------------

def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_text(prediction) == normalize_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the bags of normalised words; 1.0 when both are empty."""
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of normalised words."""
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def sentence_bleu(prediction: str, reference: str) -> float:
    """sacrebleu sentence BLEU on a 0-1 scale (smoothed, so short answers are not all zero)."""
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score / 100


def sentence_chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score / 100


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus-level BLEU and chrF (0-1), the figures papers quote."""
    import sacrebleu

    if not predictions:
        return {}
    return {"corpus_bleu": sacrebleu.corpus_bleu(predictions, [references]).score / 100,
            "corpus_chrf": sacrebleu.corpus_chrf(predictions, [references]).score / 100}


# ---- the per-example scorer ----------------------------------------------------------

TEXT_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "normalized_exact_match": normalized_exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "bleu": sentence_bleu,
    "chrf": sentence_chrf,
}


@dataclass
class MetricSettings:
    """What besides the text metrics is scored."""

    validator: object = None
    """jsonschema validator (`load_schema_validator`), or None."""
    regex: re.Pattern | None = None
    custom: dict[str, Callable] = field(default_factory=dict)
    """name -> function(prediction, reference) returning a float or a dict of floats."""


def build_settings(schema: str | None = None, regex: str | None = None, custom: list[str] = ()) -> MetricSettings:
    try:
        pattern = re.compile(regex, re.DOTALL) if regex else None
    except re.error as exc:
        raise HoneError(f"--regex {regex!r} is not a valid regular expression: {exc}") from None
    return MetricSettings(load_schema_validator(schema), pattern, {ref: load_custom_metric(ref) for ref in custom})


def load_custom_metric(reference: str) -> Callable:
    """`package.module:function` -> the function."""
    module_name, sep, function_name = reference.partition(":")
    if not sep or not module_name or not function_name:
        raise HoneError(f"custom metric {reference!r} is not of the form module:function", "e.g. eval.metrics=[mymetrics:keyword_hit]")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HoneError(f"custom metric {reference}: cannot import {module_name} ({exc})", "put the module on PYTHONPATH") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise HoneError(f"custom metric {reference}: {module_name} has no function {function_name}")
    return function


def score_example(prediction: str, reference: str, settings: MetricSettings) -> dict[str, float | None]:
    """Every metric for one answer; None where a metric does not apply."""
    scores: dict[str, float | None] = {name: fn(prediction, reference) for name, fn in TEXT_METRICS.items()}
    scores["empty"] = float(not prediction.strip())
    scores["output_chars"] = float(len(prediction))
    scores.update(json_scores(prediction, reference, settings.validator))
    scores["regex_match"] = float(bool(settings.regex.fullmatch(prediction.strip()))) if settings.regex else None
    for name, function in settings.custom.items():
        scores.update(run_custom(name, function, prediction, reference))
    return scores


def json_scores(prediction: str, reference: str, validator) -> dict[str, float | None]:
    """JSON validity, schema compliance and per-field matches; None when the reference is not JSON."""
    ref_ok, ref_value = try_json(reference)
    pred_ok, pred_value = try_json(prediction)
    out: dict[str, float | None] = {"json_valid": None, "schema_valid": None, "field_exact_match": None}
    if validator is not None:
        out["schema_valid"] = float(pred_ok and validator.is_valid(pred_value))
    if not ref_ok:
        return out
    out["json_valid"] = float(pred_ok)
    if isinstance(ref_value, dict) and ref_value:
        fields = field_matches(pred_value, ref_value)
        out["field_exact_match"] = sum(fields.values()) / len(fields)
        out.update({f"field.{key}": value for key, value in fields.items()})
    return out


def run_custom(name: str, function: Callable, prediction: str, reference: str) -> dict[str, float]:
    try:
        value = function(prediction, reference)
    except Exception as exc:  # a user's function: report which one failed and on what
        raise HoneError(f"custom metric {name} raised {type(exc).__name__}: {exc}", "fix the metric function") from None
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return {name.rpartition(":")[2]: float(value)}


def mean_scores(per_example: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each metric over the examples where it applies (None if it never does)."""
    names: dict[str, None] = {}
    for scores in per_example:
        names.update(dict.fromkeys(scores))
    out = {}
    for name in names:
        values = [s[name] for s in per_example if s.get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out
