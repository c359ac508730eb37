"""Read a file row by row into Examples; every unreadable row becomes an error finding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.data.formats import Example, FormatError, to_example
from hone.data.io import BadLine, iter_records
from hone.data.check.report import Finding
from hone.data.dataset import Loaded, Problem


@dataclass
class Row:
    """One row as read: the normalised example, or None when it is unusable."""

    line: int
    example: Example | None
    record: dict[str, Any] | None = None  # the record as read (kept for --fix's rejected file)
    raw: str | None = None  # the raw text of an unparseable line


@dataclass
class FileData:
    path: str
    role: str  # "train" | "eval"
    rows: list[Row] = field(default_factory=list)

    @property
    def examples(self) -> list[Example]:
        return [row.example for row in self.rows if row.example is not None]


def read_file(path: str | Path, role: str) -> tuple[FileData, list[Finding]]:
    """All rows of `path` with `invalid_json`, `schema`, `empty_content` and `role_order` findings."""
    data = FileData(str(path), role)
    findings = []
    for line, record in iter_records(path):
        if isinstance(record, BadLine):
            data.rows.append(Row(line, None, raw=record.raw))
            findings.append(Finding("invalid_json", "error", data.path, [line], record.reason, rejects=True))
            continue
        try:
            example = to_example(record, line=line, source=data.path)
        except FormatError as exc:
            data.rows.append(Row(line, None, record=record))
            findings.append(Finding(exc.kind, "error", data.path, [line], str(exc), rejects=True))
            continue
        except RecursionError:  # a pathologically nested record must not crash the doctor
            data.rows.append(Row(line, None, record=None, raw="<too deeply nested>"))
            findings.append(Finding("schema", "error", data.path, [line], "record is nested too deeply", rejects=True))
            continue
        data.rows.append(Row(line, example, record=record))
    findings += mixed_format_findings(data)
    return data, findings


def mixed_format_findings(data: FileData) -> list[Finding]:
    """One `schema` error listing the rows whose format is not the file's majority format."""
    formats = Counter(e.format for e in data.examples)
    if len(formats) < 2:
        return []
    majority = formats.most_common(1)[0][0]
    rows = [e.line for e in data.examples if e.format != majority]
    others = ", ".join(f"{name} {count}" for name, count in formats.most_common()[1:])
    message = (f"mixed formats in one file: {formats[majority]} rows are {majority}, but {others}; "
               "`hone check --fix` or `hone convert` normalises them")
    return [Finding("schema", "error", data.path, rows, message)]


def format_counts(data: FileData) -> dict[str, int]:
    return dict(Counter(e.format for e in data.examples).most_common())


def loaded_from(data: FileData, findings: list[Finding]) -> Loaded:
    """The rows of `data` as training takes them: its examples, and a Problem per unusable row
    (named by the finding that rejected it), so a run reads each file once."""
    reasons = {row: f.message for f in findings if f.file == data.path and f.rejects for row in f.rows}
    problems = [Problem(data.path, row.line, reasons.get(row.line, "unusable row")) for row in data.rows if row.example is None]
    return Loaded(data.examples, problems)
