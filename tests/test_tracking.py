"""`train.report_to`: TensorBoard and MLflow get metrics.jsonl's numbers, the resolved config and
the report, read back with TensorBoard's own event reader and MLflow's client (a local file store)."""

import json
import os

import pytest

from hone.config import load_config
from hone.errors import HoneError
from hone.pipeline import compare_with_base
from hone.train.sft import run_sft
from hone.train.tracking import check_trackers, log_report, scalars


def test_scalars_are_the_numbers_of_a_metrics_record():
    record = {"step": 3, "loss": 1.5, "lr": 1e-3, "trained_tokens": 40, "best": True, "rollback": "step 3: spike"}
    assert scalars(record) == {"loss": 1.5, "lr": 1e-3, "trained_tokens": 40.0}


def test_an_unknown_tracker_is_refused_with_the_fix():
    with pytest.raises(HoneError, match="unknown tracker 'wandb'"):
        check_trackers(["wandb"])


@pytest.mark.slow
def test_tensorboard_and_mlflow_hold_what_the_run_folder_holds(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "run"
    # hone train's stages after the plan: train, compare with the base, hand the report to the trackers
    config = load_config(None, [f"model.path={tiny_llama}", f"data.train={chat_file}", f"train.output_dir={run}",
                                "model.dtype=float32", "train.progress=false", "train.max_steps=4", "train.eval_every=2",
                                "train.report_to=[tensorboard, mlflow]", "eval.limit=2", "eval.max_new_tokens=4",
                                "eval.general=null", "eval.bootstrap_samples=10"])
    compare_with_base(run_sft(config), config)
    log_report(run, config)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {(key, row["step"]): value for row in rows for key, value in scalars(row).items()}
    assert ("eval_loss", 4) in expected and ("loss", 1) in expected

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    logged = {(tag, event.step): event.value for tag in events.Tags()["scalars"] for event in events.Scalars(tag)}
    assert logged.keys() == expected.keys()
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6)  # TensorBoard stores float32

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    state = json.loads((run / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=state["mlflow_uri"])
    mlflow_run = client.get_run(state["mlflow_run_id"])
    assert mlflow_run.data.params["train.max_steps"] == "4"
    assert mlflow_run.data.params["model.path"] == str(tiny_llama)
    history = {(key, metric.step): metric.value for key, _ in expected for metric in client.get_metric_history(mlflow_run.info.run_id, key)}
    assert history == pytest.approx(expected)
    artifacts = {item.path for item in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"report.html", "report.json"} <= artifacts
    assert mlflow_run.info.status == "FINISHED"
    assert "report/text_summary" in events.Tags()["tensors"]  # TensorBoard has no artifacts: the JSON report as text
