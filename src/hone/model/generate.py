"""Batched generation: prompts left-padded into batches of similar length, decoded with a KV
cache, greedy by default, each answer cut at its first end-of-turn token."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hone.data.collate import pad_batch
from hone.data.render import Tokenized

# End-of-turn markers of common chat templates; one counts when the template uses it.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")


@dataclass
class GenerationArgs:
    max_new_tokens: int = 64
    temperature: float = 0.0
    """0 = greedy (deterministic); above 0 samples with nucleus `top_p`."""
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0


@dataclass
class Generation:
    text: str
    """The decoded answer, up to (not including) the first end-of-turn token, stripped."""
    new_tokens: int
    """Tokens generated, the end-of-turn token included."""
    stopped: bool
    """False when the answer ran into `max_new_tokens` without ending its turn."""


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The eos token(s) plus every end-of-turn marker the chat template uses."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured] if configured is not None else []
    template = getattr(tokenizer, "chat_template", None) or ""
    vocab = tokenizer.get_vocab()
    ids += [vocab[marker] for marker in END_OF_TURN_MARKERS if marker in template and marker in vocab]
    return sorted(set(ids))


def generate_answers(model, tokenizer, prompts: list[list[int]], args: GenerationArgs, device=None) -> list[Generation]:
    """Answers to `prompts` (token id lists), in the order given."""
    device = device or next(model.parameters()).device
    stops = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    # Similar lengths together: less padding to compute over.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generation | None] = [None] * len(prompts)
    if args.temperature > 0:
        torch.manual_seed(args.seed)
    for start in range(0, len(order), args.batch_size):
        chunk = order[start : start + args.batch_size]
        rows = generate_batch(model, [prompts[i] for i in chunk], args, stops, pad_id, device)
        for index, ids in zip(chunk, rows):
            out[index] = finish(tokenizer, ids, stops, args.max_new_tokens)
    return out


@torch.inference_mode()
def generate_batch(model, prompts: list[list[int]], args: GenerationArgs, stops: list[int], pad_id: int, device) -> list[list[int]]:
    """New token ids per prompt (padding after an early stop included; `finish` cuts it)."""
    batch = pad_batch([Tokenized(p, p) for p in prompts], pad_id, padding_side="left")
    input_ids = batch["input_ids"].to(device)  # B, T
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p) if args.temperature > 0 else dict(do_sample=False)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"].to(device),
        max_new_tokens=args.max_new_tokens,
        eos_token_id=stops,
        pad_token_id=pad_id,
        use_cache=True,
        top_k=None,
        **sampling,
    )
    return output[:, input_ids.shape[1] :].tolist()


def finish(tokenizer, ids: list[int], stops: list[int], max_new_tokens: int) -> Generation:
    """Cut at the first stop token and decode."""
    stop_set = set(stops)
    cut = next((i for i, token in enumerate(ids) if token in stop_set), None)
    kept = ids if cut is None else ids[:cut]
    text = tokenizer.decode(kept, skip_special_tokens=True).strip()
    return Generation(text, len(ids) if cut is None else cut + 1, cut is not None)


def timed_generation(model, tokenizer, prompts: list[list[int]], args: GenerationArgs) -> tuple[list[Generation], float]:
    """(answers, seconds taken)."""
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, args)
    return answers, time.perf_counter() - started
