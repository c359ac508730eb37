"""Findings and the report that holds them: a JSON shape for machines, a summary for people."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")
ERROR_KINDS = ("invalid_json", "schema", "empty_content", "role_order", "render")


@dataclass
class Finding:
    """One defect. `rows` are 1-based lines of `file`; `related` are lines of `related_file`
    (e.g. the training rows an eval row leaks from). `rejects` marks findings whose rows
    `--fix` removes (all rows, or all but the first copy for duplicates)."""

    kind: str
    severity: str
    file: str
    rows: list[int]
    message: str
    related: list[int] = field(default_factory=list)
    related_file: str | None = None
    rejects: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "severity": self.severity, "file": self.file, "rows": self.rows,
               "related": self.related, "message": self.message}
        if self.related_file:
            out["related_file"] = self.related_file
        return out

    def where(self) -> str:
        if not self.rows:
            return self.file
        more = f" (+{len(self.rows) - 1} more)" if len(self.rows) > 1 else ""
        return f"{self.file}:{self.rows[0]}{more}"


@dataclass
class CheckReport:
    """What `check_files` found. `files`: per-file counts; `stats`: per-file statistics keyed
    `train`/`eval`; `data`: the parsed rows (for --fix and --show; not serialised)."""

    files: dict[str, dict[str, Any]]
    stats: dict[str, Any]
    findings: list[Finding]
    data: list[Any] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "stats": self.stats, "findings": [f.to_dict() for f in self.findings],
                "notes": self.notes}

    def summary_text(self, examples_per_kind: int = 1) -> str:
        """10-25 readable lines: files, statistics, findings grouped by kind (errors show 3 examples)."""
        lines = [_file_line(path, info) for path, info in self.files.items()]
        lines += _stats_lines(self.stats.get("train", {}))
        lines += [f"note: {note}" for note in self.notes]
        for severity in SEVERITIES:
            shown = examples_per_kind + 2 if severity == "error" else examples_per_kind
            lines += _severity_lines([f for f in self.findings if f.severity == severity], severity, shown)
        counts = Counter(f.severity for f in self.findings)
        verdict = (f"{counts['error']} error(s): fix them before training (`hone check DATA --fix OUT` removes the bad rows)"
                   if counts["error"] else "no errors: ready to train")
        lines.append(f"result: {verdict}; {counts['warning']} warning(s), {counts['info']} note(s)")
        return "\n".join(lines)


def _file_line(path: str, info: dict) -> str:
    formats = ", ".join(f"{name} {count}" for name, count in info.get("formats", {}).items()) or "none"
    return f"{info['role']} {path}: {info['rows_read']} rows read, {info['examples']} usable ({formats})"


def _stats_lines(stats: dict) -> list[str]:
    lines = []
    if stats.get("roles"):
        lines.append("  turns: " + ", ".join(f"{role} {n}" for role, n in stats["roles"].items()))
    lengths = stats.get("lengths")
    if lengths:
        lines.append(f"  length ({lengths['unit']}): p50 {lengths['p50']}, p90 {lengths['p90']}, "
                     f"p99 {lengths['p99']}, max {lengths['max']}")
    tokens = stats.get("tokens")
    if tokens:
        lines.append(f"  {tokens['line']}")
    lines += _preference_lines(stats.get("preference"))
    diversity = stats.get("prompt_diversity")
    if diversity:
        lines.append(f"  prompt diversity: distinct-1 {diversity['distinct_1']:.3f}, distinct-2 {diversity['distinct_2']:.3f}")
    labels = stats.get("labels")
    if labels:
        top = ", ".join(f"{label!r} {n}" for label, n in list(labels["counts"].items())[:5])
        lines.append(f"  labels ({labels['distinct']} distinct, majority {labels['majority_share']:.0%}): {top}")
    clusters = stats.get("near_duplicate_clusters")
    if clusters:
        lines.append("  largest near-duplicate clusters: " + ", ".join(f"{c['size']} rows (line {c['rows'][0]})" for c in clusters[:3]))
    return lines


def _preference_lines(stats: dict | None) -> list[str]:
    if not stats:
        return []
    if "pairs" in stats:
        return [f"  preference pairs: {stats['pairs']}, chosen longer in {stats['chosen_longer_share']:.0%} of "
                f"{stats['unequal_pairs']} of unequal length; mean {stats['chosen_chars']:.0f} chosen vs "
                f"{stats['rejected_chars']:.0f} rejected characters"]
    return [f"  unpaired rows: {stats['desirable']} desirable (mean {stats['desirable_chars']:.0f} characters), "
            f"{stats['undesirable']} undesirable (mean {stats['undesirable_chars']:.0f})"]


def _severity_lines(findings: list[Finding], severity: str, per_kind: int) -> list[str]:
    if not findings:
        return []
    by_kind: dict[str, list[Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    lines = [f"{severity}s:"]
    for kind, group in by_kind.items():
        rows = sum(len(f.rows) for f in group)
        lines.append(f"  {kind}: {len(group)} finding(s), {rows} row(s)")
        for finding in group[:per_kind]:
            lines.append(f"    {finding.where()}: {finding.message}")
    return lines
