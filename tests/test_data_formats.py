"""Every format is detected and normalised; every format survives a round trip through convert."""

import gzip
import json

import pytest

from hone.data.convert import to_record
from hone.data.formats import FormatError, to_example

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
TOOL_CHAT = [
    {"role": "user", "content": "weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "content": "4C, rain"},
    {"role": "assistant", "content": "4C and rain.", "weight": 1},
]

# (record, format, kind, the conversation it means)
RECORDS = [
    ({"messages": CHAT}, "chat", "chat", CHAT),
    ({"messages": TOOL_CHAT}, "chat", "chat", TOOL_CHAT),
    ({"prompt": CHAT[:2], "completion": CHAT[2:]}, "conversational_prompt_completion", "chat", CHAT),
    ({"prompt": "2+2=", "completion": "4"}, "prompt_completion", "completion", None),
    ({"instruction": "hi", "output": "hello", "system": "be brief"}, "alpaca", "chat", CHAT),
    ({"instruction": "Translate", "input": "hund", "output": "dog"}, "alpaca", "chat",
     [{"role": "user", "content": "Translate\n\nhund"}, {"role": "assistant", "content": "dog"}]),
    ({"instruction": "and now?", "output": "bye", "history": [["hi", "hello"]]}, "alpaca", "chat",
     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
      {"role": "user", "content": "and now?"}, {"role": "assistant", "content": "bye"}]),
    ({"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
     "sharegpt", "chat", CHAT),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "system": "be brief"}, "sharegpt", "chat", CHAT),
    ({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, "standard_preference", "preference", None),
    ({"prompt": CHAT[:2], "chosen": CHAT[2:], "rejected": [{"role": "assistant", "content": "go away"}]}, "preference", "preference", None),
    ({"chosen": CHAT, "rejected": CHAT[:2] + [{"role": "assistant", "content": "go away"}]}, "preference", "preference", None),
    ({"input": {"messages": CHAT[:2]}, "preferred_output": CHAT[2:], "non_preferred_output": [{"role": "assistant", "content": "no"}]},
     "openai_preference", "preference", None),
    ({"text": "Once upon a time."}, "text", "text", None),
]


@pytest.mark.parametrize("record,format_name,kind,conversation", RECORDS)
def test_every_format_is_detected_and_normalised(record, format_name, kind, conversation):
    example = to_example(record, line=3, source="f.jsonl")
    assert (example.format, example.kind, example.line) == (format_name, kind, 3)
    if conversation is not None:
        assert example.messages == conversation
    if kind == "preference":
        assert example.messages[-1]["role"] == "user" and example.chosen[0]["role"] == "assistant"
        assert example.chosen != example.rejected


ROUND_TRIPS = [  # (record, its own target): record -> chat -> target gives the record back exactly
    ({"messages": TOOL_CHAT}, "chat"),
    ({"prompt": CHAT[:2], "completion": CHAT[2:]}, "prompt-completion"),
    ({"prompt": "2+2=", "completion": "4"}, "prompt-completion"),
    ({"instruction": "and now?", "input": "", "output": "bye", "system": "be brief", "history": [["hi", "hello"]]}, "alpaca"),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo", "weight": 0},
                        {"from": "human", "value": "again"}, {"from": "gpt", "value": "hello"}]}, "sharegpt"),
    ({"conversations": [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": \"{}\"}"},
                        {"from": "observation", "value": "rain"}, {"from": "gpt", "value": "rain"}]}, "sharegpt"),
    ({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, "preference"),
    ({"prompt": CHAT[:2], "chosen": CHAT[2:], "rejected": [{"role": "assistant", "content": "go away"}]}, "preference"),
]


@pytest.mark.parametrize("record,target", ROUND_TRIPS)
def test_round_trip_through_convert(record, target):
    original = to_example(record)
    via = "chat" if original.kind == "chat" else target  # a chat hop would drop a preference's rejected answer
    middle, _ = to_record(original, via)
    back, warnings = to_record(to_example(middle), target)
    assert back == record
    assert warnings == [] or original.kind != "chat"
    example = to_example(back)
    assert (example.messages, example.chosen, example.rejected, example.prompt) == (
        original.messages, original.chosen, original.rejected, original.prompt)


def test_alpaca_input_round_trip_keeps_the_conversation():
    original = to_example({"instruction": "Translate", "input": "hund", "output": "dog"})
    back = to_example(to_record(to_example(to_record(original, "chat")[0]), "alpaca")[0])
    assert back.messages == original.messages


def test_lossy_conversions_warn():
    _, warnings = to_record(to_example({"messages": TOOL_CHAT}), "alpaca")
    assert warnings and "skipped" in warnings[-1]
    _, warnings = to_record(to_example({"prompt": "Q?", "chosen": "good", "rejected": "bad"}), "chat")
    assert "rejected" in warnings[0]
    record, warnings = to_record(to_example({"messages": CHAT}), "preference")
    assert record is None and warnings
    record, warnings = to_record(to_example({"messages": [{**m, "name": "x"} for m in CHAT]}), "sharegpt")
    assert record and any("names" in w for w in warnings)


BAD = [
    ({"foo": 1}, "schema"),
    ({"messages": "hi"}, "schema"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "schema"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}, "schema"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}, "schema"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "tool_calls": [{"name": "f"}]}]}, "schema"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "schema"),
    ({"instruction": 3, "output": "y"}, "schema"),
    ({"prompt": "x", "completion": ["y"]}, "schema"),
    ({"prompt": ["x"], "chosen": "a", "rejected": "b"}, "schema"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}, "empty_content"),
    ({"instruction": "x", "output": ""}, "empty_content"),
    ({"prompt": "x", "completion": " "}, "empty_content"),
    ({"text": ""}, "empty_content"),
    ({"messages": [{"role": "user", "content": "x"}]}, "role_order"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "assistant", "content": "z"}]}, "role_order"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}, "role_order"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]}, "role_order"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "y"}]}, "role_order"),
    ({"messages": [{"role": "assistant", "content": "y"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "z"}]}, "role_order"),
]


@pytest.mark.parametrize("record,kind", BAD)
def test_bad_records_name_their_finding_kind(record, kind):
    with pytest.raises(FormatError) as caught:
        to_example(record)
    assert caught.value.kind == kind


def test_null_fields_from_parquet_are_dropped(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [{"messages": TOOL_CHAT}, {"messages": CHAT}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    from hone.data.check.read import read_file

    data, findings = read_file(path, "train")
    assert findings == [] and [e.messages for e in data.examples][1] == CHAT


def test_gzipped_parquet_is_decompressed(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    from hone.data.check.read import read_file
    from hone.errors import HoneError

    plain = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT}, {"messages": CHAT[1:]}]), plain)
    packed = tmp_path / "d.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    data, findings = read_file(packed, "train")
    assert findings == [] and [e.messages for e in data.examples][0] == CHAT and len(data.examples) == 2
    (tmp_path / "bad.parquet.gz").write_bytes(plain.read_bytes())  # named .gz, not gzipped
    with pytest.raises(HoneError, match="bad.parquet.gz: not a readable parquet file"):
        read_file(tmp_path / "bad.parquet.gz", "train")


def test_every_file_type_is_read(tmp_path):
    from hone.data.check.read import read_file

    rows = [{"messages": CHAT}, {"messages": CHAT[1:]}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a.csv").write_text('instruction,input,output\nhi,,hello\n"say, no",,no\n')
    (tmp_path / "a.txt").write_text("doc one\n<|endoftext|>\ndoc two\n")
    for name, count in (("a.json", 2), ("a.jsonl.gz", 2), ("a.csv", 2), ("a.txt", 2)):
        data, findings = read_file(tmp_path / name, "train")
        assert len(data.examples) == count and findings == [], name
