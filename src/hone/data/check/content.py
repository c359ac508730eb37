"""Checks on what the examples say: how many there are, whether they agree in format,
personal data, and statistics of prompts and answers."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from hone.data.check.read import FileData
from hone.data.check.report import Finding
from hone.data.check.views import PAIRED_KINDS, SFT_KINDS, answer_text, normalized, parse_json_value, prompt_text, system_prompt
from hone.data.formats import Example
from hone.data.minhash import word_table

# The seeds' guidance on dataset size: (below this many examples, severity, advice).
COUNT_GUIDANCE = [
    (50, "warning", "fewer than 50 examples: prompt engineering or few-shot prompting is likely the better tool"),
    (100, "warning", "50-100 examples is the minimum for a visible effect; 500-1000 is the sweet spot"),
    (500, "info", "500-1000 examples is where fine-tuning usually pays best; more good examples will help"),
]
MANY_EXAMPLES = 10_000


def low_count_findings(data: FileData) -> list[Finding]:
    count = len(data.examples)
    if not count:  # training would stop on it: say so here, before anyone waits for a model to load
        what = f"none of its {len(data.rows)} rows is usable" if data.rows else "the file holds no rows"
        return [Finding("low_count", "error", data.path, [], f"no usable examples: {what}")]
    for limit, severity, advice in COUNT_GUIDANCE:
        if count < limit:
            return [Finding("low_count", severity, data.path, [], f"{count} usable examples; {advice}")]
    if count > MANY_EXAMPLES:
        return [Finding("low_count", "info", data.path, [],
                        f"{count:,} examples; beyond 10K more data rarely pays proportionally: prefer cleaning to adding")]
    return []


# ---- format consistency ---------------------------------------------------------------------

def format_findings(data: FileData) -> list[Finding]:
    examples = [e for e in data.examples if e.kind in SFT_KINDS + PAIRED_KINDS]
    return _json_answer_findings(data.path, examples) + _system_prompt_findings(data.path, examples)


def _json_answer_findings(path: str, examples: list[Example]) -> list[Finding]:
    parsed = [(e.line, parse_json_value(answer_text(e))) for e in examples]
    json_rows = [(line, value) for line, value in parsed if value is not None]
    if len(json_rows) < 3 or len(json_rows) < 0.6 * len(parsed):
        return []
    findings = []
    not_json = [line for line, value in parsed if value is None]
    if not_json:
        findings.append(Finding("format_inconsistency", "warning", path, not_json,
                                f"{len(json_rows)} of {len(parsed)} answers are JSON but {len(not_json)} are not "
                                "(or are malformed JSON)"))
    shapes = Counter(_shape(value) for _, value in json_rows)
    if len(shapes) > 1:
        common, count = shapes.most_common(1)[0]
        odd = [line for line, value in json_rows if _shape(value) != common]
        findings.append(Finding("format_inconsistency", "warning", path, odd,
                                f"{count} JSON answers have the structure {common} but {len(odd)} differ"))
    return findings


def _shape(value) -> str:
    """Top-level structure of a JSON answer: its sorted keys, or the array's element shape."""
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(value)) + "}"
    return "[" + (_shape(value[0]) if value and isinstance(value[0], (dict, list)) else "") + "]"


def _system_prompt_findings(path: str, examples: list[Example]) -> list[Finding]:
    prompts = Counter(normalized(system_prompt(e)) for e in examples)
    if len(prompts) < 2 or len(prompts) > max(10, len(examples) // 10):  # per-row system prompts are a design choice
        return []
    common, count = prompts.most_common(1)[0]
    odd = [e.line for e in examples if normalized(system_prompt(e)) != common]
    severity = "warning" if count >= 0.8 * len(examples) else "info"
    label = "no system prompt" if not common else "the same system prompt"
    return [Finding("format_inconsistency", severity, path, odd,
                    f"{len(prompts)} different system prompts: {count} rows have {label}, {len(odd)} differ")]


# ---- personal data --------------------------------------------------------------------------

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", re.IGNORECASE)
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w-])")
MAYBE_PII = re.compile(r"@|\d\d")  # cheap pre-filter: every pattern below needs one of these
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def pii_kinds(text: str) -> set[str]:
    """Which kinds of personal data `text` contains: email, phone, card."""
    found = set()
    if "@" in text and EMAIL.search(text):
        found.add("e-mail address")
    cards = [m.group() for m in CARD.finditer(text) if luhn_valid(re.sub(r"\D", "", m.group()))]
    if cards:
        found.add("card number")
    for match in PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 9 <= len(digits) <= 15 and match.group() not in cards and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", match.group()):
            found.add("phone number")
            break
    return found


def pii_findings(data: FileData) -> list[Finding]:
    rows: dict[str, list[int]] = {}
    for example in data.examples:
        text = _all_text(example)
        if not MAYBE_PII.search(text):
            continue
        for kind in sorted(pii_kinds(text)):
            rows.setdefault(kind, []).append(example.line)
    return [Finding("pii", "warning", data.path, lines,
                    f"{len(lines)} row(s) contain what looks like a {kind}: remove or mask personal data before training".replace("a e-", "an e-"))
            for kind, lines in rows.items()]


def _all_text(example: Example) -> str:
    turns = example.messages + example.chosen + example.rejected + example.answer
    return "\n".join([example.prompt, example.completion, example.text] + [m.get("content") or "" for m in turns])


# ---- statistics -----------------------------------------------------------------------------

def role_counts(data: FileData) -> dict[str, int]:
    counts = Counter()
    for example in data.examples:
        counts.update(m["role"] for m in example.messages + example.chosen + example.rejected + example.answer)
        if example.kind == "completion":
            counts.update(("prompt", "completion"))
    return dict(counts.most_common())


def prompt_diversity(examples: list[Example]) -> dict | None:
    """Distinct-n of the prompts: unique word n-grams / all word n-grams (1.0 = no repetition)."""
    table = word_table([prompt_text(e) for e in examples])
    if not len(table.ids):
        return None
    ids = table.ids
    same_doc = np.ones(len(ids), dtype=bool)
    same_doc[table.offsets[1:-1] - 1] = False  # a bigram may not cross from one prompt into the next
    with np.errstate(over="ignore"):  # word ids are 64-bit hashes; a bigram's id is a mix of its two
        bigrams = (ids[:-1] * np.uint64(0x9E3779B97F4A7C15) ^ ids[1:])[same_doc[:-1]]
    return {"distinct_1": round(len(np.unique(ids)) / len(ids), 4),
            "distinct_2": round(len(np.unique(bigrams)) / max(1, len(bigrams)), 4)}


def label_stats(examples: list[Example], max_labels: int = 30) -> dict | None:
    """Label balance when the answers are short labels (<= 3 words) from a small set."""
    answers = [normalized(answer_text(e)) for e in examples if e.kind in SFT_KINDS]
    if len(answers) < 10:
        return None
    counts = Counter(answers)
    short = sum(n for label, n in counts.items() if len(label.split()) <= 3 and len(label) <= 40)
    if short < 0.95 * len(answers) or len(counts) > max_labels:
        return None
    top = counts.most_common()
    return {"distinct": len(counts), "majority_share": round(top[0][1] / len(answers), 4), "counts": dict(top)}


def word_length_stats(examples: list[Example]) -> list[int]:
    return [len(normalized(prompt_text(e) + " " + answer_text(e)).split()) for e in examples]
