"""Preference training end to end through `hone train` on a tiny model: eval metrics and the
reference file, exact resume, starting from another run's adapter, the reward model saved for
transformers, KTO on unpaired rows, and one-line errors for data the objective cannot use."""

import json
import random
import shutil

import pytest
from safetensors.torch import load_file

from hone.cli import main
from hone.train.metrics import read_metrics

WORDS = "the cat dog sat on mat red blue order refund ship login error".split()


def preference_file(path, n=24, seed=0, unpaired=False):
    """A learnable preference: the chosen answer repeats the prompt's first word, the rejected one does not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
        prompt = [{"role": "user", "content": " ".join(words)}]
        good = [{"role": "assistant", "content": f"yes {words[0]}"}]
        bad = [{"role": "assistant", "content": f"yes {rng.choice([w for w in WORDS if w != words[0]])}"}]
        if unpaired:
            rows += [{"prompt": prompt, "completion": good, "label": True}, {"prompt": prompt, "completion": bad, "label": False}]
        else:
            rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(tiny_llama, data, run, *extra):
    return main(["train", f"model.path={tiny_llama}", f"data.train={data}", f"train.output_dir={run}", "model.dtype=float32",
                 "train.batch_size=4", "train.learning_rate=5e-3", "train.warmup_ratio=0", "train.progress=false",
                 "train.eval_every=2", "data.eval_fraction=0.25", "eval.compare=false", "data.check=false", *extra])


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return preference_file(tmp_path_factory.mktemp("pref") / "pairs.jsonl")


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, pairs_file, tmp_path_factory):
    """Four DPO steps with a checkpoint every two (the resume test restarts from step 2)."""
    run = tmp_path_factory.mktemp("dpo") / "straight"
    assert train(tiny_llama, pairs_file, run, "train.objective=dpo", "train.max_steps=4", "train.save_every=2",
                 "train.keep_checkpoints=5") == 0
    return run


@pytest.mark.slow
def test_dpo_logs_preference_metrics_and_resumes_exactly_reusing_the_reference(dpo_run, tmp_path, capsys):
    straight, resumed = dpo_run, tmp_path / "resumed"
    rows = [r for r in read_metrics(straight / "metrics.jsonl") if "eval_loss" in r]
    for key in ("eval_accuracy", "eval_margin", "eval_chosen_logp", "eval_rejected_logp", "eval_logp_accuracy"):
        assert key in rows[-1]
    assert rows[-1]["eval_margin"] > rows[0]["eval_margin"]  # the pairs are learnable
    assert (straight / "reference_logps.safetensors").is_file() and (straight / "preference_start.json").is_file()

    # a copy of the run as it stood after step 2 (its later checkpoint gone) resumes to step 4
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    (resumed / "checkpoints" / "latest").write_text(json.dumps({"checkpoint": "step-0000002"}))
    capsys.readouterr()
    (resumed / "adapter_model.safetensors").unlink()  # written again by the resumed run
    assert main(["train", "--resume", str(resumed), f"train.output_dir={resumed}"]) == 0
    out = capsys.readouterr().out
    assert "reference log-probabilities: read from" in out and "step-0000002 (step 2 of 4)" in out
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-6)
    weights_a, weights_b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert all((weights_a[k] - weights_b[k]).abs().max() < 1e-6 for k in weights_a)


@pytest.mark.slow
def test_reward_model_starts_from_a_runs_adapter_and_saves_a_seq_cls_adapter(tiny_llama, pairs_file, dpo_run, tmp_path, capsys):
    run = tmp_path / "reward"
    assert train(tiny_llama, pairs_file, run, "train.objective=reward", "train.max_steps=4", f"preference.init_from={dpo_run}") == 0
    assert f"starting from the adapter of {dpo_run}" in capsys.readouterr().out
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["score"]
    assert "base_model.model.score.weight" in load_file(run / "adapter_model.safetensors")
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "eval_accuracy" in r]
    assert rows[-1]["eval_accuracy"] >= 0.5


@pytest.mark.slow
def test_kto_trains_on_unpaired_rows(tiny_llama, tmp_path):
    data = preference_file(tmp_path / "kto.jsonl", unpaired=True)
    assert train(tiny_llama, data, tmp_path / "kto", "train.objective=kto", "train.max_steps=3") == 0
    row = [r for r in read_metrics(tmp_path / "kto" / "metrics.jsonl") if "eval_loss" in r][-1]
    assert {"eval_accuracy", "eval_kl", "eval_margin"} <= set(row)


def test_preference_objectives_refuse_chat_rows_and_bad_starting_runs_in_one_line(tiny_llama, chat_file, pairs_file, tmp_path, capsys):
    assert train(tiny_llama, chat_file, tmp_path / "a", "train.objective=dpo", "train.max_steps=1") == 2
    assert "preference objectives train on rows with chosen/rejected answers" in capsys.readouterr().err
    assert train(tiny_llama, pairs_file, tmp_path / "b", "train.objective=dpo", "train.max_steps=1",
                 f"preference.init_from={tmp_path}") == 2
    assert "holds no LoRA adapter" in capsys.readouterr().err
    assert train(tiny_llama, pairs_file, tmp_path / "c", "train.objective=dpo", "preference.beta=0") == 2
    assert "preference.beta" in capsys.readouterr().err
