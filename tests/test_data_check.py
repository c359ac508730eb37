"""Every finding kind of the data doctor, each with a case that has it and one that does not."""

import json
import random

import pytest

from hone.data.check import check_files
from hone.data.check.content import luhn_valid, pii_kinds
from hone.data.check.similarity import materially_different
from hone.data.dataset import read_examples, tokenize_examples

TOPICS = ("billing", "login", "shipping", "refund", "password", "invoice", "delivery", "account", "upgrade", "cancel")


def chat(user, answer, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def distinct_rows(n, seed=0):
    """Rows that share nothing beyond chance: random word salads with unique numbers."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    return [chat(" ".join(rng.sample(words, 12)) + f" #{i}", " ".join(rng.sample(words, 6))) for i in range(n)]


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def kinds(report, severity=None):
    return {f.kind for f in report.findings if severity is None or f.severity == severity}


def findings_of(report, kind):
    return [f for f in report.findings if f.kind == kind]


@pytest.fixture
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def test_clean_file_has_no_findings_but_counts(tmp_path):
    report = check_files(write(tmp_path / "t.jsonl", distinct_rows(600)))
    assert report.errors == [] and kinds(report) == set()
    assert report.files[str(tmp_path / "t.jsonl")]["rows_read"] == 600
    stats = report.stats["train"]
    assert stats["roles"] == {"user": 600, "assistant": 600}
    assert stats["prompt_diversity"]["distinct_1"] > 0.3 and stats["lengths"]["unit"] == "words"


def test_error_kinds_name_file_and_line(tmp_path):
    rows = distinct_rows(60) + [
        "{not json",
        "[1, 2]",
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}]},
        "[" * 100_000 + "]" * 100_000,
    ]
    path = write(tmp_path / "t.jsonl", rows)
    report = check_files(path)
    found = {(f.kind, f.rows[0]) for f in report.errors}
    assert found == {("invalid_json", 61), ("invalid_json", 62), ("schema", 63), ("empty_content", 64), ("role_order", 65),
                     ("invalid_json", 66)}
    assert all(f.file == str(path) for f in report.errors)


def test_mixed_formats_is_a_schema_error(tmp_path):
    rows = distinct_rows(60) + [{"instruction": "a b c", "output": "d"}]
    report = check_files(write(tmp_path / "t.jsonl", rows))
    assert [(f.kind, f.rows) for f in report.errors] == [("schema", [61])]
    assert "mixed formats" in report.errors[0].message


def test_duplicates_after_normalisation(tmp_path):
    rows = distinct_rows(60)
    rows.append(chat("  " + rows[5]["messages"][0]["content"].upper(), rows[5]["messages"][1]["content"] + " "))
    report = check_files(write(tmp_path / "t.jsonl", rows))
    assert [f.rows for f in findings_of(report, "duplicate")] == [[6, 61]]
    assert "near_duplicate" not in kinds(report)  # exact copies are reported once, as duplicates


def test_near_duplicates_and_threshold(tmp_path):
    rows = distinct_rows(60)
    text = " ".join(f"word{i}" for i in range(40))
    rows += [chat(text, "ok"), chat(text.replace("word7", "changed"), "ok")]
    path = write(tmp_path / "t.jsonl", rows)
    report = check_files(path)
    assert [f.rows for f in findings_of(report, "near_duplicate")] == [[61, 62]]
    assert report.stats["train"]["near_duplicate_clusters"][0]["size"] == 2
    from hone.data.check import CheckArgs

    strict = check_files(path, args=CheckArgs(near_duplicate_threshold=0.99))
    assert findings_of(strict, "near_duplicate") == []


def test_contradictions(tmp_path):
    rows = distinct_rows(60) + [
        chat("Is this review positive? great phone", "positive"),
        chat("is this review positive?  GREAT phone", "negative"),
        chat("Summarise: the parcel came late", '{"urgency": "high", "summary": "the parcel was late"}'),
        chat("Summarise: the parcel came late", '{"urgency": "high", "summary": "the parcel arrived late today"}'),
    ]
    report = check_files(write(tmp_path / "t.jsonl", rows))
    assert [f.rows for f in findings_of(report, "contradiction")] == [[61, 62]]


def test_materially_different():
    assert materially_different('{"urgency": "high"}', '{"urgency": "low"}')
    assert materially_different('{"a": 1}', '{"b": 1}')
    assert not materially_different("The order ships today.", "the order  ships today.")
    assert not materially_different("Your order ships today from our Oslo store", "Your order ships today from the Oslo store")


def test_eval_leakage(tmp_path):
    train = distinct_rows(60)
    train[20] = chat(" ".join(f"t{i}" for i in range(50)), "the answer to it")
    evals = distinct_rows(5, seed=1) + [train[10], chat(train[20]["messages"][0]["content"] + " please", "the answer to it")]
    train_path, eval_path = write(tmp_path / "t.jsonl", train), write(tmp_path / "e.jsonl", evals)
    report = check_files(train_path, eval_path)
    leaks = findings_of(report, "eval_leakage")
    assert [(f.file, f.rows, f.related) for f in leaks] == [(str(eval_path), [6], [11]), (str(eval_path), [7], [21])]
    assert "exact copy" in leaks[0].message and "near copy" in leaks[1].message
    assert findings_of(check_files(train_path, write(tmp_path / "e2.jsonl", distinct_rows(5, seed=1))), "eval_leakage") == []


def test_too_long_matches_training(tmp_path, tokenizer):
    rows = distinct_rows(60)
    path = write(tmp_path / "t.jsonl", rows)
    for policy in ("drop", "truncate"):
        report = check_files(path, tokenizer=tokenizer, max_length=60, overlength=policy)
        _, expected = tokenize_examples(tokenizer, read_examples(path).examples, 60, policy)
        tokens = report.stats["train"]["tokens"]
        assert (tokens["over_length"], tokens["dropped"], tokens["lost_trained_tokens"], tokens["trained_tokens"]) == (
            expected.over_length, expected.dropped, expected.lost_trained_tokens, expected.trained_tokens)
        assert findings_of(report, "too_long")[0].rows and expected.over_length > 0
    assert findings_of(check_files(path, tokenizer=tokenizer, max_length=4096), "too_long") == []


def test_no_trained_tokens_after_truncation(tmp_path, tokenizer):
    rows = distinct_rows(60) + [chat(" ".join(["hello world"] * 200), "yes")]
    path = write(tmp_path / "t.jsonl", rows)
    report = check_files(path, tokenizer=tokenizer, max_length=200, overlength="truncate")
    assert [f.rows for f in findings_of(report, "no_trained_tokens")] == [[61]]
    assert findings_of(check_files(path, tokenizer=tokenizer, max_length=4096, overlength="truncate"), "no_trained_tokens") == []


def test_missing_eos_and_render_errors(tmp_path, tokenizer):
    path = write(tmp_path / "t.jsonl", distinct_rows(60))
    assert findings_of(check_files(path, tokenizer=tokenizer, max_length=512), "missing_eos") == []
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    report = check_files(path, tokenizer=tokenizer, max_length=512)
    assert len(findings_of(report, "missing_eos")[0].rows) == 60
    tokenizer.chat_template = None
    report = check_files(path, tokenizer=tokenizer, max_length=512)
    assert kinds(report, "error") == {"render"} and len(report.errors) == 60


@pytest.mark.parametrize("count,severity", [(10, "warning"), (70, "warning"), (200, "info"), (600, None)])
def test_low_count_follows_the_seeds(tmp_path, count, severity):
    report = check_files(write(tmp_path / "t.jsonl", distinct_rows(count)))
    found = findings_of(report, "low_count")
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_format_inconsistency(tmp_path):
    rows = [chat(f"ticket {i} about {TOPICS[i % 10]} #{i}", json.dumps({"category": TOPICS[i % 10], "urgency": "low"})) for i in range(60)]
    path = write(tmp_path / "ok.jsonl", rows)
    assert findings_of(check_files(path), "format_inconsistency") == []
    rows[3] = chat("ticket three", "category: billing")
    rows[4] = chat("ticket four", json.dumps({"category": "billing"}))
    rows[5] = chat("ticket five", '{"category": "billing", "urgency": "low"}', system="You sort tickets.")
    found = findings_of(check_files(write(tmp_path / "bad.jsonl", rows)), "format_inconsistency")
    assert sorted(f.rows[0] for f in found) == [4, 5, 6]


def test_pii(tmp_path):
    assert pii_kinds("mail me at jane.doe@example.com") == {"e-mail address"}
    assert pii_kinds("call +1 (415) 555-0100 today") == {"phone number"}
    assert pii_kinds("card 4111 1111 1111 1111 exp 12/29") == {"card number"}
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert pii_kinds("card 4111 1111 1111 1112, order 12345, on 2024-05-01, v1.2.3") == set()
    rows = distinct_rows(60) + [chat("my email is bob@corp.io", "noted")]
    assert [f.rows for f in findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "pii")] == [[61]]
    assert findings_of(check_files(write(tmp_path / "c.jsonl", distinct_rows(60))), "pii") == []


def test_label_balance_statistics(tmp_path):
    rows = [chat(f"review {i}: " + " ".join(random.Random(i).sample(TOPICS, 5)), "positive" if i % 4 else "negative") for i in range(60)]
    labels = check_files(write(tmp_path / "t.jsonl", rows)).stats["train"]["labels"]
    assert labels["counts"] == {"positive": 45, "negative": 15} and labels["majority_share"] == 0.75
    assert check_files(write(tmp_path / "u.jsonl", distinct_rows(60))).stats["train"]["labels"] is None


def test_report_json_shape(tmp_path, tokenizer):
    path = write(tmp_path / "t.jsonl", distinct_rows(60) + ["{bad"])
    report = check_files(path, tokenizer=tokenizer, max_length=512)
    shape = json.loads(json.dumps(report.to_dict()))
    assert set(shape) >= {"files", "stats", "findings"}
    assert {"kind", "severity", "file", "rows", "related", "message"} <= set(shape["findings"][0])
    assert shape["stats"]["train"]["lengths"]["unit"] == "tokens"
    assert len(shape["stats"]["train"]["lengths"]["histogram"]["counts"]) == 10
    summary = report.summary_text()
    assert "invalid_json" in summary and 8 <= len(summary.splitlines()) <= 25
