"""Experiment trackers: `train.report_to: [tensorboard, mlflow, trackio]`, each opt-in.

Every tracker gets what the run folder already holds, from rank 0 only: each metrics.jsonl
record's numbers as scalars at its step, the resolved config as parameters, and at the end the
comparison report (report.html and report.json) as artifacts. The run folder stays the record;
a tracker is a view of it. Each tracker's library is an optional extra (`pip install
'hone[tensorboard]'`, `hone[mlflow]`, `hone[trackio]`), imported only when asked for.

Where they write (`train.tracking_dir`, default the run folder): TensorBoard event files under
`tensorboard/`; MLflow a local file store under `mlruns/` (or the `http(s)://`, `sqlite:` or
`databricks` URI given), experiment `hone`, one MLflow run per hone run (its id is kept in
`tracking.json`, so `--resume` continues it); trackio its own local store, project `hone`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from hone.config import RunConfig
from hone.errors import HoneError

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio"}  # name -> module it needs
STATE_FILE = "tracking.json"
REPORT_FILES = ("report.html", "report.json")


def check_trackers(names: list[str]) -> None:
    """Refuse an unknown tracker or one whose library is missing, before any work starts."""
    for name in names:
        if name not in TRACKERS:
            raise HoneError(f"config key train.report_to: unknown tracker {name!r}",
                            f"use any of {', '.join(TRACKERS)} (or an empty list)")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise HoneError(f"train.report_to names {name}, but its library is not installed",
                            f"pip install 'hone[{name}]'")


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record (its `step` aside): what every tracker logs."""
    return {key: float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def flat_params(config: RunConfig) -> dict[str, str]:
    """The resolved config as `section.key -> value` strings."""
    return {f"{section}.{key}": json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            for section, values in config.to_dict().items() for key, value in values.items()}


class TensorBoard:
    def __init__(self, folder: Path, config: RunConfig, state: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        table = "\n".join(f"| {key} | {value} |" for key, value in flat_params(config).items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def artifacts(self, paths: list[Path]) -> None:
        # TensorBoard has no artifact store: the JSON report goes in as text
        for path in paths:
            if path.suffix == ".json":
                self.writer.add_text(path.stem, "```\n" + path.read_text()[:100_000] + "\n```")

    def close(self) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, folder: Path, config: RunConfig, state: dict):
        uri = state.get("mlflow_uri") or tracking_uri(folder)
        if uri.startswith("file:"):
            # MLflow 3 keeps its local file store in "maintenance mode" behind this switch; it is
            # the store that needs no database package (mlflow-skinny has none)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = state.get("mlflow_run_id")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name("hone")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("hone")
            self.run_id = self.client.create_run(experiment_id, run_name=Path(config.train.output_dir).name).info.run_id
            for key, value in flat_params(config).items():
                self.client.log_param(self.run_id, key, value[:6000])  # MLflow's limit on a value
        state["mlflow_run_id"], state["mlflow_uri"] = self.run_id, uri

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackio:
    def __init__(self, folder: Path, config: RunConfig, state: dict):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project="hone", name=Path(config.train.output_dir).name, config=config.to_dict(),
                                resume="allow")

    def log(self, values: dict[str, float], step: int) -> None:
        self.trackio.log(values, step=step)

    def artifacts(self, paths: list[Path]) -> None:
        pass  # trackio keeps metrics and config only

    def close(self) -> None:
        self.trackio.finish()


BACKENDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "trackio": Trackio}


def tracking_uri(folder: Path) -> str:
    return folder.as_uri() + "/mlruns" if folder.is_absolute() else folder.resolve().as_uri() + "/mlruns"


class Trackers:
    """The trackers a run asked for; `log(record)` takes a metrics.jsonl record."""

    def __init__(self, run_dir: Path, config: RunConfig):
        self.run_dir = run_dir
        folder = Path(config.train.tracking_dir) if config.train.tracking_dir else run_dir
        state_path = run_dir / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if _is_remote(config.train.tracking_dir):
            folder = run_dir
            state.setdefault("mlflow_uri", config.train.tracking_dir)
        self.backends = [BACKENDS[name](folder, config, state) for name in config.train.report_to]
        state_path.write_text(json.dumps(state, indent=1))

    def log(self, record: dict) -> None:
        values = scalars(record)
        if values:
            for backend in self.backends:
                backend.log(values, int(record.get("step", 0)))

    def artifacts(self, paths: list[Path]) -> None:
        for backend in self.backends:
            backend.artifacts([path for path in paths if path.is_file()])

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def _is_remote(uri: str | None) -> bool:
    return bool(uri) and uri.split(":", 1)[0] in ("http", "https", "sqlite", "databricks")


def open_trackers(config: RunConfig, run_dir: Path, main: bool = True) -> Trackers | None:
    """The run's trackers on rank 0 (None elsewhere, or when none were asked for)."""
    if not main or not config.train.report_to:
        return None
    return Trackers(run_dir, config)


def log_report(run_dir: Path, config: RunConfig, main: bool = True) -> None:
    """After the comparison: the report files as artifacts, then the trackers' runs closed."""
    trackers = open_trackers(config, run_dir, main)
    if trackers is not None:
        trackers.artifacts([run_dir / name for name in REPORT_FILES])
        trackers.close()
