"""What a new user meets first: `hone check` on tiny files, and config values out of range.

Every case runs the real CLI in-process (`hone.cli.main`) and asserts an exit code and a
one-line message, never an exception.
"""

from __future__ import annotations

import json

import pytest

from hone.cli import main
from hone.config import AdapterArgs, DataArgs, EvalArgs, TrainArgs, load_config
from hone.errors import HoneError

PAIRS = [("what is two plus two", "four", "five"), ("name a red fruit", "an apple", "a banana")]
SMALL_FILES = {
    # name: (file name, rows as written, expected format in the summary)
    "txt": ("corpus.txt", ["the cat sat on the mat", "a second line of plain text"], "text"),
    "text_jsonl": ("text.jsonl", [{"text": "the cat sat on the mat"}, {"text": "dogs bark at the moon"}], "text"),
    "trl_preference": ("trl.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS], "standard_preference"),
    "trl_conversational_preference": ("trl_chat.jsonl", [{"prompt": [{"role": "user", "content": p}],
                                                          "chosen": [{"role": "assistant", "content": c}],
                                                          "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS],
                                      "preference"),
    "openai_preference": ("openai.jsonl", [{"input": {"messages": [{"role": "user", "content": p}]},
                                            "preferred_output": [{"role": "assistant", "content": c}],
                                            "non_preferred_output": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS],
                          "openai_preference"),
    "chat": ("chat.jsonl", [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c, _ in PAIRS],
             "chat"),
}


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("name", sorted(SMALL_FILES))
def test_check_small_files_ends_in_a_summary(tmp_path, capsys, name, count):
    file_name, rows, format_name = SMALL_FILES[name]
    path = write_rows(tmp_path / file_name, rows[:count])
    out = tmp_path / "clean.jsonl"
    assert main(["check", str(path), "--fix", str(out)]) == 0
    printed = capsys.readouterr().out
    documents = 1 if file_name.endswith(".txt") else count  # a .txt without <|endoftext|> is one document
    assert f"{documents} rows read, {documents} usable ({format_name} {documents})" in printed
    assert "low_count" in printed and "result: no errors" in printed
    assert f"fixed: {documents} rows" in printed and len(out.read_text().splitlines()) == documents


def test_check_empty_file_is_an_error_not_a_crash(tmp_path, capsys):
    assert main(["check", str(write_rows(tmp_path / "empty.jsonl", []))]) == 1
    assert "no usable examples" in capsys.readouterr().out


# ---- config ranges -------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("train.batch_size", 0, ">= 1"),
    ("train.save_every", 0, ">= 1"),
    ("train.eval_every", 0, ">= 1"),
    ("train.learning_rate", -1e-4, "> 0"),
    ("train.epochs", 0, "> 0"),
    ("train.max_steps", 0, ">= 1"),
    ("train.gradient_accumulation_steps", 0, ">= 1"),
    ("train.warmup_ratio", 1.0, "in [0, 1)"),
    ("train.warmup_ratio", -0.1, "in [0, 1)"),
    ("train.min_lr_ratio", 1.5, "in [0, 1]"),
    ("train.keep_checkpoints", 0, ">= 1"),
    ("train.max_grad_norm", -1, ">= 0"),
    ("train.weight_decay", -0.01, ">= 0"),
    ("train.lr_backoff", 0, "in (0, 1]"),
    ("data.max_length", 0, ">= 1"),
    ("data.eval_fraction", 1.5, "in [0, 1)"),
    ("data.block_size", -8, ">= 1"),
    ("adapter.lora_rank", 0, ">= 1"),
    ("adapter.lora_alpha", 0, "> 0"),
    ("adapter.lora_dropout", 1.0, "in [0, 1)"),
    ("replay.fraction", 1.0, "in [0, 1)"),
    ("eval.top_p", 0, "in (0, 1]"),
    ("eval.max_new_tokens", 0, ">= 1"),
    ("eval.temperature", -1, ">= 0"),
    ("train.epochs", ".nan", "> 0"),
]


@pytest.mark.parametrize("key, value, allowed", OUT_OF_RANGE, ids=[f"{k}={v}" for k, v, _ in OUT_OF_RANGE])
def test_out_of_range_value_names_key_and_range(key, value, allowed):
    with pytest.raises(HoneError) as info:
        load_config(None, [f"{key}={value}"])
    message = info.value.line()
    assert f"config key {key}:" in message and f"allowed: {allowed}" in message and "\n" not in message


@pytest.mark.parametrize("key, value", [("train.batch_size", 0), ("train.learning_rate", -1), ("adapter.lora_rank", 0),
                                        ("data.eval_fraction", 2), ("train.save_every", 0)])
def test_hone_train_refuses_out_of_range_value_in_one_line(tmp_path, capsys, key, value):
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: {tmp_path / 'missing.jsonl'}\ntrain:\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config), f"{key}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hone: error: config key {key}:") and "\n" not in err and "Traceback" not in err


def test_yaml_values_are_checked_like_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("adapter:\n  lora_rank: 0\n")
    with pytest.raises(HoneError, match=r"adapter\.lora_rank"):
        load_config(config)


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(HoneError, match=r"train\.keep_checkpoints"):
        TrainArgs(keep_checkpoints=0)
    with pytest.raises(HoneError, match=r"eval\.limit"):
        EvalArgs(limit=0)
    assert TrainArgs(max_steps=None, max_grad_norm=0).max_grad_norm == 0  # 0 turns clipping off
    assert DataArgs(eval_fraction=0).eval_fraction == 0 and AdapterArgs(lora_dropout=0.5).lora_dropout == 0.5


def test_boundaries_that_are_allowed_load():
    config = load_config(None, ["train.warmup_ratio=0", "train.max_grad_norm=0", "train.spike_factor=0",
                                "train.early_stopping_patience=0", "eval.temperature=0", "eval.top_p=1",
                                "data.eval_fraction=0", "train.min_lr_ratio=1", "adapter.lora_dropout=0"])
    assert config.train.warmup_ratio == 0 and config.eval.top_p == 1


@pytest.mark.parametrize("texts", [[], [""], ["", "?!"], ["one"], ["one", ""]])
def test_near_duplicate_finder_with_fewer_than_two_documents_with_words(texts):
    from hone.data.minhash import near_duplicate_groups

    assert near_duplicate_groups(texts, 0.8).tolist() == list(range(len(texts)))


# ---- readers: what the fuzz test found, one case each ---------------------------------------

ROW = {"prompt": "what is two plus two", "completion": "four"}
READER_CASES = {
    # name: (file name, bytes, (usable, errors))
    "jsonl_bom": ("bom.jsonl", b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n", (1, 0)),
    "jsonl_bom_blank": ("blank.jsonl", b"\xef\xbb\xbf   \n\n", (0, 1)),  # nothing to read: the low_count error only
    "jsonl_crlf_and_lone_cr": ("cr.jsonl", json.dumps(ROW).encode() + b"\r\n" + json.dumps(ROW).replace(",", ",\r").encode()
                               .replace(b"four", b"five") + b"\n", (2, 0)),
    "jsonl_lone_surrogate": ("sur.jsonl", b'{"prompt": "a \\ud800 b", "completion": "c"}\n' + json.dumps(ROW).encode() + b"\n", (1, 1)),
    "jsonl_surrogate_pair_is_fine": ("pair.jsonl", b'{"prompt": "smile \\ud83d\\ude00", "completion": "c"}\n', (1, 0)),
    "jsonl_invalid_utf8": ("bad.jsonl", b'{"prompt": "a \xff", "completion": "c"}\n' + json.dumps(ROW).encode() + b"\n", (1, 1)),
    "csv_bom": ("bom.csv", b"\xef\xbb\xbfprompt,completion\nwhat is two plus two,four\n", (1, 0)),
    "csv_huge_cell": ("huge.csv", b"text\n" + b"word " * 40_000 + b"\n", (1, 0)),
    "csv_deeply_nested_cell": ("deep.csv", b"text\n" + b"[" * 5000 + b"\n", (1, 0)),
    "json_lone_surrogate": ("sur.json", b'[{"text": "\\udc00"}, {"text": "fine"}]', (1, 1)),
    "sharegpt_list_speaker": ("sg.jsonl", b'{"conversations": [{"from": ["human"], "value": "hi"}]}\n', (0, 2)),
}


@pytest.mark.parametrize("name", sorted(READER_CASES))
def test_readers_turn_odd_bytes_into_rows_or_findings(tmp_path, name):
    from hone.data.check import check_files

    file_name, data, (usable, errors) = READER_CASES[name]
    path = tmp_path / file_name
    path.write_bytes(data)
    report = check_files(path)
    assert (report.files[str(path)]["examples"], len(report.errors)) == (usable, errors)


@pytest.mark.parametrize("data", [b"", b"PAR1 not really", b"\x00" * 64])
def test_unreadable_parquet_is_one_line(tmp_path, capsys, data):
    path = tmp_path / "broken.parquet"
    path.write_bytes(data)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hone: error: {path}: not a readable parquet file") and "\n" not in err
