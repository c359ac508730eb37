"""Named training targets and hosted fine-tuning prices: dated tables, every number overridable.

Prices move; the tables say when they were taken so a reader can judge them. Override a GPU's
price per hour with `hone plan CONFIG --price A100=1.2`, the hosted price with `--hosted-price`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PRICES_AS_OF = "2025-06"


@dataclass(frozen=True)
class Gpu:
    """One accelerator: what it holds, how fast it multiplies, what an hour of it costs."""

    name: str
    memory_gib: float
    """Memory a training process can use (the card's total as the driver reports it)."""
    peak_tflops: float
    """Dense bf16 tensor-core peak in TFLOP/s (T4: fp16, it has no bf16)."""
    usd_per_hour: float
    """Typical on-demand cloud list price for one GPU, as of PRICES_AS_OF."""


GPUS = (
    Gpu("H100", 79.6, 989.0, 2.99),  # SXM 80GB; NVIDIA datasheet; on-demand ~$2.5-3.5/h
    Gpu("A100", 79.2, 312.0, 1.79),  # SXM 80GB; ~$1.3-2.0/h
    Gpu("L4", 22.5, 121.0, 0.80),  # 24GB; GCP g2 ~$0.7-0.9/h
    Gpu("RTX 4090", 23.6, 165.0, 0.69),  # 24GB; fp32-accumulate tensor peak; community clouds ~$0.4-0.7/h
    Gpu("T4", 14.6, 65.0, 0.35),  # 16GB; fp16 only; GCP/AWS ~$0.35-0.55/h
)

@dataclass(frozen=True)
class HostedPrice:
    """A hosted fine-tuning service billed per training token (tokens in the file x epochs)."""

    name: str
    usd_per_1k_tokens: float
    source: str


HOSTED = (
    HostedPrice("GPT-4o mini (seeds' quote)", 0.008, "the seeds: 'approximately $0.008 per 1000 tokens for GPT-4o mini'"),
    HostedPrice("GPT-4o mini (OpenAI list)", 0.003, f"openai.com/api/pricing, $3.00 / 1M training tokens, {PRICES_AS_OF}"),
    HostedPrice("GPT-4o (OpenAI list)", 0.025, f"openai.com/api/pricing, $25.00 / 1M training tokens, {PRICES_AS_OF}"),
)


def with_prices(gpus: tuple[Gpu, ...], prices: dict[str, float]) -> tuple[Gpu, ...]:
    """`gpus` with the hourly prices in `prices` (keyed by GPU name, case-insensitive) replaced."""
    wanted = {name.lower().replace(" ", ""): price for name, price in prices.items()}
    return tuple(replace(g, usd_per_hour=wanted.get(g.name.lower().replace(" ", ""), g.usd_per_hour)) for g in gpus)
