"""GGUF parity: does the exported model answer in llama.cpp as the merged model does in transformers?

    PYTHONPATH=src python bench/gguf_parity.py [--run runs/quickstart/run] [--quick] [--json OUT.json]

Exports the run to GGUF twice (f16 and q8_0, each with its own parity report), then, on the
demo task's held-out tickets (the run never trained on them), decodes greedily in
transformers (the merged model, fp32) and in llama.cpp (llama-cpp-python) and counts the
prompts whose continuations are the same tokens (target: f16 on at least 98 of 100). On the
embedded base model's held-out corpus slice it reports the mean KL divergence per token of
q8_0 (and of f16) from f16 (from transformers fp32).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hone.data.dataset import read_examples
from hone.data.io import documents_or_lines
from hone.data.render import render_prompt
from hone.engine.tiers import machine_line
from hone.export.gguf_export import end_of_turn_id, export_gguf
from hone.export.merge import merged_model
from hone.model.load import ASSETS


def llama_cpp_model(path: Path, context: int):
    """Loaded with llama.cpp's repacked weight layouts off: llama-cpp-python 0.3.36 built natively on
    an AMX CPU repacks q8_0 matrices for AMX and then crashes in the first decode (any q8_0 file,
    tiny ones included); the plain CPU path computes the same products."""
    import llama_cpp
    import llama_cpp.llama as high_level

    default = llama_cpp.llama_model_default_params

    def plain_layouts():
        params = default()
        params.use_extra_bufts = False
        return params

    high_level.llama_cpp.llama_model_default_params = plain_layouts
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=context, logits_all=True, verbose=False,
                               n_threads=torch.get_num_threads())
    finally:
        high_level.llama_cpp.llama_model_default_params = default


def greedy_llama_cpp(llm, prompt: list[int], max_new: int, stops: set[int]) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    while len(out) < max_new:
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token in stops:
            break
        out.append(token)
        llm.eval([token])
    return out


def greedy_transformers(model, prompt: list[int], max_new: int, stops: set[int], pad_id: int) -> list[int]:
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=sorted(stops), pad_token_id=pad_id)[0, len(prompt):].tolist()
    return [t for t in ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def mean_kl(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Mean over every position of KL(reference || other) of the next-token distributions."""
    total, count = 0.0, 0
    for p_logits, q_logits in zip(reference, other):
        p, q = log_softmax(p_logits.astype(np.float64)), log_softmax(q_logits.astype(np.float64))
        total += float((np.exp(p) * (p - q)).sum())
        count += len(p)
    return total / count


def heldout_texts(tokenizer, count: int, length: int) -> list[list[int]]:
    with gzip.open(ASSETS / "corpus" / "heldout.txt.gz", "rt", encoding="utf-8") as handle:
        documents = [text for _, text in documents_or_lines(handle.read())]
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"][:length] for d in documents]
    return [i for i in ids if len(i) >= 16][:count]


def llama_cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quickstart/run", help="a run folder (hone quickstart writes OUT/run)")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--texts", type=int, default=50, help="held-out documents for the KL divergence")
    parser.add_argument("--quick", action="store_true", help="10 prompts, 8 texts: checks the benchmark runs")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and llama.cpp (default: torch's)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    cli = parser.parse_args()
    if cli.quick:
        cli.prompts, cli.texts = 10, 8
    print(machine_line(), flush=True)
    if cli.threads:
        torch.set_num_threads(cli.threads)
    import llama_cpp

    workdir = Path(cli.workdir or tempfile.mkdtemp(prefix="gguf_parity_"))
    files, parity = {}, {}
    for gguf_type in ("f16", "q8_0"):
        started = time.perf_counter()
        result = export_gguf(cli.run, workdir / gguf_type, gguf_type, modelfile=False)
        files[gguf_type], parity[gguf_type] = result.gguf_path, result.parity
        print(f"export {gguf_type}: {result.gguf_path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s; "
              f"{result.parity.line()}", flush=True)
    model, tokenizer, _ = merged_model(cli.run, "float32")
    model.eval()
    stops = {tokenizer.eos_token_id, end_of_turn_id(tokenizer)} - {None}
    examples = read_examples(ASSETS / "demo" / "eval.jsonl").examples[: cli.prompts]
    prompts = [render_prompt(tokenizer, e) for e in examples]
    context = max(len(p) for p in prompts) + cli.max_new_tokens + 8
    reference = [greedy_transformers(model, p, cli.max_new_tokens, stops, tokenizer.pad_token_id) for p in prompts]
    llms = {t: llama_cpp_model(path, max(context, 512)) for t, path in files.items()}
    same = {t: sum(greedy_llama_cpp(llm, p, cli.max_new_tokens, stops) == r for p, r in zip(prompts, reference))
            for t, llm in llms.items()}
    texts = heldout_texts(tokenizer, cli.texts, 256)
    with torch.no_grad():
        hf_logits = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in texts]
    cpp_logits = {t: [llama_cpp_logits(llm, ids) for ids in texts] for t, llm in llms.items()}
    numbers = {
        "run": str(cli.run), "prompts": len(prompts), "max_new_tokens": cli.max_new_tokens,
        "greedy_identical": same, "heldout_texts": len(texts), "heldout_tokens": sum(map(len, texts)),
        "kl_q8_0_from_f16": mean_kl(cpp_logits["f16"], cpp_logits["q8_0"]),
        "kl_f16_from_transformers_fp32": mean_kl(hf_logits, cpp_logits["f16"]),
        "parity_passed": {t: p.passed for t, p in parity.items()},
        "llama_cpp_python": llama_cpp.__version__,
    }
    print(f"\ngreedy continuations ({len(prompts)} held-out prompts, up to {cli.max_new_tokens} tokens) identical to transformers fp32:")
    print(f"  llama.cpp f16 : {same['f16']}/{len(prompts)}   (target >= 98/100)")
    print(f"  llama.cpp q8_0: {same['q8_0']}/{len(prompts)}")
    print(f"mean KL divergence per token on {len(texts)} held-out texts ({numbers['heldout_tokens']} tokens):")
    print(f"  q8_0 from f16            : {numbers['kl_q8_0_from_f16']:.2e} nats")
    print(f"  f16 from transformers fp32: {numbers['kl_f16_from_transformers_fp32']:.2e} nats")
    if cli.json:
        Path(cli.json).write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
