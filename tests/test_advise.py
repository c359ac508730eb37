"""Every branch of the seeds' decision flowchart and their "when not to fine-tune" list."""

import json

import pytest

from hone.config import load_config
from hone.plan.advise import RULES, Answers, advise

BEHAVIOUR = dict(goal="format", n_examples=800)

CASES = [
    # (name, answers, recommendation, rule, method)
    ("prompt already works", dict(prompt_works=True, **BEHAVIOUR), "prompt engineering", "prompt_works", None),
    ("needs current info -> RAG", dict(needs_current_knowledge=True), "RAG", "needs_knowledge", None),
    ("new knowledge -> RAG (not fine-tuning)", dict(goal="knowledge", n_examples=5000), "RAG", "needs_knowledge", None),
    ("frequently changing data -> RAG", dict(frequently_changing=True, goal="general"), "RAG", "needs_knowledge", None),
    ("knowledge + style -> RAG + FT", dict(needs_current_knowledge=True, goal="style", n_examples=600, gpu_memory_gb=24),
     "RAG + fine-tuning", "knowledge_and_behaviour", "lora"),
    ("knowledge + style, too few examples -> RAG", dict(needs_current_knowledge=True, goal="style", n_examples=10), "RAG", "needs_knowledge", None),
    ("no clear examples", dict(clear_examples=False, **BEHAVIOUR), "prompt engineering", "no_clear_examples", None),
    ("complex reasoning", dict(complex_reasoning=True, **BEHAVIOUR), "prompt engineering", "complex_reasoning", None),
    ("rarely used feature", dict(rarely_used=True, **BEHAVIOUR), "few-shot", "rarely_used", None),
    ("goal is not behaviour -> revisit", dict(goal="general", n_examples=800), "revisit requirements", "revisit", None),
    ("fewer than 50 examples -> few-shot", dict(goal="style", n_examples=30), "few-shot", "too_few_examples", None),
    ("behaviour, 24 GB, 8B -> LoRA", dict(gpu_memory_gb=24, model_params_b=8, **BEHAVIOUR), "fine-tuning", "fine_tune", "lora"),
    ("behaviour, 16 GB, 7B -> LoRA (seeds: 7B LoRA needs 16 GB)", dict(gpu_memory_gb=17.5, model_params_b=7, **BEHAVIOUR), "fine-tuning", "fine_tune", "lora"),
    ("behaviour, 8 GB, 7B -> QLoRA", dict(gpu_memory_gb=8, model_params_b=7, **BEHAVIOUR), "fine-tuning", "fine_tune", "qlora"),
    ("big GPU, many examples, budget -> full", dict(gpu_memory_gb=160, model_params_b=7, goal="terminology", n_examples=20000, low_budget=False),
     "fine-tuning", "fine_tune", "full"),
    ("latency goal -> distillation", dict(low_latency=True, gpu_memory_gb=80, model_params_b=70, **BEHAVIOUR), "fine-tuning", "fine_tune", "distillation"),
    ("CPU only -> LoRA on a small model", dict(gpu_memory_gb=0, **BEHAVIOUR), "fine-tuning", "fine_tune", "lora"),
]


@pytest.mark.parametrize("name,raw,recommendation,rule,method", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, raw, recommendation, rule, method):
    advice = advise(Answers(**raw))
    assert (advice.recommendation, advice.rule, advice.method) == (recommendation, rule, method)
    assert advice.reasons and advice.next_steps


def test_every_rule_is_covered():
    assert {c[3] for c in CASES} == {name for name, _, _ in RULES}


@pytest.mark.parametrize("name,raw,recommendation,rule,method", [c for c in CASES if c[4]], ids=[c[0] for c in CASES if c[4]])
def test_starting_config_is_accepted_by_hone_train(tmp_path, name, raw, recommendation, rule, method):
    advice = advise(Answers(**raw))
    path = tmp_path / "run.yaml"
    path.write_text(advice.config_yaml)
    config = load_config(path)
    assert config.adapter.method == {"distillation": "lora"}.get(method, method)
    assert (config.train.objective == "distill") == (method == "distillation")
    if method == "distillation":
        assert config.distill.teacher_path == "PATH/TO/TEACHER" and config.model.path == "PATH/TO/STUDENT"


def test_license_and_data_size_warnings():
    advice = advise(Answers(license_allows=False, gpu_memory_gb=24, goal="style", n_examples=120))
    assert any("license" in w for w in advice.warnings)
    assert any("500-1000" in w for w in advice.warnings)


def test_cli_json_and_dataset_counting(tmp_path, chat_file, capsys):
    from hone.cli import main

    answers = tmp_path / "answers.yaml"
    answers.write_text(f"goal: format\ndataset: {chat_file}\ngpu_memory_gb: 24\n")
    assert main(["advise", "--answers", str(answers), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommendation"] == "fine-tuning" and "64 examples" in out["reasons"][0]
    assert main(["advise", "--goal", "format", "--n-examples", "10"]) == 0
    assert "few-shot" in capsys.readouterr().out
    answers.write_text("goal: nonsense\n")
    assert main(["advise", "--answers", str(answers)]) == 2


def test_questionnaire_reads_answers():
    from hone.plan.commands import ask, build_answers

    replies = iter(["n", "", "style", "no", "700", "y", "n", "n", "12", "7", "", "", "y", "", "", ""])
    raw = ask(lambda prompt: next(replies))
    advice = advise(build_answers(raw))
    assert advice.recommendation == "fine-tuning" and advice.method == "qlora"


def test_n_examples_flag_takes_a_number_or_a_dataset(tmp_path, chat_file, capsys):
    from hone.cli import main

    assert main(["advise", "--goal", "format", "--gpu-memory-gb", "24", "--n-examples", "800", "--json"]) == 0
    assert "800 examples" in json.loads(capsys.readouterr().out)["reasons"][0]
    assert main(["advise", "--goal", "format", "--gpu-memory-gb", "24", "--n-examples", str(chat_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommendation"] == "fine-tuning" and "64 examples" in out["reasons"][0]
    assert main(["advise", "--goal", "format", "--n-examples", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{\"also\": \"unrecognised\"}\n")
    assert main(["advise", "--goal", "format", "--n-examples", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.jsonl: no usable examples (first problem, line 1" in err


def test_distillation_writes_a_distill_config_and_says_how_to_get_a_student(capsys):
    from hone.cli import main

    flags = ["advise", "--goal", "format", "--n-examples", "800", "--gpu-memory-gb", "80", "--model-params-b", "70"]
    assert main([*flags, "--low-latency", "yes"]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "hone derive TEACHER" in notes[0] and "distill.mode=sequence" in notes[0]
    assert main(flags) == 0
    assert "note: " not in capsys.readouterr().out
