"""Near-duplicate detection with MinHash signatures and locality-sensitive hashing.

Written here rather than borrowed because it is the product: it has to be deterministic
(the same clusters on every run, so `hone split` is reproducible), vectorised with numpy
(a million short documents in seconds) and explainable in one screen.

Documents are lower-cased words; a document's shingles are its word n-grams (`shingle_words`,
default 2: one substituted word in a 30-word text keeps the Jaccard similarity near 0.87).
Words are hashed with blake2b, so nothing depends on Python's salted `hash` or on the other rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"\w+")
MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
SHINGLES_PER_BLOCK = 1 << 16  # signature work is done in blocks of ~this many shingles (memory bound)


@dataclass
class WordTable:
    """Every document's words as 64-bit hashes, flattened: document d is `ids[offsets[d]:offsets[d + 1]]`."""

    ids: np.ndarray  # (total_words,) uint64, a hash of the word's text: the same word, the same id, in any file
    offsets: np.ndarray  # (documents + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def word_table(texts: list[str]) -> WordTable:
    """Lower-cased words of each text. Each distinct word is hashed once (blake2b), so a text's
    shingles do not depend on which other texts were read with it."""
    vocabulary: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.zeros(len(texts) + 1, dtype=np.int64)
    for index, text in enumerate(texts):
        words = WORD.findall(text.lower())
        ids += [vocabulary.setdefault(word, len(vocabulary)) for word in words]
        lengths[index + 1] = len(words)
    word_hashes = np.array([int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in vocabulary],
                           dtype=np.uint64)
    flat = word_hashes[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(0, dtype=np.uint64)
    return WordTable(flat, np.cumsum(lengths))


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads structured integers over all 64 bits."""
    x = values.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def shingle_hashes(table: WordTable, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner): one 64-bit hash per word n-gram and the document it belongs to.

    A document shorter than `n` words gets one shingle of all its words; an empty one gets none.
    """
    total = len(table.ids)
    lengths = table.lengths
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    end = np.repeat(table.offsets[1:], lengths)  # (total,) end offset of each word's document
    position = np.arange(total, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = _mix(table.ids)
        for k in range(1, n):
            shifted = np.zeros(total, dtype=np.uint64)
            shifted[: total - k] = table.ids[k:]
            inside = position + k < end
            h = _mix(h * np.uint64(0x9E3779B97F4A7C15) + np.where(inside, shifted, 0).astype(np.uint64))
    start = np.repeat(table.offsets[:-1], lengths)
    keep = (position + n <= end) | ((position == start) & (np.repeat(lengths, lengths) < n))
    return h[keep], owner[keep]


def signatures(table: WordTable, num_perm: int = 64, n: int = 2, seed: int = 1) -> np.ndarray:
    """(documents, num_perm) uint32 MinHash signatures. Documents without words get all-max rows.

    The permutations are multiply-shift hashes `(a * x + b) >> 32` over 64-bit shingle hashes.
    """
    hashes, owner = shingle_hashes(table, n)
    documents = len(table.offsets) - 1
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    out = np.full((documents, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if not len(hashes):
        return out
    # Block boundaries fall on document boundaries so each block reduces to whole documents.
    starts = np.searchsorted(owner, np.arange(documents + 1))
    doc = 0
    while doc < documents:
        last = int(np.searchsorted(starts, starts[doc] + SHINGLES_PER_BLOCK, side="right")) - 1
        last = min(max(last, doc + 1), documents)
        lo, hi = starts[doc], starts[last]
        if hi > lo:
            with np.errstate(over="ignore"):
                block = ((hashes[lo:hi, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)  # (S, P)
            present = np.flatnonzero(starts[doc:last] < starts[doc + 1 : last + 1]) + doc
            out[present] = np.minimum.reduceat(block, starts[present] - lo, axis=0)
        doc = last
    return out


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising missed pairs (weighted 3x) + false candidates around `threshold`.

    Misses weigh more because every candidate is verified against its signature afterwards."""
    grid = np.linspace(0.0, 1.0, 201)
    best, best_error = (1, num_perm), float("inf")
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        hit = 1.0 - (1.0 - grid**rows) ** bands  # probability a pair of this similarity collides
        error = np.trapezoid(np.where(grid < threshold, hit, 3.0 * (1.0 - hit)), grid)
        if error < best_error:
            best, best_error = (bands, rows), error
    return best


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, active: np.ndarray | None = None) -> np.ndarray:
    """(pairs, 2) document index pairs that share a band bucket (each member linked to its bucket's first)."""
    documents = sig.shape[0]
    index = np.arange(documents) if active is None else np.flatnonzero(active)
    if len(index) < 2:  # no pair to find (and the bucket arithmetic below needs one key or more)
        return np.zeros((0, 2), dtype=np.int64)
    rng = np.random.default_rng(7)
    weights = rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    found = []
    for band in range(bands):
        part = sig[index, band * rows : (band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = _mix((part * weights[None, :]).sum(axis=1, dtype=np.uint64) + np.uint64(band))
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        new_bucket = np.ones(len(sorted_keys), dtype=bool)  # (active,) True where a bucket starts
        new_bucket[1:] = sorted_keys[1:] != sorted_keys[:-1]
        first = order[np.maximum.accumulate(np.where(new_bucket, np.arange(len(order)), 0))]
        linked = ~new_bucket
        found.append(np.stack([index[first[linked]], index[order[linked]]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def similar_pairs(sig: np.ndarray, threshold: float, active: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs whose estimated Jaccard similarity (share of equal MinHash values) >= threshold."""
    bands, rows = lsh_bands(threshold, sig.shape[1])
    pairs = candidate_pairs(sig, bands, rows, active)
    if not len(pairs):
        return pairs
    agree = np.empty(len(pairs))
    for lo in range(0, len(pairs), 65536):  # bounded memory for huge duplicate buckets
        chunk = pairs[lo : lo + 65536]
        agree[lo : lo + len(chunk)] = (sig[chunk[:, 0]] == sig[chunk[:, 1]]).mean(axis=1)
    return pairs[agree >= threshold]


def connected_groups(count: int, pairs: np.ndarray) -> np.ndarray:
    """Group label per document (union-find over `pairs`); label = smallest member index."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(count)], dtype=np.int64)


def near_duplicate_groups(texts: list[str], threshold: float, num_perm: int = 64, n: int = 2) -> np.ndarray:
    """Group label per text: texts linked by estimated Jaccard >= threshold share a label."""
    table = word_table(texts)
    sig = signatures(table, num_perm=num_perm, n=n)
    pairs = similar_pairs(sig, threshold, active=table.lengths > 0)
    return connected_groups(len(texts), pairs)


def estimated_similarity(a: str, b: str, num_perm: int = 256, n: int = 2) -> float:
    """MinHash estimate of the Jaccard similarity of two texts (tests and explanations)."""
    sig = signatures(word_table([a, b]), num_perm=num_perm, n=n)
    return float((sig[0] == sig[1]).mean())
