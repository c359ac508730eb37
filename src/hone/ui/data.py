"""The Data tab: the data doctor (`hone check`) on a picked or uploaded file, the rows each
finding names, the token-length histogram, what each length cut would cost, and `--fix`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hone.data.check import CheckArgs
from hone.data.check.fix import rejected_path, write_fixed
from hone.data.check.run import check_read, read_files
from hone.data.check.views import SFT_KINDS
from hone.data.dataset import LengthReport, Renderings, apply_length_policy
from hone.data.render import RenderError
from hone.errors import HoneError
from hone.model.load import ASSETS

DEMO = ASSETS / "demo"
ROWS_SHOWN = 5  # offending rows shown per finding; the rest are counted
ROW_CHARS = 600
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def demo_files() -> dict[str, str]:
    """The embedded demo task: support tickets -> JSON."""
    return {"train": str(DEMO / "train.jsonl"), "eval": str(DEMO / "eval.jsonl"), "schema": str(DEMO / "schema.json")}


def planted_demo(folder: Path) -> Path:
    """A copy of 200 demo tickets with one of each common defect planted (a duplicate, a broken
    JSON line, an empty answer, a wrong role order, an e-mail address, an over-long ticket), so a
    first look at the doctor shows what it finds. Written once into `folder`."""
    path = folder / "demo_with_defects.jsonl"
    if path.is_file():
        return path
    lines = (DEMO / "train.jsonl").read_text().splitlines()[:200]
    first = json.loads(lines[0])
    system, user = first["messages"][0], first["messages"][1]
    empty = {"messages": [system, user, {"role": "assistant", "content": ""}]}
    wrong_order = {"messages": [system, {"role": "assistant", "content": "{}"}, user]}
    email = json.loads(lines[5])
    email["messages"][1]["content"] += "\nReach me at olivia.brown@example.com."
    long_ticket = json.loads(lines[9])
    long_ticket["messages"][1]["content"] = " ".join([long_ticket["messages"][1]["content"]] * 12)
    planted = [lines[3], '{"messages": [{"role": "user", "content": "unterminated', json.dumps(empty),
               json.dumps(wrong_order), json.dumps(email), json.dumps(long_ticket)]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines[:100] + planted + lines[100:]) + "\n")
    return path


def save_upload(folder: Path, name: str, body: bytes) -> Path:
    """Store an uploaded file under `folder` with a safe name (never outside it)."""
    if not body:
        raise HoneError(f"uploaded file {name!r} is empty", "pick a non-empty data file")
    clean = SAFE_NAME.sub("_", Path(name).name).lstrip(".") or "upload.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / clean
    path.write_bytes(body)
    return path


def run_check(train: str, eval_path: str | None, tokenizer, max_length: int, overlength: str):
    """(report, renderings): the doctor over the files, as `hone check` runs it."""
    for path in (train, eval_path):
        if path and not Path(path).is_file():
            raise HoneError(f"data file not found: {path}", "check the path, or upload the file")
    render = Renderings(tokenizer) if tokenizer is not None else None
    files, findings = read_files(train, eval_path or None)
    report = check_read(files, findings, tokenizer, max_length, overlength, CheckArgs(), render=render)
    return report, render


def row_texts(report) -> dict[str, dict[int, str]]:
    """file -> line -> the row as read (its record, or the raw text of a line that did not parse)."""
    out: dict[str, dict[int, str]] = {}
    for data in report.data:
        rows = out.setdefault(data.path, {})
        for row in data.rows:
            text = json.dumps(row.record, ensure_ascii=False) if row.record is not None else (row.raw or "")
            rows[row.line] = text if len(text) <= ROW_CHARS else text[:ROW_CHARS] + " ..."
    return out


def findings_with_rows(report) -> list[dict[str, Any]]:
    texts = row_texts(report)
    out = []
    for finding in report.findings:
        entry = finding.to_dict()
        entry["where"] = finding.where()
        entry["shown"] = [{"line": line, "text": texts.get(finding.file, {}).get(line, "")} for line in finding.rows[:ROWS_SHOWN]]
        out.append(entry)
    return out


def truncation_costs(report, render, max_length: int) -> list[dict[str, Any]]:
    """For the chosen `max_length` and the length percentiles around it: examples dropped or
    truncated and trained tokens lost under each policy, counted as training counts them."""
    stats = report.stats.get("train", {}).get("lengths") or {}
    if render is None or stats.get("unit") != "tokens":
        return []
    items = []
    for example in report.data[0].examples:
        if example.kind in SFT_KINDS:
            try:
                items.append(render(example))
            except RenderError:
                continue
    cuts = sorted({max_length, *(stats[p] for p in ("p50", "p90", "p99") if stats.get(p))})
    rows = []
    for cut in cuts:
        row = {"max_length": cut, "chosen": cut == max_length}
        for policy in ("drop", "truncate"):
            counted = LengthReport(policy=policy, max_length=cut)
            for item in items:
                apply_length_policy(item, cut, policy, counted)
            kept = counted.trained_tokens
            row[policy] = {"dropped": counted.dropped, "truncated": counted.truncated, "trained_tokens": kept,
                           "lost_trained_tokens": counted.lost_trained_tokens,
                           "lost_share": counted.lost_trained_tokens / max(1, kept + counted.lost_trained_tokens)}
        rows.append(row)
    return rows


def check_view(train: str, eval_path: str | None, tokenizer, max_length: int, overlength: str) -> dict[str, Any]:
    """Everything the Data tab shows for one check."""
    report, render = run_check(train, eval_path, tokenizer, max_length, overlength)
    return {"summary": report.summary_text(), "files": report.files, "stats": report.stats, "notes": report.notes,
            "findings": findings_with_rows(report), "errors": len(report.errors),
            "truncation": truncation_costs(report, render, max_length), "fixed_path": default_fixed_path(train)}


def default_fixed_path(train: str) -> str:
    """`data/my.jsonl` -> `data/my.fixed.jsonl`, beside the checked file."""
    path = Path(train)
    name = path.name.removesuffix(".gz")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return str(path.with_name(f"{stem}.fixed.jsonl"))


def fix_file(train: str, eval_path: str | None, tokenizer, max_length: int, overlength: str, out: str) -> dict[str, Any]:
    """`hone check TRAIN --fix OUT`: the clean rows to OUT, every removed row with its reason beside it."""
    if Path(out).resolve() == Path(train).resolve():
        raise HoneError(f"{out} is the file being checked", "write the fixed rows to a new file")
    report, _ = run_check(train, eval_path, tokenizer, max_length, overlength)
    kept, rejected = write_fixed(report, out)
    return {"fixed": out, "rejected": str(rejected_path(Path(out))), "kept": kept, "rejected_rows": rejected,
            "rows_read": report.files[report.data[0].path]["rows_read"]}


def demo_prompt(index: int = 0) -> dict[str, str]:
    """The system and user turns of a held-out demo ticket (the Chat tab's example prompt)."""
    lines = (DEMO / "eval.jsonl").read_text().splitlines()
    messages = json.loads(lines[index % len(lines)])["messages"]
    first = {m["role"]: m["content"] for m in reversed(messages)}
    return {"system": first.get("system", ""), "prompt": first.get("user", "")}
