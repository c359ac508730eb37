"""`hone serve --engine vllm`: the same command line handed to vLLM's OpenAI server on a CUDA
machine (the base as `--model`, each LoRA run as `--lora-modules NAME=FOLDER`), for GPU
throughput hone's own engine does not aim at. Refused with one line where vLLM or CUDA is absent."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import torch

from hone.errors import HoneError
from hone.model.load import resolve_model_path
from hone.serve.models import plan_served

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's --max-lora-rank accepts


def available() -> str | None:
    """None when vLLM can run here, else what is missing."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def command(run: str, adapters: list[tuple[str, str]], host: str, port: int, dtype: str | None) -> list[str]:
    """vLLM's command line for the served base and adapters (checked as `hone serve` checks them)."""
    base_args, base_id, runs = plan_served(run, adapters, dtype)
    base = resolve_model_path(base_args.path)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base, "--served-model-name", base_id,
            "--host", host, "--port", str(port), "--dtype", dtype or "auto"]
    if runs:
        rank = max(json.loads((folder / "adapter_config.json").read_text())["r"] for _, folder, _ in runs)
        argv += ["--enable-lora", "--max-lora-rank", str(next(r for r in LORA_RANKS if r >= rank)),
                 "--max-loras", str(len(runs)), "--lora-modules", *[f"{name}={folder.resolve()}" for name, folder, _ in runs]]
        template = runs[0][1] / "chat_template.jinja"  # the template the adapters trained with
        if template.is_file():
            argv += ["--chat-template", str(template.resolve())]
    return argv


def serve(run: str, adapters: list[tuple[str, str]], host: str, port: int, api_key: str | None, dtype: str | None) -> int:
    missing = available()
    if missing:
        raise HoneError(f"--engine vllm needs vLLM and a CUDA GPU: {missing}",
                        "on a CUDA machine `pip install vllm`, or drop --engine vllm to serve with hone's own engine")
    argv = command(run, adapters, host, port, dtype)
    env = dict(os.environ, **({"VLLM_API_KEY": api_key} if api_key else {}))  # not in argv, where `ps` shows it
    print("hone serve: handing over to vLLM: " + " ".join(argv[1:]), flush=True)
    return subprocess.call(argv, env=env)
