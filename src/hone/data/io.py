"""Read data files into (line number, record) pairs. Line numbers are 1-based.

JSONL is the format that matters; `.json` arrays, `.csv`, `.parquet` and `.txt` are read
too, each optionally gzipped. A JSON array or a table has no lines, so its "line" is the
1-based record index.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hone.errors import HoneError


class BadLine(Exception):
    """One unreadable record; carries its 1-based line so callers can report or reject it."""

    def __init__(self, line: int, reason: str, raw: str):
        self.line, self.reason, self.raw = line, reason, raw
        super().__init__(f"line {line}: {reason}")


def require_file(path: Path) -> None:
    if not path.is_file():
        raise HoneError(f"data file not found: {path}", "check the path")


def open_text(path: Path):
    """Text with a leading byte-order mark dropped (`utf-8-sig`: spreadsheet exports write one)."""
    require_file(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    # Undecodable bytes become U+FFFD so one bad line is reported instead of ending the read.
    return path.open("r", encoding="utf-8-sig", errors="replace")


def open_binary(path: Path):
    require_file(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


# A `\uD800`-`\uDFFF` escape: JSON may spell a lone UTF-16 surrogate, which no UTF-8 text can hold.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def lone_surrogate(value: Any) -> bool:
    """True when a string anywhere inside `value` holds a lone surrogate (from a JSON escape):
    the tokenizer and every output file would fail on it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list):
            stack += item
    return False


def record_problem(record: Any, escapes: bool) -> str | None:
    """Why a parsed JSON value cannot be a record, or None when it can. `escapes`: its text
    holds a surrogate escape (SURROGATE_ESCAPE), so only those records are walked."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if escapes and lone_surrogate(record):
        return "invalid Unicode: a \\uD800-\\uDFFF escape that is not half of a surrogate pair"
    return None


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
    """Lines split on `\n` only: a lone `\r` is JSON whitespace, not a line break."""
    with open_binary(path) as handle:
        for number, data in enumerate(handle, start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, BadLine(number, f"invalid UTF-8 bytes at column {exc.start + 1}", data.decode("utf-8", errors="replace"))
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield number, BadLine(number, f"invalid JSON ({exc.msg} at column {exc.colno})", raw)
                continue
            except RecursionError:
                yield number, BadLine(number, "invalid JSON (nested too deeply)", raw)
                continue
            problem = record_problem(record, bool(SURROGATE_ESCAPE.search(raw)))
            yield number, (BadLine(number, problem, raw) if problem else record)


def _iter_json(path: Path):
    with open_text(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HoneError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})", "a .json file must hold one JSON array of objects") from None
    except RecursionError:
        raise HoneError(f"{path}: invalid JSON (nested too deeply)", "a .json file must hold one JSON array of objects") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise HoneError(f"{path}: expected a JSON array of objects", "use JSONL, one object per line")
    escapes = bool(SURROGATE_ESCAPE.search(text))
    for index, record in enumerate(data, start=1):
        problem = record_problem(record, escapes)
        yield index, (BadLine(index, problem, _dump(record)) if problem else record)


def _dump(value: Any) -> str:
    """A bad record as text for the rejected file (escaped, so even a lone surrogate can be written)."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return repr(value)


CSV_FIELD_LIMIT = 1 << 30  # a long document is a legal cell; the csv module's default stops at 128 KiB


def _iter_csv(path: Path):
    import csv

    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with open_text(path) as handle:
        rows = csv.DictReader(handle)
        for index in itertools.count(2):  # line 1 is the header
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                yield index, BadLine(index, f"unreadable CSV row ({exc})", "")
                continue
            record = {key: _maybe_json(value) for key, value in row.items() if key is not None}
            problem = record_problem(record, any(SURROGATE_ESCAPE.search(v) for v in row.values() if isinstance(v, str)))
            yield index, (BadLine(index, problem, _dump(row)) if problem else record)


def _maybe_json(value: str | None):
    """CSV cells may hold JSON (e.g. a `messages` list)."""
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _iter_parquet(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise HoneError(f"{path}: reading parquet needs pyarrow", "pip install pyarrow") from None
    require_file(path)
    try:
        # Parquet needs random access (its footer comes last), so a .gz is decompressed into memory first.
        source = pa.BufferReader(gzip.decompress(path.read_bytes())) if path.suffix == ".gz" else path
        records = pq.read_table(source).to_pylist()
    except (pa.ArrowException, OSError, EOFError, zlib.error, ValueError) as exc:  # damaged, foreign, bad .gz, bad UTF-8
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HoneError(f"{path}: not a readable parquet file ({reason})", "re-export it, or convert it to JSONL") from None
    for index, record in enumerate(records, start=1):
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


def documents_or_lines(text: str, separator: str = "<|endoftext|>") -> list[tuple[int, str]]:
    """`(line, document)` pairs: documents separated by `separator` when `text` holds any
    (numbered 1, 2, ... as `_iter_txt` numbers them), else one per non-empty line (its 1-based line)."""
    if separator in text:
        return list(enumerate(split_documents(text, separator), start=1))
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def write_jsonl(path: Path, records) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
