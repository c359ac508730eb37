"""Replay text files: `<|endoftext|>`-separated documents when the file has the separator,
else one document per non-empty line."""

import gzip

from hone.config import ReplayArgs
from hone.data.io import documents_or_lines
from hone.data.replay import load_replay, read_replay_examples
from tiny import make_tokenizer


def test_separated_documents_keep_their_lines_together():
    text = "the cat sat\non the mat\n<|endoftext|>\nhello world\n<|endoftext|>\n"
    assert documents_or_lines(text) == [(1, "the cat sat\non the mat"), (2, "hello world")]


def test_without_a_separator_each_non_empty_line_is_a_document():
    text = "the cat sat\r\n\n  \nhello world\nyes no\n"
    assert documents_or_lines(text) == [(1, "the cat sat"), (4, "hello world"), (5, "yes no")]


def test_replay_reads_a_txt_of_sentences_one_per_line(tmp_path):
    sentences = tmp_path / "general.txt"
    sentences.write_text("the cat sat on the mat\n\nhello world\nquick brown fox\n")
    examples = read_replay_examples(str(sentences))
    assert [(e.kind, e.text, e.line) for e in examples] == [
        ("text", "the cat sat on the mat", 1), ("text", "hello world", 3), ("text", "quick brown fox", 4)]
    corpus = tmp_path / "corpus.txt.gz"
    with gzip.open(corpus, "wt") as handle:
        handle.write("the cat sat\non the mat\n<|endoftext|>\nhello world\n")
    assert [e.text for e in read_replay_examples(str(corpus))] == ["the cat sat\non the mat", "hello world"]


def test_each_short_line_becomes_one_trained_item(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok")
    text = tmp_path / "general.txt"
    text.write_text("the cat sat\nhello world\nyes no\n")
    replay = load_replay(ReplayArgs(data=str(text), fraction=0.1), tokenizer, max_length=64)
    assert len(replay.items) == 3
    for item in replay.items:
        assert item.input_ids[-1] == tokenizer.eos_token_id and item.labels == item.input_ids


def test_the_plan_samples_replay_text_as_training_reads_it(tmp_path):
    from hone.config import RunConfig
    from hone.plan.calibrate import replay_sample

    tokenizer = make_tokenizer(tmp_path / "tok")
    text = tmp_path / "general.txt"
    text.write_text("the cat sat\nhello world\nyes no\n")
    config = RunConfig(replay=ReplayArgs(data=str(text), fraction=0.1))
    planned = replay_sample(config, tokenizer)
    trained = load_replay(config.replay, tokenizer, config.data.max_length)
    assert [i.input_ids for i in planned.items] == [i.input_ids for i in trained.items] and len(trained.items) == 3
