"""Several runs on one base, evaluated side by side: `hone compare --runs A B ...`.

The base is loaded once with every run's adapter on it by name (hone.model.multi), each model
answers the same examples, and each run is compared with the base exactly as `hone compare
--tuned` compares one (paired CIs, forgetting, overfitting): its own report lands in
`OUT/<name>/`, and `OUT/report.json` + `OUT/report.html` hold them side by side. Runs that
cannot share a base (full fine-tuning, a different base, mixed adapter types) are loaded one
at a time instead.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from contextlib import nullcontext
from pathlib import Path

from hone import __version__
from hone.config import EvalArgs, RunConfig
from hone.data.formats import Example
from hone.errors import HoneError
from hone.eval.compare import ModelResult, build_report, evaluate_model, load_eval_examples
from hone.eval.forgetting import resolve_general
from hone.eval.metrics import build_settings
from hone.eval.models import EvalModel, describe, load_for_eval, load_tokenizer, model_args_for, read_run_config
from hone.eval.multi_report import metric_rows, write_side_by_side
from hone.eval.report import write_report
from hone.model.load import pick_device, pick_dtype, resolve_model_path
from hone.model.methods import get as get_method
from hone.model.multi import adapter_names, load_adapters, read_adapter_config


def run_configs(runs: list[str]) -> dict[str, RunConfig]:
    """Each run folder's resolved config, by adapter name; a HoneError for anything else."""
    configs = {}
    for name, run in zip(adapter_names([Path(r) for r in runs]), runs):
        describe(run)  # a run folder without weights fails here, in one line
        config = read_run_config(run)
        if config is None:
            raise HoneError(f"{run} is not a hone run folder (no config.yaml)", "pass folders written by `hone train`")
        configs[name] = config
    return configs


def shared_base(configs: dict[str, RunConfig], runs: list[str]) -> bool:
    """True when every run is a PEFT adapter of one type over the same, identically loaded base."""
    bases = {(resolve_model_path(c.model.path), get_method(c.adapter.method).quantize_4bit) for c in configs.values()}
    folders = [Path(run) for run in runs]
    if len(bases) != 1 or any(get_method(c.adapter.method).run_kind != "adapter" for c in configs.values()):
        return False
    return all((f / "adapter_config.json").is_file() for f in folders) and \
        len({read_adapter_config(f).get("peft_type") for f in folders}) == 1


def evaluate_runs(runs: list[str], examples: list[Example], args: EvalArgs, dtype: str | None = None,
                  base: str | None = None) -> dict[str, ModelResult]:
    """{"base": result, name: result, ...}: the base and every run on the same `examples`."""
    configs = run_configs(runs)
    folders = dict(zip(configs, runs))
    first = next(iter(configs.values()))
    settings = build_settings(args.schema, args.regex, args.metrics)
    general = resolve_general(args.general)
    base = base or first.model.path
    if shared_base(configs, runs) and base == first.model.path:
        return _evaluate_on_one_base(configs, folders, base, examples, args, settings, general, dtype)
    results = {"base": evaluate_model(load_for_eval(base, like=first.model, dtype=dtype), examples, args, settings, general)}
    for name, run in folders.items():
        results[name] = evaluate_model(load_for_eval(run, dtype=dtype), examples, args, settings, general)
        gc.collect()
    return results


def _evaluate_on_one_base(configs, folders, base, examples, args, settings, general, dtype) -> dict[str, ModelResult]:
    first = next(iter(configs.values()))
    base_args = dataclasses.replace(model_args_for(first.model.path, first.model, dtype), tokenizer=first.model.tokenizer)
    model = load_adapters(base_args, {n: Path(f) for n, f in folders.items()},
                          quantize_4bit=get_method(first.adapter.method).quantize_4bit)
    device = pick_device(base_args)
    results = {}
    for name in ["base", *configs]:
        folder = Path(folders.get(name, folders[next(iter(folders))]))
        tokenizer = _run_tokenizer(folder, base_args)
        if name != "base":
            model.set_adapter(name)
        context = model.disable_adapter() if name == "base" else nullcontext()
        loaded = EvalModel(model, tokenizer, base if name == "base" else folders[name], "base" if name == "base" else "adapter",
                           device, pick_dtype(base_args, device), None if name == "base" else configs[name])
        with context:
            results[name] = evaluate_model(loaded, examples, args, settings, general)
    return results


def _run_tokenizer(folder: Path, base_args):
    """The run's saved tokenizer (its chat template), else the base's."""
    return load_tokenizer(base_args, folder=folder if (folder / "tokenizer_config.json").is_file() else None)


def compare_runs(runs: list[str], data: str | None, out_dir: Path, args: EvalArgs, dtype: str | None = None,
                 base: str | None = None) -> dict:
    """`hone compare --runs`: the base and each run on the same examples (`data`, else the first
    run's eval data); writes OUT/report.json + report.html side by side and OUT/<name>/ per run."""
    if len(set(runs)) != len(runs):
        raise HoneError("the same run folder is given twice", "name each run folder once")
    examples, source = load_eval_examples(data or args.data, Path(runs[0]), args.limit)
    results = evaluate_runs(runs, examples, args, dtype, base)
    general = resolve_general(args.general)
    reports = {}
    for name, run in zip([n for n in results if n != "base"], runs):
        reports[name] = build_report(results["base"], results[name], examples, source, args, Path(run), general)
        write_report(reports[name], out_dir / name)
    report = side_by_side_report(results, reports, runs, source, len(examples), args)
    write_side_by_side(report, out_dir)
    return report


def side_by_side_report(results: dict[str, ModelResult], reports: dict[str, dict], runs: list[str], source: str,
                        count: int, args: EvalArgs) -> dict:
    """The base and every run in one JSON-ready dict; each run's full comparison is in `runs`."""
    primary = next(iter(reports.values()))["primary_metric"]
    return {
        "hone_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": {"source": source, "examples": count},
        "primary_metric": primary,
        "models": [{"name": "base", "path": results["base"].name, "kind": results["base"].kind}]
                  + [{"name": n, "path": run, "kind": results[n].kind} for n, run in zip(reports, runs)],
        "metrics": {name: reports[next(iter(reports))]["baseline"] if name == "base" else reports[name]["tuned"]
                    for name in results},
        "runs": {name: {"deltas": r["deltas"], "forgetting": r["forgetting"], "overfitting": r["overfitting"],
                        "verdict": r["verdict"], "report": f"{name}/report.html"} for name, r in reports.items()},
        "settings": {k: v for k, v in dataclasses.asdict(args).items() if k not in ("compare", "data")},
    }


def format_side_by_side(report: dict, only: list[str] | None = None) -> str:
    """The terminal table: one column per model, each run's change on the primary metric with its CI."""
    names = [m["name"] for m in report["models"]]
    rows = [("metric", *names)] + metric_rows(report, only)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    verdicts = [f"{name}: {line}" for name, run in report["runs"].items() for line in run["verdict"][:2]]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:] + [""] + verdicts)
