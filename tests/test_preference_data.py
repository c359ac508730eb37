"""Preference data: every form is read, converted and checked; the demo preference task is sound."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hone.cli import main
from hone.data.check import check_files
from hone.data.check.fix import write_fixed
from hone.data.check.preference import strong_components
from hone.data.convert import to_record
from hone.data.formats import FormatError, to_example

ROOT = Path(__file__).resolve().parent.parent
PREFERENCE = ROOT / "src" / "hone" / "assets" / "preference"
SYSTEM = {"role": "system", "content": "be brief"}
USER = {"role": "user", "content": "What is the capital of France?"}
GOOD = {"role": "assistant", "content": "Paris."}
BAD = {"role": "assistant", "content": "Lyon, I believe."}

# (record, format, kind): every form people bring
FORMS = [
    ({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, "standard_preference", "preference"),
    ({"prompt": [SYSTEM, USER], "chosen": [GOOD], "rejected": [BAD]}, "preference", "preference"),
    ({"chosen": [SYSTEM, USER, GOOD], "rejected": [SYSTEM, USER, BAD]}, "preference", "preference"),
    ({"input": {"messages": [USER]}, "preferred_output": [GOOD], "non_preferred_output": [BAD]}, "openai_preference", "preference"),
    ({"prompt": "Q?", "completion": "good", "label": True}, "standard_unpaired", "unpaired"),
    ({"prompt": [SYSTEM, USER], "completion": [BAD], "label": False}, "unpaired", "unpaired"),
    ({"prompt": [USER], "completion": "Paris.", "label": "TRUE"}, "unpaired", "unpaired"),  # a CSV cell
]


@pytest.mark.parametrize("record,format_name,kind", FORMS)
def test_every_preference_form_is_read(record, format_name, kind):
    example = to_example(record, line=2)
    assert (example.format, example.kind) == (format_name, kind)
    assert example.messages[-1]["role"] == "user"  # the prompt ends where the answers start
    answers = [example.chosen, example.rejected] if kind == "preference" else [example.answer]
    assert all(turns and turns[0]["role"] == "assistant" for turns in answers)
    if kind == "unpaired":
        assert example.label is (record["label"] in (True, "TRUE"))
    if "chosen" in record and "prompt" not in record:  # the shared prefix became the prompt
        assert example.messages == [SYSTEM, USER] and example.chosen == [GOOD] and example.rejected == [BAD]


@pytest.mark.parametrize("record,kind,words", [
    ({"prompt": "Q?", "completion": "a", "label": 1}, "schema", "'label' is 1"),
    ({"prompt": "Q?", "completion": " ", "label": True}, "empty_content", "'completion' is blank"),
    ({"prompt": "Q?", "chosen": "", "rejected": "b"}, "empty_content", "'chosen' is blank"),
    ({"prompt": [USER], "chosen": [GOOD], "rejected": [{"role": "assistant", "content": "  "}]}, "empty_content", "blank"),
    ({"chosen": [USER, GOOD], "rejected": [USER, GOOD, USER, BAD]}, "empty_content", "'chosen' has no turns after"),
])
def test_bad_preference_rows_name_the_field(record, kind, words):
    with pytest.raises(FormatError) as caught:
        to_example(record)
    assert caught.value.kind == kind and words in str(caught.value)


def test_pairs_convert_to_unpaired_rows_and_back_only_where_they_can():
    pair = to_example({"prompt": [SYSTEM, USER], "chosen": [GOOD], "rejected": [BAD]})
    rows, warnings = to_record(pair, "unpaired")
    assert warnings == [] and rows == [{"prompt": [SYSTEM, USER], "completion": [GOOD], "label": True},
                                       {"prompt": [SYSTEM, USER], "completion": [BAD], "label": False}]
    for row in rows:  # each written row reads back as the same answer and label
        again = to_example(row)
        assert (again.messages, again.answer, again.label) == (pair.messages, row["completion"], row["label"])
    standard = to_example({"prompt": "Q?", "chosen": "good", "rejected": "bad"})
    assert to_record(standard, "unpaired")[0][1] == {"prompt": "Q?", "completion": "bad", "label": False}
    undesirable = to_example(rows[1])
    assert to_record(undesirable, "preference")[0] is None
    assert to_record(undesirable, "chat")[0] is None and to_record(to_example(rows[0]), "chat")[0] == {"messages": [SYSTEM, USER, GOOD]}


def test_convert_command_writes_two_rows_per_pair(tmp_path, capsys):
    source = write(tmp_path / "pairs.jsonl", [pair(f"question {i}", "yes", "no") for i in range(3)])
    assert main(["convert", str(source), str(tmp_path / "kto.jsonl"), "--to", "unpaired"]) == 0
    assert "converted 3 of 3 rows to unpaired as 6 rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "kto.jsonl").read_text().splitlines()]
    assert [row["label"] for row in rows] == [True, False] * 3


# ---- the data doctor ------------------------------------------------------------------------

def pair(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def distinct_pairs(n, offset=0):
    """Pairs with nothing in common, chosen longer in every other pair."""
    return [pair(f"prompt number {i} about topic t{i}", f"good answer {i}" + " more" * (i % 2), f"bad reply {i} xx")
            for i in range(offset, offset + n)]


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def findings_of(report, kind):
    return [f for f in report.findings if f.kind == kind]


PREFERENCE_KINDS = {"identical_pair", "contradiction", "eval_leakage", "length_bias", "near_duplicate", "duplicate"}


def test_clean_pairs_have_no_preference_findings(tmp_path):
    report = check_files(write(tmp_path / "t.jsonl", distinct_pairs(60)))
    assert [f for f in report.findings if f.kind in PREFERENCE_KINDS] == []
    stats = report.stats["train"]["preference"]
    assert stats["pairs"] == 60 and stats["chosen_longer_share"] == 0.5


def test_identical_pairs_exact_and_after_normalisation(tmp_path):
    rows = distinct_pairs(40) + [pair("p1", "Same answer", "Same answer"), pair("p2", "Same  answer", "same answer")]
    report = check_files(write(tmp_path / "t.jsonl", rows))
    found = findings_of(report, "identical_pair")
    assert [(f.rows, "normalisation" in f.message) for f in found] == [([41], False), ([42], True)]
    assert write_fixed(report, tmp_path / "clean.jsonl") == (40, 2)  # --fix drops both
    assert json.loads((tmp_path / "clean.jsonl").read_text().splitlines()[0]) == rows[0]


def test_one_conversation_given_twice_is_an_identical_pair(tmp_path):
    rows = distinct_pairs(30) + [{"chosen": [USER, GOOD], "rejected": [USER, GOOD]}]
    found = findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "identical_pair")
    assert [f.rows for f in found] == [[31]]


def test_contradicting_pairs_direct_and_through_a_cycle(tmp_path):
    rows = distinct_pairs(30) + [pair("same prompt", "A", "B"), pair("Same  prompt", "b", "a"),   # A > B and B > A
                                 pair("cycle", "X", "Y"), pair("cycle", "Y", "Z"), pair("cycle", "Z", "X"),
                                 pair("consistent", "P", "Q"), pair("consistent", "Q", "R"), pair("consistent", "P", "R")]
    found = findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "contradiction")
    assert sorted(f.rows for f in found) == [[31, 32], [33, 34, 35]]
    assert "cycle" in next(f.message for f in found if f.rows == [33, 34, 35])


def test_unpaired_answer_labelled_both_ways_contradicts(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"answer {i}", "label": i % 2 == 0} for i in range(30)]
    rows += [{"prompt": "q", "completion": "maybe", "label": True}, {"prompt": "q", "completion": "Maybe", "label": False},
             {"prompt": "q", "completion": "no", "label": False}]
    found = findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "contradiction")
    assert [f.rows for f in found] == [[31, 32]]


def test_strong_components_split_at_one_way_edges():
    component = strong_components([("a", "b"), ("b", "a"), ("b", "c"), ("c", "d"), ("d", "c")])
    assert component["a"] == component["b"] != component["c"] == component["d"]


def test_held_out_pairs_with_training_prompts_leak(tmp_path):
    train = write(tmp_path / "train.jsonl", distinct_pairs(40))
    # eval line 1 reuses train line 3's prompt with other answers (too different for the copy check), line 2 is new
    held = write(tmp_path / "eval.jsonl", [pair("prompt number 2 about topic t2", "entirely different words here", "and other ones too"),
                                           *distinct_pairs(1, offset=100)])
    report = check_files(train, held)
    leaks = findings_of(report, "eval_leakage")
    assert [(f.rows, f.related) for f in leaks] == [([1], [3])]
    kept, rejected = write_fixed(report, tmp_path / "clean.jsonl")
    assert (kept, rejected) == (39, 1)  # --fix removes the training row whose prompt is held out


@pytest.mark.parametrize("longer_share,flagged", [(0.8, True), (0.5, False)])
def test_length_bias(tmp_path, longer_share, flagged):
    n = 50
    rows = [pair(f"prompt {i} on subject s{i}", f"chosen {i}" + (" and much more detail" if i < longer_share * n else ""),
                 f"rejected {i}" + ("" if i < longer_share * n else " and much more detail")) for i in range(n)]
    found = findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "length_bias")
    assert bool(found) is flagged
    if flagged:
        assert len(found[0].rows) == 40 and "40 of 50 pairs" in found[0].message


def test_unpaired_length_bias(tmp_path):
    rows = [{"prompt": f"q{i} on s{i}", "completion": f"answer {i}" + " with lots of extra words" * (i % 2 == 0), "label": i % 2 == 0}
            for i in range(60)]
    found = findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "length_bias")
    assert len(found) == 1 and len(found[0].rows) == 30


def test_answers_to_one_prompt_are_not_near_duplicates(tmp_path):
    prompt = "a long shared prompt " * 10
    rows = [{"prompt": f"{prompt} {i}", "completion": answer, "label": label}
            for i in range(30) for answer, label in (("yes indeed", True), ("no way", False))]
    assert findings_of(check_files(write(tmp_path / "t.jsonl", rows)), "near_duplicate") == []


def test_check_command_prints_preference_findings(tmp_path, capsys):
    rows = distinct_pairs(30) + [pair("p", "same", "same")]
    assert main(["check", str(write(tmp_path / "t.jsonl", rows))]) == 0  # warnings only
    out = capsys.readouterr().out
    assert "preference pairs: 31" in out and "identical_pair: 1 finding(s), 1 row(s)" in out


# ---- the demo preference task ---------------------------------------------------------------

def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_preference_files_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("train.jsonl", "eval.jsonl", "kto_train.jsonl", "kto_eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (PREFERENCE / name).read_bytes(), name


def test_demo_pairs_are_right_over_wrong_without_length_bias():
    demo = {split: read_jsonl(ROOT / "src" / "hone" / "assets" / "demo" / f"{split}.jsonl") for split in ("train", "eval")}
    for split, rows in (("train", read_jsonl(PREFERENCE / "train.jsonl")), ("eval", read_jsonl(PREFERENCE / "eval.jsonl"))):
        assert len(rows) == len(demo[split])
        for row, ticket in zip(rows, demo[split]):
            assert row["prompt"] == ticket["messages"][:2] and row["chosen"] == ticket["messages"][2:]
            chosen, rejected = json.loads(row["chosen"][0]["content"]), json.loads(row["rejected"][0]["content"])
            assert sum(chosen[key] != rejected[key] for key in chosen) == 1  # one plausible fault
    report = check_files(PREFERENCE / "train.jsonl", PREFERENCE / "eval.jsonl")
    assert report.findings == []  # no identical, contradicting, leaking or length-biased pairs
    assert 0.4 < report.stats["train"]["preference"]["chosen_longer_share"] < 0.6


def test_demo_unpaired_rows_are_the_pairs_split():
    pairs, rows = read_jsonl(PREFERENCE / "eval.jsonl"), read_jsonl(PREFERENCE / "kto_eval.jsonl")
    assert rows[0::2] == [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in pairs]
    assert rows[1::2] == [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in pairs]


def test_token_checks_count_pairs_as_preference_training_does(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from hone.data.dataset import read_examples
    from hone.data.pairs import tokenize_pairs

    rows = distinct_pairs(30) + [pair("the cat " * 40, "yes", "no"), pair("short", "dog " * 60, "no")]
    path = write(tmp_path / "t.jsonl", rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    report = check_files(path, tokenizer=tokenizer, max_length=64)
    too_long = findings_of(report, "too_long")
    assert [f.rows for f in too_long] == [[31, 32]]
    _, training = tokenize_pairs(tokenizer, read_examples(path).examples, 64, "drop")
    assert report.stats["train"]["tokens"]["dropped"] == training.dropped == 2
    assert report.stats["train"]["tokens"]["trained_tokens"] == training.trained_tokens
