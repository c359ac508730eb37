"""What the teacher says, computed once before training and kept in the run folder.

Top-k cache (`distill.top_k > 0`). For each answer token of every train and eval item, the
teacher's k most likely next tokens with their log-probabilities, and the rest of its mass as
one more column (`hone.train.divergence`), in safetensors shards under `teacher_topk/`:
`{split}-{index:05d}.safetensors` holding `logp` (tokens, k + 1) fp32, `ids` (tokens, k) int32
and `counts` (items,) for SHARD_ITEMS items. Each shard carries a fingerprint of the teacher,
k, the temperature and its items' tokens in its metadata and is written to a temporary file
and renamed, so a run stopped mid-way (or resumed) recomputes only the shards that are
missing or were made for something else, and a teacher too large to sit beside the student
runs once, alone, before training.

Sequence-level answers (`distill.mode: sequence`). The teacher answers every training prompt
(greedy, batched with a KV cache), the answers are written as chat JSONL beside a fingerprint
(`teacher_answers.jsonl`) and run through the data doctor; what it accepts replaces the
training answers. A transfer set (`distill.transfer`) is answered the same way
(`transfer_answers.jsonl`) and added to the training rows.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hone.config import DistillArgs, RunConfig
from hone.data.check import CheckArgs, check_files
from hone.data.check.fix import write_fixed
from hone.data.collate import PACK_MULTIPLE, pack_batch
from hone.data.dataset import read_examples, require_clean, tokenize_examples
from hone.data.prompts import read_prompt_rows
from hone.data.render import IGNORE, render_prompt
from hone.engine import engine
from hone.errors import HoneError
from hone.model.generate import GenerationArgs, generate_answers
from hone.model.teacher import load_whole
from hone.train.divergence import teacher_topk
from hone.train.logprobs import decoder_hidden
from hone.train.loss import CHUNK_ELEMENTS, ROWS_MULTIPLE, split_model

CACHE_DIR = "teacher_topk"
ANSWERS_FILE = "teacher_answers.jsonl"
TRANSFER_FILE = "transfer_answers.jsonl"
SHARD_ITEMS = 256  # items per shard: what a crash during the teacher pass can lose


def answer_rows(item) -> int:
    """Scored positions of an item: labelled tokens after the first (what predicts them)."""
    return sum(1 for label in item.labels[1:] if label != IGNORE)


def shard_fingerprint(args: DistillArgs, items) -> str:
    digest = hashlib.sha256(json.dumps([str(args.teacher_path), args.teacher_dtype, args.top_k, args.temperature]).encode())
    for item in items:
        digest.update(json.dumps([item.input_ids, item.labels]).encode())
    return digest.hexdigest()


def shard_path(folder: Path, split: str, index: int) -> Path:
    return folder / f"{split}-{index:05d}.safetensors"


def read_fingerprint(path: Path) -> str | None:
    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("fingerprint")
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return None


def settle_topk(args: DistillArgs, setup, splits: dict[str, list], batch_size: int) -> dict[str, int]:
    """Attach `item.teacher = (logp, ids)` to every item of `splits` from the cache, computing
    the missing shards with the teacher (loaded only when one is missing). Returns shards
    {"read": n, "computed": n}."""
    folder = Path(setup.run_dir) / CACHE_DIR
    missing = []
    read = 0
    for split, items in splits.items():
        for index, start in enumerate(range(0, len(items), SHARD_ITEMS)):
            shard = items[start : start + SHARD_ITEMS]
            path, fingerprint = shard_path(folder, split, index), shard_fingerprint(args, shard)
            if path.is_file() and read_fingerprint(path) == fingerprint:
                attach(shard, load_file(path))
                read += 1
            else:
                missing.append((path, fingerprint, shard))
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        teacher, _, compute = load_whole(args.teacher_path, args.teacher_dtype)
        with engine(teacher, setup.device, compute, packing=True, fused_layers=False):
            for path, fingerprint, shard in missing:
                tensors = score_topk(teacher, shard, args, setup.pad_id, batch_size)
                write_atomically(tensors, path, fingerprint)
                attach(shard, tensors)
        del teacher
        gc.collect()
    print(f"teacher top-{args.top_k}: {read} shard(s) read, {len(missing)} computed -> {folder}")
    return {"read": read, "computed": len(missing)}


def write_atomically(tensors: dict[str, torch.Tensor], path: Path, fingerprint: str) -> None:
    temporary = path.with_suffix(".tmp")
    save_file(tensors, temporary, metadata={"fingerprint": fingerprint})
    os.replace(temporary, path)


def attach(items, tensors: dict[str, torch.Tensor]) -> None:
    """Give each item its rows of `logp` and `ids` (in the order its answer tokens come)."""
    offsets = [0, *torch.cumsum(tensors["counts"], 0).tolist()]
    for item, start, end in zip(items, offsets, offsets[1:]):
        item.teacher = (tensors["logp"][start:end], tensors["ids"][start:end])


@torch.no_grad()
def score_topk(teacher, items, args: DistillArgs, pad_id: int, batch_size: int) -> dict[str, torch.Tensor]:
    """The teacher's top-k view of every answer token of `items` (see the module docstring)."""
    _, head, softcap = split_model(teacher)
    device = next(teacher.parameters()).device
    logps, ids = [], []
    for start in range(0, len(items), batch_size):
        batch = {k: v.to(device) for k, v in pack_batch(items[start : start + batch_size], pad_id, PACK_MULTIPLE).items()}
        rows = teacher_rows(teacher, batch)
        step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0])
        for begin in range(0, rows.shape[0], step):
            logits = head(rows[begin : begin + step]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logp, top = teacher_topk(logits, args.top_k, args.temperature)
            logps.append(logp.cpu())
            ids.append(top.cpu())
    counts = torch.tensor([answer_rows(item) for item in items], dtype=torch.int64)
    return {"logp": torch.cat(logps).contiguous(), "ids": torch.cat(ids).contiguous(), "counts": counts}


def teacher_rows(teacher, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's last hidden states (N, C) at the batch's scored positions, in order."""
    keep = batch["labels"][:, 1:] != IGNORE
    hidden = decoder_hidden(teacher, batch, keep)  # B, T, C
    return hidden[:, :-1][keep]


def topk_batch(items) -> dict[str, torch.Tensor]:
    """The cached teacher rows of `items`, concatenated in the order a batch scores them."""
    return {"teacher_logp": torch.cat([item.teacher[0] for item in items]),
            "teacher_ids": torch.cat([item.teacher[1] for item in items])}


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    return F.pad(tensor, (0, 0, 0, rows - tensor.shape[0])) if rows > tensor.shape[0] else tensor


# --- sequence-level distillation ---

def teacher_answers(config: RunConfig, setup, student_tokenizer, examples: list, name: str = ANSWERS_FILE) -> list:
    """Training items whose answers are the teacher's to `examples`' prompts: generated once (kept
    in the run folder as `name`), checked by the data doctor, tokenized with the student's tokenizer."""
    args, run_dir = config.distill, Path(setup.run_dir)
    path, stamp = run_dir / name, run_dir / (name + ".fingerprint")
    fingerprint = hashlib.sha256(json.dumps([str(args.teacher_path), args.teacher_dtype, args.max_new_tokens,
                                             [dataclasses.asdict(e) for e in examples]], default=str).encode()).hexdigest()
    if not (path.is_file() and stamp.is_file() and stamp.read_text() == fingerprint):
        teacher, tokenizer, _ = load_whole(args.teacher_path, args.teacher_dtype)
        generation = GenerationArgs(max_new_tokens=args.max_new_tokens, batch_size=args.generation_batch_size)
        answers = generate_answers(teacher, tokenizer, [render_prompt(tokenizer, e) for e in examples], generation)
        del teacher
        gc.collect()
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(answered(e, a.text), ensure_ascii=False) + "\n" for e, a in zip(examples, answers)))
        os.replace(temporary, path)
        stamp.write_text(fingerprint)
        print(f"teacher answered {len(examples)} prompts -> {path}")
    return doctor_checked(path, config, student_tokenizer)


def transfer_answers(config: RunConfig, setup, student_tokenizer, held_out: list) -> list:
    """The teacher's answers to `distill.transfer`'s prompts (TRANSFER_FILE in the run folder),
    leaving out prompts the eval examples `held_out` hold (their answers would leak into training)."""
    source = config.distill.transfer
    if not Path(source).is_file():
        raise HoneError(f"distill.transfer={source}: no such file", "pass a JSONL file of prompts (or SFT rows)")
    examples = require_clean(read_prompt_rows(source), source)
    seen = {tuple(render_prompt(student_tokenizer, e)) for e in held_out}
    kept = [e for e in examples if tuple(render_prompt(student_tokenizer, e)) not in seen]
    if len(kept) < len(examples):
        print(f"distill.transfer: {len(examples) - len(kept)} prompt(s) also in the eval set left out")
    if not kept:
        raise HoneError(f"distill.transfer={source}: every prompt is also in the eval set", "use prompts the eval set does not hold")
    return teacher_answers(config, setup, student_tokenizer, kept, TRANSFER_FILE)


def answered(example, answer: str) -> dict:
    """The example as a JSONL record with its last answer replaced by `answer`."""
    if example.kind == "completion":
        return {"prompt": example.prompt, "completion": answer}
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    messages = [dict(m) for m in example.messages[:last]] + [{"role": "assistant", "content": answer}]
    return {"messages": messages, **({"tools": example.tools} if example.tools else {})}


def doctor_checked(path: Path, config: RunConfig, tokenizer) -> list:
    """The data doctor over the teacher's answers: rows with error findings are left out."""
    report = check_files(path, None, tokenizer, config.data.max_length, config.data.overlength, CheckArgs())
    if report.errors:
        clean = path.with_name(path.stem + ".clean.jsonl")
        kept, rejected = write_fixed(report, clean)
        print(f"data doctor: {rejected} teacher answer(s) rejected (see {clean.with_suffix('')}.rejected.jsonl), {kept} kept")
        path = clean
    items, _ = tokenize_examples(tokenizer, read_examples(path).examples, config.data.max_length, config.data.overlength)
    if not items:
        raise HoneError(f"distill: the data doctor left none of the teacher's answers to train on ({path})",
                        "check distill.teacher_path (does it answer these prompts?) or raise distill.max_new_tokens")
    return items
