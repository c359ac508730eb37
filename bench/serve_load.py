"""`hone serve` under load: 32 concurrent clients on a mix of adapters vs one request at a time.

    python bench/serve_load.py [--quick] [--run RUN --adapter NAME=RUN ...] [--json out.json]

Starts a real `hone serve` process (by default the embedded model with two LoRA adapters made
here with small random weights; pass trained runs with --run/--adapter) and drives it with the
official `openai` client, streaming, on the demo task's held-out tickets (greedy, the same
max_tokens everywhere):

1. one at a time: one client, one request after another, so every step decodes one answer;
2. concurrent: --clients threads, each sending --per-client requests, cycling over the base and
   every adapter, so the server batches requests for different adapters together.

Printed side by side: generated tokens per second (target: concurrent >= 5x one-at-a-time),
p50/p99 request latency, p50/p99 time to first token, failed requests (target 0) and the
server's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai
import torch

from hone.config import load_config, save_config
from hone.engine.tiers import machine_line
from hone.model.load import ASSETS
from hone.model.offline import import_adapter_libraries


def make_adapter(folder: Path, seed: int) -> Path:
    """A LoRA run folder on the embedded model with small random weights (what a run leaves)."""
    import_adapter_libraries()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ASSETS / "base_model"
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.3)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    save_config(load_config(None, [f"data.train={ASSETS / 'demo/train.jsonl'}", f"train.output_dir={folder}"]), folder / "config.yaml")
    return folder


def start_server(run: str, adapters: list[str], cli) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "hone", "serve", run, "--port", str(port), "--max-batch", str(cli.clients),
               "--dtype", cli.dtype, *[f"--adapter={a}" for a in adapters]] + (["--threads", str(cli.threads)] if cli.threads else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            sys.exit(f"hone serve exited:\n{process.stdout.read()}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).read()
            return process, url
        except OSError:
            time.sleep(0.3)


def one_request(client, model: str, messages: list[dict], max_tokens: int) -> dict:
    """Streamed: latency, time to first token, completion tokens; or the failure."""
    started = time.perf_counter()
    first = None
    tokens = 0
    try:
        stream = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens,
                                                stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - started
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
    except openai.OpenAIError as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}
    return {"latency": time.perf_counter() - started, "ttft": first if first is not None else float("nan"), "tokens": tokens}


def run_phase(client, jobs: list[tuple[str, list[dict]]], clients: int, max_tokens: int) -> tuple[list[dict], float]:
    """Send `jobs` from `clients` threads (each takes the next job when its last one ends);
    (each request's result, seconds)."""
    results: list[dict] = []
    lock = threading.Lock()
    queue = list(jobs)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                model, messages = queue.pop(0)
            result = one_request(client, model, messages, max_tokens)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - started


def summarise(results: list[dict], seconds: float) -> dict:
    done = [r for r in results if "failed" not in r]
    latency = sorted(r["latency"] for r in done)
    ttft = sorted(r["ttft"] for r in done)
    tokens = sum(r["tokens"] for r in done)
    return {"requests": len(results), "failed": len(results) - len(done), "seconds": round(seconds, 2),
            "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "latency_p50_s": pct(latency, 50), "latency_p99_s": pct(latency, 99), "ttft_p50_s": pct(ttft, 50),
            "ttft_p99_s": pct(ttft, 99), "failures": [r["failed"] for r in results if "failed" in r][:3]}


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return round(values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))], 3)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 clients, 16 requests, 32 new tokens: checks that it works")
    parser.add_argument("--run", default=None, help="what `hone serve` serves (default: embedded + two adapters made here)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=3, help="requests each concurrent client sends")
    parser.add_argument("--single", type=int, default=24, help="requests sent one at a time")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1,
                        help="the server's decoding threads (default 1: the embedded model's products are too small to split)")
    parser.add_argument("--json", help="also write the results here")
    cli = parser.parse_args()
    if cli.quick:
        cli.clients, cli.per_client, cli.single, cli.max_tokens = 8, 2, 4, 32
    print(machine_line(), flush=True)  # first: every number below belongs to this machine
    with tempfile.TemporaryDirectory() as tmp:
        run, adapters = cli.run, cli.adapter
        if run is None:
            run = "embedded"
            adapters = [f"a={make_adapter(Path(tmp) / 'a', 1)}", f"b={make_adapter(Path(tmp) / 'b', 2)}"]
        process, url = start_server(run, adapters, cli)
        try:
            results = measure(url, cli)
            results["server_peak_rss_mb"] = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    report(results, cli)


def measure(url: str, cli) -> dict:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    models = [m.id for m in client.models.list().data]
    tickets = [json.loads(line)["messages"][:-1] for line in (ASSETS / "demo/eval.jsonl").read_text().splitlines()]
    one_request(client, models[0], tickets[0], 4)  # warm-up
    single_jobs = [(models[i % len(models)], tickets[i % len(tickets)]) for i in range(cli.single)]
    # other tickets than the one-at-a-time phase's (120 = 24 + 96 by default): no phase finds its
    # whole prompts in the server's prefix store, only the system prompt and template they share
    concurrent_jobs = [(models[i % len(models)], tickets[(cli.single + i) % len(tickets)]) for i in range(cli.clients * cli.per_client)]
    # one at a time in two halves, before and after the concurrent phase: a shared machine's speed
    # drifts within minutes, and this way the drift falls on both sides of the ratio
    half = len(single_jobs) // 2
    before, before_s = run_phase(client, single_jobs[:half], 1, cli.max_tokens)
    steps = health(url)
    concurrent = summarise(*run_phase(client, concurrent_jobs, cli.clients, cli.max_tokens))
    after_steps = health(url)
    after, after_s = run_phase(client, single_jobs[half:], 1, cli.max_tokens)
    single = summarise(before + after, before_s + after_s)
    concurrent["decoding_steps"] = after_steps["steps"] - steps["steps"]
    concurrent["prefill_passes"] = after_steps.get("prefills", 0) - steps.get("prefills", 0)
    concurrent["prefix_tokens_reused"] = after_steps.get("prefix_tokens_reused", 0) - steps.get("prefix_tokens_reused", 0)
    return {"models": models, "one_at_a_time": single, "concurrent": concurrent,
            "speedup": round(concurrent["tokens_per_s"] / max(single["tokens_per_s"], 1e-9), 2)}


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
        return json.loads(response.read())


def report(results: dict, cli) -> None:
    single, concurrent = results["one_at_a_time"], results["concurrent"]
    print(f"served: {', '.join(results['models'])}; max_tokens {cli.max_tokens}, greedy, dtype {cli.dtype}")
    print(f"{'':28}{'one at a time':>16}{f'{cli.clients} clients':>16}")
    rows = [("requests", "requests"), ("failed requests", "failed"), ("generated tokens", "generated_tokens"),
            ("generated tokens/s", "tokens_per_s"), ("latency p50 (s)", "latency_p50_s"), ("latency p99 (s)", "latency_p99_s"),
            ("time to first token p50 (s)", "ttft_p50_s"), ("time to first token p99 (s)", "ttft_p99_s")]
    for label, key in rows:
        print(f"{label:28}{single[key]!s:>16}{concurrent[key]!s:>16}")
    print(f"server peak memory: {results['server_peak_rss_mb']} MB; the concurrent phase took "
          f"{concurrent['decoding_steps']} decoding steps and {concurrent['prefill_passes']} prefill passes, "
          f"{concurrent['prefix_tokens_reused']} prompt tokens taken from the prefix store")
    verdict = "met" if results["speedup"] >= 5 and concurrent["failed"] == 0 else "NOT met"
    if cli.clients < 32:
        verdict += "; the target is for 32 clients, this was a quick check"
    print(f"throughput: {results['speedup']}x one-at-a-time (target >= 5x, 0 failures: {verdict})")
    for failure in concurrent["failures"] + single["failures"]:
        print(f"  failure: {failure}")
    if cli.json:
        Path(cli.json).write_text(json.dumps({"machine": machine_line(), **results}, indent=2))


if __name__ == "__main__":
    main()
