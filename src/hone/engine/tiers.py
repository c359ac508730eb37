"""Kernel tiers: which build of hone's C kernels runs on this CPU, and a switch to force one.

A tier is a set of compiler flags for `kernels.c` plus the CPU features it needs to run:

    amx     AMX tiles + AVX-512 BF16 (Sapphire Rapids and later Xeons): the tile kernels
    avx512  AVX-512 F/BW/VL (Skylake-X, Ice Lake, Zen 4): the elementwise kernels, 512-bit
    avx2    AVX2 + FMA (Haswell and later, every Zen): the elementwise kernels, 256-bit
    c       the x86-64 baseline (or the plain compiler target elsewhere): plain C, vectorised by the compiler
    torch   no C kernels: torch operators compute the same functions

The best tier the CPU can execute runs by default. `HONE_KERNEL_TIER=<name>` forces one
(it must be one the CPU can execute); `HONE_KERNELS=0` is the same as `torch`. Tests run
the engine's equivalence checks in every tier `executable()` lists and skip the others
with the reason `why_not()` gives.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from hone.versions import installed_version


@dataclass(frozen=True)
class Tier:
    name: str
    flags: tuple[str, ...]
    """Compiler flags selecting the instruction set (added to the common flags)."""
    needs: tuple[str, ...]
    """/proc/cpuinfo flags the CPU must have to execute this build."""
    x86_only: bool = True


# Fastest first. -march names a baseline the CPU must reach; -mtune stays generic.
TIERS = (
    Tier("amx", ("-march=sapphirerapids", "-mtune=generic", "-mprefer-vector-width=512"),
         ("amx_tile", "amx_bf16", "avx512_bf16", "avx512bw", "avx512vl")),
    Tier("avx512", ("-march=skylake-avx512", "-mtune=generic", "-mprefer-vector-width=512"),
         ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")),
    Tier("avx2", ("-march=haswell", "-mtune=generic"), ("avx2", "fma", "bmi2", "f16c", "movbe")),
    Tier("c", ("-march=x86-64", "-mtune=generic") if platform.machine() in ("x86_64", "AMD64") else (), (), x86_only=False),
    Tier("torch", (), (), x86_only=False),
)
NAMES = tuple(t.name for t in TIERS)
ENV = "HONE_KERNEL_TIER"


def by_name(name: str) -> Tier:
    for tier in TIERS:
        if tier.name == name:
            return tier
    raise ValueError(f"unknown kernel tier {name!r}; one of {', '.join(NAMES)}")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where the file is absent)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`Features` on Arm)."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def why_not(tier: Tier | str) -> str | None:
    """None when this CPU can execute `tier`; else the reason it cannot."""
    tier = by_name(tier) if isinstance(tier, str) else tier
    if tier.x86_only and platform.machine() not in ("x86_64", "AMD64"):
        return f"tier {tier.name} is for x86-64 CPUs; this is {platform.machine()}"
    missing = [flag for flag in tier.needs if flag not in cpu_flags()]
    if missing:
        return f"this CPU ({cpu_model()}) lacks {', '.join(missing)} for tier {tier.name}"
    return None


@functools.cache
def executable() -> tuple[str, ...]:
    """The tiers this CPU can execute, fastest first (always ends with c and torch)."""
    return tuple(tier.name for tier in TIERS if why_not(tier) is None)


def best() -> str:
    return executable()[0]


def active() -> str:
    """The tier in force: HONE_KERNEL_TIER, else torch under HONE_KERNELS=0, else the best."""
    forced = os.environ.get(ENV)
    if forced:
        reason = why_not(by_name(forced))
        if reason:
            raise ValueError(f"{ENV}={forced}: {reason}")
        return forced
    if os.environ.get("HONE_KERNELS", "1") == "0":
        return "torch"
    return best()


@contextlib.contextmanager
def forced(name: str):
    """Run the enclosed code in tier `name` (for tests and benchmarks)."""
    by_name(name)
    previous = os.environ.get(ENV)
    os.environ[ENV] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "avx_vnni",
                "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


def describe_machine() -> dict:
    """What every published number must say about the machine that made it."""
    versions = {package: installed_version(package)
                for package in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate")}
    import torch

    flags = cpu_flags()
    limits = {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "vector_extensions": [f for f in VECTOR_FLAGS if f in flags],
            "kernel_tier": active(), "best_tier": best(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_limits": limits, "python": platform.python_version(), "versions": versions}


# Environment variables that hold torch's own kernels below the CPU's best instruction set:
# set together, they make an AVX-512/AMX machine compute as an AVX2-only one (how hone measures
# the AVX2 tier end to end without such a machine; docs/engine.md).
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_line() -> str:
    """describe_machine() on one line, for benchmark output."""
    d = describe_machine()
    libs = ", ".join(f"{k} {v}" for k, v in d["versions"].items() if v)
    return (f"machine: {d['cpu']}, {d['cores']} cores; vector extensions: {' '.join(d['vector_extensions']) or 'none'}; "
            f"kernel tier {d['kernel_tier']} (best here {d['best_tier']}); torch kernels {d['torch_cpu_capability']}"
            + (f" (limited by {' '.join(f'{k}={v}' for k, v in d['isa_limits'].items())})" if d["isa_limits"] else "")
            + f"; Python {d['python']}; {libs}")
