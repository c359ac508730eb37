"""The real CLI on a tiny model: output files, loss going down, determinism, Ctrl-C and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parent.parent / "src")


def hone(*args, check=True, env=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "2", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "hone", *args], capture_output=True, text=True, env=env, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def common(model, data, out, *extra):
    return [f"model.path={model}", f"data.train={data}", f"train.output_dir={out}", "model.dtype=float32",
            "train.progress=false", "train.learning_rate=1e-2", "train.batch_size=8", "eval.compare=false", *extra]


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_lora_run_writes_a_self_describing_folder(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "run"
    hone("train", *common(tiny_llama, chat_file, run, "train.epochs=4", "train.eval_every=7"))
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.yaml", "tokenizer.json",
                 "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    rows = metrics(run)
    assert {"step", "loss", "lr", "trained_tokens", "tokens_per_s"} <= set(rows[0])
    assert any("eval_loss" in r for r in rows)
    assert sum(r["loss"] for r in rows[-3:]) / 3 < sum(r["loss"] for r in rows[:3]) / 3 - 0.5
    summary = json.loads((run / "summary.json").read_text())
    for key in ("trained_tokens", "train_seconds", "peak_rss_mb", "final_eval_loss", "method",
                "trainable_parameters", "total_parameters"):
        assert summary[key] is not None, key
    assert summary["trained_tokens"] == rows[-1]["trained_tokens"]
    # The adapter loads with PEFT itself.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tuned = PeftModel.from_pretrained(base, run)
    assert any("lora_A" in n for n, _ in tuned.named_parameters())


def test_full_finetune_saves_loadable_safetensors(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "full"
    hone("train", *common(tiny_llama, chat_file, run, "adapter.method=full", "train.max_steps=4"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert (run / "model.safetensors").is_file()
    assert not torch.equal(model.lm_head.weight, original.lm_head.weight)


def test_same_seed_same_run(tmp_path, tiny_llama, chat_file):
    for name in ("a", "b"):
        hone("train", *common(tiny_llama, chat_file, tmp_path / name, "train.max_steps=5", "adapter.lora_dropout=0.1"))
    losses = [[r["loss"] for r in metrics(tmp_path / name)] for name in ("a", "b")]
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_that_resume_picks_up(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "run"
    args = common(tiny_llama, chat_file, run, "train.epochs=30", "train.save_every=1000")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "hone", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in out
    stopped_at = metrics(run)[-1]["step"]
    assert (run / "checkpoints" / f"step-{stopped_at:07d}" / "trainer_state.json").is_file()
    resumed = hone("train", "--resume", str(run), "train.epochs=30", "train.max_steps=" + str(stopped_at + 3))
    assert "resuming from" in resumed.stdout
    steps = [r["step"] for r in metrics(run)]
    assert steps == list(range(1, stopped_at + 4))


def test_pretrain_from_scratch_on_plain_text(tmp_path, tiny_llama):
    from tiny import sample_text

    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "config.json").write_text((tiny_llama / "config.json").read_text())
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n<|endoftext|>\n".join(sample_text(300)))
    run = tmp_path / "pre"
    hone("pretrain", f"model.path={arch}", f"model.tokenizer={tiny_llama}", "model.from_scratch=true",
         f"data.train={corpus}", "data.block_size=32", f"train.output_dir={run}", "train.epochs=2",
         "train.batch_size=8", "train.learning_rate=3e-3", "train.progress=false", "model.dtype=float32")
    rows = metrics(run)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert (run / "model.safetensors").is_file() and (run / "summary.json").is_file()


def test_export_merges_the_adapter_exactly(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "run"
    hone("train", *common(tiny_llama, chat_file, run, "train.max_steps=6"))
    hone("export", str(run), "--out", str(tmp_path / "merged"))
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    assert (merged - base).abs().max() > 1e-3  # the adapter really changed something
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_every_run_ends_compared_with_its_base(tmp_path, tiny_llama, chat_file):
    run = tmp_path / "run"
    result = hone("train", *common(tiny_llama, chat_file, run, "train.max_steps=6"), "eval.compare=true",
                  "eval.limit=6", "eval.max_new_tokens=8")
    report = json.loads((run / "report.json").read_text())
    assert {"eval_loss", "exact_match"} <= set(report["baseline"]) and {"eval_loss", "exact_match"} <= set(report["tuned"])
    assert report["tuned"]["eval_loss"] < report["baseline"]["eval_loss"]
    assert (run / "report.html").is_file()
    assert "report:" in result.stdout


def test_sft_end_to_end_in_the_torch_tier_and_the_best_tier(tmp_path, tiny_llama, chat_file):
    """Train in bf16 (where the C kernels and fused layers run), evaluate against the base,
    save, and load the adapter with PEFT: once with torch's operators only, once in the best
    kernel tier this CPU has. Both learn, and they agree to bf16 rounding."""
    from hone.engine import tiers

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    finals = {}
    for tier in dict.fromkeys(("torch", tiers.best())):
        run = tmp_path / tier
        extra = ("train.max_steps=12", "eval.compare=true", "eval.limit=4", "eval.max_new_tokens=4")
        args = [a for a in common(tiny_llama, chat_file, run, *extra) if a != "model.dtype=float32"]
        hone("train", *args, "model.dtype=bfloat16", env={tiers.ENV: tier})
        rows = metrics(run)
        assert rows[-1]["loss"] < rows[0]["loss"] - 0.5, (tier, rows[0]["loss"], rows[-1]["loss"])
        report = json.loads((run / "report.json").read_text())
        assert report["tuned"]["eval_loss"] < report["baseline"]["eval_loss"]
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run)
        with torch.no_grad():
            assert torch.isfinite(tuned(torch.tensor([[5, 17, 42, 99, 7]])).logits).all()
        finals[tier] = report["tuned"]["eval_loss"]
    values = list(finals.values())
    assert max(values) - min(values) <= 0.05 * max(values), finals
