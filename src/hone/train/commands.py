"""The run config of `hone train` and `hone pretrain`: a file, overrides, or a run folder to resume.

`hone train` itself (check -> plan -> fit -> compare) is wired in `hone.pipeline`."""

from __future__ import annotations

from pathlib import Path

from hone.config import load_config, read_yaml
from hone.errors import HoneError
from hone.model import methods
from hone.train import dpo, kto, objectives, orpo, reward, simpo  # noqa: F401 - importing registers each objective
from hone.train import rl  # noqa: F401 - registers train.objective=grpo and rloo
from hone.train import distill  # noqa: F401 - registers train.objective=distill
from hone.train.distributed import check_combination
from hone.train.sft import CONFIG_FILE
from hone.train.tracking import check_trackers


def resolve_config(config_path: str | None, overrides: list[str], resume, base: dict | None = None):
    """`hone train CONFIG [k=v ...]`, `hone train k=v ...`, or `hone train --resume RUN_DIR [k=v ...]`
    using the run's saved config. `base` holds a command's own defaults (below the YAML). The
    method and objective are looked up now, so an unknown name fails before any data work."""
    config = _read_config(config_path, overrides, resume, base)
    methods.get(config.adapter.method)
    objectives.check_settings(objectives.get(config.train.objective), config)
    check_combination(config), check_trackers(config.train.report_to)
    return config


def _read_config(config_path: str | None, overrides: list[str], resume, base: dict | None):
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
