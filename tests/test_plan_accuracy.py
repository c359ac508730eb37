"""Predicted peak memory within 20% of a measured short run of hone's loop on this CPU, for
full, LoRA and QLoRA at the smallest and largest of bench/plan_accuracy.py's shapes (see hone.plan.measure for
what "peak" means). Slow: eight subprocess runs of a ~22M-parameter model. Time predictions
are compared in bench/plan_accuracy.py (too noisy on a shared machine to assert here)."""

import pytest

from plan_models import accuracy_cases, make_medium_model


# Every method at the smallest and the largest shape, and checkpointing at the largest: the two
# middle shapes of each method (in bench/plan_accuracy.py) add a minute and no new term.
SUITE_CASES = [case for case in accuracy_cases() if (case[2], case[3]) in {(2, 128), (4, 256)}] + \
    [("lora", True, 4, 256), ("full", True, 4, 256)]


@pytest.fixture(scope="module")
def medium_model(tmp_path_factory):
    return make_medium_model(tmp_path_factory.mktemp("plan") / "m22")


@pytest.mark.slow
@pytest.mark.parametrize("method,checkpointing,batch,seq", SUITE_CASES)
def test_predicted_peak_memory_within_20_percent(medium_model, method, checkpointing, batch, seq):
    from hone.plan.measure import measure_run
    from hone.plan.memory import BatchShape, describe_model, estimate_memory
    from hone.plan.estimate import hone_settings
    from hone.config import RunConfig
    from transformers import AutoConfig

    measured = measure_run(medium_model, method, batch, seq, steps=2, gradient_checkpointing=checkpointing, threads=1)
    config = RunConfig()
    config.adapter.method = method
    config.train.gradient_checkpointing = checkpointing
    arch = describe_model(AutoConfig.from_pretrained(medium_model))
    predicted = estimate_memory(arch, hone_settings(config, "cpu", measured.compute_bytes), BatchShape(batch, seq, batch * (seq // 2))).peak
    assert abs(predicted / measured.peak_bytes - 1) <= 0.20, (predicted / 2**20, measured.peak_bytes / 2**20)
