"""`check_files`: read the data, run every check, return one report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hone.data.check import content, preference, similarity
from hone.data.check.read import FileData, format_counts, read_file
from hone.data.check.report import CheckReport, Finding
from hone.data.check.tokens import length_stats, token_checks
from hone.data.check.views import PAIRED_KINDS, SFT_KINDS
from hone.config import DataArgs
from hone.data.dataset import Renderings
from hone.errors import HoneError


@dataclass
class CheckArgs:
    """Thresholds of the data doctor."""

    near_duplicate_threshold: float = 0.8
    """Estimated Jaccard similarity of word-bigram sets above which two rows are near-duplicates."""
    contradiction_threshold: float = 0.9
    """Prompt similarity above which two prompts count as "nearly the same" for contradictions."""
    num_perm: int = 64
    """MinHash permutations: more is more precise and slower."""
    shingle_words: int = 2
    """Words per shingle."""


def check_files(train_path: str | Path, eval_path: str | Path | None = None, tokenizer=None,
                max_length: int | None = None, overlength: str = "drop", args: CheckArgs | None = None) -> CheckReport:
    """Check a training file (and an eval file). Never raises for bad rows: they become findings.

    Without a tokenizer, the token checks (too_long, no_trained_tokens, missing_eos) are skipped.
    Raises HoneError only when a file cannot be read at all.
    """
    files, findings = read_files(train_path, eval_path)
    return check_read(files, findings, tokenizer, max_length, overlength, args)


def read_files(train_path: str | Path, eval_path: str | Path | None = None) -> tuple[list[FileData], list[Finding]]:
    """Each file read once, row by row, with the findings of reading it."""
    if eval_path is not None and Path(eval_path).resolve() == Path(train_path).resolve():
        raise HoneError(f"{eval_path} is both the training and the eval file", "give a separate eval file, or none")
    files, findings = [], []
    for path, role in ((train_path, "train"), (eval_path, "eval")):
        if path is not None:
            data, found = read_file(path, role)
            files.append(data)
            findings += found
    return files, findings


def check_read(files: list[FileData], findings: list[Finding], tokenizer=None, max_length: int | None = None,
               overlength: str = "drop", args: CheckArgs | None = None, render: Renderings | None = None) -> CheckReport:
    """Every check over files `read_files` read; `render` shares the renderings with training."""
    args, findings = args or CheckArgs(), list(findings)
    found, clusters = _similarity(files, args)
    findings += found
    stats, notes = {}, []
    for data in files:
        found, stats[data.role] = _file_checks(data, tokenizer, max_length, overlength, args, render)
        findings += found
    if tokenizer is None:
        notes.append("token checks (too_long, no_trained_tokens, missing_eos) skipped: no tokenizer")
    else:
        notes += [f"{data.path}: token checks cover chat, prompt/completion and preference rows; this file has none"
                  for data in files if data.examples and not any(e.kind in SFT_KINDS + PAIRED_KINDS for e in data.examples)]
    stats["train"]["near_duplicate_clusters"] = clusters
    return CheckReport(files={d.path: _file_info(d) for d in files}, stats=stats, findings=_ordered(findings),
                       data=files, notes=notes)


def _similarity(files: list[FileData], args: CheckArgs) -> tuple[list[Finding], list[dict]]:
    groups = similarity.group_examples(files, args.near_duplicate_threshold, args.num_perm, args.shingle_words)
    findings = similarity.duplicate_findings(groups) + similarity.near_duplicate_findings(groups, args.near_duplicate_threshold)
    if len(files) == 2:
        findings += similarity.leakage_findings(groups, files[0].path, files[1].path)
        copied = {row for f in findings if f.kind == "eval_leakage" for row in f.rows}
        findings += preference.prompt_leakage_findings(files[0], files[1], copied)
    findings += similarity.contradiction_findings(files[0], args.contradiction_threshold, args.num_perm, args.shingle_words)
    return findings, similarity.largest_clusters(groups, files[0].path)


def _file_checks(data: FileData, tokenizer, max_length: int | None, overlength: str, args: CheckArgs,
                 render: Renderings | None = None) -> tuple[list[Finding], dict]:
    examples = data.examples
    findings = content.pii_findings(data) + preference.preference_findings(data)
    stats = {"roles": content.role_counts(data), "lengths": length_stats(content.word_length_stats(examples), "words")}
    if preference.length_stats(data):
        stats["preference"] = preference.length_stats(data)
    if data.role == "train":
        findings += content.low_count_findings(data) + content.format_findings(data)
        stats |= {"prompt_diversity": content.prompt_diversity(examples), "labels": content.label_stats(examples)}
    if tokenizer is not None:
        found, token_stats = token_checks(tokenizer, data, max_length or DataArgs().max_length, overlength, render)
        findings += found
        stats |= {key: value for key, value in token_stats.items() if value is not None}
    return findings, stats


def _file_info(data: FileData) -> dict:
    return {"role": data.role, "rows_read": len(data.rows), "examples": len(data.examples), "formats": format_counts(data)}


def _ordered(findings: list[Finding]) -> list[Finding]:
    """Errors first, then by file and first row."""
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (rank[f.severity], f.file, f.rows[0] if f.rows else 0, f.kind))
