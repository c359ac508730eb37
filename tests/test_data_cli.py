"""The data doctor's commands end to end: exit codes, --json, --fix, --show, convert, split, fuzz."""

import json
import random

import pytest

from hone.cli import main
from hone.data.check import check_files
from hone.data.check.fix import rejected_path
from hone.data.minhash import estimated_similarity, near_duplicate_groups

from test_data_check import chat, distinct_rows, write


def test_exit_codes(tmp_path, tiny_llama, capsys):
    clean = write(tmp_path / "clean.jsonl", distinct_rows(60))
    bad = write(tmp_path / "bad.jsonl", distinct_rows(60) + ["{oops"])
    assert main(["check", str(clean), "--model", str(tiny_llama)]) == 0
    assert main(["check", str(bad), "--model", str(tiny_llama)]) == 1
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["check", str(clean), "--model", str(tmp_path / "no_model")]) == 2
    assert "hone: error:" in capsys.readouterr().err


def test_json_report_and_show(tmp_path, tiny_llama, capsys):
    data = write(tmp_path / "t.jsonl", distinct_rows(60))
    report_path = tmp_path / "report.json"
    assert main(["check", str(data), "--model", str(tiny_llama), "--json", str(report_path), "--show", "2"]) == 0
    report = json.loads(report_path.read_text())
    assert report["files"][str(data)]["examples"] == 60 and report["stats"]["train"]["lengths"]["unit"] == "tokens"
    out = capsys.readouterr().out
    assert out.count("<|im_end|>]]") == 2  # the answer and its end-of-turn token are trained


def test_fix_keeps_plus_rejects_equal_read(tmp_path, tiny_llama):
    rows = distinct_rows(60)
    rows += [rows[0], "{bad", {"messages": [{"role": "user", "content": "x"}]}, {"instruction": "a b", "output": "c"},
             {"prompt": "raw", "completion": "text"}]
    data, eval_path = write(tmp_path / "t.jsonl", rows), write(tmp_path / "e.jsonl", [rows[7]])
    out = tmp_path / "clean.jsonl"
    assert main(["check", str(data), "--eval", str(eval_path), "--model", str(tiny_llama), "--fix", str(out)]) == 1
    kept = out.read_text().splitlines()
    rejected = [json.loads(line) for line in rejected_path(out).read_text().splitlines()]
    assert len(kept) + len(rejected) == len(rows)
    assert {r["line"]: r["reason"].split(":")[0] for r in rejected} == {61: "duplicate", 62: "invalid_json", 63: "role_order", 8: "eval_leakage"}
    assert all("messages" in json.loads(line) for line in kept)  # alpaca and prompt/completion rows normalised to chat
    assert main(["check", str(out), "--model", str(tiny_llama)]) == 0


def test_fuzz_corrupted_lines_never_crash(tmp_path):
    rng = random.Random(1234)
    good = [json.dumps(r) for r in distinct_rows(120)]
    corruptions = [
        lambda s: s[: rng.randint(1, len(s) - 2)],
        lambda s: s.replace('"role": "user"', '"role": "' + rng.choice(["usr", "", "USER"]) + '"'),
        lambda s: s.replace('"content": ', '"content": 7, "x": '),
        lambda s: s.replace("messages", "mesages"),
        lambda s: rng.choice(["null", "[]", "{}", "42", '"str"', "[" * 5000, "[" * 100_000 + "]" * 100_000, '{"messages": []}', '{"messages": [null]}']),
        lambda s: s.replace("{", "", 1),
        lambda s: s.encode().replace(b"w", b"\xff", 1).decode("latin-1"),
    ]
    bad_lines = set(rng.sample(range(1, 121), 40))
    lines = [corruptions[rng.randrange(len(corruptions))](g) if i + 1 in bad_lines else g for i, g in enumerate(good)]
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes("\n".join(lines).encode("latin-1", errors="replace") + b"\n")
    report = check_files(path)
    reported = {row for f in report.errors for row in f.rows}
    usable = {e.line for e in report.data[0].examples}
    assert reported | usable == set(range(1, 121)) and not reported & usable
    assert reported <= bad_lines and len(reported) >= 30
    assert main(["check", str(path), "--fix", str(tmp_path / "clean.jsonl")]) == 1
    kept = len((tmp_path / "clean.jsonl").read_text().splitlines())
    assert kept + len(rejected_path(tmp_path / "clean.jsonl").read_text().splitlines()) == 120


def test_convert_round_trip_and_warnings(tmp_path, capsys):
    rows = [chat(f"q{i} one two", f"a{i}", system="s") for i in range(5)]
    source = write(tmp_path / "chat.jsonl", rows)
    for target in ("sharegpt", "alpaca", "prompt-completion"):
        middle, back = tmp_path / f"{target}.jsonl", tmp_path / f"{target}.back.jsonl"
        assert main(["convert", str(source), str(middle), "--to", target]) == 0
        assert main(["convert", str(middle), str(back), "--to", "chat"]) == 0
        assert [json.loads(line) for line in back.read_text().splitlines()] == rows
    assert main(["convert", str(source), str(tmp_path / "p.jsonl"), "--to", "preference"]) == 0
    assert "5 row(s): only preference pairs" in capsys.readouterr().out


def test_split_keeps_near_duplicate_groups_together(tmp_path):
    rows = distinct_rows(200)
    base = " ".join(f"word{i}x" for i in range(40))
    for k in range(10):  # ten near-copies of one text, and a repeated prompt with two answers
        rows.append(chat(base.replace(f"word{k}x", f"other{k}"), "same"))
    rows += [chat("shared prompt here", "one"), chat("shared prompt here", "two")]
    source = write(tmp_path / "all.jsonl", rows)
    for seed in range(4):
        assert main(["split", str(source), "--eval-fraction", "0.2", "--seed", str(seed), "--out-dir", str(tmp_path / f"s{seed}")]) == 0
        train = (tmp_path / f"s{seed}" / "train.jsonl").read_text().splitlines()
        evals = (tmp_path / f"s{seed}" / "eval.jsonl").read_text().splitlines()
        assert len(train) + len(evals) == len(rows) and abs(len(evals) - 0.2 * len(rows)) <= 12
        report = check_files(tmp_path / f"s{seed}" / "train.jsonl", tmp_path / f"s{seed}" / "eval.jsonl")
        assert [f for f in report.findings if f.kind == "eval_leakage"] == []
        copies = sum(base.split()[20] in line for line in evals)
        assert copies in (0, 10)
        assert sum("shared prompt here" in line for line in evals) in (0, 2)


def test_train_refuses_errors_unless_forced(tmp_path, tiny_llama):
    from hone.config import load_config
    from hone.errors import HoneError
    from hone.pipeline import check_training_data

    data = write(tmp_path / "t.jsonl", distinct_rows(60) + ["{oops"])
    config = load_config(None, [f"data.train={data}", f"model.path={tiny_llama}"])
    with pytest.raises(HoneError, match="error finding"):
        check_training_data(config, force=False)
    check_training_data(config, force=True)


def test_minhash_estimates_and_is_deterministic():
    a = " ".join(f"w{i}" for i in range(60))
    b = a.replace("w30", "zz")
    assert abs(estimated_similarity(a, b) - 56 / 62) < 0.08
    assert estimated_similarity(a, "completely different words here") == 0.0
    texts = [a, b, "other text entirely", "x y z", ""]
    first, second = near_duplicate_groups(texts, 0.8), near_duplicate_groups(texts, 0.8)
    assert first.tolist() == second.tolist() == [0, 0, 2, 3, 4]
