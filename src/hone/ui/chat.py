"""The Chat tab: the base model and tuned runs answering the same prompt side by side, each
token streamed as it is decoded. The models take turns one token at a time (greedy, or
sampled with temperature and top-p), each with its own KV cache, so every column moves at
once instead of the second waiting for the first. Prompts are rendered with the chat template
exactly as training and evaluation render them (`render_generation_prompt`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from hone.config import EMBEDDED
from hone.data.render import render_generation_prompt
from hone.model.generate import stop_token_ids
from hone.eval.models import EvalModel, load_for_eval, read_run_config


class Models:
    """Loaded models by name, kept for the next prompt (loading takes longer than answering)."""

    def __init__(self, limit: int = 4):
        self.loaded: dict[str, EvalModel] = {}
        self.limit = limit
        self.lock = threading.Lock()

    def get(self, name: str, like=None) -> EvalModel:
        with self.lock:
            if name not in self.loaded:
                if len(self.loaded) >= self.limit:  # forget the oldest: memory stays bounded
                    self.loaded.pop(next(iter(self.loaded)))
                self.loaded[name] = load_for_eval(name, like=like)
            return self.loaded[name]


def columns_for(runs: list[str], base: str | None) -> list[tuple[str, str, Any]]:
    """(label, model name, loading options) per column: the base model first, then each run.
    The base defaults to the first run's `model.path`, loaded with that run's options (its chat
    template), so both sides read the same prompt."""
    first = read_run_config(runs[0]) if runs else None
    base_name = base or (first.model.path if first else EMBEDDED)
    columns = [(f"base: {base_name}", base_name, first.model if first else None)]
    columns += [(f"tuned: {Path(run).name}", run, None) for run in runs]
    return columns


class TokenStream:
    """One model's answer, one token per `step`, with its KV cache kept between steps."""

    def __init__(self, loaded: EvalModel, messages: list[dict], max_new_tokens: int, temperature: float,
                 top_p: float, seed: int):
        self.loaded, self.max_new_tokens, self.temperature, self.top_p = loaded, max_new_tokens, temperature, top_p
        self.tokenizer = loaded.tokenizer
        self.stops = set(stop_token_ids(loaded.tokenizer, loaded.model))
        prompt = render_generation_prompt(loaded.tokenizer, messages)
        self.next_input = torch.tensor([prompt], device=loaded.device)  # 1, T
        self.cache = None
        self.generated: list[int] = []
        self.shown = ""
        self.done = False
        self.started = time.perf_counter()
        self.generator = torch.Generator(device=loaded.device).manual_seed(seed)

    @torch.inference_mode()
    def step(self) -> str:
        """Decode one token; return the newly readable text (may be empty mid-character)."""
        # transformers 5 names the KV cache `cache` (past_key_values before); only the last position's logits
        out = self.loaded.model(input_ids=self.next_input, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        token = self.pick(out.logits[0, -1].float())  # V
        if token in self.stops:
            self.done = True
            return ""
        self.generated.append(token)
        self.next_input = torch.tensor([[token]], device=self.loaded.device)
        self.done = len(self.generated) >= self.max_new_tokens
        text = self.tokenizer.decode(self.generated, skip_special_tokens=True)
        if text.endswith("\ufffd") and not self.done:  # half of a multi-byte character: wait for the rest
            return ""
        delta, self.shown = text[len(self.shown):], text
        return delta

    def pick(self, logits: torch.Tensor) -> int:
        if self.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        ordered, index = probs.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < self.top_p  # the smallest set whose mass reaches top_p
        ordered = ordered * keep
        choice = torch.multinomial(ordered / ordered.sum(), 1, generator=self.generator)
        return int(index[choice])


def stream_chat(models: Models, runs: list[str], base: str | None, messages: list[dict], max_new_tokens: int = 128,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Events for the page: `columns` (labels) first, then `{"column", "text"}` deltas interleaved
    across the models, a `{"column", "done", "tokens", "seconds"}` per model, and `end`."""
    columns = columns_for(runs, base)
    yield {"columns": [label for label, _, _ in columns]}
    streams = [TokenStream(models.get(name, like), messages, max_new_tokens, temperature, top_p, seed)
               for _, name, like in columns]
    while not all(s.done for s in streams):
        for index, stream in enumerate(streams):
            if stream.done:
                continue
            delta = stream.step()
            if delta:
                yield {"column": index, "text": delta}
            if stream.done:
                yield {"column": index, "done": True, "tokens": len(stream.generated),
                       "seconds": round(time.perf_counter() - stream.started, 2)}
    yield {"end": True}
