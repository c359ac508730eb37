import json

import pytest

from hone.data.dataset import read_examples, tokenize_examples
from hone.data.formats import Example
from hone.data.split import split_examples
from tiny import make_tokenizer


@pytest.fixture
def tokenizer(tmp_path):
    return make_tokenizer(tmp_path / "tok")


def chat(answer_words: int, i: int = 0) -> Example:
    answer = " ".join(["red"] * answer_words)
    return Example("chat", messages=[{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": answer}])


def test_drop_policy_counts_examples_and_trained_tokens_lost(tokenizer):
    examples = [chat(3, 0), chat(200, 1), chat(4, 2)]
    items, report = tokenize_examples(tokenizer, examples, max_length=40, policy="drop")
    assert len(items) == 2
    assert (report.over_length, report.dropped, report.truncated) == (1, 1, 0)
    assert report.lost_trained_tokens >= 200
    assert report.trained_tokens == sum(i.trained_tokens for i in items)
    assert "1 longer than 40 tokens" in report.line("train")


def test_truncate_policy_keeps_the_head_and_counts_the_tail(tokenizer):
    items, report = tokenize_examples(tokenizer, [chat(200)], max_length=40, policy="truncate")
    assert len(items) == 1 and len(items[0].input_ids) == 40
    assert report.truncated == 1 and report.dropped == 0
    full, _ = tokenize_examples(tokenizer, [chat(200)], max_length=10_000, policy="drop")
    assert report.lost_trained_tokens == full[0].trained_tokens - items[0].trained_tokens > 0


def test_unreadable_lines_become_problems_with_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    path.write_text("\n".join([good, "not json", good, json.dumps({"messages": [{"role": "robot", "content": "x"}]}), good]) + "\n")
    loaded = read_examples(path)
    assert len(loaded.examples) == 3
    assert [(p.line, p.reason.split(" ")[0]) for p in loaded.problems] == [(2, "invalid"), (4, "messages[0].role")]


def test_prompt_completion_records_are_read(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text(json.dumps({"prompt": "2+2=", "completion": "4"}) + "\n")
    (example,) = read_examples(path).examples
    assert (example.kind, example.prompt, example.completion) == ("completion", "2+2=", "4")


def test_split_is_seeded_and_disjoint():
    examples = [chat(1, i) for i in range(50)]
    train_a, eval_a = split_examples(examples, 0.2, seed=1, cap=100)
    train_b, eval_b = split_examples(examples, 0.2, seed=1, cap=100)
    assert [id(e) for e in eval_a] == [id(e) for e in eval_b] and len(eval_a) == 10
    assert not {id(e) for e in train_a} & {id(e) for e in eval_a}
    assert len(train_a) + len(eval_a) == 50


def near_duplicate_clusters(clusters: int = 20, copies: int = 5) -> tuple[list[Example], list[int]]:
    """`clusters` sentences of 40 words, each in `copies` versions with one word changed."""
    examples, cluster_of = [], []
    for c in range(clusters):
        words = [f"w{c}x{k}" for k in range(40)]
        for copy in range(copies):
            variant = list(words)
            variant[5 + 7 * copy] = f"changed{copy}"
            examples.append(Example("chat", messages=[{"role": "user", "content": " ".join(variant)},
                                                      {"role": "assistant", "content": f"reply {c}"}]))
            cluster_of.append(c)
    return examples, cluster_of


@pytest.mark.parametrize("as_text", [False, True], ids=["examples", "documents"])
def test_default_split_keeps_near_duplicates_on_one_side(as_text):
    examples, cluster_of = near_duplicate_clusters()
    items = [e.messages[0]["content"] for e in examples] if as_text else examples  # pretraining splits plain text
    cluster = {id(item): c for item, c in zip(items, cluster_of)}
    held_out = set()
    for seed in range(4):
        train, held = split_examples(items, 0.2, seed=seed, cap=500)
        assert len(train) + len(held) == 100 and len(held) == 20
        assert not {cluster[id(e)] for e in train} & {cluster[id(e)] for e in held}
        again = split_examples(items, 0.2, seed=seed, cap=500)
        assert [id(e) for e in again[0]] == [id(e) for e in train] and [id(e) for e in again[1]] == [id(e) for e in held]
        held_out.add(frozenset(cluster[id(e)] for e in held))
    assert len(held_out) > 1  # the seed picks the clusters


def test_default_split_respects_the_cap_with_whole_clusters():
    examples, cluster_of = near_duplicate_clusters()
    cluster = {id(e): c for e, c in zip(examples, cluster_of)}
    train, held = split_examples(examples, 0.5, seed=0, cap=12)
    assert len(held) == 10 and len(train) == 90  # two whole clusters: a third would pass the cap
    assert not {cluster[id(e)] for e in train} & {cluster[id(e)] for e in held}
    train, held = split_examples(examples, 0.2, seed=0, cap=3)  # no cluster fits: part of one, the rest unused
    assert len(held) == 3 and len(train) == 95
    assert not {cluster[id(e)] for e in train} & {cluster[id(e)] for e in held}
    assert split_examples(examples, 0.2, seed=0, cap=0) == (examples, [])
