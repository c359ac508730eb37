"""`hone serve RUN [--adapter NAME=RUN ...]`: an OpenAI-compatible server for a base model and
its LoRA adapters, with hone's own batching engine, or handed to vLLM (`--engine vllm`)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass, field

from hone.errors import HoneError
from hone.serve import vllm
from hone.serve.api import create_app
from hone.serve.engine import Scheduler
from hone.serve.models import load_served, parse_adapter_flag

API_KEY_ENV = "HONE_API_KEY"


@dataclass
class ServeArgs:
    run: str
    adapters: list[str] = field(default_factory=list)
    """`NAME=RUN` flags."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    engine: str = "hone"
    dtype: str | None = None
    max_batch: int = 32
    """Answers decoded together in one step."""
    max_queue: int = 256
    """Answers waiting for a free row before new requests get 429."""
    threads: int | None = None
    prefix_cache: int = 4096
    """Prompt tokens whose keys and values are kept for later prompts that start the same way (0: off)."""


def serve_command(args: ServeArgs) -> int:
    adapters = [parse_adapter_flag(flag) for flag in args.adapters]
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.max_batch < 1 or args.max_queue < 0 or args.prefix_cache < 0:
        raise HoneError("--max-batch must be at least 1, --max-queue and --prefix-cache at least 0",
                        "e.g. --max-batch 32 --max-queue 256 --prefix-cache 4096")
    warning = exposure_warning(args.host, api_key)
    if warning:
        print(f"hone serve: warning: {warning}", file=sys.stderr)
    if args.engine == "vllm":
        return vllm.serve(args.run, adapters, args.host, args.port, api_key, args.dtype)
    import uvicorn

    served = load_served(args.run, adapters, args.dtype)
    scheduler = Scheduler(served, args.max_batch, args.max_queue, args.threads, args.prefix_cache)
    app = create_app(served, scheduler, api_key)
    names = ", ".join(m.id + (f" (adapter of {m.parent})" if m.parent else " (base)") for m in served.models.values())
    print(f"hone serve: http://{args.host}:{args.port}/v1 serving {names}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell someone who exposes the server beyond this machine without a key."""
    if is_loopback(host) or api_key:
        return None
    return (f"listening on {host} without an API key: anyone who can reach this machine can use the model "
            f"(set --api-key or {API_KEY_ENV})")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a name is resolved to decide (`hone ui` asks too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except socket.gaierror:
            return False
