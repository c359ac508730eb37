"""`hone train`: resolve the config (file, overrides, or a run folder to resume) and run."""

from __future__ import annotations

from pathlib import Path

from hone.config import load_config, read_yaml
from hone.errors import HoneError
from hone.train.loop import Interrupted
from hone.train.sft import CONFIG_FILE, run_sft


def train_command(config_path: str | None, overrides: list[str], resume, force: bool = False) -> int:
    config = resolve_config(config_path, overrides, resume)
    if config.data.check and not resume:
        check_training_data(config, force)
    from hone.plan.estimate import print_plan

    plan = print_plan(config)
    try:
        run_dir = run_sft(config, resume=bool(resume), plan=plan)
    except Interrupted as exc:
        print(f"hone: {exc}; continue with: hone train --resume {config.train.output_dir}")
        return 130
    print(f"done: {run_dir}")
    return 0


def check_training_data(config, force: bool) -> None:
    """Run the data doctor on data.train/data.eval; refuse error-level findings unless forced."""
    from hone.data.check import check_files
    from hone.model.load import check_weights, load_tokenizer, pick_device, resolve_model_path

    if not config.data.train:
        return  # run_sft names the missing setting
    check_weights(resolve_model_path(config.model.path), config.model)  # a broken model folder fails before any data work
    pick_device(config.model)
    tokenizer = load_tokenizer(config.model)
    report = check_files(config.data.train, config.data.eval, tokenizer, config.data.max_length, config.data.overlength)
    print(report.summary_text())
    if report.errors and not force:
        first = report.errors[0]
        raise HoneError(f"{len(report.errors)} error finding(s) in the data, first {first.where()}: {first.message}",
                        f"`hone check {config.data.train} --fix CLEAN.jsonl` removes bad rows; --force trains anyway")


def resolve_config(config_path: str | None, overrides: list[str], resume, base: dict | None = None):
    """`hone train CONFIG [k=v ...]`, `hone train k=v ...`, or `hone train --resume RUN_DIR [k=v ...]`
    using the run's saved config. `base` holds a command's own defaults (below the YAML)."""
    if isinstance(resume, str):
        saved = Path(resume) / CONFIG_FILE
        if not saved.is_file():
            raise HoneError(f"{resume} is not a hone run folder (no {CONFIG_FILE})", "pass the folder given as train.output_dir")
        if config_path and "=" in config_path:  # `hone train --resume RUN k=v`: argparse took k=v as the config
            overrides = [config_path, *overrides]
        return load_config(None, overrides, base=read_yaml(saved))
    if config_path is None:
        raise HoneError("no config given", "run `hone train CONFIG.yaml`, or `hone train --resume RUN_DIR`")
    if "=" in config_path and not Path(config_path).exists():
        return load_config(None, [config_path, *overrides], base=base)
    return load_config(config_path, overrides, base=base)
