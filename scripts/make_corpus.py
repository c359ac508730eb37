"""Generate hone's license-clean pre-training corpus.

Every word comes from hone's own word lists and templates (corpus_*.py next to this
file), so the base model we ship owes nothing to third-party text. The mix covers
stories with dialogue, encyclopedic entries, how-tos, letters and e-mails, question-
answer pairs, arithmetic, JSON records of many schemas and ChatML chat transcripts.

The demo fine-tuning task (support tickets -> product/category/urgency/summary JSON) is
deliberately absent, so the base model's score on it is an honest starting point.

Usage: python scripts/make_corpus.py [--out src/hone/assets/corpus] [--seed 0]
"""

import argparse
import gzip
import random
import re
from collections import Counter
from pathlib import Path

from corpus_chat import make_chat
from corpus_facts import make_arithmetic, make_json_record, make_qa
from corpus_text import make_animal_entry, make_howto, make_letter, make_place_entry
from corpus_text import make_story, make_tool_entry

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets" / "corpus"
SEPARATOR = "<|endoftext|>"
HELDOUT_FRACTION = 0.03

# (name, generator, weight): weights are share of documents, tuned so prose dominates
# by characters while structured formats still appear thousands of times.
GENERATORS = [
    ("story", make_story, 20),
    ("animal", make_animal_entry, 6),
    ("place", make_place_entry, 5),
    ("tool", make_tool_entry, 3),
    ("howto", make_howto, 8),
    ("letter", make_letter, 9),
    ("qa", make_qa, 12),
    ("arithmetic", make_arithmetic, 8),
    ("json", make_json_record, 13),
    ("chat", make_chat, 16),
]

# Strings that would leak the demo task (or break document splitting) into the corpus.
FORBIDDEN = [re.compile(p) for p in (r'"(product|category|urgency|summary)"\s*:',
                                     r"support ticket", re.escape(SEPARATOR))]


def check_document(doc: str, kind: str) -> None:
    for pattern in FORBIDDEN:
        if pattern.search(doc):
            raise ValueError(f"{kind} document contains forbidden text {pattern.pattern!r}: {doc[:80]!r}")


def generate(seed: int, train_chars: int) -> tuple[list[str], list[str], Counter]:
    """Draw unique documents until train holds `train_chars` characters.

    Each new document goes to held-out with probability HELDOUT_FRACTION; exact
    duplicates are dropped, so the two splits never share a document.
    """
    rng = random.Random(seed)
    names, makers, weights = zip(*GENERATORS)
    seen: set[str] = set()
    train, heldout, kinds = [], [], Counter()
    size = 0
    while size < train_chars:
        index = rng.choices(range(len(makers)), weights=weights)[0]
        doc = makers[index](rng).strip()
        if doc in seen:
            continue
        seen.add(doc)
        check_document(doc, names[index])
        kinds[names[index]] += 1
        if rng.random() < HELDOUT_FRACTION:
            heldout.append(doc)
        else:
            train.append(doc)
            size += len(doc)
    return train, heldout, kinds


def write_documents(path: Path, docs: list[str]) -> None:
    """Write gzip text, one `<|endoftext|>` line after each document.

    mtime=0 and an empty file name in the gzip header keep the bytes reproducible.
    """
    text = "".join(f"{doc}\n{SEPARATOR}\n" for doc in docs)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.encode("utf-8"))


def describe(name: str, docs: list[str], path: Path) -> str:
    chars = sum(len(d) for d in docs)
    words = sum(len(d.split()) for d in docs)
    return (f"{name}: {len(docs):,} documents, {chars:,} chars, {words:,} words, "
            f"{path.stat().st_size / 1e6:.2f} MB gzipped -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-chars", type=int, default=9_000_000,
                        help="stop once train holds this many characters")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, heldout, kinds = generate(args.seed, args.train_chars)
    write_documents(args.out / "train.txt.gz", train)
    write_documents(args.out / "heldout.txt.gz", heldout)
    print(describe("train", train, args.out / "train.txt.gz"))
    print(describe("heldout", heldout, args.out / "heldout.txt.gz"))
    print("documents by kind:", dict(sorted(kinds.items())))
    vocabulary = {w for d in train for w in re.findall(r"[A-Za-z]+", d)}
    print(f"distinct alphabetic words in train: {len(vocabulary):,}")


if __name__ == "__main__":
    main()
