"""`hone split`: a seeded train/eval split in which near-duplicates never straddle the line.

Rows are grouped first (exact duplicates, near-duplicates, and rows sharing a prompt) and
whole groups go to one side, so the eval set cannot measure memorised training rows.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from hone.data.check.read import FileData, read_file
from hone.data.check.similarity import group_examples
from hone.data.check.views import normalized, prompt_text, system_prompt
from hone.data.io import write_jsonl
from hone.data.minhash import connected_groups
from hone.errors import HoneError


SPLIT_THRESHOLD = 0.7  # below the check's 0.8: LSH is probabilistic, so the split keeps a margin


def leakage_groups(data: FileData, threshold: float = SPLIT_THRESHOLD) -> list[int]:
    """Group label per example: rows linked by duplication, near-duplication or a shared prompt."""
    groups = group_examples([data], threshold, num_perm=64, shingle_words=2)
    first: dict[tuple, int] = {}
    pairs = []
    for index, example in enumerate(groups.examples):
        prompt = normalized(prompt_text(example))
        keys = [("cluster", groups.cluster[index])] + ([("prompt", normalized(system_prompt(example)), prompt)] if prompt else [])
        for key in keys:
            pairs.append((first.setdefault(key, index), index))
    return connected_groups(len(groups.examples), np.asarray(pairs, dtype=np.int64).reshape(-1, 2)).tolist()


def grouped_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): whole groups, eval as close to `fraction` as groups allow."""
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(label, []).append(index)
    groups = list(members.values())
    random.Random(seed).shuffle(groups)
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
    train, held = grouped_split(leakage_groups(data), fraction, seed)
    source = Path(in_path)
    folder = Path(out_dir) if out_dir else source.parent
    stem = "" if out_dir else source.name.split(".")[0] + "."
    train_path, eval_path = folder / f"{stem}train.jsonl", folder / f"{stem}eval.jsonl"
    write_jsonl(train_path, (data.rows[i].record for i in train))
    write_jsonl(eval_path, (data.rows[i].record for i in held))
    return train_path, eval_path, len(train), len(held)
