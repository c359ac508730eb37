"""`hone quickstart`: the whole path on the embedded model and the demo task.

check the data -> plan the run -> train a LoRA adapter -> compare base and tuned model on
held-out tickets -> write `OUT/metrics.json` ({"baseline": ..., "tuned": ...}) and a report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hone.config import EvalArgs, load_config
from hone.errors import HoneError
from hone.eval.compare import compare_models, format_comparison_table
from hone.model.load import ASSETS
from hone.pipeline import prepare_training_data
from hone.plan.estimate import print_plan
from hone.train.sft import run_sft

DEMO = ASSETS / "demo"
RECIPE = ASSETS / "quickstart.yaml"
HEADLINE = ["eval_loss", "json_valid", "schema_valid", "field_exact_match", "field.product", "field.category",
            "field.urgency", "field.summary", "exact_match", "general_perplexity"]


def quickstart(out: str) -> int:
    started = time.perf_counter()
    out_dir = Path(out)
    if (out_dir / "run" / "checkpoints").exists():
        raise HoneError(f"{out_dir} already holds a quickstart run", "pass --out to a new folder, or delete it")
    config = load_config(RECIPE, [f"train.output_dir={out_dir / 'run'}", f"data.train={DEMO / 'train.jsonl'}",
                                  f"data.eval={DEMO / 'eval.jsonl'}", "eval.compare=false",
                                  f"replay.data={ASSETS / 'corpus' / 'train.txt.gz'}", f"eval.schema={DEMO / 'schema.json'}"])
    print("== 1/4 data check: demo support tickets -> JSON")
    data = prepare_training_data(config)  # read, checked and tokenized once, for every step below
    print("\n== 2/4 plan")
    plan = print_plan(config, splits=(data.train, data.evals))
    print("\n== 3/4 train: LoRA on the embedded base model, with general-text replay against forgetting")
    run_dir = run_sft(config, plan=plan, data=data)
    print("\n== 4/4 evaluate: base vs tuned on held-out tickets")
    report = compare(run_dir, out_dir, config.eval, data.eval_examples)
    metrics = {"baseline": report["baseline"], "tuned": report["tuned"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"\nwrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'} in {time.perf_counter() - started:.0f} s")
    return 0


def compare(run_dir: Path, out_dir: Path, args: EvalArgs, examples: list) -> dict:
    report = compare_models("embedded", str(run_dir), None, out_dir, args, examples=examples)
    print(format_comparison_table(report, only=HEADLINE))
    print(f"(every metric: {out_dir / 'report.json'})")
    return report
