"""`hone eval` and `hone compare`: turn parsed arguments into EvalArgs and run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hone.config import EvalArgs
from hone.eval.compare import compare_models, evaluate_one, format_comparison_table, format_metrics_table
from hone.eval.models import describe


def eval_args_from(cli) -> EvalArgs:
    """EvalArgs from a run folder's saved `eval:` section (if any), then the command-line flags."""
    args = EvalArgs()
    for name in (getattr(cli, "tuned", None), getattr(cli, "model", None)):
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
    out_dir = Path(cli.out) if cli.out else Path(cli.tuned) / "eval"
    if cli.no_general:
        args = dataclasses.replace(args, general=None)
    report = compare_models(cli.base, cli.tuned, cli.data, out_dir, args, dtype=cli.dtype)
    print(format_comparison_table(report))
    print(f"\nreport: {out_dir / 'report.html'} (numbers: {out_dir / 'report.json'})")
    return 0
