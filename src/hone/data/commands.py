"""`hone convert` and `hone split`: the data stage's own commands (`hone check`, which needs the
model's tokenizer, is wired in `hone.pipeline`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hone.data.check.read import read_file
from hone.data.convert import TARGETS, to_record
from hone.data.io import write_jsonl
from hone.data.split import split_file
from hone.errors import HoneError


def convert_command(in_path: str, out_path: str, target: str) -> int:
    if target not in TARGETS:
        raise HoneError(f"unknown target format {target!r}", f"use one of {', '.join(TARGETS)}")
    data, findings = read_file(in_path, "train")
    errors = [f for f in findings if f.severity == "error" and f.rejects]
    records, warnings, converted = [], Counter(), 0
    for example in data.examples:
        record, notes = to_record(example, target)
        warnings.update(notes)
        converted += record is not None
        records += record if isinstance(record, list) else [record] if record is not None else []
    write_jsonl(Path(out_path), records)
    written = f" as {len(records)} rows" if len(records) != converted else ""  # a pair becomes two unpaired rows
    print(f"converted {converted} of {len(data.rows)} rows to {target}{written}: {out_path}")
    for note, count in warnings.items():
        print(f"warning: {count} row(s): {note}")
    if errors:
        print(f"warning: {len(errors)} unreadable row(s) skipped (first: {errors[0].where()}: {errors[0].message}); "
              f"run `hone check {in_path}`")
    return 0


def split_command(in_path: str, fraction: float, seed: int, out_dir: str | None) -> int:
    train_path, eval_path, n_train, n_eval = split_file(in_path, fraction, seed, out_dir)
    print(f"split {n_train + n_eval} rows: {n_train} -> {train_path}, {n_eval} -> {eval_path} "
          "(duplicates, near-duplicates and shared prompts kept on one side)")
    return 0
