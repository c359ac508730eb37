"""Several adapters on one base: loading by name, `hone compare --runs`, `hone adapters combine`.

Run folders are built here from PEFT adapters with random (non-zero) weights on the tiny
Llama, so every adapter changes the logits and each test runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from hone.cli import main
from hone.config import load_config, save_config
from hone.eval.compare import evaluate_model, load_eval_examples
from hone.eval.models import load_for_eval, read_run_config
from hone.eval.multi import evaluate_runs
from hone.eval.metrics import build_settings
from hone.model.load import load_model
from hone.model.multi import adapter_names, load_adapters


def make_run(folder: Path, base: Path, data: Path, rank: int = 4, seed: int = 0, kind: str = "lora") -> Path:
    """A hone run folder holding a random PEFT adapter over `base` (no training needed)."""
    from peft import IA3Config, LoraConfig, get_peft_model

    config = load_config(None, [f"model.path={base}", "model.dtype=float32", f"data.train={data}", f"data.eval={data}",
                                f"adapter.lora_rank={rank}", f"train.output_dir={folder}", "eval.max_new_tokens=6",
                                "eval.general=null", "eval.bootstrap_samples=200",
                                "eval.primary_metric=chrf"])
    torch.manual_seed(seed)
    model = load_model(config.model)
    peft_config = (LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False)
                   if kind == "lora" else IA3Config(target_modules=["q_proj", "v_proj", "down_proj"],
                                                    feedforward_modules=["down_proj"], init_ia3_weights=False))
    get_peft_model(model, peft_config).save_pretrained(folder)
    save_config(config, folder / "config.yaml")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (base / name).is_file():
            shutil.copy2(base / name, folder / name)
    return folder


@pytest.fixture
def runs(tmp_path, tiny_llama, chat_file):
    return [make_run(tmp_path / f"run-{i}", tiny_llama, chat_file, seed=i) for i in range(2)]


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapters_loaded_by_name_on_one_base_match_each_loaded_alone(runs):
    names = adapter_names(runs)
    config = read_run_config(runs[0])
    shared = load_adapters(config.model, dict(zip(names, runs)))
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    for name, run in zip(names, runs):
        shared.set_adapter(name)
        alone = load_for_eval(str(run)).model
        assert torch.allclose(logits_of(shared, ids), logits_of(alone, ids), atol=1e-5)
    with shared.disable_adapter():
        base = load_model(config.model)
        assert torch.allclose(logits_of(shared, ids), logits_of(base, ids), atol=1e-5)
    assert not torch.allclose(logits_of(shared, ids), logits_of(base, ids), atol=1e-3)  # an adapter is active again


@pytest.mark.slow
def test_compare_runs_scores_each_run_as_if_evaluated_alone(runs, tmp_path, capsys):
    config = read_run_config(runs[0])
    args = dataclasses.replace(config.eval, limit=4)
    examples, _ = load_eval_examples(None, runs[0], 4)
    together = evaluate_runs([str(r) for r in runs], examples, args)
    alone = evaluate_model(load_for_eval(str(runs[1])), examples, args, build_settings())
    assert [a.text for a in together[adapter_names(runs)[1]].answers] == [a.text for a in alone.answers]
    out = tmp_path / "side"
    assert main(["compare", "--runs", str(runs[0]), str(runs[1]), "--limit", "4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["base", *adapter_names(runs)]
    for name in adapter_names(runs):
        assert "ci_low" in report["runs"][name]["deltas"]["token_f1"]
        assert (out / name / "report.html").is_file()
    assert "run_0" in (out / "report.html").read_text() and "run_0" in capsys.readouterr().out


@pytest.mark.slow
def test_cat_of_two_copies_at_half_weight_is_the_adapter_itself(runs, tmp_path):
    from peft import PeftModel

    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    out = tmp_path / "combined"
    assert main(["adapters", "combine", str(runs[0]), str(copy), "--weights", "0.5", "0.5", "--how", "cat",
                 "--out", str(out), "--limit", "3", "--no-general"]) == 0
    config = read_run_config(out)
    assert config.adapter.lora_rank == 8 and json.loads((out / "adapter_config.json").read_text())["r"] == 8
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    combined = PeftModel.from_pretrained(load_model(config.model), str(out))
    original = PeftModel.from_pretrained(load_model(config.model), str(runs[0]))
    assert torch.allclose(logits_of(combined, ids), logits_of(original, ids), atol=1e-4)
    retention = json.loads((out / "combine.json").read_text())["retention"]
    assert [r["metric"] for r in retention] == ["chrf", "chrf"]
    assert [r["kept"] for r in retention] == [1.0, 1.0] and all(r["meets"] for r in retention)
    assert (out / "eval" / "report.html").is_file() and (out / "tokenizer.json").is_file()


def test_combine_refuses_what_peft_cannot_combine(runs, tmp_path, tiny_llama, chat_file, capsys):
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_llama, other_base)
    cases = [
        ([str(runs[0]), str(make_run(tmp_path / "r8", tiny_llama, chat_file, rank=8))], ["--how", "linear"], "ranks must match"),
        ([str(runs[0]), str(make_run(tmp_path / "ia3", tiny_llama, chat_file, kind="ia3"))], [], "only LoRA adapters"),
        ([str(runs[0]), str(make_run(tmp_path / "elsewhere", other_base, chat_file))], [], "different bases"),
        ([str(runs[0]), str(runs[1])], ["--weights", "1"], "1 weights for 2 adapters"),
    ]
    for sources, flags, message in cases:
        assert main(["adapters", "combine", *sources, *flags, "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_advisor_quotes_the_measured_methods_table(tmp_path):
    from hone.plan.advise import measured_row

    table = tmp_path / "methods.json"
    table.write_text(json.dumps({"quick": False, "rows": [
        {"method": "lora", "trainable": 299008, "peak_rss_mb": 870.0, "tokens_per_s": 2100.0, "field_exact_match": 0.756,
         "forgetting": 0.045, "peft": {"tokens_per_s": 700.0}},
        {"method": "ia3", "error": "failed"}]}))
    line = measured_row("lora", table)
    assert "299,008 parameters" in line and "2100 tok/s (plain PEFT 700)" in line and "0.756" in line and "+4.5%" in line
    assert measured_row("ia3", table) is None and measured_row("lora", tmp_path / "absent.json") is None


def test_the_formal_task_is_reproducible_unseen_and_follows_from_each_message(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "scripts"))  # the generators are scripts, not part of the package
    from make_demo_data import PRODUCTS

    shipped = root / "src" / "hone" / "assets" / "formal"
    subprocess.run([sys.executable, str(root / "scripts" / "make_formal_data.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes()
    rows = {name: [json.loads(line)["messages"] for line in (shipped / name).open()] for name in ("train.jsonl", "eval.jsonl")}
    assert len(rows["train.jsonl"]) == 600 and len(rows["eval.jsonl"]) == 120
    assert not {m[1]["content"] for m in rows["eval.jsonl"]} & {m[1]["content"] for m in rows["train.jsonl"]}
    for _, message, letter in rows["train.jsonl"] + rows["eval.jsonl"]:
        assert letter["content"].startswith("Dear Support Team,") and "Kind regards," in letter["content"]
        product = next(p for p in PRODUCTS if p in message["content"])
        assert product in letter["content"]
