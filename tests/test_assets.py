"""Invariants of the shipped default assets: demo task, tokenizer and pre-training corpus."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "hone" / "assets"
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the generators are scripts, not part of the package

import corpus_words  # noqa: E402
import make_demo_data  # noqa: E402

ANSWER_KEYS = ["product", "category", "urgency", "summary"]
SPECIAL_TOKENS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|pad|>": 3}


def read_rows(name: str) -> list[dict]:
    with open(ASSETS / "demo" / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_documents(name: str) -> list[str]:
    text = gzip.open(ASSETS / "corpus" / name, "rt", encoding="utf-8").read()
    assert text.endswith("\n<|endoftext|>\n")
    return text[: -len("\n<|endoftext|>\n")].split("\n<|endoftext|>\n")


@pytest.fixture(scope="module")
def demo() -> dict[str, list[dict]]:
    return {"train": read_rows("train.jsonl"), "eval": read_rows("eval.jsonl")}


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((ASSETS / "demo" / "schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(ASSETS / "base_model")


# --- demo task ---------------------------------------------------------------------

def test_demo_row_counts(demo):
    assert len(demo["train"]) == 600
    assert len(demo["eval"]) == 120


@pytest.mark.parametrize("split", ["train", "eval"])
def test_demo_answers_follow_the_schema(demo, schema, split):
    for row in demo[split]:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == make_demo_data.SYSTEM_PROMPT
        text = row["messages"][2]["content"]
        answer = json.loads(text)
        assert list(answer) == ANSWER_KEYS == schema["required"]
        assert text == json.dumps(answer)  # compact, default separators, fixed key order
        for key in ("product", "category", "urgency"):
            assert answer[key] in schema["properties"][key]["enum"]
        assert 3 <= len(answer["summary"].split()) <= 6


@pytest.mark.parametrize("split", ["train", "eval"])
def test_demo_fields_are_derivable_from_the_ticket(demo, split):
    issue_category = {summary: category for category, summary, _ in make_demo_data.ISSUES}
    for row in demo[split]:
        ticket = row["messages"][1]["content"]
        answer = json.loads(row["messages"][2]["content"])
        named = [p for p in make_demo_data.PRODUCTS if p in ticket]
        assert named == [answer["product"]]
        assert issue_category[answer["summary"]] == answer["category"]
        cued = [level for level, phrases in make_demo_data.URGENCY_PHRASES.items()
                if any(phrase in ticket for phrase in phrases)]
        assert cued == [answer["urgency"]]


def test_demo_tickets_are_unique_and_eval_is_unseen(demo):
    train = [row["messages"][1]["content"] for row in demo["train"]]
    held = [row["messages"][1]["content"] for row in demo["eval"]]
    assert len(set(train)) == len(train)
    assert len(set(held)) == len(held)
    assert not set(train) & set(held)


def test_demo_generation_is_reproducible(tmp_path):
    script = SCRIPTS / "make_demo_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--seed", "0"],
                   check=True, capture_output=True)
    for name in ("train.jsonl", "eval.jsonl", "schema.json"):
        assert (tmp_path / name).read_bytes() == (ASSETS / "demo" / name).read_bytes(), name


# --- tokenizer ---------------------------------------------------------------------

def test_special_tokens_are_single_fixed_ids(tokenizer):
    for token, token_id in SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
        assert tokenizer.decode([token_id]) == token
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.bos_token is None
    assert len(tokenizer) == 4096


def test_chat_template_renders_chatml(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                        "<|im_start|>assistant\nHello.<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"  # no default system


def test_chat_special_tokens_are_token_boundaries(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                              {"role": "assistant", "content": "5"}], tokenize=False)
    encoded = tokenizer(rendered, return_offsets_mapping=True, add_special_tokens=False)
    pieces = [rendered[start:end] for start, end in encoded["offset_mapping"]]
    assert "".join(pieces) == rendered
    assert pieces.count("<|im_end|>") == 2 and pieces.count("<|im_start|>") == 2
    for index, piece in enumerate(pieces[:-1]):
        if piece == "<|im_end|>":
            assert pieces[index + 1] == "\n"
    assert tokenizer.decode(encoded["input_ids"]) == rendered


def test_tokenizer_round_trips_text(tokenizer):
    text = 'Unseen words: zyxwv Ünïcødé ✓ {"a": [1, 2.5]}\n\tTabs and  spaces.'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


# --- corpus ------------------------------------------------------------------------

def test_corpus_splits_are_disjoint_and_sized():
    train, held = read_documents("train.txt.gz"), read_documents("heldout.txt.gz")
    assert len(set(train)) == len(train)
    assert not set(train) & set(held)
    assert 0.01 < len(held) / (len(train) + len(held)) < 0.06
    assert sum(len(doc) for doc in train) > 8_000_000


def test_corpus_does_not_contain_the_demo_task():
    text = gzip.open(ASSETS / "corpus" / "train.txt.gz", "rt", encoding="utf-8").read()
    for key in ANSWER_KEYS:
        assert f'"{key}":' not in text
    for product in make_demo_data.PRODUCTS:
        assert product.split()[0] not in text
    assert make_demo_data.SYSTEM_PROMPT not in text


def test_corpus_word_lists_are_large():
    words = set()
    for name, value in vars(corpus_words).items():
        if name.isupper() and isinstance(value, list):
            for entry in value:
                for part in entry if isinstance(entry, tuple) else (entry,):
                    if isinstance(part, str):
                        words.update(part.lower().split())
    assert len(words) >= 1500
