"""SFT throughput: hone's training loop versus TRL's SFTTrainer, side by side, one command.

    PYTHONPATH=src python bench/sft_throughput.py            # full run (~12 minutes on 2 CPU cores)
    PYTHONPATH=src python bench/sft_throughput.py --quick    # smoke run (~1 minute)

Both systems train the same ~30M-parameter Llama-architecture model (random init from a
seeded config, 8K vocabulary) with the same LoRA configuration on the same synthetic chat
data (long-tailed lengths: median ~110 tokens, max ~800) for one epoch, i.e. the same
trained (labelled) tokens. TRL runs in several configurations (padding, padding_free,
packing; fp32/bf16; packing also with TRL's default gradient checkpointing) on a probe; the
two best run in full and the faster is compared with hone. Each system runs in its own
subprocess so peak resident memory is its own. Eval loss is computed afterwards by the
same fp32 function for every system's adapter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
IGNORE = -100
SPECIAL = {"pad": 0, "im_start": 1, "im_end": 2, "user": 3, "assistant": 4, "system": 5}
FIRST_WORD = 16  # ids below are reserved for specials


@dataclass
class Spec:
    """What both systems train: model shape, data, LoRA and optimisation."""

    vocab: int = 8192
    hidden: int = 512
    layers: int = 8
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 1536
    train_examples: int = 320
    probe_examples: int = 64  # TRL's configurations are ranked on this many, then the best runs in full
    eval_examples: int = 64
    median_length: int = 110
    max_length: int = 800
    examples_per_step: int = 8  # padding: 8 rows per step; packing: the same tokens per step
    lora_rank: int = 16
    lora_alpha: float = 32.0
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.examples_per_step * 128  # ~ mean example length times examples per step


QUICK = dict(train_examples=24, probe_examples=8, eval_examples=8)


# ---------------------------------------------------------------- data and model


def make_examples(n: int, spec: Spec, seed: int) -> list[dict]:
    """Chat-shaped token sequences: system+user prompt, then an assistant answer that is
    partly a copy of the prompt and partly Zipf-distributed tokens, so the loss can fall.
    Lengths are log-normal (median `median_length`), capped at `max_length`."""
    rng = random.Random(seed)
    words = list(range(FIRST_WORD, spec.vocab))
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    out = []
    for _ in range(n):
        total = min(spec.max_length, max(24, int(rng.lognormvariate(math.log(spec.median_length), 0.75))))
        answer_len = max(4, int(total * rng.uniform(0.35, 0.6)))
        prompt_len = max(4, total - answer_len - 9)
        prompt = rng.choices(words, weights, k=prompt_len)
        answer = [prompt[i % prompt_len] if rng.random() < 0.6 else rng.choices(words, weights)[0] for i in range(answer_len)]
        head = [SPECIAL["im_start"], SPECIAL["system"], SPECIAL["im_end"], SPECIAL["im_start"], SPECIAL["user"]]
        ids = head + prompt + [SPECIAL["im_end"], SPECIAL["im_start"], SPECIAL["assistant"]] + answer + [SPECIAL["im_end"]]
        trained = len(answer) + 1
        labels = [IGNORE] * (len(ids) - trained) + ids[-trained:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def make_model(folder: Path, spec: Spec) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                         max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=0, eos_token_id=2, bos_token_id=1)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    make_tokenizer(spec).save_pretrained(folder)


def make_tokenizer(spec: Spec):
    """A word-level tokenizer over the synthetic ids: TRL needs one for its pad id."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system"]
    vocab = {name: i for i, name in enumerate(names)}
    vocab.update({f"t{i}": i for i in range(len(names), spec.vocab)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>")


def lora_targets() -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------- accounting


def model_flops(examples: list[dict], spec: Spec) -> float:
    """Useful FLOPs of one LoRA training pass over `examples`: the frozen matmuls forward and
    their input gradients (4 per weight per token), LoRA forward + both gradients (6), the
    output head only at labelled positions, and causal attention within each example."""
    d, layers = spec.hidden, spec.layers
    kv = d * spec.kv_heads // spec.heads
    body = layers * (2 * d * d + 2 * d * kv + 3 * d * spec.intermediate)
    lora = layers * spec.lora_rank * (4 * d + 2 * kv + 2 * (d + spec.intermediate) + (spec.intermediate + d))
    head = d * spec.vocab
    total = 0.0
    for ex in examples:
        n = len(ex["input_ids"])
        labelled = sum(1 for x in ex["labels"][1:] if x != IGNORE)
        total += n * (4 * body + 6 * lora) + labelled * 4 * head + layers * 6 * d * n * n
    return total


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best observed FLOP/s of a square matrix product on `device` in `dtype`."""
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        start = time.perf_counter()
        a @ a
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: torch.device) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ---------------------------------------------------------------- workers (one subprocess each)


def trl_config(work: Path, spec: Spec, variant: str, device: torch.device):
    """TRL's SFTConfig for `variant`: `<batching>-<dtype>[-gc]`, batching in padding/padding_free/
    packing. `-gc` keeps TRL's default gradient checkpointing (SFTConfig turns it on: less
    memory, ~20% slower here); without it checkpointing is off, as hone trains by default."""
    from trl import SFTConfig

    batching, dtype, *options = variant.split("-")
    if batching not in ("padding", "padding_free", "packing") or dtype not in ("fp32", "bf16") or set(options) - {"gc"}:
        raise ValueError(f"unknown TRL variant {variant!r}: expected <padding|padding_free|packing>-<fp32|bf16>[-gc]")
    packing = batching == "packing"
    return SFTConfig(
        output_dir=str(work / f"trl-{variant}"), num_train_epochs=1, learning_rate=spec.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=spec.warmup_ratio, weight_decay=0.0, max_grad_norm=1.0,
        per_device_train_batch_size=1 if packing else spec.examples_per_step,
        packing=packing, packing_strategy="bfd", padding_free=batching == "padding_free",
        # packing: rows of about the tokens of 8 examples; padding_free wants the data pre-truncated (it is)
        max_length=spec.tokens_per_step if packing else None if batching == "padding_free" else spec.max_length,
        train_sampling_strategy="group_by_length" if batching == "padding" else "random",
        gradient_checkpointing="gc" in options,
        bf16=dtype == "bf16", use_cpu=device.type == "cpu", save_strategy="no", report_to="none",
        logging_steps=10_000, seed=spec.seed, dataloader_num_workers=0, disable_tqdm=True,
    )


def run_trl(work: Path, spec: Spec, variant: str, device: torch.device, data: str) -> dict:
    """TRL's SFTTrainer in the configuration `variant` (see `trl_config`)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    train = json.loads((work / f"{data}.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32, attn_implementation=attention_backend(device))
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    config = trl_config(work, spec, variant, device)
    peft = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, target_modules=lora_targets(), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(train), processing_class=tokenizer, peft_config=peft)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    save_lora(trainer.model, work / f"lora-trl-{variant}.safetensors")
    return {"seconds": seconds, "cpu_seconds": cpu, "steps": trainer.state.global_step}


def run_hone(work: Path, spec: Spec, variant: str, device: torch.device, data: str) -> dict:
    """hone's `fit` with its defaults for this hardware."""
    sys.path.insert(0, str(ROOT / "src"))
    from hone.config import AdapterArgs, ModelArgs, TrainArgs
    from hone.data.render import Tokenized
    from hone.model.adapters import apply_method
    from hone.model.load import load_model, pick_dtype
    from hone.train.loop import Setup, fit

    train = [Tokenized(ex["input_ids"], ex["labels"]) for ex in json.loads((work / f"{data}.json").read_text())]
    dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(os.environ.get("HONE_BENCH_DTYPE", ""), "auto")
    model_args = ModelArgs(path=str(work / "model"), device=device.type, dtype=dtype)
    compute = pick_dtype(model_args, device)
    model = load_model(model_args, weights_dtype=compute)
    torch.manual_seed(spec.seed)
    model = apply_method(model, AdapterArgs(method="lora", lora_rank=spec.lora_rank, lora_alpha=spec.lora_alpha, target_modules=lora_targets()))
    args = TrainArgs(output_dir=str(work / "hone"), epochs=1, batch_size=spec.examples_per_step, learning_rate=spec.learning_rate,
                     warmup_ratio=spec.warmup_ratio, min_lr_ratio=0.0, save_every=10**9, eval_every=10**9, keep_checkpoints=1,
                     seed=spec.seed, progress=False)
    setup = Setup(model, 0, device, compute, work / "hone")
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    state = fit(setup, train, [], args)
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    save_lora(model, work / f"lora-hone-{variant}.safetensors")
    return {"seconds": seconds, "cpu_seconds": cpu, "steps": state.step, "compute": str(compute).removeprefix("torch.")}


def attention_backend(device: torch.device) -> str:
    """TRL's attention: flash-attention on CUDA when installed (the test hone uses), else
    transformers' SDPA. Written out here so the TRL worker never imports hone: TRL runs as
    its users run it."""
    import importlib.util

    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def save_lora(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in model.named_parameters() if "lora_" in k}
    save_file(state, path)


def eval_loss(work: Path, spec: Spec, lora_file: Path) -> float:
    """Mean next-token loss over the labelled eval tokens, fp32, one example at a time."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, target_modules=lora_targets(), task_type="CAUSAL_LM"))
    state = load_file(lora_file)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in json.loads((work / "eval.json").read_text()):
            ids = torch.tensor([ex["input_ids"]])
            labels = torch.tensor([ex["labels"]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[0, 1:]
            keep = target != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


WORKERS = {"trl": run_trl, "hone": run_hone}


def worker_main(argv: list[str]) -> None:
    """`--worker SYSTEM VARIANT WORKDIR DATA`: train once, print one JSON line."""
    system, variant, work, data = argv
    work = Path(work)
    spec = Spec(**json.loads((work / "spec.json").read_text()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(int(os.environ.get("HONE_BENCH_THREADS", torch.get_num_threads())))
    torch.manual_seed(spec.seed)
    result = WORKERS[system](work, spec, variant, device, data)
    result.update(peak_memory_mb(device))
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver


def spawn(system: str, variant: str, work: Path, data: str, threads: int, timeout: int = 1200) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               HONE_BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(HERE), "--worker", system, variant, str(work), data], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {"error": " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


def fast_dtype(device: torch.device, wanted: str) -> str:
    """The dtype both systems train in: `wanted`, or with `auto` the one hone picks for this
    machine (bf16 where the CPU multiplies it faster, measured; fp32 where it is emulated)."""
    if wanted != "auto":
        return wanted
    sys.path.insert(0, str(ROOT / "src"))
    from hone.config import ModelArgs
    from hone.model.load import pick_dtype

    return "bf16" if pick_dtype(ModelArgs(device=device.type), device) == torch.bfloat16 else "fp32"


def trl_variants(device: torch.device, quick: bool, fast: str = "bf16") -> list[str]:
    """TRL's configurations in the machine's fast dtype: every batching without gradient
    checkpointing (the fast choice), plus TRL's default with it (the lean choice), and on a
    bf16 CPU plain fp32 padding too; TRL's best is whichever is fastest in full."""
    base = [f"{b}-{fast}" for b in ("padding", "padding_free", "packing")] + [f"packing-{fast}-gc"]
    if quick:
        return list(dict.fromkeys(["padding-fp32", f"packing-{fast}"]))
    if device.type != "cpu":
        return base[:3]
    return (["padding-fp32"] if fast == "bf16" else []) + base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: checks the bench works, not speed")
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                        help="dtype of both systems (default: what hone picks here: bf16 where the CPU is faster in it, else fp32)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--trl", nargs="*", help="TRL variants to run (default: all for this device)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads per system (default: all)")
    parser.add_argument("--workdir", help="keep data, model and adapters here (default: a temporary folder)")
    parser.add_argument("--finalists", type=int, default=3, help="TRL configurations (the probe's best) run in full; the fastest full run is compared (default: 3)")
    parser.add_argument("--repeats", type=int, default=2, help="full runs per system, alternating; the fastest of each is compared (default: 2)")
    args = parser.parse_args()
    # imported here, not at the top: the workers run this file too, and their peak memory must be their own
    from hone.engine.tiers import describe_machine, machine_line

    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    spec = Spec(**QUICK) if args.quick else Spec()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="hone-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(args.threads)
        fast = fast_dtype(device, args.dtype)
        os.environ["HONE_BENCH_DTYPE"] = fast  # the hone worker trains in it
        variants = args.trl if args.trl is not None else trl_variants(device, args.quick, fast)
        results = run_all(work, spec, device, variants, args.threads, 1 if args.quick else max(1, args.repeats),
                          1 if args.quick else args.finalists)
    results["machine"] = describe_machine()
    print_table(results, device)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r for r in results["rows"] + results["probes"]) else 1


def run_all(work: Path, spec: Spec, device: torch.device, variants: list[str], threads: int, repeats: int = 1,
            finalists: int = 3) -> dict:
    """Rank TRL's configurations on a probe subset, then run the `finalists` best of them and
    hone in full; TRL's row is its fastest full run."""
    train = make_examples(spec.train_examples, spec, seed=spec.seed)
    evals = make_examples(spec.eval_examples, spec, seed=spec.seed + 1)
    probe = train[: spec.probe_examples]
    for name, data in (("train", train), ("eval", evals), ("probe", probe)):
        (work / f"{name}.json").write_text(json.dumps(data))
    (work / "spec.json").write_text(json.dumps(asdict(spec)))
    make_model(work / "model", spec)
    lengths = sorted(len(ex["input_ids"]) for ex in train)
    fast = os.environ.get("HONE_BENCH_DTYPE", "bf16")
    peak_dtype = torch.float32 if fast == "fp32" else torch.bfloat16  # MFU against the dtype both systems train in
    peak = matmul_peak(device, peak_dtype)
    print(f"data: {len(train)} train examples, length median {lengths[len(lengths) // 2]} max {lengths[-1]}, "
          f"{trained_tokens(train)} trained tokens; model {n_params(work / 'model') / 1e6:.1f}M params; "
          f"{fast} matmul peak {peak / 1e9:.0f} GFLOP/s on {device}, {threads} threads", flush=True)
    print(f"ranking TRL configurations on {len(probe)} examples ({trained_tokens(probe)} trained tokens):", flush=True)
    probes = [measure("trl", v, work, "probe", probe, spec, peak, threads) for v in variants]
    ranked = [r for r in probes if "error" not in r]
    # the short probe does not always rank TRL's configurations as full runs do (padding_free
    # has won probes and lost full runs to packing; one probe put packing-bf16, TRL's fastest
    # full run before, last of the bf16 ones), so the top `finalists` all run in full
    ranked.sort(key=lambda r: -r["tokens_per_s"])
    names = [r["variant"] for r in ranked[: max(1, finalists)]] or variants[:1]
    print(f"full runs ({trained_tokens(train)} trained tokens each, {repeats} per system, alternating):", flush=True)
    runs = {"trl": {name: [] for name in names}, "hone": []}
    for _ in range(repeats):
        for name in names:
            runs["trl"][name].append(measure("trl", name, work, "train", train, spec, peak, threads))
        runs["hone"].append(measure("hone", "default", work, "train", train, spec, peak, threads))
    finals = [fastest(runs["trl"][name]) for name in names]
    trl = max(finals, key=lambda r: r.get("tokens_per_s", 0))
    best = trl["variant"]
    rows = [trl, fastest(runs["hone"])]
    peak = max(peak, matmul_peak(device, peak_dtype))  # the better of two probes: contention varies
    for row in probes + finals + rows[1:]:
        if "seconds" in row:
            row["mfu"] = row["flops"] / row["seconds"] / peak
    return {"device": str(device), "threads": threads, "peak_flops": peak, "dtype": fast, "trained_tokens": trained_tokens(train),
            "probe_tokens": trained_tokens(probe), "probes": probes, "finalists": finals, "rows": rows, "runs": runs, "repeats": repeats,
            "best_trl": best, "spec": asdict(spec)}


def fastest(runs: list[dict]) -> dict:
    """A system's row: its fastest full run (the machine's speed drifts between runs, and
    alternating the systems gives each the same chances), with the highest peak memory of
    all its runs (memory does not drift; the worst case is the honest one)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    row = dict(max(ok, key=lambda r: r["tokens_per_s"]))
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    row["tokens_per_s_all"] = [round(r["tokens_per_s"]) for r in ok]
    return row


def measure(system: str, variant: str, work: Path, data: str, examples: list[dict], spec: Spec, peak: float, threads: int) -> dict:
    row = {"system": system, "variant": variant, **spawn(system, variant, work, data, threads)}
    if "error" not in row:
        row["eval_loss"] = eval_loss(work, spec, work / f"lora-{system}-{variant}.safetensors") if data == "train" else None
        row["tokens_per_s"] = trained_tokens(examples) / row["seconds"]
        row["flops"] = model_flops(examples, spec)
        row["mfu"] = row["flops"] / row["seconds"] / peak
    print(format_row(row), flush=True)
    return row


def trained_tokens(examples: list[dict]) -> int:
    return sum(sum(1 for x in ex["labels"][1:] if x != IGNORE) for ex in examples)


def n_params(folder: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(folder / "model.safetensors").values())


def format_row(row: dict) -> str:
    name = f"{row['system']} {row['variant']}"
    if "error" in row:
        return f"{name:<24} failed: {row['error'][:300]}"
    loss = f"{row['eval_loss']:>9.4f}" if row.get("eval_loss") is not None else f"{'-':>9}"
    return (f"{name:<24} {row['tokens_per_s']:>10.0f} {row['peak_rss_mb']:>10.0f} {loss} "
            f"{100 * row['mfu']:>6.1f}% {row['seconds']:>8.1f} {row['cpu_seconds']:>8.1f}")


HEADER = f"{'system':<24} {'tok/s':>10} {'peak MB':>10} {'eval loss':>9} {'MFU':>7} {'seconds':>8} {'CPU s':>8}"


def print_table(results: dict, device) -> None:
    print(f"\nSFT throughput on {results['device']} ({results['threads']} threads; MFU against a measured {results.get('dtype', 'bf16')} "
          f"matmul peak of {results['peak_flops'] / 1e9:.0f} GFLOP/s; tok/s = trained (labelled) tokens per second)")
    print(f"\nTRL configurations, ranked on {results['probe_tokens']} trained tokens:")
    print(HEADER)
    for row in results["probes"]:
        print(format_row(row))
    repeats = results.get("repeats", 1)
    finals = results.get("finalists", [])
    if len(finals) > 1:
        print("\nTRL finalists, full runs:")
        print(HEADER)
        for row in finals:
            print(format_row(row))
    print(f"\nBest TRL configuration ({results['best_trl']}) versus hone, {results['trained_tokens']} trained tokens each"
          + (f"; the fastest of {repeats} alternating runs each, with the highest peak memory of them:" if repeats > 1 else ":"))
    print(HEADER)
    for row in results["rows"]:
        print(format_row(row) + (f"   runs: {', '.join(map(str, row['tokens_per_s_all']))} tok/s" if len(row.get("tokens_per_s_all", [])) > 1 else ""))
    trl, ours = results["rows"]
    if "error" in trl or "error" in ours:
        return
    print(f"\nhone / TRL best: tokens/s {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x (target >= 3), "
          f"peak memory {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x (target <= 0.7), "
          f"eval loss {ours['eval_loss'] / trl['eval_loss']:.3f}x (target <= 1.02)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
