"""Fuzz the data doctor: 1,000 seeded corruptions over every input format `hone check` reads.

Whatever the bytes, `hone check` ends in a report (or, for a file that cannot be read at
all, one HoneError line), never a traceback; and `--fix OUT` accounts for every row read:
kept + rejected = rows read, and the kept file reads back clean.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
from pathlib import Path

import pytest

from hone.config import ModelArgs
from hone.data.check import check_files
from hone.data.check.fix import rejected_path, write_fixed
from hone.errors import HoneError
from hone.model.load import load_tokenizer

CORRUPTIONS = 1000
WORDS = "the a cat dog sat on mat red blue green order refund ship login error please help thanks json".split()
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "find an order",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]


def words(rng: random.Random, low: int = 2, high: int = 9) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + f" {rng.randint(0, 10**6)}"


def chat_row(rng):
    messages = [{"role": "system", "content": words(rng)}] if rng.random() < 0.3 else []
    messages += [{"role": "user", "content": words(rng)}]
    if rng.random() < 0.2:  # OpenAI function calling
        call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"id": words(rng, 1, 1)})}}
        messages += [{"role": "assistant", "tool_calls": [call]}, {"role": "tool", "tool_call_id": "c1", "content": words(rng)}]
        return {"messages": messages + [{"role": "assistant", "content": words(rng)}], "tools": TOOLS}
    return {"messages": messages + [{"role": "assistant", "content": words(rng)}]}


# One generator of valid records per format `hone check` reads.
ROWS = {
    "chat": chat_row,
    "prompt_completion": lambda rng: {"prompt": words(rng), "completion": words(rng)},
    "conversational_prompt_completion": lambda rng: {"prompt": [{"role": "user", "content": words(rng)}],
                                                     "completion": [{"role": "assistant", "content": words(rng)}]},
    "text": lambda rng: {"text": words(rng, 5, 30)},
    "alpaca": lambda rng: {"instruction": words(rng), "input": "", "output": words(rng)},
    "sharegpt": lambda rng: {"conversations": [{"from": "human", "value": words(rng)}, {"from": "gpt", "value": words(rng)}]},
    "standard_preference": lambda rng: {"prompt": words(rng), "chosen": words(rng), "rejected": words(rng)},
    "preference": lambda rng: {"prompt": [{"role": "user", "content": words(rng)}],
                               "chosen": [{"role": "assistant", "content": words(rng)}],
                               "rejected": [{"role": "assistant", "content": words(rng)}]},
    "openai_preference": lambda rng: {"input": {"messages": [{"role": "user", "content": words(rng)}]},
                                      "preferred_output": [{"role": "assistant", "content": words(rng)}],
                                      "non_preferred_output": [{"role": "assistant", "content": words(rng)}]},
}
JUNK_VALUES = [None, 7, -1.5, True, "", " ", [], {}, [None], {"role": None}, "\ud800", "x" * 5000, [[[]]], float("nan")]


# ---- record-level corruptions: a valid record made wrong -----------------------------------

def paths_in(value, prefix=()):
    """Every (path) to a value inside nested dicts/lists."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_in(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_in(item, prefix + (index,))
    return found


def set_path(record, path, value):
    node = record
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def wrong_type(rng, record):
    path = rng.choice(paths_in(record)[1:])
    set_path(record, path, copy.deepcopy(rng.choice(JUNK_VALUES)))
    return record


def missing_key(rng, record):
    dict_paths = [p for p in paths_in(record) if isinstance(_get(record, p), dict) and _get(record, p)]
    path = rng.choice(dict_paths)
    node = _get(record, path)
    del node[rng.choice(list(node))]
    return record


def extra_or_renamed_key(rng, record):
    key = rng.choice(list(record))
    record[rng.choice([key.upper(), key + "s", "weight", "tool_calls", "tools", "id"])] = record.pop(key) if rng.random() < 0.5 else 1
    return record


def _get(record, path):
    for part in path:
        record = record[part]
    return record


RECORD_CORRUPTIONS = [wrong_type, missing_key, extra_or_renamed_key]


# ---- text-level corruptions: the serialised line made wrong --------------------------------

def cut(rng, line: bytes) -> bytes:
    return line[: rng.randint(0, max(0, len(line) - 1))]


def invalid_utf8(rng, line: bytes) -> bytes:
    at = rng.randint(0, len(line))
    return line[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + line[at:]


def binary_junk(rng, line: bytes) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))).replace(b"\n", b"")


def empty_or_blank(rng, line: bytes) -> bytes:
    return rng.choice([b"", b"   ", b"\t", b"\x0c", "\u2028".encode()])


def huge(rng, line: bytes) -> bytes:
    if rng.random() < 0.5:
        return json.dumps({"text": "word " * rng.randint(20_000, 60_000)}).encode()
    return rng.choice([b"[" * 50_000, b'{"a":' * 20_000, b"x" * 200_000])


def stray_bom_or_cr(rng, line: bytes) -> bytes:
    return rng.choice([b"\xef\xbb\xbf" + line, line + b"\r", line.replace(b",", b",\r", 1)])


def odd_json(rng, line: bytes) -> bytes:
    return rng.choice([b"null", b"[]", b"{}", b"42", b'"text"', b"NaN", b'{"text": NaN}', b'{"text": 1e999}',
                       b'{"text": "\\ud800 lone surrogate"}', b'{"messages": "hi"}', b'{"text": "a"} trailing',
                       b'{"text": "dup", "text": 3}'])


LINE_CORRUPTIONS = [cut, invalid_utf8, binary_junk, empty_or_blank, huge, stray_bom_or_cr, odd_json]


# ---- files --------------------------------------------------------------------------------

def corrupt_records(rng, records: list[dict], count: int) -> list:
    """Apply `count` corruptions: record-level ones leave dicts, line-level ones leave bytes."""
    rows: list = [copy.deepcopy(r) for r in records]
    for _ in range(count):
        index = rng.randrange(len(rows))
        if isinstance(rows[index], dict) and rows[index] and rng.random() < 0.5:
            rows[index] = rng.choice(RECORD_CORRUPTIONS)(rng, rows[index])
        else:
            line = rows[index] if isinstance(rows[index], bytes) else encode(rows[index])
            rows[index] = rng.choice(LINE_CORRUPTIONS)(rng, line)
        if rng.random() < 0.1:
            rows.insert(rng.randrange(len(rows) + 1), copy.deepcopy(rows[index]))  # a duplicate
    return rows


def encode(record) -> bytes:
    """One JSON line; half the records escape non-ASCII text and half write it raw (a lone
    surrogate then becomes invalid UTF-8 bytes), chosen deterministically."""
    escaped = len(json.dumps(record)) % 2 == 0
    return json.dumps(record, ensure_ascii=escaped).encode("utf-8", errors="surrogatepass")


def write_jsonl_bytes(path: Path, rows: list, newline: bytes = b"\n", bom: bool = False) -> Path:
    body = newline.join(row if isinstance(row, bytes) else encode(row) for row in rows) + newline
    data = (b"\xef\xbb\xbf" if bom else b"") + body
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def jsonl_case(rng, folder: Path, name: str, format_name: str, count: int) -> Path:
    records = [ROWS[format_name](rng) for _ in range(rng.randint(1, 12))]
    rows = corrupt_records(rng, records, count)
    suffix = ".jsonl.gz" if rng.random() < 0.15 else ".jsonl"
    return write_jsonl_bytes(folder / f"{name}{suffix}", rows, newline=rng.choice([b"\n", b"\n", b"\r\n"]),
                             bom=rng.random() < 0.2)


def txt_case(rng, folder: Path, name: str, count: int) -> Path:
    docs = [words(rng, 3, 40).encode() for _ in range(rng.randint(1, 6))]
    for _ in range(count):
        index = rng.randrange(len(docs))
        docs[index] = rng.choice([cut, invalid_utf8, binary_junk, empty_or_blank, stray_bom_or_cr])(rng, docs[index])
    separator = rng.choice([b"\n<|endoftext|>\n", b"\r\n<|endoftext|>\r\n", b"\n", b"<|endoftext|>"])
    path = folder / f"{name}.txt"
    path.write_bytes((b"\xef\xbb\xbf" if rng.random() < 0.2 else b"") + separator.join(docs))
    return path


def csv_case(rng, folder: Path, name: str, count: int) -> Path:
    import csv
    import io

    format_name = rng.choice(["prompt_completion", "alpaca", "standard_preference", "text", "chat"])
    records = [ROWS[format_name](rng) for _ in range(rng.randint(1, 10))]
    rows = corrupt_records(rng, records, count)
    handle = io.StringIO(newline="")
    keys = list(records[0])
    writer = csv.writer(handle, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(keys)
    chunks = [handle.getvalue().encode()]
    for row in rows:
        handle.seek(0)
        handle.truncate()
        if isinstance(row, bytes):
            chunks.append(row + b"\n")
            continue
        writer.writerow(csv_cells(rng, row))
        chunks.append(handle.getvalue().encode("utf-8", errors="surrogatepass"))
    path = folder / f"{name}.csv"
    path.write_bytes((b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + b"".join(chunks))
    return path


def csv_cells(rng, row: dict) -> list[str]:
    """A record as CSV cells (JSON for anything but a string), now and then cut short."""
    cells = [value if isinstance(value, str) else json.dumps(value) for value in row.values()]
    return cells[: rng.randint(0, len(cells))] if rng.random() < 0.1 else cells


def json_array_case(rng, folder: Path, name: str, count: int) -> Path:
    format_name = rng.choice(list(ROWS))
    records = [ROWS[format_name](rng) for _ in range(rng.randint(1, 8))]
    for _ in range(count):
        index = rng.randrange(len(records))
        record = records[index]
        records[index] = rng.choice(RECORD_CORRUPTIONS)(rng, record) if isinstance(record, dict) and record else rng.choice(JUNK_VALUES)
    data = json.dumps(records, allow_nan=True).encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.2:
        data = rng.choice([cut, invalid_utf8, stray_bom_or_cr])(rng, data)
    path = folder / f"{name}.json"
    path.write_bytes(data)
    return path


def parquet_case(rng, folder: Path, name: str, count: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    format_name = rng.choice(["chat", "prompt_completion", "text", "standard_preference", "alpaca"])
    records = [ROWS[format_name](rng) for _ in range(rng.randint(1, 8))]
    for _ in range(count):  # a column at a time: parquet holds one type per column
        key = rng.choice(list(records[0]))
        value = rng.choice([None, 7, "", "  ", "x", [1, 2]])
        for record in records:
            if rng.random() < 0.5:
                record[key] = value
    path = folder / f"{name}.parquet"
    try:
        pq.write_table(pa.Table.from_pylist(records), path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pq.write_table(pa.Table.from_pylist([{k: json.dumps(v) for k, v in r.items()} for r in records]), path)
    if rng.random() < 0.2:  # a damaged file
        data = path.read_bytes()
        path.write_bytes(rng.choice([cut, invalid_utf8, binary_junk])(rng, data))
    return path


def cases(folder: Path, seed: int = 0):
    """(path, corruptions) pairs adding up to CORRUPTIONS, spread over every format."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [("jsonl", name) for name in ROWS] + [("txt", None), ("csv", None), ("json", None), ("parquet", None)]
    made, index = 0, 0
    while made < CORRUPTIONS:
        kind, format_name = kinds[index % len(kinds)]
        count = min(rng.randint(1, 4), CORRUPTIONS - made)
        name = f"case{index:03d}"
        if kind == "jsonl":
            path = jsonl_case(rng, folder, name, format_name, count)
        else:
            path = {"txt": txt_case, "csv": csv_case, "json": json_array_case, "parquet": parquet_case}[kind](rng, folder, name, count)
        yield path, count
        made += count
        index += 1


def physical_rows(path: Path) -> int | None:
    """Rows a line-based file holds, counted independently of hone's reader (None: not line-based)."""
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        return None
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # JSONL lines end at \n; a lone \r is JSON whitespace
    return sum(1 for line in lines if line.decode("utf-8", errors="replace").strip())


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelArgs())


def test_fuzzed_files_never_crash_and_fix_accounts_for_every_row(tmp_path, tokenizer):
    total, readable, unreadable = 0, 0, []
    for path, count in cases(tmp_path / "in"):
        total += count
        out = tmp_path / "out" / (path.name.split(".")[0] + ".clean.jsonl")
        try:
            report = check_files(path, tokenizer=tokenizer, max_length=128)
        except HoneError as exc:  # a file that cannot be read at all: one line, like the CLI prints
            assert "\n" not in exc.line() and str(path) in exc.line(), exc.line()
            unreadable.append(path.suffix)
            continue
        readable += 1
        assert report.summary_text() and json.dumps(report.to_dict())
        rows_read = report.files[str(path)]["rows_read"]
        expected = physical_rows(path)
        assert expected is None or rows_read == expected, (path, rows_read, expected)
        kept, rejected = write_fixed(report, out)
        assert kept + rejected == rows_read, path
        assert out.read_bytes().count(b"\n") == kept and rejected_path(out).read_bytes().count(b"\n") == rejected
        again = check_files(out)
        assert again.files[str(out)]["rows_read"] == kept and not [f for f in again.errors if f.kind == "invalid_json"], path
    assert total == CORRUPTIONS
    assert readable > 0.9 * (readable + len(unreadable))
    assert set(unreadable) <= {".json", ".parquet"}  # only whole-file formats can be unreadable as a whole
