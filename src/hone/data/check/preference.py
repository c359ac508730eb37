"""Checks on preference data (pairs and KTO's unpaired rows): the ways it teaches nothing, or the wrong thing.

- identical_pair: chosen equal to rejected (exactly, or after whitespace/case normalisation):
  the pair has no gradient, and often betrays a broken export;
- contradiction: the same prompt prefers A over B in one row and B over A in another (or a
  longer cycle), or labels one answer both desirable and undesirable;
- eval_leakage: a held-out pair whose prompt is also a training prompt, so preference
  accuracy on it measures memory;
- length_bias: chosen longer than rejected in most pairs (or desirable answers longer than
  undesirable ones): a reward learned on it pays for length, a known route to reward hacking.

An empty side is caught when the row is read (`empty_content`).
"""

from __future__ import annotations

from collections import defaultdict

from hone.data.check.read import FileData
from hone.data.check.report import Finding
from hone.data.check.views import normalized, prompt_text, system_prompt, turn_text
from hone.data.formats import Example

LENGTH_BIAS_SHARE = 0.65  # share of unequal-length pairs with the longer answer chosen that is flagged
LENGTH_BIAS_MIN_PAIRS = 20  # fewer pairs than this say nothing about a bias
LENGTH_BIAS_RATIO = 1.2  # mean desirable / undesirable length flagged for unpaired rows


def side_text(turns: list[dict]) -> str:
    return "\n".join(turn_text(m) for m in turns)


def prompt_key(example: Example) -> tuple[str, str]:
    """What makes two rows "the same prompt": system prompt and prompt turns, normalised."""
    return normalized(system_prompt(example)), normalized(prompt_text(example))


def pairs(data: FileData) -> list[Example]:
    return [e for e in data.examples if e.kind == "preference"]


def preference_findings(data: FileData) -> list[Finding]:
    """Every preference finding for one file (nothing when it holds no preference rows)."""
    return identical_findings(data) + contradiction_findings(data) + length_bias_findings(data)


def identical_findings(data: FileData) -> list[Finding]:
    exact, loose = [], []
    for example in pairs(data):
        chosen, rejected = side_text(example.chosen), side_text(example.rejected)
        if chosen == rejected:
            exact.append(example)
        elif normalized(chosen) == normalized(rejected):
            loose.append(example)
    findings = []
    for group, how in ((exact, "identical"), (loose, "identical after whitespace/case normalisation")):
        if group:
            findings.append(Finding("identical_pair", "warning", data.path, [e.line for e in group],
                                    f"{len(group)} pair(s) have chosen and rejected {how} (e.g. "
                                    f"{clip(side_text(group[0].chosen))}): they teach nothing; --fix removes them",
                                    rejects=True))
    return findings


def contradiction_findings(data: FileData) -> list[Finding]:
    """Per prompt, the preferences as edges chosen -> rejected; an edge on a cycle contradicts another row."""
    edges: dict[tuple, list[tuple[str, str, int]]] = defaultdict(list)
    for example in data.examples:
        for better, worse in preferred(example):
            edges[prompt_key(example)].append((better, worse, example.line))
    findings = []
    for prompt, group in edges.items():
        if len(group) < 2:
            continue
        component = strong_components([(better, worse) for better, worse, _ in group])
        on_cycle = [(better, worse, line) for better, worse, line in group if component[better] == component[worse]]
        if on_cycle:
            rows = sorted({line for _, _, line in on_cycle})
            better, worse = on_cycle[0][:2]
            cycle = " (through a cycle of several answers)" if len({b for b, _, _ in on_cycle}) > 2 else ""
            findings.append(Finding("contradiction", "warning", data.path, rows,
                                    f"{len(rows)} rows with the same prompt ({clip(prompt[1])}) contradict each other: "
                                    f"one prefers {clip(shown(better))} over {clip(shown(worse))}, another the reverse{cycle}"))
    return findings


UNDESIRABLE = "\x00undesirable"  # the node an unpaired answer is better (label true) or worse (false) than


def shown(answer: str) -> str:
    return "being labelled undesirable" if answer == UNDESIRABLE else answer


def preferred(example: Example) -> list[tuple[str, str]]:
    """(better, worse) normalised answers: one per pair; an unpaired answer is better or worse than
    UNDESIRABLE by its label, so one answer labelled both ways closes a cycle."""
    if example.kind == "preference":
        chosen, rejected = normalized(side_text(example.chosen)), normalized(side_text(example.rejected))
        return [(chosen, rejected)] if chosen != rejected else []
    if example.kind == "unpaired":
        answer = normalized(side_text(example.answer))
        return [(answer, UNDESIRABLE)] if example.label else [(UNDESIRABLE, answer)]
    return []


def strong_components(edges: list[tuple[str, str]]) -> dict[str, int]:
    """Node -> strongly connected component id (Kosaraju, iterative): two answers share a component
    exactly when each is preferred, directly or through others, over the other."""
    forward, backward = defaultdict(list), defaultdict(list)
    for better, worse in edges:
        forward[better].append(worse)
        backward[worse].append(better)
    nodes = list(dict.fromkeys(node for edge in edges for node in edge))
    order, seen = [], set()
    for root in nodes:  # finishing order of a depth-first search over `forward`
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(forward[root]))]
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c not in seen), None)
            if child is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(child)
                stack.append((child, iter(forward[child])))
    component: dict[str, int] = {}
    for label, root in enumerate(reversed(order)):  # each search over `backward` from the latest finisher is one component
        if root in component:
            continue
        component[root], frontier = label, [root]
        while frontier:
            for parent in backward[frontier.pop()]:
                if parent not in component:
                    component[parent] = label
                    frontier.append(parent)
    return component


def length_bias_findings(data: FileData) -> list[Finding]:
    stats = length_stats(data)
    if stats is None:
        return []
    if "chosen_longer_share" in stats:
        share, unequal = stats["chosen_longer_share"], stats["unequal_pairs"]
        if unequal < LENGTH_BIAS_MIN_PAIRS or share < LENGTH_BIAS_SHARE:
            return []
        rows = [e.line for e in pairs(data) if len(side_text(e.chosen)) > len(side_text(e.rejected))]
        return [Finding("length_bias", "warning", data.path, rows,
                        f"chosen is the longer answer in {len(rows)} of {unequal} pairs of unequal length ({share:.0%}; "
                        f"mean {stats['chosen_chars']:.0f} vs {stats['rejected_chars']:.0f} characters): a reward learned "
                        "on this pays for length; add pairs where the shorter answer wins, or use a length-normalised "
                        "objective (simpo)")]
    ratio = stats["desirable_chars"] / max(1.0, stats["undesirable_chars"])
    if stats["desirable"] < LENGTH_BIAS_MIN_PAIRS or stats["undesirable"] < LENGTH_BIAS_MIN_PAIRS or ratio < LENGTH_BIAS_RATIO:
        return []
    rows = [e.line for e in data.examples if e.kind == "unpaired" and e.label]
    return [Finding("length_bias", "warning", data.path, rows,
                    f"desirable answers average {stats['desirable_chars']:.0f} characters, undesirable ones "
                    f"{stats['undesirable_chars']:.0f} ({ratio:.2f}x): a model tuned on this learns that longer is better")]


def length_stats(data: FileData) -> dict | None:
    """Answer lengths in characters: chosen vs rejected for pairs, desirable vs undesirable for unpaired rows."""
    found = pairs(data)
    if found:
        chosen = [len(side_text(e.chosen)) for e in found]
        rejected = [len(side_text(e.rejected)) for e in found]
        longer = sum(c > r for c, r in zip(chosen, rejected))
        unequal = sum(c != r for c, r in zip(chosen, rejected))
        return {"pairs": len(found), "unequal_pairs": unequal, "chosen_longer_share": round(longer / max(1, unequal), 4),
                "chosen_chars": round(sum(chosen) / len(found), 1), "rejected_chars": round(sum(rejected) / len(found), 1)}
    rows = [e for e in data.examples if e.kind == "unpaired"]
    if not rows:
        return None
    sides = {label: [len(side_text(e.answer)) for e in rows if e.label is label] for label in (True, False)}
    return {"desirable": len(sides[True]), "undesirable": len(sides[False]),
            "desirable_chars": round(sum(sides[True]) / max(1, len(sides[True])), 1),
            "undesirable_chars": round(sum(sides[False]) / max(1, len(sides[False])), 1)}


def prompt_leakage_findings(train: FileData, eval_data: FileData, flagged: set[int]) -> list[Finding]:
    """Held-out preference rows whose prompt is a training prompt (rows in `flagged`, already reported
    as copies, are left out)."""
    training: dict[tuple, list[int]] = defaultdict(list)
    for example in train.examples:
        if example.kind in ("preference", "unpaired"):
            training[prompt_key(example)].append(example.line)
    findings = []
    for example in eval_data.examples:
        lines = training.get(prompt_key(example)) if example.kind in ("preference", "unpaired") else None
        if lines and example.line not in flagged:
            findings.append(Finding("eval_leakage", "warning", eval_data.path, [example.line],
                                    f"held-out pair's prompt is also the prompt of training line(s) {short(lines)}: "
                                    "its preference accuracy measures memory; --fix removes the training rows",
                                    related=lines, related_file=train.path))
    return findings


def clip(text: str, limit: int = 50) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def short(rows: list[int], limit: int = 5) -> str:
    text = ", ".join(map(str, rows[:limit]))
    return text + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")
