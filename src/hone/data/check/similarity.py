"""Duplicates, near-duplicates, contradictions and train/eval leakage.

Exact duplicates are grouped by a normalised key first; MinHash/LSH then runs once over
one representative per key, so a file of 10,000 copies costs what one row costs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hone.data.check.read import FileData
from hone.data.check.report import Finding
from hone.data.check.views import (PAIRED_KINDS, SFT_KINDS, answer_text, content_text, exact_key, normalized, parse_json_value,
                                   prompt_text, system_prompt)
from hone.data.formats import Example
from hone.data.minhash import near_duplicate_groups


@dataclass
class Groups:
    """For each example (train first, then eval): its exact-duplicate key id and its near-duplicate cluster id."""

    examples: list[Example]
    files: list[str]  # the file of each example
    exact: list[int]
    cluster: list[int]


def group_examples(files: list[FileData], threshold: float, num_perm: int, shingle_words: int) -> Groups:
    examples, owners = [], []
    for data in files:
        for example in data.examples:
            examples.append(example)
            owners.append(data.path)
    exact, cluster = duplicate_ids(examples, threshold, num_perm, shingle_words)
    return Groups(examples, owners, exact, cluster)


def duplicate_ids(examples: list[Example], threshold: float, num_perm: int, shingle_words: int) -> tuple[list[int], list[int]]:
    """(exact-duplicate key id, near-duplicate cluster id) of each example."""
    key_ids: dict[str, int] = {}
    exact = [key_ids.setdefault(exact_key(e), len(key_ids)) for e in examples]
    representative = {}
    for index, key in enumerate(exact):
        representative.setdefault(key, index)
    reps = list(representative.values())  # key id k's representative is reps[k]
    labels = near_duplicate_groups([content_text(examples[i]) for i in reps], threshold, num_perm, shingle_words)
    return exact, [int(labels[key]) for key in exact]


def _members(ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for index, group in enumerate(ids):
        out.setdefault(group, []).append(index)
    return {group: members for group, members in out.items() if len(members) > 1}


def duplicate_findings(groups: Groups) -> list[Finding]:
    findings = []
    for members in _members(groups.exact).values():
        for path in dict.fromkeys(groups.files[i] for i in members):
            rows = [groups.examples[i].line for i in members if groups.files[i] == path]
            if len(rows) > 1:
                findings.append(Finding("duplicate", "warning", path, rows,
                                        f"{len(rows)} identical copies (after whitespace/case normalisation); "
                                        f"--fix keeps line {rows[0]}", rejects=True))
    return findings


def near_duplicate_findings(groups: Groups, threshold: float) -> list[Finding]:
    findings = []
    for members in _members(groups.cluster).values():
        for path in dict.fromkeys(groups.files[i] for i in members):
            inside = [i for i in members if groups.files[i] == path]
            distinct = len({groups.exact[i] for i in inside})
            if distinct > 1 and not _answers_to_one_prompt([groups.examples[i] for i in inside]):
                rows = [groups.examples[i].line for i in inside]
                findings.append(Finding("near_duplicate", "warning", path, rows,
                                        f"{len(rows)} rows ({distinct} distinct texts) are near-duplicates "
                                        f"(estimated word-bigram Jaccard >= {threshold})"))
    return findings


def _answers_to_one_prompt(examples: list[Example]) -> bool:
    """Preference or unpaired rows that only answer one prompt differently: how such data is built
    (several pairs or labelled answers per prompt), not a copy."""
    prompts = {(normalized(system_prompt(e)), normalized(prompt_text(e))) for e in examples}
    return len(prompts) == 1 and all(e.kind in PAIRED_KINDS for e in examples)


def leakage_findings(groups: Groups, train_path: str, eval_path: str) -> list[Finding]:
    findings = []
    for members in _members(groups.cluster).values():
        train_rows = [groups.examples[i].line for i in members if groups.files[i] == train_path]
        if not train_rows:
            continue
        for i in members:
            if groups.files[i] != eval_path:
                continue
            exact = any(groups.exact[j] == groups.exact[i] for j in members if groups.files[j] == train_path)
            how = "an exact copy" if exact else "a near copy"
            findings.append(Finding("eval_leakage", "warning", eval_path, [groups.examples[i].line],
                                    f"eval row is {how} of training line(s) {_short(train_rows)}: it measures memory, not skill; "
                                    "--fix removes the training copies", related=train_rows, related_file=train_path))
    return findings


def largest_clusters(groups: Groups, path: str, top: int = 5) -> list[dict]:
    clusters = []
    for members in _members(groups.cluster).values():
        inside = [groups.examples[i] for i in members if groups.files[i] == path]
        rows = [e.line for e in inside]
        if len(rows) > 1 and not _answers_to_one_prompt(inside):
            clusters.append({"size": len(rows), "rows": rows[:20]})
    return sorted(clusters, key=lambda c: -c["size"])[:top]


def _short(rows: list[int], limit: int = 5) -> str:
    text = ", ".join(map(str, rows[:limit]))
    return text + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


# ---- contradictions -------------------------------------------------------------------------

def contradiction_findings(data: FileData, threshold: float, num_perm: int, shingle_words: int) -> list[Finding]:
    """Rows with the same (or nearly the same) prompt and system prompt but materially different answers."""
    examples = [e for e in data.examples if e.kind in SFT_KINDS]
    prompts = [normalized(prompt_text(e)) for e in examples]
    unique = list(dict.fromkeys(prompts))
    position = {text: index for index, text in enumerate(unique)}
    labels = near_duplicate_groups(unique, threshold, num_perm, shingle_words)
    groups: dict[tuple, list[Example]] = {}
    for example, prompt in zip(examples, prompts):
        groups.setdefault((normalized(system_prompt(example)), int(labels[position[prompt]])), []).append(example)
    findings = []
    for members in groups.values():
        if len(members) > 1:
            finding = _contradiction(members, data.path)
            if finding:
                findings.append(finding)
    return findings


def _contradiction(members: list[Example], path: str) -> Finding | None:
    answers = [answer_text(e) for e in members]
    counts = Counter(normalized(a) for a in answers)
    if len(counts) < 2:
        return None
    reference = counts.most_common(1)[0][0]
    original = {normalized(a): a for a in answers}
    differing = [a for a in counts if a != reference and materially_different(original[reference], original[a])]
    if not differing:
        return None
    rows = sorted(e.line for e in members)
    more = f" (+{len(differing) - 1} more answers)" if len(differing) > 1 else ""
    return Finding("contradiction", "warning", path, rows,
                   f"{len(rows)} rows share a prompt but answer differently: {_clip(original[reference])} "
                   f"vs {_clip(original[differing[0]])}{more}")


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def is_label(value) -> bool:
    """A value that is a decision rather than free text: a number, a bool, or a string of <= 3 words."""
    return not isinstance(value, (dict, list)) and (not isinstance(value, str) or len(value.split()) <= 3)


def materially_different(a: str, b: str) -> bool:
    """Answers that teach different things: different JSON keys or label values, different short
    labels, or free texts sharing less than half of their words."""
    if normalized(a) == normalized(b):
        return False
    ja, jb = parse_json_value(a), parse_json_value(b)
    if isinstance(ja, dict) and isinstance(jb, dict):
        if set(ja) != set(jb):
            return True
        return any(ja[k] != jb[k] and is_label(ja[k]) and is_label(jb[k]) for k in ja)
    wa, wb = set(normalized(a).split()), set(normalized(b).split())
    if len(wa) <= 3 and len(wb) <= 3:
        return True
    return len(wa & wb) / max(1, len(wa | wb)) < 0.5
