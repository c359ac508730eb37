"""`hone pretrain`: (continued) pre-training on plain text, through the same loop as SFT.

Documents are tokenized, joined with the EOS token and cut into `data.block_size` blocks in
which every token is trained. This is also how hone's embedded base model is rebuilt
(`examples/pretrain_embedded.yaml`).
"""

from __future__ import annotations

import json
from pathlib import Path

from hone.config import RunConfig, save_config
from hone.data.dataset import read_examples, require_clean, split_examples
from hone.data.render import Tokenized
from hone.errors import HoneError
from hone.model.adapters import count_parameters
from hone.model.load import load_tokenizer, pick_device
from hone.train.loop import Interrupted, Setup, fit
from hone.train.sft import CONFIG_FILE, build_trainable, last_eval_loss, peak_rss_mb, save_outputs

DEFAULTS = {"adapter": {"method": "full"}, "data": {"overlength": "truncate"}}


def pretrain_command(config_path: str | None, overrides: list[str], resume: bool) -> int:
    from hone.train.commands import resolve_config

    config = resolve_config(config_path, overrides, False, base=DEFAULTS)
    try:
        run_dir = run_pretrain(config, resume)
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
    run_dir = Path(config.train.output_dir)
    if (run_dir / "checkpoints").exists() and not resume:
        raise HoneError(f"{run_dir} already holds a run", "add --resume to continue it, or set train.output_dir to a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / CONFIG_FILE)
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
    model, compute = build_trainable(config, config.train.seed)
    trainable, total = count_parameters(model)
    print(f"method {config.adapter.method}: {trainable:,} trainable of {total:,} parameters, compute {str(compute).removeprefix('torch.')}")
    setup = Setup(model, tokenizer.pad_token_id, pick_device(config.model), compute, run_dir)
    state = fit(setup, train, evals, config.train, resume=resume)
    save_outputs(run_dir, model, tokenizer, config)
    summary = {"method": config.adapter.method, "trained_tokens": state.trained_tokens,
               "train_seconds": round(state.train_seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
               "final_eval_loss": last_eval_loss(run_dir), "steps": state.step,
               "trainable_parameters": trainable, "total_parameters": total}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return run_dir
