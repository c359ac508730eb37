"""Seeded train/eval splits in which near-duplicates never straddle the line: `hone split`, and
the held-out split training, planning and `hone compare` take when no `data.eval` is given.

Rows are grouped first (exact duplicates, near-duplicates, and rows sharing a prompt) and
whole groups go to one side, so the eval set cannot measure memorised training rows.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from hone.data.check.read import read_file
from hone.data.check.similarity import duplicate_ids
from hone.data.check.views import normalized, prompt_text, system_prompt
from hone.data.example import Example
from hone.data.io import write_jsonl
from hone.data.minhash import connected_groups
from hone.errors import HoneError


SPLIT_THRESHOLD = 0.7  # below the check's 0.8: LSH is probabilistic, so the split keeps a margin


def leakage_groups(examples: list[Example], threshold: float = SPLIT_THRESHOLD) -> list[int]:
    """Group label per example: rows linked by duplication, near-duplication or a shared prompt."""
    _, cluster = duplicate_ids(examples, threshold, num_perm=64, shingle_words=2)
    first: dict[tuple, int] = {}
    pairs = []
    for index, example in enumerate(examples):
        prompt = normalized(prompt_text(example))
        keys = [("cluster", cluster[index])] + ([("prompt", normalized(system_prompt(example)), prompt)] if prompt else [])
        for key in keys:
            pairs.append((first.setdefault(key, index), index))
    return connected_groups(len(examples), np.asarray(pairs, dtype=np.int64).reshape(-1, 2)).tolist()


def grouped_split(labels: list[int], fraction: float, seed: int, target: int | None = None) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): whole groups, eval as close to `fraction` (or to `target`
    examples, when given) as groups allow."""
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(label, []).append(index)
    groups = list(members.values())
    random.Random(seed).shuffle(groups)
    if target is None:
        target = max(1, round(len(labels) * fraction))
    held: list[int] = []
    for group in groups:
        if len(held) + len(group) <= target:
            held += group
    if not held and len(groups) > 1:  # every group is bigger than the target: hold out the smallest
        held = min(groups, key=len)
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def split_file(in_path: str, fraction: float, seed: int, out_dir: str | None) -> tuple[Path, Path, int, int]:
    if not 0 < fraction < 1:
        raise HoneError(f"--eval-fraction {fraction} is not between 0 and 1", "e.g. --eval-fraction 0.1")
    data, findings = read_file(in_path, "train")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise HoneError(f"{errors[0].where()}: {errors[0].message} ({len(errors)} error finding(s))",
                        f"run `hone check {in_path} --fix CLEAN.jsonl` and split the clean file")
    if len(data.rows) < 2:
        raise HoneError(f"{in_path}: {len(data.rows)} row(s) cannot be split", "a split needs at least two rows")
    train, held = grouped_split(leakage_groups(data.examples), fraction, seed)  # no error findings: every row has its example
    source = Path(in_path)
    folder = Path(out_dir) if out_dir else source.parent
    stem = "" if out_dir else source.name.split(".")[0] + "."
    train_path, eval_path = folder / f"{stem}train.jsonl", folder / f"{stem}eval.jsonl"
    write_jsonl(train_path, (data.rows[i].record for i in train))
    write_jsonl(eval_path, (data.rows[i].record for i in held))
    return train_path, eval_path, len(train), len(held)


def split_examples(examples: list, fraction: float, seed: int, cap: int) -> tuple[list, list]:
    """(train, eval): the held-out split of a training file that has no eval file, grouped as
    `hone split` groups rows, so that no duplicate, near-duplicate or shared prompt sits on both
    sides; seeded and deterministic. `examples` are Examples, or plain-text documents (pretraining).

    Eval takes whole groups, as close to `fraction` as they allow and never more than `cap`
    examples; at least one example goes to each side when there are two or more and more than
    one group. When every group is larger than that, the smallest one is held out, and if it must
    be cut to `cap`, the rest of it is used by neither side.
    """
    size = min(cap, max(1, round(len(examples) * fraction)), len(examples) - 1)
    if size < 1:
        return list(examples), []
    documents = [e if isinstance(e, Example) else Example("text", text=e) for e in examples]
    train, held = grouped_split(leakage_groups(documents), fraction, seed, target=size)
    return [examples[i] for i in train], [examples[i] for i in held[:cap]]
