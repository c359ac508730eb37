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
from hone.model.offline import import_adapter_libraries

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


PROBE_SIDES = (256, 2048)
"""Smallest and largest side of the square products a matmul probe times: the start is small
enough to end in well under a second where a dtype is emulated (bf16 without AVX-512 runs at
~1 GFLOP/s, and 256^3 is 34 MFLOP), the cap keeps the biggest product at 17 GFLOP."""

PROBE_BUDGET_S = 0.5
"""Seconds one probe (one dtype) may spend. It overruns only when a first 256^3 product alone
takes longer, or when a doubled side runs far slower than 8x the last (a cache cliff)."""


def matmul_flops_per_s(dtype: torch.dtype, max_side: int = PROBE_SIDES[1], budget_s: float = PROBE_BUDGET_S,
                       repeats: int = 15) -> float:
    """FLOP/s of this CPU's n x n by n x n products in `dtype`, with n sized by the machine: it
    starts at 256 and doubles (up to `max_side`) while the next product, 8x the work, is predicted
    to take under a sixth of `budget_s`; then up to `repeats` products at that side while they fit
    in the budget. Returns the median rate of those repeats (the first product of a side, which
    pays for kernel selection and packing, is only timed to size the next)."""
    start = time.perf_counter()
    side, side_cap = PROBE_SIDES[0], max(PROBE_SIDES[0], min(max_side, PROBE_SIDES[1]))
    while True:
        a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
        last = _timed_product(a, b)
        # double only while the next side (8x the work) leaves room for several timed repeats
        if side * 2 > side_cap or 8 * last > budget_s / 6 or time.perf_counter() - start + 8 * last > budget_s:
            break
        side *= 2
    seconds = []
    while len(seconds) < repeats and time.perf_counter() - start + last <= budget_s:
        last = _timed_product(a, b)
        seconds.append(last)
    seconds = sorted(seconds) or [last]
    return 2 * side**3 / max(seconds[len(seconds) // 2], 1e-9)


def _timed_product(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds of one `a @ b` (torch.matmul, so that a test can count the work)."""
    start = time.perf_counter()
    torch.matmul(a, b)
    return time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster() -> bool:
    """Measure once: some CPUs run bf16 matmuls several times faster than fp32 (AMX, AVX-512
    BF16), others emulate them tens of times slower. Products of at most 512^3, at most 5 per
    dtype after sizing, within PROBE_BUDGET_S each: an emulated bf16 stops after a few 256^3."""
    fp32 = matmul_flops_per_s(torch.float32, max_side=512, repeats=5)
    bf16 = matmul_flops_per_s(torch.bfloat16, max_side=512, repeats=5)
    return bf16 > 1.25 * fp32  # bf16 seconds under 0.8x fp32's, as before


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

    import_adapter_libraries()  # before anything imports bitsandbytes: no hub request at its import

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
