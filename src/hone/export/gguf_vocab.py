"""A Hugging Face tokenizer as llama.cpp reads it from GGUF: vocabulary, merges, token types,
the pre-tokenizer by llama.cpp's name, special ids, add-BOS/EOS behaviour and chat template.

Only byte-level BPE vocabularies are written (GPT-2's, Llama 3's, Qwen2's and any tokenizer
trained with the same pre-tokenizer, as hone's embedded model is): llama.cpp represents those
exactly. Each supported pre-tokenizer is identified by its regular expression, the thing that
decides how text is cut before merging; an unknown one is refused rather than guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import gguf

from hone.errors import HoneError

# Hugging Face's ByteLevel pre-tokenizer with use_regex=true cuts with GPT-2's expression.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"


@dataclass(frozen=True)
class PreTokenizer:
    name: str
    """`tokenizer.ggml.pre`: the name llama.cpp's vocabulary loader selects its splitter by."""
    llama_cpp_regex: str
    """The expression llama.cpp cuts with for that name (its engine has no inline `(?i:)`)."""
    ignore_merges: bool = False
    """A whole piece found in the vocabulary is one token without merging (Llama 3)."""


PRE_TOKENIZERS = {
    GPT2_REGEX: PreTokenizer("gpt-2", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"),
    LLAMA3_REGEX: PreTokenizer("llama-bpe", CONTRACTIONS + LLAMA3_REGEX[len("(?i:'s|'t|'re|'ve|'m|'ll|'d)"):], True),
    QWEN2_REGEX: PreTokenizer("qwen2", CONTRACTIONS + QWEN2_REGEX[len("(?i:'s|'t|'re|'ve|'m|'ll|'d)"):]),
}

# transformers marks the assistant's part of a template with {% generation %} blocks, an
# extension other Jinja engines (Python's jinja2 as llama-cpp-python and Ollama's importers use
# it) reject. An always-true `if` with the same whitespace markers renders exactly the same.
GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


@dataclass
class VocabSummary:
    """What was written, for the export report."""

    tokens: int
    pre_tokenizer: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    end_of_turn_id: int | None
    add_bos: bool
    add_eos: bool
    notes: list[str] = field(default_factory=list)


def portable_template(template: str) -> str:
    return GENERATION_TAG.sub(lambda m: f"{{%{m[1]} {'endif' if m[2] else 'if true'} {m[3]}%}}", template)


def backend_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise HoneError(f"the run's tokenizer ({type(tokenizer).__name__}) has no tokenizer.json backend",
                        "GGUF export reads fast (tokenizers) tokenizers; use the default --format hf")
    return json.loads(backend.to_str())


def pre_tokenizer_of(spec: dict) -> tuple[PreTokenizer, list[str]]:
    """The llama.cpp pre-tokenizer matching a tokenizer.json, and notes on what differs."""
    model, pre, normalizer = spec["model"], spec.get("pre_tokenizer") or {}, spec.get("normalizer")
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise HoneError("GGUF export writes byte-level BPE vocabularies only; this tokenizer is "
                        f"{model.get('type')}{' with byte fallback (SentencePiece style)' if model.get('byte_fallback') else ''}",
                        "use the default --format hf, then llama.cpp's convert_hf_to_gguf.py")
    notes = []
    if normalizer and normalizer.get("type") == "NFC":
        notes.append("the tokenizer NFC-normalises text and llama.cpp does not: text already in NFC tokenizes the same")
    elif normalizer:
        raise HoneError(f"the tokenizer normalises text ({normalizer.get('type')}), which llama.cpp's BPE does not",
                        "use the default --format hf")
    regex = _split_regex(pre)
    if regex not in PRE_TOKENIZERS:
        raise HoneError(f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:120]}) is not one llama.cpp is known to reproduce",
                        "use the default --format hf, then llama.cpp's convert_hf_to_gguf.py")
    return PRE_TOKENIZERS[regex], notes


def _split_regex(pre: dict) -> str | None:
    """The cutting expression of a byte-level pre-tokenizer: ByteLevel(use_regex) alone, or a
    Split(regex, isolated) followed by ByteLevel(use_regex=false)."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return GPT2_REGEX
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert") and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)
            and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"].get("Regex")
    return None


def merges_of(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def token_table(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types by id, padded to the model's embedding rows."""
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise HoneError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} embeddings",
                        "resize the model's embeddings to the tokenizer before exporting")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, index in vocab.items():
        tokens[index], types[index] = text, gguf.TokenType.NORMAL
    for index, added in tokenizer.added_tokens_decoder.items():
        # Control tokens are matched only when special tokens are parsed, as transformers does.
        types[index] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
    return tokens, [int(t) for t in types]


def adds_around(tokenizer) -> tuple[bool, bool]:
    """Whether encoding with special tokens adds BOS in front / EOS behind: measured, not read
    from flags, since post-processors decide it."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and full[:1] == [tokenizer.bos_token_id] and plain[:1] != full[:1]
    add_eos = tokenizer.eos_token_id is not None and full[-1:] == [tokenizer.eos_token_id] and plain[-1:] != full[-1:]
    return add_bos, add_eos


def write_vocab(writer: gguf.GGUFWriter, tokenizer, vocab_size: int, end_of_turn_id: int | None) -> VocabSummary:
    spec = backend_json(tokenizer)
    pre, notes = pre_tokenizer_of(spec)
    tokens, types = token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre.name)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges_of(spec))
    add_bos, add_eos = adds_around(tokenizer)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
           "unk": tokenizer.unk_token_id}
    for kind, index in ids.items():
        if index is not None:
            getattr(writer, f"add_{kind}_token_id")(index)
    if end_of_turn_id is not None and end_of_turn_id != tokenizer.eos_token_id:
        writer.add_eot_token_id(end_of_turn_id)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    if tokenizer.chat_template:
        writer.add_chat_template(portable_template(tokenizer.chat_template))
    return VocabSummary(len(tokens), pre.name, ids["bos"], ids["eos"], ids["pad"], end_of_turn_id, add_bos, add_eos, notes)
