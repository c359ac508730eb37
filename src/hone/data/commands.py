"""`hone check`, `hone convert` and `hone split`: the data doctor's commands."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from hone.config import DataArgs, ModelArgs
from hone.data.check import CheckArgs, check_files
from hone.data.check.fix import rejected_path, write_fixed
from hone.data.check.read import read_file
from hone.data.check.show import show_examples
from hone.data.convert import TARGETS, to_record
from hone.data.io import write_jsonl
from hone.data.split import split_file
from hone.errors import HoneError


def check_tokenizer(model: str | None):
    """The tokenizer of `--model`, else the embedded model's; None (checks skipped) when neither exists."""
    from hone.model.load import EMBEDDED_MODEL, load_tokenizer

    if model is None and not (EMBEDDED_MODEL / "tokenizer_config.json").is_file():
        return None
    return load_tokenizer(ModelArgs() if model is None else ModelArgs(path=model))


def check_command(data: str, eval_path: str | None = None, model: str | None = None, max_length: int | None = None,
                  overlength: str = "drop", json_path: str | None = None, fix: str | None = None, show: int = 0,
                  near_duplicate_threshold: float = 0.8) -> int:
    """Exit 0 without error findings, 1 with; HoneError (exit 2) when the check cannot run."""
    tokenizer = check_tokenizer(model)
    args = CheckArgs(near_duplicate_threshold=near_duplicate_threshold)
    report = check_files(data, eval_path, tokenizer, max_length or DataArgs().max_length, overlength, args)
    if tokenizer is None:
        report.notes.append("the embedded model is not installed; pass --model for the token checks")
    print(report.summary_text())
    if show and tokenizer is not None:
        print(show_examples(tokenizer, report.data[0].examples, show, colour=sys.stdout.isatty()))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
        print(f"report: {json_path}")
    if fix:
        kept, rejected = write_fixed(report, fix)
        print(f"fixed: {kept} rows -> {fix}; {rejected} rejected -> {rejected_path(Path(fix))} "
              f"({kept + rejected} = {report.files[report.data[0].path]['rows_read']} rows read)")
    return 1 if report.errors else 0


def convert_command(in_path: str, out_path: str, target: str) -> int:
    if target not in TARGETS:
        raise HoneError(f"unknown target format {target!r}", f"use one of {', '.join(TARGETS)}")
    data, findings = read_file(in_path, "train")
    errors = [f for f in findings if f.severity == "error" and f.rejects]
    records, warnings = [], Counter()
    for example in data.examples:
        record, notes = to_record(example, target)
        warnings.update(notes)
        if record is not None:
            records.append(record)
    write_jsonl(Path(out_path), records)
    print(f"converted {len(records)} of {len(data.rows)} rows to {target}: {out_path}")
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
