"""Generation speed: batched (left padding + KV cache) vs one prompt at a time.

    PYTHONPATH=src python bench/generation_speed.py [--model embedded] [--examples 500]

Prompts are the demo task's held-out tickets (eval.jsonl, then train.jsonl to reach
--examples; the embedded base model never trained on either). Greedy decoding, the
same `max_new_tokens` both ways. One-at-a-time is timed on the first --single examples
(default 100) because its rate per example does not depend on how many are run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from hone.data.dataset import read_examples
from hone.data.render import render_prompt
from hone.engine.tiers import machine_line
from hone.model.generate import GenerationArgs, generate_answers
from hone.eval.models import load_for_eval
from hone.model.load import ASSETS


def demo_prompts(tokenizer, count: int) -> list[list[int]]:
    examples = []
    for name in ("eval.jsonl", "train.jsonl"):
        examples += read_examples(ASSETS / "demo" / name).examples
    return [render_prompt(tokenizer, e) for e in examples[:count]]


def rate(model, tokenizer, prompts, args: GenerationArgs) -> tuple[float, list]:
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, args)
    return len(prompts) / (time.perf_counter() - started), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--single", type=int, default=100, help="examples timed one at a time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    cli = parser.parse_args()
    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    if cli.threads:
        torch.set_num_threads(cli.threads)
    loaded = load_for_eval(cli.model, dtype=cli.dtype)
    prompts = demo_prompts(loaded.tokenizer, cli.examples)
    args = GenerationArgs(max_new_tokens=cli.max_new_tokens, batch_size=cli.batch_size)
    generate_answers(loaded.model, loaded.tokenizer, prompts[:4], args)  # warm-up
    batched, answers = rate(loaded.model, loaded.tokenizer, prompts, args)
    single, single_answers = rate(loaded.model, loaded.tokenizer, prompts[: cli.single], dataclasses.replace(args, batch_size=1))
    same = sum(a.text == b.text for a, b in zip(answers, single_answers))
    tokens = sum(a.new_tokens for a in answers)
    print(f"model {cli.model}, {loaded.compute_dtype}, {torch.get_num_threads()} threads, max_new_tokens {cli.max_new_tokens}")
    print(f"batched (batch {cli.batch_size}, {len(prompts)} examples): {batched:.1f} examples/s, {tokens / (len(prompts) / batched):.0f} new tokens/s")
    print(f"one at a time ({len(single_answers)} examples): {single:.2f} examples/s")
    print(f"speed-up: {batched / single:.1f}x; identical answers on the shared examples: {same}/{len(single_answers)}")


if __name__ == "__main__":
    main()
