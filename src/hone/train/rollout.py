"""Sampled completions for online RL: a group of answers per prompt, batched with a KV cache.

Every completion has its own random stream, seeded from (run seed, step, prompt index,
member of the group) and nothing else: no global RNG state, no dependence on which other
prompts share the batch. A run killed after step s and resumed samples step s+1's
completions exactly as the uninterrupted run would (tested).

Why our own decode loop and not `model.generate`: generate draws every row from one global
generator, so a row's sample depends on the batch around it and on everything sampled
before; here each row draws from its own `torch.Generator`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from hone.model.kvcache import BatchCache

SEED_MIX = (1_000_003, 7_919, 104_729)  # primes that spread (step, prompt, member) over the seed space


@dataclass
class SamplingArgs:
    max_new_tokens: int = 64
    """Longest completion, in tokens (the stop token included)."""
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class Completion:
    ids: list[int]
    """Sampled token ids, up to and including the first stop token."""
    stopped: bool
    """False when the completion ran into `max_new_tokens` without a stop token."""


def completion_seed(run_seed: int, step: int, prompt: int, member: int) -> int:
    """The seed of one completion: a pure function of the run seed, the optimizer step, the
    prompt's index in the data and its place in the group."""
    a, b, c = SEED_MIX
    return (run_seed * a + step * b + prompt * c + member) % (2**63 - 1)


def nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(B, V) logits -> (B, V) sampling probabilities: tempered, then the smallest set of
    tokens whose mass reaches `top_p` (the most likely token always kept)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above each
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def draw(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """(B,) one token per row, each row from its own generator: one uniform number per row and
    the whole batch inverted through its cumulative distributions at once (a `multinomial` per
    row was an eighth of a GRPO step on the embedded model). A token of probability 0 is never
    drawn: its cumulative mass equals its predecessor's, and the search takes the first above."""
    uniform = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators])  # B, in [0, 1)
    cumulative = probs.cumsum(dim=-1)  # B, V
    target = (uniform * cumulative[:, -1]).unsqueeze(1)  # below each row's total mass
    return torch.searchsorted(cumulative, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


@contextlib.contextmanager
def cached_attention(model):
    """SDPA with the attention mask for the duration: inside `hone.engine` the model attends with
    the packed-row attention, which knows neither left padding nor a KV cache."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    configs = [m.config for m in base.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    previous = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        for config, name in zip(configs, previous):
            config._attn_implementation = name


@torch.no_grad()
def sample(model, prompts: list[list[int]], seeds: list[int], args: SamplingArgs, stops: list[int],
           pad_id: int) -> list[Completion]:
    """One completion per prompt (repeat a prompt for a group), each drawn with its seed.
    Each distinct prompt runs once, left-padded into one batch; its rows (a group's members)
    start from its keys and values in the KV cache."""
    device = next(model.parameters()).device
    distinct = list(dict.fromkeys(map(tuple, prompts)))
    slot = {prompt: index for index, prompt in enumerate(distinct)}
    rows = torch.tensor([slot[tuple(prompt)] for prompt in prompts], device=device)  # B -> its distinct prompt
    width = max(map(len, distinct))
    ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)  # U, P
    mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for row, prompt in enumerate(distinct):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    with cached_attention(model), decode_threads(model, len(prompts)):
        return decode(model, ids, mask, rows, generators, args, stops, pad_id)


# A decode step of a small model is a few milliseconds of work in many small operations: split
# over threads, their barriers cost more than they save, and on a busy CPU each barrier waits
# for a time slice. Measured on 2 shared cores (embedded model, 32 rows): 0.86 s per decode step
# with 2 threads, 0.07 s with 1. Below this many multiply-adds per step, decoding uses one thread.
ONE_THREAD_WORK = 2e9


@contextlib.contextmanager
def decode_threads(model, rows: int):
    """One intra-op thread while decoding when a step is small (rows x parameters), on CPU."""
    work = rows * sum(p.numel() for p in model.parameters())
    threads = torch.get_num_threads()
    if next(model.parameters()).device.type != "cpu" or work >= ONE_THREAD_WORK or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def decode(model, ids, mask, rows, generators, args: SamplingArgs, stops: list[int], pad_id: int) -> list[Completion]:
    """Left-padded distinct prompts ids/mask (U, P) and each row's prompt `rows` (B) -> one
    completion per row, a token per row per step from the row's own generator, until every row
    has met a stop token or max_new_tokens. A row that stops leaves the batch (the KV cache's
    last row takes its place), so later steps compute only the answers still running."""
    from transformers import DynamicCache

    device = ids.device
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    prefill = DynamicCache()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=prefill,
                   use_cache=True, logits_to_keep=1).logits[:, -1][rows]  # B, V
    # every row from its prompt's keys and values, in buffers with a column for each new token (written in place)
    cache = BatchCache.stack([[(layer.keys[rows], layer.values[rows]) for layer in prefill.layers]], len(rows),
                             args.max_new_tokens)
    mask, positions = mask[rows], positions[rows, -1:]
    stop_ids = torch.tensor(stops, device=device)
    out = torch.full((len(rows), args.max_new_tokens), pad_id, dtype=torch.long, device=device)  # B, N
    lengths, stopped = [args.max_new_tokens] * len(rows), [False] * len(rows)
    live, generators = list(range(len(rows))), list(generators)  # the answer in each row of the batch, its generator
    for t in range(args.max_new_tokens):
        token = draw(nucleus(logits, args.temperature, args.top_p), generators)
        out[torch.tensor(live, device=device), t] = token
        leaving = torch.isin(token, stop_ids).nonzero().flatten().tolist()
        for row in leaving:
            lengths[live[row]], stopped[live[row]] = t + 1, True
        if len(leaving) == len(live) or t == args.max_new_tokens - 1:
            break
        if leaving:
            order, mask = cache.remove(leaving, mask)
            live, generators = [live[i] for i in order], [generators[i] for i in order]
            keep = torch.tensor(order, device=device)
            token, positions = token[keep], positions[keep]
        mask = torch.cat([mask, torch.ones_like(positions)], dim=1)
        positions = positions + 1
        logits = model(input_ids=token.unsqueeze(1), attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]  # live rows, V
    return [Completion(row[:n], done) for row, n, done in zip(out.tolist(), lengths, stopped)]
