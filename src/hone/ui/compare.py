"""The Compare tab: a run's comparison report (base against tuned, CIs, forgetting) and
several runs side by side, read from the report.json and summary.json each run wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hone.errors import HoneError
from hone.ui.runs import read_json, report_dir

# Shown for every run when present; a run's primary metric is added in front.
HEADLINE = ("eval_loss", "json_valid", "schema_valid", "exact_match", "token_f1", "general_perplexity")
SUMMARY_KEYS = ("method", "steps", "train_seconds", "trained_tokens", "final_eval_loss", "peak_rss_mb", "trainable_parameters")


def read_report(run_dir: Path) -> dict[str, Any]:
    """The run's report.json, with where it lies; a HoneError when the run has none yet."""
    folder = report_dir(run_dir)
    report = read_json(folder / "report.json") if folder else None
    if report is None:
        raise HoneError(f"{run_dir} has no comparison report yet",
                        "let the run finish with eval.compare=true, or press Compare to run `hone compare` on it")
    return {**report, "report_dir": str(folder)}


def metric_row(report: dict, name: str) -> dict[str, Any]:
    """Base, tuned and the change of one metric, with its 95% CI and significance when paired."""
    delta = (report.get("deltas") or {}).get(name) or {}
    base, tuned = (report.get("baseline") or {}).get(name), (report.get("tuned") or {}).get(name)
    change = tuned - base if isinstance(base, (int, float)) and isinstance(tuned, (int, float)) else None
    return {"metric": name, "baseline": base, "tuned": tuned, "delta": delta.get("delta", change),
            "ci": [delta["ci_low"], delta["ci_high"]] if "ci_low" in delta else None, "significant": delta.get("significant"),
            "direction": delta.get("direction")}


def run_column(run_dir: Path) -> dict[str, Any]:
    """One run's column: its summary, its headline metrics, forgetting and verdict (or why none)."""
    summary = read_json(run_dir / "summary.json") or {}
    column: dict[str, Any] = {"run": str(run_dir), "name": run_dir.name, "summary": {k: summary.get(k) for k in SUMMARY_KEYS}}
    try:
        report = read_report(run_dir)
    except HoneError as exc:
        return {**column, "error": exc.line()}
    primary = report.get("primary_metric")
    names = [primary] + [n for n in HEADLINE if n != primary] if primary else list(HEADLINE)
    metrics = [metric_row(report, n) for n in names if n in (report.get("tuned") or {})]
    forgetting = report.get("forgetting") or {}
    return {**column, "primary_metric": primary, "metrics": metrics, "verdict": report.get("verdict") or [],
            "examples": (report.get("data") or {}).get("examples"),
            "forgetting": {k: forgetting.get(k) for k in ("relative_change", "flagged", "threshold")} if forgetting else None}


def compare_runs(run_dirs: list[Path]) -> list[dict[str, Any]]:
    if not run_dirs:
        raise HoneError("no runs chosen to compare", "tick one or more runs")
    return [run_column(run) for run in run_dirs]
