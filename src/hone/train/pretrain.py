"""`hone pretrain`: (continued) pre-training on plain text, through the same loop as SFT.

Documents are tokenized, joined with the EOS token and cut into `data.block_size` blocks in
which every token is trained. This is also how hone's embedded base model is rebuilt
(`examples/pretrain_embedded.yaml`).
"""

from __future__ import annotations

import json
from pathlib import Path

from hone.config import RunConfig
from hone.data.dataset import read_examples, require_clean
from hone.data.render import Tokenized
from hone.data.split import split_examples
from hone.errors import HoneError
from hone.model.load import load_tokenizer
from hone.train import distributed
from hone.train.commands import resolve_config
from hone.train.loop import Interrupted
from hone.train.sft import start_run, train_and_save

DEFAULTS = {"adapter": {"method": "full"}, "data": {"overlength": "truncate"}}


def pretrain_command(config_path: str | None, overrides: list[str], resume: bool) -> int:
    config = resolve_config(config_path, overrides, False, base=DEFAULTS)
    world = distributed.start(config)  # under torchrun: one rank per process, rank 0 writes and prints
    try:
        run_dir = run_pretrain(config, resume)
        distributed.stop(world)
    except Interrupted as exc:
        print(f"hone: {exc}; continue with: hone pretrain {config_path} --resume")
        return 130
    print(f"done: {run_dir}")
    return 0


def read_documents(path: str) -> list[str]:
    """Plain-text documents of `path` (.txt split on `<|endoftext|>` lines, or records with `text`)."""
    examples = require_clean(read_examples(path), path)
    wrong = next((e for e in examples if e.kind != "text"), None)
    if wrong is not None:
        raise HoneError(f"{path}:{wrong.line}: pre-training needs plain text ('text' field or a .txt file)",
                        "use `hone train` for chat or prompt/completion data")
    return [e.text for e in examples]


def pack_documents(tokenizer, documents: list[str], block_size: int) -> list[Tokenized]:
    """Tokenize, join with EOS, cut into full blocks; every position is trained."""
    ids: list[int] = []
    for encoded in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    blocks = []
    for start in range(0, len(ids) - block_size + 1, block_size):
        block = ids[start : start + block_size]
        blocks.append(Tokenized(block, list(block)))
    return blocks


def run_pretrain(config: RunConfig, resume: bool = False) -> Path:
    data = config.data
    if not data.train:
        raise HoneError("no training text given", "set data.train=PATH (a .txt file or JSONL with a 'text' field)")
    run_dir = start_run(config, resume)
    tokenizer = load_tokenizer(config.model)
    documents = read_documents(data.train)
    if data.eval:
        held = read_documents(data.eval)
    else:
        documents, held = split_examples(documents, data.eval_fraction, config.train.seed, len(documents))
    train = pack_documents(tokenizer, documents, data.block_size)
    evals = pack_documents(tokenizer, held, data.block_size)[: data.max_eval_examples]
    if not train:
        raise HoneError(f"{data.train}: not enough text for one block of {data.block_size} tokens", "lower data.block_size")
    print(f"pretrain: {len(documents):,} documents -> {len(train):,} blocks of {data.block_size} tokens; eval {len(evals)} blocks")
    summary = train_and_save(config, tokenizer, train, evals, run_dir, resume)
    if distributed.current().main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return run_dir
