"""What a GGUF file tells an inference engine about text: its vocabulary, special ids, add-BOS
behaviour and chat template, read back from the file alone, and a tokenizer built from them.

The tokenizer is llama.cpp's own (through llama-cpp-python) when it is installed; otherwise
it is rebuilt from the file's tokens and merges with the `tokenizers` library, cutting text
with the expression llama.cpp uses for the file's pre-tokenizer name. Either way nothing of
the Hugging Face tokenizer that wrote the file is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gguf
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hone.errors import HoneError
from hone.export.gguf_vocab import PRE_TOKENIZERS


@dataclass
class GGUFText:
    path: Path
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    ids: dict[str, int]  # bos, eos, eot, pad, ... as present
    add_bos: bool
    add_eos: bool
    chat_template: str | None

    def text_of(self, index: int) -> str:
        return self.tokens[index]

    @property
    def stop_ids(self) -> set[int]:
        """What the metadata declares ends generation (llama.cpp adds tokens it recognises by text)."""
        return {self.ids[k] for k in ("eos", "eot", "eom") if k in self.ids}


def read_text_metadata(path: Path) -> GGUFText:
    reader = gguf.GGUFReader(path)

    def value(key, default=None):
        field = reader.get_field(key)
        return field.contents() if field is not None else default

    ids = {kind: value(f"tokenizer.ggml.{kind}_token_id") for kind in ("bos", "eos", "eot", "eom", "pad", "unk")}
    return GGUFText(path, value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type"),
                    value("tokenizer.ggml.merges", []), value("tokenizer.ggml.pre", ""),
                    {k: int(v) for k, v in ids.items() if v is not None},
                    bool(value("tokenizer.ggml.add_bos_token", False)), bool(value("tokenizer.ggml.add_eos_token", False)),
                    value("tokenizer.chat_template"))


class TemplateError(Exception):
    """The chat template raised (`raise_exception`) or failed to render."""


def _raise(message):
    raise TemplateError(message)


def render_template(template: str, messages: list[dict], add_generation_prompt: bool, bos_token: str, eos_token: str,
                    tools: list[dict] | None = None) -> str:
    """Render a chat template the way Hugging Face-style engines do (trim and lstrip blocks,
    `tojson`, `raise_exception`), with Python's jinja2 in a sandbox."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token=bos_token, eos_token=eos_token, tools=tools)
    except (jinja2.TemplateError, TemplateError, TypeError, ValueError) as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


class LlamaCppTokenizer:
    """llama.cpp's tokenizer over the file's vocabulary: the model is loaded vocabulary-only
    (no weights, no context) through llama-cpp-python's bindings of llama.h."""

    def __init__(self, path: Path):
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr

        self.lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs every key it loads
            self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise HoneError(f"llama.cpp could not load the vocabulary of {path}", "see parity.json; re-export")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.name = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"

    def __del__(self):
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)

    def encode(self, text: str, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        buffer = (self.lib.llama_token * room)()
        count = self.lib.llama_tokenize(self.vocab, data, len(data), buffer, room, add_special, True)
        return list(buffer[:count])

    def stop_ids(self) -> set[int]:
        return {i for i in range(self.lib.llama_vocab_n_tokens(self.vocab)) if self.lib.llama_vocab_is_eog(self.vocab, i)}


class RebuiltTokenizer:
    """The file's tokens and merges as a `tokenizers` BPE, cut with llama.cpp's expression for
    the file's pre-tokenizer name; control and user-defined tokens are matched whole, first."""

    def __init__(self, meta: GGUFText):
        from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

        pre = next((p for p in PRE_TOKENIZERS.values() if p.name == meta.pre), None)
        if pre is None:
            raise HoneError(f"{meta.path}: pre-tokenizer {meta.pre!r} is not one hone can rebuild",
                            "install llama-cpp-python to check with llama.cpp's own tokenizer")
        vocab = {text: i for i, text in enumerate(meta.tokens) if meta.types[i] != gguf.TokenType.UNUSED}
        merges = [tuple(m.split(" ", 1)) for m in meta.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre.ignore_merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pre.llama_cpp_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        whole = [AddedToken(meta.tokens[i], special=meta.types[i] == gguf.TokenType.CONTROL, normalized=False)
                 for i in range(len(meta.tokens)) if meta.types[i] in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)]
        tok.add_special_tokens(whole)
        self.tokenizer, self.meta = tok, meta
        self.name = f"rebuilt from the GGUF vocabulary (tokenizers, llama.cpp's {meta.pre} expression)"

    def encode(self, text: str, add_special: bool) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_special and self.meta.add_bos and "bos" in self.meta.ids:
            ids = [self.meta.ids["bos"]] + ids
        if add_special and self.meta.add_eos and "eos" in self.meta.ids:
            ids = ids + [self.meta.ids["eos"]]
        return ids

    def stop_ids(self) -> set[int]:
        return self.meta.stop_ids


def gguf_tokenizer(meta: GGUFText, engine: str = "auto"):
    """llama.cpp's tokenizer when llama-cpp-python is installed (or `engine="llama.cpp"`), else rebuilt."""
    if engine in ("auto", "llama.cpp"):
        try:
            return LlamaCppTokenizer(meta.path)
        except ImportError:
            if engine == "llama.cpp":
                raise HoneError("llama-cpp-python is not installed", "pip install llama-cpp-python") from None
    return RebuiltTokenizer(meta)
