"""`hone adapters combine A B ... --how cat --out RUN`: one adapter from several LoRA runs on
the same base (PEFT's `add_weighted_adapter`; we do not reimplement it), saved as a normal hone
run folder, then evaluated in the same command on each source run's held-out set against that
run's own adapter (the specialist): does the combination keep at least `KEEP` of each
specialist's main metric (`eval.primary_metric`), or by how much does it fall short?
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from hone import __version__
from hone.config import RunConfig, save_config
from hone.errors import HoneError
from hone.eval.compare import build_report, evaluate_model, load_eval_examples
from hone.eval.forgetting import resolve_general
from hone.eval.metrics import build_settings
from hone.eval.models import RUN_CONFIG, EvalModel, load_tokenizer, model_args_for
from hone.eval.multi import run_configs
from hone.eval.multi_report import write_side_by_side
from hone.eval.report import write_report
from hone.model.load import pick_device, pick_dtype, resolve_model_path
from hone.model.methods import get as get_method
from hone.model.multi import check_combinable, combine_adapters, load_adapters, read_adapter_config

KEEP = 0.90
"""Share of each specialist's main metric the combined adapter should keep."""
COMBINED = "default"
"""The combined adapter's PEFT name: PEFT saves the `default` adapter at the top of a folder."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")




def combine_runs(runs: list[str], weights: list[float] | None, how: str, out: str, density: float | None = None,
                 svd_rank: int | None = None, limit: int | None = None, general: bool = True) -> dict:
    """Combine `runs` into the run folder `out`, evaluate it against each source; returns the report."""
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HoneError(f"{out_dir} already exists and is not empty", "pass --out a new folder")
    if len(runs) < 2:
        raise HoneError("combining needs at least two run folders", "pass two or more runs: hone adapters combine A B --out RUN")
    configs = run_configs(runs)
    folders = dict(zip(configs, runs))
    check_same_base(configs)
    check_combinable({folders[n]: read_adapter_config(Path(folders[n])) for n in configs}, how)
    weights = weights or [1.0] * len(runs)
    if len(weights) != len(runs):
        raise HoneError(f"{len(weights)} weights for {len(runs)} adapters", "give one --weights value per run, or none")
    first = next(iter(configs.values()))
    # Combine in fp32 (PEFT's SVD and sign votes want it); evaluate in the runs' compute dtype after.
    quantize = get_method(first.adapter.method).quantize_4bit
    fp32_args = dataclasses.replace(model_args_for(first.model.path, first.model, "float32"), tokenizer=first.model.tokenizer)
    model = load_adapters(fp32_args, {n: Path(f) for n, f in folders.items()}, quantize_4bit=quantize)
    combine_adapters(model, list(configs), weights, how, COMBINED, density=density, svd_rank=svd_rank)
    write_run_folder(model, first, Path(folders[next(iter(folders))]), out_dir)
    print(f"combined {len(runs)} adapters ({how}, weights {weights}) -> {out_dir}")
    compute_args = dataclasses.replace(fp32_args, dtype=first.model.dtype)
    dtype = pick_dtype(compute_args, pick_device(compute_args))
    if not quantize:
        model.to(dtype)
    report = evaluate_against_specialists(model, configs, folders, out_dir, limit, general, compute_args)
    report["combination"] = {"runs": runs, "weights": weights, "how": how, "density": density, "svd_rank": svd_rank}
    write_side_by_side(report, out_dir / "eval")
    (out_dir / "combine.json").write_text(json.dumps({**report["combination"], "retention": report["retention"]}, indent=1))
    return report


def check_same_base(configs: dict[str, RunConfig]) -> None:
    """Refuse runs trained on different bases, or with different ways of storing it (QLoRA's 4-bit)."""
    bases = {name: (resolve_model_path(c.model.path), get_method(c.adapter.method).quantize_4bit) for name, c in configs.items()}
    if len(set(bases.values())) > 1:
        listed = ", ".join(f"{name}: {base}{' (4-bit)' if q else ''}" for name, (base, q) in bases.items())
        raise HoneError(f"the runs were trained on different bases ({listed})", "combine runs trained on the same base model")


def write_run_folder(model, config: RunConfig, source: Path, out_dir: Path) -> None:
    """A normal hone run folder: the PEFT adapter, the resolved config and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), selected_adapters=[COMBINED])  # adapter_config.json + adapter_model.safetensors
    peft_config = model.peft_config[COMBINED]
    adapter = dataclasses.replace(config.adapter, lora_rank=peft_config.r, lora_alpha=float(peft_config.lora_alpha))
    train = dataclasses.replace(config.train, output_dir=str(out_dir))
    save_config(dataclasses.replace(config, adapter=adapter, train=train), out_dir / RUN_CONFIG)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)


def evaluate_against_specialists(model, configs: dict[str, RunConfig], folders: dict[str, str], out_dir: Path,
                                 limit: int | None, general: bool, base_args) -> dict:
    """Each source's held-out set: its specialist adapter against the combined one, paired."""
    device = pick_device(base_args)
    dtype = pick_dtype(base_args, device)
    metrics, runs, retention = {}, {}, []
    for name, config in configs.items():
        folder = Path(folders[name])
        args = dataclasses.replace(config.eval, limit=limit or config.eval.limit,
                                   general=config.eval.general if general else None)
        examples, source = load_eval_examples(args.data, folder, args.limit)
        settings = build_settings(args.schema, args.regex, args.metrics)
        general_path = resolve_general(args.general)
        tokenizer = load_tokenizer(base_args, folder=folder if (folder / "tokenizer_config.json").is_file() else None)
        results = {}
        print(f"evaluating the specialist {name} and the combined adapter on {len(examples)} examples of {source}")
        for adapter, path in ((name, str(folder)), (COMBINED, str(out_dir))):
            model.set_adapter(adapter)
            loaded = EvalModel(model, tokenizer, path, "adapter", device, dtype, config)
            results[adapter] = evaluate_model(loaded, examples, args, settings, general_path)
        report = build_report(results[name], results[COMBINED], examples, source, args, None, general_path)
        write_report(report, out_dir / "eval" / name)
        metrics[name], metrics[f"combined on {name}"] = report["baseline"], report["tuned"]
        runs[f"combined on {name}"] = {"deltas": report["deltas"], "forgetting": report["forgetting"], "overfitting": None,
                                       "verdict": report["verdict"], "report": f"{name}/report.html"}
        retention.append(kept(name, report))
    return {"title": f"combined adapter {out_dir} against each specialist", "hone_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "data": {"source": "each source run's held-out set", "examples": sum(r["examples"] for r in retention)},
            "primary_metric": None, "keep": KEEP, "retention": retention,
            "models": [{"name": n, "path": folders.get(n, str(out_dir)), "kind": "adapter"} for n in metrics],
            "metrics": metrics, "runs": runs}


def kept(task: str, report: dict) -> dict:
    """How much of the specialist's main metric the combined adapter keeps on the specialist's task."""
    metric = report["primary_metric"]
    specialist, combined = report["baseline"][metric], report["tuned"][metric]
    # A specialist at 0 is kept by anything that is not below it.
    share = combined / specialist if specialist else float(combined >= specialist)
    delta = report["deltas"].get(metric, {})
    if share >= KEEP:
        verdict = f"keeps {share:.1%} of the specialist's {metric} (at least {KEEP:.0%})"
    else:
        verdict = (f"falls short: keeps {share:.1%} of the specialist's {metric}, {KEEP * specialist - combined:.3f} "
                   f"below {KEEP:.0%} of it ({KEEP * specialist:.3f})")
    return {"task": task, "metric": metric, "specialist": specialist, "combined": combined, "kept": share,
            "meets": share >= KEEP, "verdict": verdict, "examples": report["data"]["examples"],
            "ci_low": delta.get("ci_low"), "ci_high": delta.get("ci_high")}


def format_retention(report: dict) -> str:
    rows = [("task", "metric", "specialist", "combined", "kept", "95% CI of change")]
    for r in report["retention"]:
        ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["ci_low"] is not None else ""
        rows.append((r["task"], r["metric"], f"{r['specialist']:.3f}", f"{r['combined']:.3f}", f"{r['kept']:.1%}", ci))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:] + [""] + [f"{r['task']}: {r['verdict']}" for r in report["retention"]])


def combine_command(cli) -> int:
    report = combine_runs(cli.runs, cli.weights, cli.how, cli.out, cli.density, cli.rank, cli.limit, not cli.no_general)
    print(format_retention(report))
    print(f"\nrun folder: {cli.out} (report: {Path(cli.out) / 'eval' / 'report.html'})")
    return 0
