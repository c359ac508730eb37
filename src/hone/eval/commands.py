"""`hone eval`, `hone compare` and `hone score`: turn parsed arguments into EvalArgs and run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hone.config import EvalArgs
from hone.data.dataset import read_examples, require_clean
from hone.data.io import write_jsonl
from hone.errors import HoneError
from hone.eval.compare import compare_models, evaluate_one, format_comparison_table, format_metrics_table
from hone.eval.models import describe
from hone.eval.multi import compare_runs, format_side_by_side
from hone.eval.score import format_summary, load_reward_model, score_examples, summarize_scores


def eval_args_from(cli) -> EvalArgs:
    """EvalArgs from a run folder's saved `eval:` section (if any), then the command-line flags."""
    args = EvalArgs()
    for name in (getattr(cli, "tuned", None), getattr(cli, "model", None), *(getattr(cli, "runs", None) or [])[:1]):
        if name:
            config = describe(name)[1]
            if config:
                args = config.eval
                break
    given = {f.name: getattr(cli, f.name) for f in dataclasses.fields(EvalArgs) if getattr(cli, f.name, None) is not None}
    if getattr(cli, "metric", None):
        given["metrics"] = list(cli.metric)
    return dataclasses.replace(args, **given)


def eval_command(cli) -> int:
    args = eval_args_from(cli)
    result, examples, source = evaluate_one(cli.model, args, cli.data, cli.dtype)
    print(f"{cli.model} ({result.kind}) on {len(examples)} examples from {source}")
    print(format_metrics_table(result.metrics))
    if cli.json:
        out = {"model": cli.model, "kind": result.kind, "data": source, "metrics": result.metrics,
               "predictions": [{"line": e.line, "answer": a.text, "scores": s} for e, a, s in zip(examples, result.answers, result.scores)]}
        Path(cli.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cli.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {cli.json}")
    return 0


def compare_command(cli) -> int:
    args = eval_args_from(cli)
    if cli.no_general:
        args = dataclasses.replace(args, general=None)
    if getattr(cli, "runs", None):
        return compare_runs_command(cli, args)
    out_dir = Path(cli.out) if cli.out else Path(cli.tuned) / "eval"
    report = compare_models(cli.base, cli.tuned, cli.data, out_dir, args, dtype=cli.dtype)
    print(format_comparison_table(report))
    print(f"\nreport: {out_dir / 'report.html'} (numbers: {out_dir / 'report.json'})")
    return 0


def score_command(cli) -> int:
    """`hone score MODEL --data FILE`: rate every answer of FILE with the reward model MODEL."""
    examples = require_clean(read_examples(cli.data), cli.data)
    reward = load_reward_model(cli.model, cli.base, cli.dtype, cli.trust_remote_code)
    rows = score_examples(reward, examples, cli.batch_size, cli.max_length)
    summary = summarize_scores(rows)
    if not summary["scored"]:
        raise HoneError(f"every row of {cli.data} is longer than --max-length {cli.max_length} tokens", "raise --max-length")
    base = f" over {reward.base}" if reward.base else ""
    print(f"{cli.model} ({reward.kind} reward model{base}) on {cli.data}")
    print(format_summary(summary))
    if cli.out:
        write_jsonl(Path(cli.out), rows)
        print(f"wrote {len(rows)} scored rows to {cli.out}")
    if cli.json:
        Path(cli.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cli.json).write_text(json.dumps({"model": cli.model, "kind": reward.kind, "base": reward.base,
                                              "data": cli.data, "summary": summary}, indent=1))
    return 0


def compare_runs_command(cli, args: EvalArgs) -> int:
    """`hone compare --runs A B ...`: the base and every run side by side."""
    out_dir = Path(cli.out) if cli.out else Path(cli.runs[0]) / "eval-runs"
    report = compare_runs(cli.runs, cli.data, out_dir, args, dtype=cli.dtype, base=cli.base)
    print(format_side_by_side(report))
    print(f"\nreport: {out_dir / 'report.html'} (numbers: {out_dir / 'report.json'}; each run: {out_dir}/NAME/)")
    return 0
