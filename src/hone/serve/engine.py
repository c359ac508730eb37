"""Dynamic batching: one scheduler thread runs decoding steps over every active answer with a
shared KV cache; new requests join between steps, finished or abandoned ones leave.

The batch cache (`hone.model.kvcache`) holds per layer keys and values `B, H, T, D`, left-padded:
row b's real tokens are the last ones its `mask[b]` marks; a step writes its column in place. A
joining group is prefilled on its own (left-padded among itself, after the keys and values of a
known prompt start from `hone.serve.prefixes`) and written into the cache's spare rows; a
leaving row is overwritten by the last row, and columns that only padding fills any more leave
the views. Each step feeds every row's last
sampled token at its own position (`mask.sum(1)`), each row through its own adapter
(`hone.serve.rows`), so requests for different adapters share the step.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch

from hone.model.kvcache import BatchCache
from hone.serve.decode import Detokenizer, sample
from hone.serve.models import Served
from hone.serve.prefixes import PrefixStore
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
    def __init__(self, served: Served, max_batch: int = 32, max_queue: int = 256, threads: int | None = None,
                 prefix_tokens: int = 4096):
        self.served = served
        self.prefixes = PrefixStore(prefix_tokens)
        self.threads = threads
        # prefill multiplies whole prompts, products large enough to split: it keeps torch's thread
        # count (the cores) where --threads narrows decoding steps (2 threads cut prefill by a third here)
        self.prefill_threads = torch.get_num_threads()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Sequence] = []
        self.cache: BatchCache | None = None
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
                "cancelled": self.cancelled, "prefix_tokens_reused": self.prefixes.reused}

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
                    with _threads(self.prefill_threads if self.threads else None, self.threads):
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
        """Run the joining prompts, sample each first token, and add their rows to the batch. A
        prompt whose start is in the prefix store runs only the rest, after those keys and values
        (`past | new`, each part left-padded: the mask and positions say which columns are real)."""
        device = self.served.device
        self.prefills += 1
        prompts = [s.request.prompt_ids for s in joining]
        found = [self.prefixes.find(s.peft_name, p) for s, p in zip(joining, prompts)]
        reused = [n for n, _ in found]
        past_width, width = max(reused), max(len(p) - n for p, n in zip(prompts, reused))
        ids = torch.zeros(len(joining), width, dtype=torch.long)
        mask = torch.zeros(len(joining), past_width + width, dtype=torch.long)
        positions = torch.zeros(len(joining), width, dtype=torch.long)
        for row, (prompt, n) in enumerate(zip(prompts, reused)):
            new = len(prompt) - n
            ids[row, width - new:] = torch.tensor(prompt[n:])
            mask[row, past_width - n : past_width] = 1
            mask[row, past_width + width - new:] = 1
            positions[row, width - new:] = torch.arange(n, len(prompt))
        mask = mask.to(device)
        past = None
        if past_width:
            some = next(pairs for _, pairs in found if pairs)
            rows = [pairs or [(k[:, :0], v[:, :0]) for k, v in some] for _, pairs in found]
            past = BatchCache.stack([[(k[None], v[None]) for k, v in row] for row in rows], capacity=len(joining))
        out = self._forward(ids.to(device), mask, positions.to(device), past, joining)
        cache = past.pairs() if past is not None else [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        for row, (seq, prompt) in enumerate(zip(joining, prompts)):
            real = mask[row].bool()
            self.prefixes.add(seq.peft_name, prompt, [(k[row][:, real], v[row][:, real]) for k, v in cache])
        self._join(cache, mask, joining)
        self._take(out.logits[:, -1].float(), range(len(self.active) - len(joining), len(self.active)))

    @torch.inference_mode()
    def _step(self) -> None:
        """One decoding step for every active row."""
        device = self.served.device
        last = torch.tensor([[s.out_ids[-1]] for s in self.active], device=device)  # B, 1
        positions = self.mask.sum(1, keepdim=True)  # B, 1: tokens before this one
        mask = torch.cat([self.mask, torch.ones_like(positions)], dim=1)
        out = self._forward(last, mask, positions, self.cache, self.active)  # writes this step's column into self.cache
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
        leaving = [i for i, s in enumerate(self.active) if leaves(s)]
        if not leaving:
            return
        if len(leaving) == len(self.active):
            self.active, self.cache, self.mask = [], None, None
            return
        order, self.mask = self.cache.remove(leaving, self.mask)  # the last rows move into the leavers' places
        self.active = [self.active[i] for i in order]

    def _join(self, cache, mask: torch.Tensor, joining: list[Sequence]) -> None:
        if self.cache is None or not self.cache.append(cache):  # appended in place where the buffers have room
            groups = [cache] if self.cache is None else [self.cache.pairs(), cache]
            self.cache = BatchCache.stack(groups, capacity=self.max_batch)
        width = self.cache.width
        self.mask = mask if self.mask is None else torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
        self.active = self.active + joining

    def _fail_all(self, message: str, joining: list[Sequence]) -> None:
        for request in {id(s.request): s.request for s in self.active + joining}.values():
            request.emit(("error", message))
        self.active, self.cache, self.mask = [], None, None


@contextlib.contextmanager
def _threads(during: int | None, after: int | None):
    """torch's thread count `during` the block, `after` it (None: unchanged)."""
    if during is None or during == after:
        yield
        return
    torch.set_num_threads(during)
    try:
        yield
    finally:
        torch.set_num_threads(after)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """A `B, T` mask with zero columns on the left up to `width`."""
    missing = width - tensor.shape[1]
    return tensor if missing == 0 else torch.cat([tensor.new_zeros(tensor.shape[0], missing), tensor], dim=1)
