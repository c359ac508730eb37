"""Training on several processes with torch.distributed: DDP or FSDP2, one process per device.

hone runs under `torchrun` (it reads RANK / WORLD_SIZE / LOCAL_RANK from the environment), and
`hone train CONFIG train.nproc=N` starts torchrun itself on one machine (`launch`). Gloo on CPU,
NCCL on CUDA.

How the loop stays exact with N processes (`hone.train.loop`):

- every rank computes the same global micro-batches (a pure function of seed, epoch and step,
  `batch_size x ranks` examples each) and takes its share of each (`share`): the examples are
  dealt to the ranks balanced by tokens, then each rank packs its own into rows. Every rank
  also knows every other rank's share, so each runs the same number of forward passes (a rank
  with fewer rows runs zero-weighted ones), which FSDP's collectives and DDP's reducer need;
- the loss is normalised by the whole step's count on all ranks and the gradients are summed
  (DDP and FSDP average them, so each rank's loss is scaled by the number of ranks): the
  update is the one a single process makes on the same global batch;
- the logged loss, the metrics, the eval loss and the Ctrl-C flag are summed across ranks
  (`all_sum`), so the divergence guard, early stopping and stopping agree on every rank.

Why a `StepModule` around the model: hone's objectives call the decoder and the fused head
directly (`hone.train.loss`), not `model.forward`, and DDP and the FSDP root only see calls
that go through the wrapper's forward. Wrapping "one objective call" makes every objective
go through it, whatever submodules it touches.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hone.config import RunConfig
from hone.errors import HoneError
from hone.model.adapters import load_trainable_state
from hone.model.methods import get as get_method

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waiting longer than this means a rank is gone


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mode: str = "none"  # "ddp" | "fsdp" when size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


SINGLE = World()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_combination(config: RunConfig) -> None:
    """Refuse, when the config is resolved, what torch cannot shard (the reason in one line)."""
    method = get_method(config.adapter.method)
    if config.train.distributed == "fsdp" and method.quantize_4bit:
        raise HoneError(f"adapter.method={config.adapter.method} with train.distributed=fsdp: FSDP2 (fully_shard) cannot "
                        "shard bitsandbytes 4-bit weights (their packed storage is not a plain tensor it can split)",
                        "use train.distributed=ddp (each rank holds the 4-bit base, only LoRA gradients are exchanged)")
    if config.train.distributed == "fsdp" and config.train.compile:
        raise HoneError("train.compile with train.distributed=fsdp is not supported by hone yet",
                        "set train.compile=false, or use train.distributed=ddp")


_current = [SINGLE]  # the world `start` joined, for the stages below the command that started it


def current() -> World:
    return _current[0]


def start(config: RunConfig) -> World:
    """Join the process group torchrun set up (no-op for one process); later ranks print nothing."""
    if not under_torchrun():
        return SINGLE
    _current[0] = world = _join(config)
    return world


def _join(config: RunConfig) -> World:
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.model.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    if rank != 0:  # logging, progress bars, reports and the run folder come from rank 0 only
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return World(rank, size, local_rank, config.train.distributed)


def stop(world: World) -> None:
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()
    _current[0] = SINGLE


def device_for(world: World, device: torch.device) -> torch.device:
    """On CUDA each rank drives the GPU of its local rank."""
    if device.type == "cuda" and world.parallel:
        return torch.device("cuda", world.local_rank)
    return device


def all_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """`values` summed over the ranks (float64, so sums of losses stay exact to ~1e-15)."""
    if not world.parallel:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    collective(world, lambda: dist.all_reduce(tensor))
    return tensor.tolist()


def barrier(world: World) -> None:
    if world.parallel:
        collective(world, dist.barrier)


def collective(world: World, call):
    """Run a collective; a rank that died (killed, out of memory) ends in one clear line, not a traceback."""
    try:
        return call()
    except (RuntimeError, dist.DistError) as exc:
        raise HoneError(f"rank {world.rank} of {world.size} lost contact with the other training processes "
                        f"({str(exc).splitlines()[0][:160]}): one of them stopped, see its own message",
                        "fix what stopped it, then continue with `hone train --resume RUN_DIR` "
                        "(with the same or another number of processes)") from None


def share(items: list, world: World, key=len) -> list[list]:
    """Deal `items` (one global micro-batch) to the ranks: longest first to the rank with the
    fewest tokens so far, ties to the lowest rank. Returns every rank's share, in input order."""
    loads, shares = [0] * world.size, [[] for _ in range(world.size)]
    for index in sorted(range(len(items)), key=lambda i: (-key(items[i]), i)):
        rank = min(range(world.size), key=lambda r: (loads[r], r))
        loads[rank] += key(items[index])
        shares[rank].append(index)
    return [[items[i] for i in sorted(indices)] for indices in shares]


class StepModule(torch.nn.Module):
    """One objective call as a module, so DDP and the FSDP root see every forward (see the module docstring)."""

    def __init__(self, model, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch):
        return self.objective.loss(self.model, batch)


def decoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (PEFT-wrapped or not): FSDP's units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None:
        raise HoneError(f"train.distributed=fsdp: no decoder layers found in {type(base).__name__}",
                        "use train.distributed=ddp for this model")
    return list(layers)


def wrap(model, objective, world: World, device: torch.device):
    """The callable the loop runs an objective through: `objective.loss` itself for one
    process, else the model wrapped by DDP or sharded by FSDP2 (in place) behind a StepModule."""
    if not world.parallel:
        return lambda batch: objective.loss(model, batch)
    step = StepModule(model, objective)
    if world.mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dtypes = {p.dtype for p in model.parameters()}
        # FSDP2 all-gathers a unit's weights as one buffer: mixed dtypes (a bf16 base with fp32
        # LoRA weights) are gathered in the lowest one; gradients are reduced in fp32.
        policy = MixedPrecisionPolicy(param_dtype=min(dtypes, key=lambda d: torch.finfo(d).bits) if len(dtypes) > 1 else None,
                                      reduce_dtype=torch.float32)
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=policy)
        fully_shard(step, mp_policy=policy)
        return step
    from torch.nn.parallel import DistributedDataParallel

    # Frozen weights are identical on every rank (each loaded the same base): neither broadcast
    # nor watched for gradients, which is what lets a 4-bit base sit under DDP.
    frozen = [f"model.{name}" for name, p in model.named_parameters() if not p.requires_grad]
    frozen += [f"model.{name}" for name, _ in model.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, frozen)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids, broadcast_buffers=False)


def no_sync(step, last: bool):
    """DDP exchanges gradients on the last backward of a step only (FSDP2 reduces every one)."""
    if last or not hasattr(step, "no_sync"):
        return contextlib.nullcontext()
    return step.no_sync()


def gathered(model, world: World, build):
    """On rank 0, an unsharded copy (`build()`) holding the trained weights of the FSDP-sharded
    `model`; `model` itself elsewhere. Every rank must call it (the weights are all-gathered)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = collective(world, lambda: get_model_state_dict(model, options=options))
    if not world.main:
        return model
    fresh = build()
    trained = {name for name, p in fresh.named_parameters() if p.requires_grad}
    load_trainable_state(fresh, {name: value for name, value in state.items() if name in trained})  # tied weights come twice
    return fresh


def train_argv(config_path: str | None, overrides: list[str], resume, force: bool) -> list[str]:
    """The `hone train` arguments that give this command (`--resume` last: its value is optional)."""
    argv = ["train", *([config_path] if config_path else []), *overrides]
    argv += ["--force"] if force else []
    return argv + (["--resume", *([resume] if isinstance(resume, str) else [])] if resume else [])


def launch(nproc: int, argv: list[str]) -> int:
    """`hone train ... train.nproc=N` on one machine: the same command under torchrun with N processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "hone", *argv]
    print(f"starting {nproc} training processes: torchrun --standalone --nproc-per-node {nproc} -m hone {' '.join(argv)}")
    env = dict(os.environ)
    # torchrun gives each process 1 thread when OMP_NUM_THREADS is unset; share the cores instead
    # (N processes x all cores each would fight over them: measured 12x slower on 2 cores)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    code = subprocess.run(command, env=env).returncode
    if code:
        print(f"hone: a training process failed (exit {code}; its message and torchrun's summary are above) and "
              "the others were stopped; the last complete checkpoint is kept: continue with `hone train --resume RUN_DIR`",
              file=sys.stderr)
    return code
