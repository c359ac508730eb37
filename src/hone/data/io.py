"""Read data files into (line number, record) pairs. Line numbers are 1-based.

JSONL is the format that matters; `.json` arrays, `.csv`, `.parquet` and `.txt` are read
too, each optionally gzipped. A JSON array or a table has no lines, so its "line" is the
1-based record index.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hone.errors import HoneError


class BadLine(Exception):
    """One unreadable record; carries its 1-based line so callers can report or reject it."""

    def __init__(self, line: int, reason: str, raw: str):
        self.line, self.reason, self.raw = line, reason, raw
        super().__init__(f"line {line}: {reason}")


def open_text(path: Path):
    if not path.is_file():
        raise HoneError(f"data file not found: {path}", "check the path")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    # Undecodable bytes become U+FFFD so one bad line is reported instead of ending the read.
    return path.open("r", encoding="utf-8", errors="replace")


def base_suffix(path: Path) -> str:
    """`.jsonl` for `data.jsonl.gz`."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1] if suffixes else ""


def iter_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """Yield `(line, record)`; an unreadable line yields `(line, BadLine)` instead of raising."""
    path = Path(path)
    kind = base_suffix(path)
    readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet, ".txt": _iter_txt}
    reader = readers.get(kind, _iter_jsonl)
    yield from reader(path)


def _iter_jsonl(path: Path):
    with open_text(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if "\ufffd" in raw:
                yield number, BadLine(number, "invalid UTF-8 bytes", raw)
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield number, BadLine(number, f"invalid JSON ({exc.msg} at column {exc.colno})", raw)
                continue
            except RecursionError:
                yield number, BadLine(number, "invalid JSON (nested too deeply)", raw)
                continue
            if not isinstance(record, dict):
                yield number, BadLine(number, f"expected a JSON object, got {type(record).__name__}", raw)
                continue
            yield number, record


def _iter_json(path: Path):
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise HoneError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})", "a .json file must hold one JSON array of objects") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise HoneError(f"{path}: expected a JSON array of objects", "use JSONL, one object per line")
    for index, record in enumerate(data, start=1):
        if isinstance(record, dict):
            yield index, record
        else:
            yield index, BadLine(index, f"expected a JSON object, got {type(record).__name__}", json.dumps(record))


def _iter_csv(path: Path):
    import csv

    with open_text(path) as handle:
        for index, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
            yield index, {key: _maybe_json(value) for key, value in row.items() if key is not None}


def _maybe_json(value: str | None):
    """CSV cells may hold JSON (e.g. a `messages` list)."""
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HoneError(f"{path}: reading parquet needs pyarrow", "pip install pyarrow") from None
    table = pq.read_table(path)
    for index, record in enumerate(table.to_pylist(), start=1):
        yield index, record


def _iter_txt(path: Path):
    """Plain text for continued pre-training: documents separated by blank-line-free
    `<|endoftext|>` lines, or the whole file as one document."""
    with open_text(path) as handle:
        text = handle.read()
    for index, doc in enumerate(split_documents(text), start=1):
        yield index, {"text": doc}


def split_documents(text: str, separator: str = "<|endoftext|>") -> list[str]:
    docs = [d.strip("\n") for d in text.split(separator)]
    return [d for d in docs if d.strip()]


def write_jsonl(path: Path, records) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
