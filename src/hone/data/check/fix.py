"""`hone check DATA --fix OUT`: write the usable rows normalised, and every removed row with
its line and reason to `OUT.rejected.jsonl`. Invariant: kept + rejected = rows read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hone.data.check.read import FileData
from hone.data.check.report import CheckReport
from hone.data.convert import as_chat, canonical_record
from hone.data.formats import Example
from hone.data.io import write_jsonl


def rejected_path(out: Path) -> Path:
    """`clean.jsonl` -> `clean.rejected.jsonl`."""
    name = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(f"{name}.rejected.jsonl")


def rejection_reasons(report: CheckReport, train: FileData) -> dict[int, str]:
    """Line -> why --fix removes it. Later copies of duplicates and training copies of eval rows go too."""
    reasons: dict[int, str] = {}
    for finding in report.findings:
        if finding.kind == "eval_leakage" and finding.related_file == train.path:
            for line in finding.related:
                reasons.setdefault(line, f"eval_leakage: copied by eval line {finding.rows[0]} of {finding.file}")
        elif finding.file != train.path or not finding.rejects:
            continue
        elif finding.kind == "duplicate":
            for line in finding.rows[1:]:
                reasons.setdefault(line, f"duplicate: a copy of line {finding.rows[0]}")
        else:
            for line in finding.rows:
                reasons.setdefault(line, f"{finding.kind}: {finding.message}")
    return reasons


def fixed_record(example: Example, majority: str) -> dict | None:
    """The row in the file's majority kind, or None when it cannot be carried over."""
    if example.kind == majority:
        return canonical_record(example)
    if majority == "chat" and example.kind == "completion":
        return {"messages": as_chat(example)[0]}
    return None


def write_fixed(report: CheckReport, out: str | Path) -> tuple[int, int]:
    """Write OUT and OUT.rejected.jsonl for the training file of `report`; returns (kept, rejected)."""
    out = Path(out)
    train = report.data[0]
    reasons = rejection_reasons(report, train)
    kinds = Counter(row.example.kind for row in train.rows if row.example is not None and row.line not in reasons)
    majority = kinds.most_common(1)[0][0] if kinds else "chat"
    kept, rejected = [], []
    for row in train.rows:
        reason = reasons.get(row.line) or (None if row.example is not None else "unusable row")
        record = fixed_record(row.example, majority) if row.example is not None and reason is None else None
        if record is None and reason is None:
            reason = f"schema: mixed formats: a {row.example.kind} row cannot join a {majority} file"
        if reason is None:
            kept.append(record)
        else:
            entry = {"line": row.line, "reason": reason, "record": row.record}
            if row.raw is not None:
                entry["raw"] = row.raw.rstrip("\n")
            rejected.append(entry)
    write_jsonl(out, kept)
    write_jsonl(rejected_path(out), rejected)
    return len(kept), len(rejected)
