"""`hone plan` on tiny models: the plan's pieces add up, JSON is complete, the CLI works."""

import json

import pytest

from hone.config import load_config
from hone.plan.estimate import dataset_advice, plan_run
from hone.plan.license import classify, read_license
from hone.plan.memory import BatchShape, MemorySettings, describe_model, estimate_memory, lora_params


@pytest.fixture
def config_file(tmp_path, tiny_llama, chat_file):
    path = tmp_path / "run.yaml"
    path.write_text(f"model:\n  path: {tiny_llama}\n  device: cpu\ndata:\n  train: {chat_file}\n"
                    f"train:\n  epochs: 2\n  batch_size: 4\n  output_dir: {tmp_path / 'run'}\n")
    return path


def test_plan_counts_match_the_real_model(config_file):
    from hone.model.adapters import apply_method, count_parameters
    from hone.model.load import load_model

    for method in ("lora", "full"):
        config = load_config(config_file, [f"adapter.method={method}"])
        plan = plan_run(config, calibrate=False)
        model = apply_method(load_model(config.model), config.adapter)
        assert (plan.trainable_params, plan.total_params) == count_parameters(model)


def test_plan_data_statistics_and_text(config_file):
    plan = plan_run(load_config(config_file), calibrate=False)
    assert plan.data.source == "data" and plan.data.examples == 58  # 64 minus the 10% held out
    assert plan.data.padded_tokens >= plan.data.tokens > plan.data.trained_tokens > 0
    assert plan.steps == 2 * 15
    assert "fewer than 50" not in plan.dataset_advice and "50-100" in plan.dataset_advice
    assert len(plan.text().splitlines()) <= 20
    assert plan.license.flag == "unknown"
    data = json.loads(json.dumps(plan.to_dict(), default=str))
    assert set(data["memory_gib"]) >= {"peak", "weights", "adapter", "gradients", "optimizer_state", "activations",
                                       "activations_without_checkpointing", "logits"}
    assert {t["name"] for t in data["targets"]} == {"H100", "A100", "L4", "RTX 4090", "T4"}
    assert data["hosted"][0]["usd_per_1k_tokens"] == 0.008


def test_memory_parts_add_up_and_checkpointing_helps(tiny_llama):
    from transformers import AutoConfig

    arch = describe_model(AutoConfig.from_pretrained(tiny_llama))
    batch = BatchShape(8, 512, 8 * 256)
    plain = estimate_memory(arch, MemorySettings("lora"), batch)
    checkpointed = estimate_memory(arch, MemorySettings("lora", gradient_checkpointing=True), batch)
    assert checkpointed.activations < plain.activations == checkpointed.activations_without_checkpointing
    assert lora_params(arch, MemorySettings("lora", lora_targets=("q_proj",))) == 2 * 8 * (64 + 64)
    full = estimate_memory(arch, MemorySettings("full", weight_bytes=4), batch)
    assert full.optimizer_state == 2 * full.weights  # AdamW m + v in fp32
    qlora = estimate_memory(arch, MemorySettings("qlora"), batch)
    assert qlora.weights < plain.weights


def test_dataset_advice_follows_the_seeds():
    assert "prompt engineering" in dataset_advice(20)
    assert "optimal" in dataset_advice(700)
    assert "10K" in dataset_advice(20000)


def test_license_flags(tmp_path):
    assert classify("apache-2.0") == "ok"
    assert classify("cc-by-nc-4.0") == "restricted"
    assert classify("llama3.1") == "check"
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\ntags: [x]\n---\n# model\n")
    assert read_license(str(tmp_path)).flag == "restricted"


def test_cli_plan_json(config_file, capsys):
    from hone.cli import main

    assert main(["plan", str(config_file), "adapter.method=qlora", "--json", "--price", "A100=1.0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "qlora" and data["this_machine_flops_per_s"] > 0
    assert main(["plan", str(config_file), "--price", "A100"]) == 2


def test_cpu_time_is_measured_on_real_steps_for_small_models(config_file):
    from hone.model.load import load_tokenizer
    from hone.plan.calibrate import processed_tokens, run_tokens
    from hone.data.prepare import prepare_run_data

    config = load_config(config_file, ["train.eval_every=7"])
    plan = plan_run(config)
    assert plan.time_source == "measured" and "measured: real steps" in plan.text()
    assert plan.this_machine_train_seconds > 0 and plan.this_machine_eval_seconds > 0
    assert plan.this_machine_seconds == plan.this_machine_train_seconds + plan.this_machine_eval_seconds
    data = prepare_run_data(config.data, config.train.seed, load_tokenizer(config.model))
    train, evals = data.train, data.evals
    run = run_tokens(train, evals, None, config.train)
    assert run.steps == plan.steps == 30
    # packed batches: every example once per epoch, each micro-batch rounded up to 64 tokens
    assert 2 * sum(len(i.input_ids) for i in train) <= run.train_tokens <= 2 * sum(len(i.input_ids) for i in train) + 30 * 63
    ordered = sorted(evals, key=lambda item: len(item.input_ids))  # as `evaluate` batches them
    assert run.eval_tokens == 5 * sum(processed_tokens(ordered[i : i + 4], True) for i in range(0, len(ordered), 4))  # steps 7, 14, 21, 28, 30


def test_processed_tokens_follow_the_rows_training_packs():
    from hone.data.render import Tokenized
    from hone.plan.calibrate import processed_tokens

    items = [Tokenized([1] * 700, [1] * 700) for _ in range(3)]
    assert processed_tokens(items, packing=False) == 3 * 700
    assert processed_tokens(items, packing=True) == 2304  # one row of 2100, rounded to a multiple of 256
    # split at 1536 tokens as `backward_pass` splits it: rows of 1400 and 700, each rounded up
    assert processed_tokens(items, packing=True, max_row_tokens=1536) == 1408 + 768


def test_a_distillation_transfer_set_is_planned_as_more_rows(config_file, tmp_path, tiny_llama):
    """The teacher answers `distill.transfer`'s prompts at the start and they train like the
    labelled rows: the plan counts them (it had planned 21 steps of a 114-step run)."""
    transfer = tmp_path / "prompts.jsonl"
    transfer.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(30)))
    distill = ["train.objective=distill", f"distill.teacher_path={tiny_llama}"]
    alone = plan_run(load_config(config_file, distill), calibrate=False)
    more = plan_run(load_config(config_file, distill + [f"distill.transfer={transfer}"]), calibrate=False)
    assert more.data.examples == alone.data.examples + 30 == 88
    assert more.steps == 2 * 22 and alone.steps == 2 * 15  # batches of 4
    assert any("30 prompts" in note for note in more.notes) and not alone.notes
