"""Several training processes: memory per process under DDP and FSDP, and time on N GPUs.

Pure arithmetic over the one-process breakdown (`memory.estimate_memory`, computed for the
per-process batch):

- DDP: every process holds the whole model, its gradients and optimizer state, plus DDP's
  gradient buckets (a second copy of the trained gradients, which DDP all-reduces from);
- FSDP (FSDP2 `fully_shard` per decoder layer): weights, gradients and optimizer state are
  split N ways; a process holds its own activations and, for the layer running and the one
  prefetched, whole layers' weights all-gathered in the compute dtype.

Time on N GPUs is the one-GPU time over N: data parallelism at perfect scaling, a lower bound
(gradient exchange is not counted; on one node with NVLink it is typically a few percent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hone.plan.memory import GIB, Arch, MemoryBreakdown, MemorySettings


@dataclass
class Parallel:
    processes: int
    global_batch: int
    """Examples per optimizer step: batch_size x processes x gradient_accumulation_steps."""
    ddp_bytes: float
    """Peak memory of each process under DDP."""
    fsdp_bytes: float
    """Peak memory of each process under FSDP."""


def processes(nproc: int) -> int:
    """The processes a run will have: torchrun's world size when under it, else `train.nproc`."""
    return int(os.environ.get("WORLD_SIZE", "0")) or nproc


def per_process(memory: MemoryBreakdown, arch: Arch, settings: MemorySettings, ranks: int, batch_size: int,
                accumulation: int) -> Parallel:
    """Per-process peaks for `ranks` processes from the one-process `memory` (same per-process batch)."""
    ddp = memory.peak + memory.gradients
    sharded = memory.weights + memory.adapter + memory.gradients + memory.optimizer_state
    layer_bytes = arch.layer_linear_params / max(arch.layers, 1) * settings.compute_bytes
    fsdp = memory.peak - sharded + sharded / ranks + 2 * layer_bytes
    return Parallel(ranks, batch_size * ranks * accumulation, ddp, fsdp)


def lines(parallel: Parallel, on_gpus: Parallel, targets, size, duration) -> list[str]:
    """The plan's lines for several processes: `parallel` on this device, `on_gpus` with the GPU
    settings (a GPU is listed where FSDP fits it); `size`, `duration`: the plan's formatters."""
    n = parallel.processes
    out = [f"  {n} processes: global batch {parallel.global_batch} examples per step (batch_size x {n} x accumulation)",
           f"    memory per process: ddp {size(parallel.ddp_bytes)} · fsdp {size(parallel.fsdp_bytes)}"]
    times = ", ".join(f"{t.name} ~{duration(t.hours * 3600 / n)}" + ("" if t.fits else " (fsdp only)")
                      for t in targets if on_gpus.fsdp_bytes <= t.capacity_gib * GIB)
    if times:
        out.append(f"    on {n} GPUs (perfect data-parallel scaling, communication not counted): {times}")
    return out
