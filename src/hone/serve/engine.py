"""Dynamic batching: one scheduler thread runs decoding steps over every active answer with a
shared KV cache; new requests join between steps, finished or abandoned ones leave.

The batch cache is a list of (keys, values) per layer, each `B, H, T, D`, left-padded: row b's
real tokens are the last ones its `mask[b]` marks. A joining group is prefilled on its own
(left-padded among itself) and concatenated in; a leaving row is dropped with its cache row,
and columns that only padding fills any more are cut away. Each step feeds every row's last
sampled token at its own position (`mask.sum(1)`), each row through its own adapter
(`hone.serve.rows`), so requests for different adapters share the step.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache

from hone.serve.decode import Detokenizer, sample
from hone.serve.models import Served
from hone.serve.schema import JsonConstraint


class QueueFull(Exception):
    """More answers waiting than the server accepts (HTTP 429)."""


@dataclass
class Params:
    """How one request's answers are generated."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    constraint: Callable[[], JsonConstraint] | None = None
    """Builds a fresh constraint per answer (`response_format` with a JSON schema)."""


@dataclass
class Request:
    """`n` answers to one prompt, for model `model_id`. `emit(event)` receives, from the scheduler
    thread: ("delta", index, text), ("finish", index, reason, completion_tokens, token_ids) or
    ("error", message)."""

    model_id: str
    prompt_ids: list[int]
    params: Params
    n: int
    emit: Callable[[tuple], None]
    cancelled: bool = False

    def cancel(self) -> None:
        """Called when the client is gone: its rows leave at the next step."""
        self.cancelled = True


@dataclass
class Sequence:
    """One answer being generated (one row of the batch)."""

    request: Request
    index: int
    peft_name: str
    detokenizer: Detokenizer
    stop_ids: set[int]
    generator: torch.Generator | None
    constraint: JsonConstraint | None
    out_ids: list[int] = field(default_factory=list)
    done: bool = False


class Scheduler:
    def __init__(self, served: Served, max_batch: int = 32, max_queue: int = 256, threads: int | None = None):
        self.served = served
        self.threads = threads
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Sequence] = []
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.mask: torch.Tensor | None = None  # B, T: 1 on real tokens
        self.wake = threading.Condition()
        self.stopped = False
        self.steps = 0
        self.prefills = 0  # prefill passes (requests joining the batch together share one)
        self.cancelled = 0  # rows dropped because their client left
        self.thread = threading.Thread(target=self.run, name="hone-serve-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()

    def submit(self, request: Request) -> None:
        with self.wake:
            queued = sum(r.n for r in self.waiting)
            free_rows = max(0, self.max_batch - len(self.active))  # answers that start at the next step wait in no queue
            if queued + request.n > self.max_queue + free_rows:
                raise QueueFull(f"{queued} answers are already waiting (the limit is {self.max_queue})")
            self.waiting.append(request)
            self.wake.notify()

    def load(self) -> dict:
        return {"active": len(self.active), "waiting": sum(r.n for r in self.waiting), "steps": self.steps, "prefills": self.prefills,
                "cancelled": self.cancelled}

    def run(self) -> None:
        if self.threads:  # torch's thread count is per calling thread: set it where the steps run
            torch.set_num_threads(self.threads)
        while True:
            with self.wake:
                while not self.stopped and not self.waiting and not self.active:
                    self.wake.wait()
                if self.stopped:
                    return
                joining = self._admit()
            try:
                self._drop_cancelled()
                if joining:
                    self._prefill(joining)
                if self.active:
                    self._step()
            except Exception as exc:  # a bug or an out-of-memory must not kill the server: fail these rows
                self._fail_all(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", joining)

    def _admit(self) -> list[Sequence]:
        """Requests that fit in the free rows, whole (all `n` answers), in arrival order."""
        joining: list[Sequence] = []
        while self.waiting and len(self.active) + len(joining) + self.waiting[0].n <= self.max_batch:
            request = self.waiting.popleft()
            if not request.cancelled:
                joining += [self._sequence(request, i) for i in range(request.n)]
        if not joining and not self.active and self.waiting:  # n above the batch size: run it alone
            request = self.waiting.popleft()
            joining = [self._sequence(request, i) for i in range(request.n)]
        return joining

    def _sequence(self, request: Request, index: int) -> Sequence:
        served = self.served.models[request.model_id]
        params = request.params
        generator = None
        if params.temperature > 0:
            generator = torch.Generator()
            if params.seed is not None:
                generator.manual_seed(params.seed * 1009 + index)  # each of the n answers its own stream
            else:
                generator.seed()
        constraint = params.constraint() if params.constraint else None
        return Sequence(request, index, served.peft_name, Detokenizer(served.tokenizer, params.stop),
                        set(served.stop_ids), generator, constraint)

    @torch.inference_mode()
    def _prefill(self, joining: list[Sequence]) -> None:
        """Run the joining prompts, sample each first token, and add their rows to the batch."""
        device = self.served.device
        self.prefills += 1
        longest = max(len(s.request.prompt_ids) for s in joining)
        ids = torch.zeros(len(joining), longest, dtype=torch.long)
        mask = torch.zeros(len(joining), longest, dtype=torch.long)
        for row, seq in enumerate(joining):
            prompt = seq.request.prompt_ids
            ids[row, longest - len(prompt):] = torch.tensor(prompt)
            mask[row, longest - len(prompt):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = self._forward(ids.to(device), mask.to(device), positions.to(device), None, joining)
        cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._join(cache, mask.to(device), joining)
        self._take(out.logits[:, -1].float(), range(len(self.active) - len(joining), len(self.active)))

    @torch.inference_mode()
    def _step(self) -> None:
        """One decoding step for every active row."""
        device = self.served.device
        last = torch.tensor([[s.out_ids[-1]] for s in self.active], device=device)  # B, 1
        positions = self.mask.sum(1, keepdim=True)  # B, 1: tokens before this one
        mask = torch.cat([self.mask, torch.ones_like(positions)], dim=1)
        out = self._forward(last, mask, positions, DynamicCache(ddp_cache_data=self.cache), self.active)
        self.cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self.mask = mask
        self.steps += 1
        self._take(out.logits[:, -1].float(), range(len(self.active)))

    def _forward(self, ids, mask, positions, cache, rows: list[Sequence]):
        extra = {}
        if self.served.rows is not None:
            self.served.rows.use([s.peft_name for s in rows], ids.device)
        elif self.served.has_adapters:
            extra = {"adapter_names": [s.peft_name for s in rows]}
        return self.served.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1, **extra)

    def _take(self, logits: torch.Tensor, rows) -> None:
        """Sample a token for each of `rows` (indices into `active`), emit text, retire finished rows."""
        context = self.served.context_length
        greedy = logits.argmax(-1).tolist()  # one op for every row that needs no more than the argmax
        for row, seq_logits, best in zip(rows, logits, greedy):
            seq = self.active[row]
            plain = seq.request.params.temperature == 0 and seq.constraint is None
            token = best if plain else sample(seq_logits, seq.request.params, seq.generator, seq.constraint)
            seq.out_ids.append(token)
            if seq.constraint is not None:
                seq.constraint.advance(token)
            reason = "stop" if token in seq.stop_ids else None
            text, stop_hit = seq.detokenizer.add(seq.out_ids if reason is None else seq.out_ids[:-1], final=reason is not None)
            if stop_hit:
                reason = "stop"
            elif reason is None and (len(seq.out_ids) >= seq.request.params.max_tokens
                                     or len(seq.request.prompt_ids) + len(seq.out_ids) >= context):
                reason = "length"
                text += seq.detokenizer.flush()
            if text:
                seq.request.emit(("delta", seq.index, text))
            if reason:
                seq.done = True
                seq.request.emit(("finish", seq.index, reason, len(seq.out_ids), list(seq.out_ids)))
        self._retire(lambda s: s.done)

    def _drop_cancelled(self) -> None:
        leaving = sum(s.request.cancelled for s in self.active)
        if leaving:
            self.cancelled += leaving
            self._retire(lambda s: s.request.cancelled)

    def _retire(self, leaves: Callable[[Sequence], bool]) -> None:
        keep = [i for i, s in enumerate(self.active) if not leaves(s)]
        if len(keep) == len(self.active):
            return
        self.active = [self.active[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        first = int(mask.any(0).nonzero()[0])  # columns before this are padding in every row left
        self.mask = mask[:, first:]
        self.cache = [(k[index, :, first:], v[index, :, first:]) for k, v in self.cache]

    def _join(self, cache, mask: torch.Tensor, joining: list[Sequence]) -> None:
        if self.cache is None:
            self.cache, self.mask, self.active = cache, mask, list(joining)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.cache = [(torch.cat([_left_pad(k0, width), _left_pad(k1, width)]), torch.cat([_left_pad(v0, width), _left_pad(v1, width)]))
                      for (k0, v0), (k1, v1) in zip(self.cache, cache)]
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
        self.active = self.active + joining

    def _fail_all(self, message: str, joining: list[Sequence]) -> None:
        for request in {id(s.request): s.request for s in self.active + joining}.values():
            request.emit(("error", message))
        self.active, self.cache, self.mask = [], None, None


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence axis (dim 2 of a cache tensor, dim 1 of a mask) up to `width`."""
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
