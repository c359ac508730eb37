"""Load any causal LM in Hugging Face format: config, tokenizer (with chat template), weights.

Safe by default: safetensors only (a pickle checkpoint is refused unless `allow_pickle`),
`trust_remote_code` off unless asked for, and no network unless the path is a hub id.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from hone.config import EMBEDDED, ModelArgs
from hone.errors import HoneError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_MODEL = ASSETS / "base_model"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_model_path(path: str, need_config: bool = True) -> str:
    """Map `embedded` to the bundled model and check that a local folder exists (with a
    config.json when `need_config`). Returns a local folder, or `path` unchanged when it is
    a hub id (`org/name`): only then may the loading code touch the network.
    """
    if path == EMBEDDED:
        return str(EMBEDDED_MODEL)
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise HoneError(f"model path {local} is a file, not a model folder", "point model.path at the folder holding config.json")
        if need_config and not (local / "config.json").is_file():
            raise HoneError(f"model folder {local} has no config.json", "point model.path at a Hugging Face model folder")
        return str(local)
    if _looks_like_hub_id(path):
        return path
    raise HoneError(f"model folder not found: {path}", "check model.path, or give a hub id such as org/name")


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~"))


def check_weights(folder: str, args: ModelArgs) -> None:
    """Refuse a local folder without weights, or with only pickle weights unless allowed."""
    local = Path(folder)
    if not local.is_dir() or args.from_scratch:
        return
    safetensors = list(local.glob("*.safetensors"))
    pickles = [p for p in local.iterdir() if p.suffix in PICKLE_SUFFIXES and "training_args" not in p.name]
    if safetensors:
        return
    if pickles and not args.allow_pickle:
        raise HoneError(
            f"model folder {local} has only pickle weights ({pickles[0].name}); pickles can run code when loaded",
            "convert them to safetensors, or set model.allow_pickle=true if you trust the file",
        )
    if not pickles:
        raise HoneError(f"model folder {local} has no weights (*.safetensors)", "copy the weights in, or set model.from_scratch=true to pre-train")


def pick_device(args: ModelArgs) -> torch.device:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise HoneError("model.device=cuda was requested but no CUDA GPU is available", "set model.device=cpu or model.device=auto")
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def pick_dtype(args: ModelArgs, device: torch.device) -> torch.dtype:
    """The compute dtype: the user's choice, else what `device` multiplies fastest."""
    if args.dtype != "auto":
        return getattr(torch, args.dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_is_faster() else torch.float32


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster() -> bool:
    """Measure once: some CPUs run bf16 matmuls several times faster than fp32, others slower."""
    n = 512
    a = torch.randn(n, n)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up
        start = time.perf_counter()
        for _ in range(8):
            x @ x
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.bfloat16] < 0.8 * seconds[torch.float32]


def load_tokenizer(args: ModelArgs):
    from transformers import AutoTokenizer

    source = resolve_model_path(args.tokenizer or args.path, need_config=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise HoneError(f"could not load a tokenizer from {source}: {_first_line(exc)}", "check model.path / model.tokenizer") from None
    if args.chat_template:
        template = Path(args.chat_template)
        tokenizer.chat_template = template.read_text() if template.is_file() else args.chat_template
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any id works.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config_only(args: ModelArgs):
    """The model's `config.json` (no weights): what planning and checks need."""
    from transformers import AutoConfig

    source = resolve_model_path(args.path)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=args.trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise HoneError(f"model {source} needs its own Python code to load", "set model.trust_remote_code=true only if you trust its author") from None
        raise HoneError(f"could not read the config of {source}: {_first_line(exc)}") from None
    except OSError as exc:
        raise HoneError(f"could not read the config of {source}: {_first_line(exc)}") from None


def load_model(args: ModelArgs, quantize_4bit: bool = False, weights_dtype: torch.dtype | None = None):
    """Load the causal LM described by `args` onto its device.

    `weights_dtype` is the storage dtype of the weights (default: the compute dtype);
    `quantize_4bit` stores linear layers as 4-bit NF4 (QLoRA) via bitsandbytes.
    """
    from transformers import AutoModelForCausalLM

    source = resolve_model_path(args.path)
    check_weights(source, args)
    device = pick_device(args)
    dtype = weights_dtype or pick_dtype(args, device)
    config = load_config_only(args)
    if args.from_scratch:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return model.to(device)
    kwargs = dict(dtype=dtype, trust_remote_code=args.trust_remote_code, use_safetensors=not args.allow_pickle or None)
    if quantize_4bit:
        kwargs["quantization_config"] = _nf4_config(pick_dtype(args, device))
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise HoneError(f"could not load model weights from {source}: {_first_line(exc)}") from None
    return model if quantize_4bit else model.to(device)


def _nf4_config(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
