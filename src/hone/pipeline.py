"""The commands that walk more than one stage, top-down, so that no stage imports another back.

`hone train`: check the data (with the model's tokenizer) -> plan -> fit -> compare with the
base model. `hone check`: the data doctor, with the model's tokenizer for its token checks.
The stages know nothing of each other's commands; this module wires them (`quickstart.py`
does the same for the demo).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hone.config import DataArgs, ModelArgs, RunConfig
from hone.data.check import CheckArgs, check_files
from hone.data.check.read import loaded_from
from hone.data.check.run import check_read, read_files
from hone.data.dataset import Renderings
from hone.data.prepare import RunData, prepare_run_data
from hone.data.check.fix import rejected_path, write_fixed
from hone.data.check.show import show_examples
from hone.errors import HoneError
from hone.eval.compare import compare_models, format_comparison_table
from hone.model.load import EMBEDDED_MODEL, check_weights, load_tokenizer, pick_device, resolve_model_path
from hone.plan.estimate import print_plan
from hone.train import objectives
from hone.train import distributed
from hone.train.commands import resolve_config
from hone.train.tracking import log_report
from hone.train.loop import Interrupted
from hone.train.sft import run_sft


def train_command(config_path: str | None, overrides: list[str], resume, force: bool = False) -> int:
    config = resolve_config(config_path, overrides, resume)
    if config.train.nproc > 1 and not distributed.under_torchrun():  # this command again, under torchrun
        return distributed.launch(config.train.nproc, distributed.train_argv(config_path, overrides, resume, force))
    world = distributed.start(config)  # rank 0 alone prints, plans, compares and reports
    data = prepare_training_data(config, check=config.data.check and not resume, force=force)
    plan = print_plan(config, splits=(data.train, data.evals)) if world.main else None
    try:
        run_dir = run_sft(config, resume=bool(resume), plan=plan, data=data)
        distributed.stop(world)
        if not world.main:
            return 0
        if config.eval.compare:
            compare_with_base(run_dir, config, data.eval_examples)
        log_report(run_dir, config)
    except Interrupted as exc:
        print(f"hone: {exc}; continue with: hone train --resume {config.train.output_dir}")
        return 130
    print(f"done: {run_dir}")
    return 0


def prepare_training_data(config: RunConfig, check: bool = True, force: bool = False) -> RunData:
    """The run's data, prepared once: each file read once, the data doctor run over those rows
    (refusing error findings unless `force`), then split and tokenized, reusing what the checks
    rendered. The plan, training and the comparison all take the result."""
    tokenizer, render, files, findings = check_training_data(config, force) if check else read_training_data(config)
    loaded = {data.path: loaded_from(data, findings) for data in files}
    tokenize = objectives.tokenizer_of(objectives.get(config.train.objective))  # SFT rendering, or pairs, ...
    return prepare_run_data(config.data, config.train.seed, tokenizer, loaded, render, tokenize)


def read_training_data(config: RunConfig):
    """(tokenizer, renderings, files, findings): the model checked, then each data file read once."""
    if not config.data.train:
        raise HoneError("no training data given", "set data.train=PATH in the config or on the command line")
    check_weights(resolve_model_path(config.model.path), config.model)  # a broken model folder fails before any data work
    pick_device(config.model)
    tokenizer = load_tokenizer(config.model)
    files, findings = read_files(config.data.train, config.data.eval)
    return tokenizer, Renderings(tokenizer), files, findings


def refuse_errors(config: RunConfig, report, force: bool) -> None:
    print(report.summary_text())
    if report.errors and not force:
        first = report.errors[0]
        raise HoneError(f"{len(report.errors)} error finding(s) in the data, first {first.where()}: {first.message}",
                        f"`hone check {config.data.train} --fix CLEAN.jsonl` removes bad rows; --force trains anyway")


def check_training_data(config: RunConfig, force: bool):
    """Run the data doctor on data.train/data.eval; refuse error-level findings unless forced.
    Returns what `read_training_data` read, for the run to go on with."""
    read = tokenizer, render, files, findings = read_training_data(config)
    refuse_errors(config, check_read(files, findings, tokenizer, config.data.max_length, config.data.overlength,
                                     render=render), force)
    return read


def compare_with_base(run_dir: Path, config: RunConfig, examples: list | None = None) -> None:
    """Every run ends measured against its base model: report.html + report.json in the run folder.
    `examples`: the held-out examples the run read (else read again from its config)."""
    print("\ncomparing with the base model on the held-out examples")
    report = compare_models(None, str(run_dir), None, run_dir, config.eval, examples=examples)
    print(format_comparison_table(report))
    print(f"report: {run_dir / 'report.html'}")


def check_tokenizer(model: str | None):
    """The tokenizer of `--model`, else the embedded model's; None (checks skipped) when neither exists."""
    if model is None and not (EMBEDDED_MODEL / "tokenizer_config.json").is_file():
        return None
    return load_tokenizer(ModelArgs() if model is None else ModelArgs(path=model))


def check_command(data: str, eval_path: str | None = None, model: str | None = None, max_length: int | None = None,
                  overlength: str = "drop", json_path: str | None = None, fix: str | None = None, show: int = 0,
                  near_duplicate_threshold: float = 0.8) -> int:
    """`hone check`: exit 0 without error findings, 1 with; HoneError (exit 2) when the check cannot run."""
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
