"""`hone train` prepares its data once: each file read once, each example rendered once, and the
same tokenized splits go to the data doctor, the plan, training and the comparison."""

import json
from collections import Counter

import hone.data.check.read as check_read
import hone.data.dataset as dataset
from hone.cli import main
from tiny import make_chat_data


def counted(monkeypatch):
    reads, renders = Counter(), Counter()
    for module in (check_read, dataset):
        real = module.iter_records
        monkeypatch.setattr(module, "iter_records", lambda path, real=real: reads.update([str(path)]) or real(path))
    real_render = dataset.render_example
    monkeypatch.setattr(dataset, "render_example",
                        lambda tokenizer, example: renders.update([(example.source, example.line)]) or real_render(tokenizer, example))
    return reads, renders


def train(tiny_llama, train_file, run, *extra):
    return main(["train", f"model.path={tiny_llama}", f"data.train={train_file}", f"train.output_dir={run}",
                 "model.dtype=float32", "train.max_steps=3", "train.progress=false", *extra])


def test_hone_train_reads_and_renders_each_example_once(tiny_llama, tmp_path, monkeypatch, capsys):
    train_file = make_chat_data(tmp_path / "train.jsonl", n=40)
    eval_file = make_chat_data(tmp_path / "eval.jsonl", n=8, seed=1)
    reads, renders = counted(monkeypatch)
    assert train(tiny_llama, train_file, tmp_path / "run", f"data.eval={eval_file}", "eval.compare=false") == 0
    out = capsys.readouterr().out
    assert "result:" in out and "plan:" in out  # the data doctor and the plan both ran, on the same rows
    assert reads == {str(train_file): 1, str(eval_file): 1}
    assert len(renders) == 48 and set(renders.values()) == {1}  # every example rendered, none twice


def test_the_comparison_takes_the_held_out_examples_the_run_read(tiny_llama, tmp_path, monkeypatch):
    train_file = make_chat_data(tmp_path / "train.jsonl", n=40)
    reads, _ = counted(monkeypatch)
    assert train(tiny_llama, train_file, tmp_path / "run", "eval.compare=true", "eval.limit=3",
                 "eval.max_new_tokens=4") == 0
    assert reads == {str(train_file): 1}  # no eval file: the held-out split, read with the rest, once
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["baseline"] and report["tuned"]
