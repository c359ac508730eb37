"""Checks that need the tokenizer: length, masking and end-of-turn tokens.

Examples are rendered with `hone.data.render` and cut with `apply_length_policy`, exactly as
training does, so the losses reported here are the losses training will have.
"""

from __future__ import annotations

import numpy as np

from hone.data.check.read import FileData
from hone.data.check.report import Finding
from hone.data.dataset import LengthReport, Renderings, apply_length_policy
from hone.data.render import IGNORE, RenderError, Tokenized
from hone.data.check.views import PAIRED_KINDS, SFT_KINDS
from hone.data.pairs import fit_sequences, render_pair, render_unpaired

END_MARKERS = ("end", "eot", "eos", "</s>")  # special tokens that close a turn: <|im_end|>, <|eot_id|>, <end_of_turn>, ...


def end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in getattr(tokenizer, "all_special_tokens", []):
        if any(marker in token.lower() for marker in END_MARKERS):
            ids.add(tokenizer.convert_tokens_to_ids(token))
    return ids


def trained_runs_end_with(item: Tokenized, ends: set[int]) -> bool:
    """True when every contiguous run of trained tokens ends on an end-of-turn token."""
    labels = item.labels
    for i, label in enumerate(labels):
        closes_run = label != IGNORE and (i + 1 == len(labels) or labels[i + 1] == IGNORE)
        if closes_run and label not in ends:
            return False
    return True


def token_checks(tokenizer, data: FileData, max_length: int, policy: str,
                 render: Renderings | None = None) -> tuple[list[Finding], dict]:
    """`render`, `too_long`, `no_trained_tokens` and `missing_eos` findings, plus length statistics.
    `render`: the run's renderings, so that training reuses what the checks rendered."""
    render = render or Renderings(tokenizer)
    report = LengthReport(policy=policy, max_length=max_length)
    ends = end_of_turn_ids(tokenizer)
    lengths, over, empty, no_eos, findings = [], [], [], [], []
    for example in data.examples:
        if example.kind not in SFT_KINDS + PAIRED_KINDS:
            continue
        try:
            sequences = (render(example),) if example.kind in SFT_KINDS else answer_sequences(tokenizer, example)
        except RenderError as exc:
            findings.append(Finding("render", "error", data.path, [example.line], str(exc), rejects=True))
            continue
        report.examples += 1  # rendered ones only: the token line counts what training would see
        lengths.append(max(len(s.input_ids) for s in sequences))
        if not all(trained_runs_end_with(s, ends) for s in sequences):
            no_eos.append(example.line)
        if example.kind in SFT_KINDS:
            _apply_policy(sequences[0], max_length, policy, report, example.line, over, empty)
        else:
            _apply_pair_policy(sequences, max_length, policy, report, example.line, over, empty)
    findings += _length_findings(data.path, report, over, empty, no_eos)
    # Files without chat or prompt/completion rows (text, preference) have no SFT token line.
    tokens = {**vars(report), "line": report.line(data.role)} if report.examples else None
    stats = {"lengths": length_stats(lengths, "tokens"), "tokens": tokens}
    return findings, stats


def _apply_policy(item: Tokenized, max_length: int, policy: str, report: LengthReport, line: int, over: list, empty: list) -> None:
    """Count `item` exactly as training does, and note the lines that the policy hits."""
    fitted = apply_length_policy(item, max_length, policy, report)
    if not item.trained_tokens:
        empty.append(line)
        return
    if len(item.input_ids) > max_length:
        over.append(line)
    if fitted is None and policy == "truncate":  # the prompt alone fills max_length: nothing is left to learn
        empty.append(line)


def answer_sequences(tokenizer, example) -> tuple[Tokenized, ...]:
    """A pair's prompt + chosen and prompt + rejected, or an unpaired row's prompt + answer, rendered
    as preference training renders them (`hone.data.pairs`)."""
    if example.kind == "preference":
        return render_pair(tokenizer, example).sequences()
    return (render_unpaired(tokenizer, example)[0],)


def _apply_pair_policy(sequences, max_length: int, policy: str, report: LengthReport, line: int, over: list, empty: list) -> None:
    """As `_apply_policy`, for the sequences of one preference row: training keeps or drops them together."""
    fitted = fit_sequences(sequences, max_length, policy, report)
    if not all(s.trained_tokens for s in sequences):
        empty.append(line)
        return
    if any(len(s.input_ids) > max_length for s in sequences):
        over.append(line)
    if fitted is None and policy == "truncate":
        empty.append(line)


def _length_findings(path: str, report: LengthReport, over: list[int], empty: list[int], no_eos: list[int]) -> list[Finding]:
    findings = []
    if over:
        share = report.lost_trained_tokens / max(1, report.lost_trained_tokens + report.trained_tokens)
        findings.append(Finding("too_long", "warning", path, over,
                                f"{len(over)} example(s) longer than max_length {report.max_length} tokens; "
                                f"overlength={report.policy} {'drops' if report.policy == 'drop' else 'truncates'} them: "
                                f"{report.dropped - report.no_trained_tokens} dropped, {report.truncated} truncated, "
                                f"{report.lost_trained_tokens:,} trained tokens lost ({share:.1%})"))
    if empty:
        findings.append(Finding("no_trained_tokens", "warning", path, empty,
                                f"{len(empty)} example(s) have no trained token after masking (and truncation); training drops them",
                                rejects=True))
    if no_eos:
        findings.append(Finding("missing_eos", "warning", path, no_eos,
                                f"{len(no_eos)} example(s) have trained turns that do not end with an end-of-turn/EOS token: "
                                "the model will not learn to stop (check the chat template)"))
    return findings


def length_stats(lengths: list[int], unit: str, bins: int = 10) -> dict | None:
    if not lengths:
        return None
    values = np.asarray(lengths)
    counts, edges = np.histogram(values, bins=bins)
    p50, p90, p95, p99 = (int(v) for v in np.percentile(values, [50, 90, 95, 99]))
    return {"unit": unit, "count": len(values), "mean": round(float(values.mean()), 1), "p50": p50, "p90": p90,
            "p95": p95, "p99": p99, "max": int(values.max()),
            "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": counts.tolist()}}
