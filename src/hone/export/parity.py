"""The parity check `hone export --format gguf` runs on what it wrote: do conversations from
the run's own data, rendered with the chat template stored in the GGUF file and tokenized
from its vocabulary as llama.cpp does, give the token ids training gave? Are the tokens the
run taught the model to end its turns with the ones the file (and the Modelfile) stop on?

The training side is hone's own renderer (`hone.data.render`) with the run's tokenizer, the
same function training called; the GGUF side reads the file alone (`hone.export.gguf_read`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hone.config import RunConfig
from hone.data.dataset import read_examples
from hone.data.formats import Example
from hone.data.render import IGNORE, RenderError, render_example, render_prompt, template_messages
from hone.export.gguf_read import GGUFText, TemplateError, gguf_tokenizer, read_text_metadata, render_template


@dataclass
class Parity:
    passed: bool
    gguf: str
    tokenizer: str
    template: str
    conversations_checked: int = 0
    conversations_identical: int = 0
    prompts_checked: int = 0
    prompts_identical: int = 0
    mismatches: list[dict] = field(default_factory=list)
    stop: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        stops = ", ".join(t["text"] for t in self.stop.get("taught", []))
        return (f"parity: {self.conversations_identical}/{self.conversations_checked} conversations and "
                f"{self.prompts_identical}/{self.prompts_checked} generation prompts give training's token ids "
                f"({self.tokenizer}); turns end with {stops or 'no special token'}: {verdict}")

    def as_dict(self) -> dict:
        return asdict(self)


def sample_examples(config: RunConfig, count: int, seed: int = 0) -> list[Example]:
    """Up to `count` examples of the run's training and evaluation data, drawn with `seed`."""
    examples = []
    for path in (config.data.train, config.data.eval):
        if path and Path(path).is_file():
            examples += read_examples(path).examples
    random.Random(seed).shuffle(examples)
    return examples[:count]


def taught_end_of_turn(tokenized) -> set[int]:
    """The last trained token of each trained stretch: what the model learned to stop with."""
    labels = tokenized.labels
    return {labels[i] for i in range(len(labels)) if labels[i] != IGNORE and (i + 1 == len(labels) or labels[i + 1] == IGNORE)}


def chat_ids(meta: GGUFText, tokenizer, text: str) -> list[int]:
    """What llama.cpp's chat path feeds the model for a rendered template: a leading BOS (or
    trailing EOS) written by the template is dropped when the tokenizer adds it itself, then the
    text is tokenized with special tokens parsed and added."""
    bos = meta.tokens[meta.ids["bos"]] if "bos" in meta.ids else None
    eos = meta.tokens[meta.ids["eos"]] if "eos" in meta.ids else None
    if meta.add_bos and bos and text.startswith(bos):
        text = text[len(bos):]
    if meta.add_eos and eos and text.endswith(eos):
        text = text[: -len(eos)]
    return tokenizer.encode(text, add_special=True)


def gguf_side(meta: GGUFText, tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """(whole example, generation prompt) ids from the GGUF file alone."""
    if example.kind == "completion":
        whole = tokenizer.encode(example.prompt + example.completion, add_special=True) + [meta.ids["eos"]]
        return whole, tokenizer.encode(example.prompt, add_special=True)
    bos = meta.tokens[meta.ids["bos"]] if "bos" in meta.ids else ""
    eos = meta.tokens[meta.ids["eos"]] if "eos" in meta.ids else ""
    messages, tools = template_messages(example.messages), example.tools or None
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    whole = render_template(meta.chat_template, messages, False, bos, eos, tools)
    prompt = render_template(meta.chat_template, messages[:last], True, bos, eos, tools)
    return chat_ids(meta, tokenizer, whole), chat_ids(meta, tokenizer, prompt)


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def mismatch(meta: GGUFText, example: Example, what: str, trained: list[int], exported: list[int]) -> dict:
    at = first_difference(trained, exported)
    def around(ids):
        return [meta.tokens[i] if 0 <= i < len(meta.tokens) else str(i) for i in ids[max(0, at - 3): at + 3]]
    return {"example": f"{example.source}:{example.line}", "what": what, "position": at,
            "training": around(trained), "gguf": around(exported)}


def compare_ids(parity: Parity, meta: GGUFText, tokenizer, hf_tokenizer, examples: list[Example]) -> set[int]:
    """Count identical renderings; returns the end-of-turn ids training taught."""
    taught: set[int] = set()
    for example in examples:
        try:
            trained = render_example(hf_tokenizer, example)
            trained_prompt = render_prompt(hf_tokenizer, example)
        except RenderError:
            continue  # training dropped it too: the data checks report such rows
        taught |= taught_end_of_turn(trained)
        try:
            whole, prompt = gguf_side(meta, tokenizer, example)
        except TemplateError as exc:
            parity.failures.append(f"the GGUF chat template fails on {example.source}:{example.line} ({exc})")
            break
        parity.conversations_checked += 1
        parity.prompts_checked += 1
        parity.conversations_identical += whole == trained.input_ids
        parity.prompts_identical += prompt == trained_prompt
        for what, ours, theirs in (("conversation", trained.input_ids, whole), ("generation prompt", trained_prompt, prompt)):
            if ours != theirs and len(parity.mismatches) < 5:
                parity.mismatches.append(mismatch(meta, example, what, ours, theirs))
    return taught


def check_stops(parity: Parity, meta: GGUFText, tokenizer, taught: set[int], eos_id: int | None,
                modelfile_stops: list[str] | None) -> None:
    """Every token training ended turns with, and the tokenizer's EOS, must stop generation in
    the file and in the Modelfile; extra stops are listed, not failed."""
    gguf_stops = tokenizer.stop_ids()
    needed = set(taught) | ({eos_id} if eos_id is not None else set())
    named = lambda ids: [{"id": i, "text": meta.tokens[i]} for i in sorted(ids)]  # noqa: E731
    missing = needed - gguf_stops
    parity.stop = {"taught": named(taught), "eos": named({eos_id} if eos_id is not None else set()),
                   "gguf_stops": named(gguf_stops), "missing_in_gguf": named(missing),
                   "extra_in_gguf": named(gguf_stops - needed), "modelfile_stops": modelfile_stops}
    if not taught:
        parity.failures.append("no trained turn ends with a token: the model never learned to stop")
    if missing:
        parity.failures.append(f"the GGUF file does not stop on {', '.join(meta.tokens[i] for i in sorted(missing))}")
    if modelfile_stops is not None:
        absent = [meta.tokens[i] for i in sorted(needed) if meta.tokens[i] not in modelfile_stops]
        if absent:
            parity.failures.append(f"the Modelfile does not stop on {', '.join(absent)}")


def check_parity(gguf_path: Path, config: RunConfig, hf_tokenizer, modelfile_stops: list[str] | None = None,
                 count: int = 64, engine: str = "auto") -> Parity:
    meta = read_text_metadata(gguf_path)
    tokenizer = gguf_tokenizer(meta, engine)
    parity = Parity(False, gguf_path.name, tokenizer.name, "tokenizer.chat_template of the GGUF file")
    examples = sample_examples(config, count)
    if any(e.kind == "chat" for e in examples) and not meta.chat_template:
        parity.failures.append("the GGUF file has no chat template but the run trained on conversations")
        examples = [e for e in examples if e.kind != "chat"]
    taught = compare_ids(parity, meta, tokenizer, hf_tokenizer, examples)
    if not parity.conversations_checked:
        where = config.data.train if Path(config.data.train or "").is_file() else f"{config.data.train} (not found)"
        parity.failures.append(f"no example of the run's data ({where}) could be rendered to check")
    if parity.conversations_identical < parity.conversations_checked:
        parity.failures.append(f"{parity.conversations_checked - parity.conversations_identical} conversations tokenize differently")
    if parity.prompts_identical < parity.prompts_checked:
        parity.failures.append(f"{parity.prompts_checked - parity.prompts_identical} generation prompts tokenize differently")
    check_stops(parity, meta, tokenizer, taught, hf_tokenizer.eos_token_id, modelfile_stops)
    parity.passed = not parity.failures
    return parity
