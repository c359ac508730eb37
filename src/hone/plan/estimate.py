"""`hone plan`: memory, time and cost of a run before it starts, from config.json and data statistics.

Nothing here loads weights. The model's shapes come from its config (see `memory.py`), the
dataset's token counts from its tokenizer. Time on this CPU is measured for models up to
MAX_CALIBRATED_PARAMS: a few real steps of the run's model (random weights) are timed on the
run's own batches (`calibrate.py`); larger models, and GPUs, get FLOPs over under a second of
timed matrix multiplications (this machine) or datasheet peak times an assumed utilisation
(`hardware.py`). Every probe is sized by the machine and bounded in time, never by the model:
`hone plan` answers in seconds for an 8B config on a CPU that emulates bf16.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hone.config import EMBEDDED, AdapterArgs, RunConfig, TrainArgs, load_config
from hone.data.collate import epoch_batches
from hone.data.dataset import read_examples, tokenize_examples
from hone.data.prompts import read_prompt_rows
from hone.data.render import Tokenized
from hone.data.split import split_examples
from hone.errors import HoneError
from hone.model.adapters import apply_method
from hone.model.load import (load_config_only, load_tokenizer, matmul_flops_per_s, pick_device, pick_dtype,
                             resolve_model_path)
from hone.model.methods import get as get_method
from hone.plan.hardware import GPUS, HOSTED, PRICES_AS_OF, Gpu, HostedPrice, with_prices
from hone.plan.calibrate import BUDGET_S, MAX_CALIBRATED_PARAMS, replay_sample, run_tokens, time_steps
from hone.plan.license import LicenseInfo, read_license
from hone.plan import parallel as multi
from hone.plan.memory import GIB, Arch, BatchShape, MemoryBreakdown, MemorySettings, describe_model, estimate_memory, parameter_counts, step_flops
from hone.train.loop import Setup, build_optimizer, plan_steps, train_step

CPU_EFFICIENCY = 0.18
"""Whole training steps on this CPU reach this share of the measured matmul rate (norms,
softmax, optimizer and Python overhead run at memory speed); calibrated with bench/plan_accuracy.py."""


@dataclass
class DataStats:
    """What one epoch of the training split costs in tokens."""

    examples: int
    tokens: int
    """Real tokens per epoch (what a hosted service bills)."""
    padded_tokens: int
    """Tokens the model processes per epoch, padding included (what compute is spent on)."""
    trained_tokens: int
    longest: int
    largest_batch: BatchShape
    source: str
    """`data` when measured from the dataset; `limits` when taken from batch_size x max_length."""


@dataclass
class Target:
    """Time and cost of the run on one named GPU."""

    name: str
    fits: bool
    memory_gib: float
    hours: float
    usd: float
    capacity_gib: float = 0.0
    """The GPU's memory."""


@dataclass
class Plan:
    model: str
    method: str
    total_params: int
    trainable_params: int
    memory: MemoryBreakdown
    device: str
    data: DataStats
    epochs: float
    steps: int
    flops: float
    this_machine_seconds: float
    """Training plus evaluation passes on this machine."""
    this_machine_flops_per_s: float
    targets: list[Target]
    hosted: list[dict]
    dataset_advice: str
    license: LicenseInfo
    notes: list[str] = field(default_factory=list)
    this_machine_train_seconds: float = float("nan")
    """Optimizer steps only: what summary.json's `train_seconds` counts."""
    this_machine_eval_seconds: float = 0.0
    time_source: str = "estimated"
    """`measured` when real steps of the run's model were timed (hone.plan.calibrate), `estimated` from FLOPs."""
    parallel: tuple | None = None
    """With several processes (`train.nproc`, or torchrun's): (this device, GPUs) `hone.plan.parallel.Parallel`s."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["memory_gib"] = self.memory.gib()
        del out["memory"]
        out["prices_as_of"] = PRICES_AS_OF
        return out

    def time_basis(self) -> str:
        eval_part = f" + eval {_duration(self.this_machine_eval_seconds)}" if self.this_machine_eval_seconds > 0 else ""
        split = f"train {_duration(self.this_machine_train_seconds)}{eval_part}"
        if self.time_source == "measured":
            return f"(measured: real steps of this model timed here; {split})"
        return f"(estimated from {self.this_machine_flops_per_s / 1e9:.0f} GFLOP/s measured matmul; {split})"

    def text(self) -> str:
        """A compact summary (~15 lines) printed before training starts."""
        m = self.memory
        lines = [
            f"plan: {self.model} · {self.method} · {self.trainable_params:,} trainable of {self.total_params:,} parameters",
            f"  data: {self.data.examples:,} examples, {self.data.tokens:,} tokens/epoch ({self.data.padded_tokens:,} with padding), "
            f"{self.data.trained_tokens:,} trained · {self.epochs:g} epochs = {self.steps:,} steps",
            f"  {self.dataset_advice}",
            f"  peak memory on {self.device}: {size(m.peak)} = weights {size(m.weights)} + adapter {size(m.adapter)}"
            f" + grads {size(m.gradients)} + optimizer {size(m.optimizer_state)} + activations {size(m.activations)}"
            f" + logits {size(m.logits)} + temporaries {size(m.temporaries)}",
        ]
        if m.activations_without_checkpointing > m.activations:
            lines.append(f"  (activations without gradient checkpointing: {size(m.activations_without_checkpointing)})")
        elif m.activations > 0.25 * m.peak:
            lines.append(f"  gradient checkpointing would cut activations to ~{size(m.activations_with_checkpointing)}"
                         " (train.gradient_checkpointing=true)")
        lines.append(f"  compute: {self.flops:.2e} FLOPs · this machine ~{_duration(self.this_machine_seconds)} {self.time_basis()}")
        for t in self.targets:
            status = f"~{_duration(t.hours * 3600)}, ${t.usd:.2f}" if t.fits else f"does not fit ({t.memory_gib:.0f} GiB)"
            lines.append(f"  {t.name:<9} {status}")
        hosted = ", ".join(f"{h['name']} ${h['usd']:.2f}" for h in self.hosted)
        lines.append(f"  hosted alternative (prices {PRICES_AS_OF}): {hosted}")
        lines.append(f"  license: {self.license.line()}")
        if self.parallel:
            lines += multi.lines(*self.parallel, self.targets, size, _duration)
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB else f"{n_bytes / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    if seconds != seconds:  # not measured
        return "? s"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def hone_settings(config: RunConfig, device_type: str, compute_bytes: float) -> MemorySettings:
    """How hone's own loop stores things (see hone.train.sft.build_trainable and loop.py)."""
    method = config.adapter.method
    targets = config.adapter.target_modules
    return MemorySettings(
        method=method,
        weight_bytes=4.0 if get_method(method).fp32_master_weights else compute_bytes,
        compute_bytes=compute_bytes,
        adapter_bytes=4.0,  # PEFT keeps adapters in fp32
        gradient_checkpointing=config.train.gradient_checkpointing,
        lora_rank=config.adapter.lora_rank,
        lora_targets=(targets,) if isinstance(targets, str) else tuple(targets),
        backward_layers=4.0 if device_type == "cpu" else 2.0,
        runtime_bytes=50 * 2**20 if device_type == "cpu" else 0.0,
        adapter=config.adapter,
    )


def plan_run(config: RunConfig, calibrate: bool = True, gpus: tuple[Gpu, ...] = GPUS,
             hosted_prices: tuple = HOSTED, splits: tuple[list, list] | None = None) -> Plan:
    """Estimate memory, time and cost of training `config`, reading no weights. `splits`: the
    run's (train, eval) items as `hone train` tokenized them; without them they are made here."""
    model_config = load_config_only(config.model)
    arch = describe_model(model_config)
    device = pick_device(config.model)
    compute = pick_dtype(config.model, device)
    settings = hone_settings(config, device.type, compute.itemsize)
    splits, transfer_notes = with_transfer(config, splits if splits is not None else tokenized_splits(config))
    data = data_stats(config, arch, splits)
    steps = total_steps(data.examples, config)
    flops = run_flops(arch, settings, data, config)
    memory = estimate_memory(arch, settings, data.largest_batch)
    eval_seconds, time_source = 0.0, "estimated"
    # the rate comes first (under a second, sized by the machine): it says whether timing real steps would be quick
    rate = measured_flops_per_s(arch.hidden, str(compute).removeprefix("torch.")) if calibrate else 0.0
    if calibrate and time_by_steps(splits, device.type, arch, settings.method, untimed_seconds(arch, settings, data, config, rate)):
        steps, train_seconds, eval_seconds = measured_run_seconds(config, *splits)
        time_source = "measured"
    else:
        overhead = measured_layer_overhead(model_config.model_type, settings.method) * arch.layers * micro_steps(data, config) if calibrate else 0.0
        train_seconds = overhead + flops / (rate * CPU_EFFICIENCY) if rate else float("nan")
    seconds = train_seconds + eval_seconds
    gpu_settings = hone_settings(config, "cuda", 2.0)
    gpu_peak = estimate_memory(arch, gpu_settings, data.largest_batch).peak
    targets = [gpu_target(g, gpu_peak, flops, settings.method) for g in gpus]
    hosted = [{"name": h.name, "usd": round(data.tokens * config.train.epochs / 1000 * h.usd_per_1k_tokens, 2),
               "usd_per_1k_tokens": h.usd_per_1k_tokens, "source": h.source} for h in hosted_prices]
    notes = transfer_notes if data.source == "data" else ["no data.train given: sizes assume full batches of data.max_length tokens"]
    if device.type == "cpu" and str(compute) == "torch.bfloat16":
        notes.append("bf16 compute on this CPU (measured faster than fp32)")
    trainable, total = parameter_counts(arch, settings)
    ranks, train = multi.processes(config.train.nproc), config.train
    spread = None if ranks < 2 else tuple(
        multi.per_process(peak, arch, chosen, ranks, train.batch_size, train.gradient_accumulation_steps)
        for peak, chosen in ((memory, settings), (estimate_memory(arch, gpu_settings, data.largest_batch), gpu_settings)))
    return Plan(parallel=spread, model=config.model.path, method=settings.method, total_params=total, trainable_params=trainable, memory=memory, device=device.type, data=data,
                epochs=config.train.epochs, steps=steps, flops=flops, this_machine_seconds=seconds,
                this_machine_flops_per_s=rate, targets=targets, hosted=hosted,
                dataset_advice=dataset_advice(data.examples), license=model_license(config), notes=notes,
                this_machine_train_seconds=train_seconds, this_machine_eval_seconds=eval_seconds, time_source=time_source)


def time_by_steps(splits, device_type: str, arch: Arch, method: str, untimed_s: float = 0.0) -> bool:
    """Whether this CPU's time is measured on real steps: small models with data, whose untimed
    steps (`untimed_seconds`) fit in calibrate.BUDGET_S. A 4-bit method (QLoRA) is left to
    FLOPs (its 4-bit layers need real weights to build)."""
    small = arch.total_params <= MAX_CALIBRATED_PARAMS and untimed_s <= BUDGET_S
    return bool(splits and splits[0]) and device_type == "cpu" and small and not get_method(method).quantize_4bit


def untimed_seconds(arch: Arch, settings: MemorySettings, data: DataStats, config: RunConfig, rate: float) -> float:
    """Predicted seconds of what calibrate.time_steps runs outside its budget: a warm-up step on
    two examples and one evaluation batch (forward only, a third of a step), from FLOPs at the
    measured rate. Where the compute dtype is emulated (bf16 on a CPU without AVX-512 or AMX,
    ~1 GFLOP/s) even a 20M model's warm-up would take minutes: the plan then estimates instead."""
    if not rate:
        return float("inf")
    width, batch = data.longest, config.train.batch_size
    warm_up = step_flops(arch, settings, 2 * width, width, width)
    evaluation = step_flops(arch, settings, batch * width, batch * width, width) / 3
    return (warm_up + evaluation) / (rate * CPU_EFFICIENCY)


def measured_run_seconds(config: RunConfig, train: list, evals: list) -> tuple[int, float, float]:
    """(optimizer steps, training seconds, evaluation seconds) of the run on this CPU: real steps
    of its model timed on its first batches, scaled by the tokens every step and eval pass will process."""
    replay = replay_sample(config, load_tokenizer(config.model))
    run = run_tokens(train, evals, replay, config.train)
    timing = time_steps(config, run.first_batches, evals[: config.train.batch_size] or None)
    return run.steps, timing.seconds_per_token * run.train_tokens, timing.eval_seconds_per_token * run.eval_tokens


def gpu_target(gpu: Gpu, peak_bytes: float, flops: float, method: str) -> Target:
    hours = flops / (gpu.peak_tflops * 1e12 * get_method(method).gpu_utilisation) / 3600
    return Target(gpu.name, fits=peak_bytes / GIB <= gpu.memory_gib, memory_gib=round(peak_bytes / GIB, 2),
                  hours=hours, usd=round(hours * gpu.usd_per_hour, 2), capacity_gib=gpu.memory_gib)


def total_steps(examples: int, config: RunConfig) -> int:
    return plan_steps(max(examples, 1), config.train, multi.processes(config.train.nproc))[1]


def micro_steps(data: DataStats, config: RunConfig) -> float:
    """Micro-batches the run will process (each pays the per-step overhead)."""
    per_epoch = math.ceil(max(data.examples, 1) / config.train.batch_size)
    if config.train.max_steps is not None:
        return config.train.max_steps * config.train.gradient_accumulation_steps
    return per_epoch * config.train.epochs


def run_flops(arch: Arch, settings: MemorySettings, data: DataStats, config: RunConfig) -> float:
    """FLOPs of the whole run: per-epoch padded tokens x epochs (or max_steps' share)."""
    per_epoch_steps = max(1, math.ceil(math.ceil(max(data.examples, 1) / config.train.batch_size) / config.train.gradient_accumulation_steps))
    epochs = config.train.epochs if config.train.max_steps is None else config.train.max_steps / per_epoch_steps
    mean_len = data.padded_tokens / max(data.examples, 1)
    labelled_share = data.trained_tokens / max(data.padded_tokens, 1)
    per_epoch = step_flops(arch, settings, data.padded_tokens, int(data.padded_tokens * labelled_share), int(mean_len))
    return per_epoch * epochs


def tokenized_splits(config: RunConfig) -> tuple[list, list] | None:
    """(train items, eval items) tokenized as training will (None without data.train); rows
    training would refuse are skipped here: `hone check` is where they are reported."""
    args = config.data
    if not args.train:
        return None
    tokenizer = load_tokenizer(config.model)
    examples = read_examples(args.train).examples
    if args.eval:
        held_out = read_examples(args.eval).examples[: args.max_eval_examples]
    else:
        examples, held_out = split_examples(examples, args.eval_fraction, config.train.seed, args.max_eval_examples)
    train, _ = tokenize_examples(tokenizer, examples, args.max_length, args.overlength)
    evals, _ = tokenize_examples(tokenizer, held_out, args.max_length, args.overlength)
    return train, evals


def with_transfer(config: RunConfig, splits: tuple[list, list] | None) -> tuple[tuple[list, list] | None, list[str]]:
    """(splits, notes) with `distill.transfer`'s prompts counted in: they join the training rows
    once the teacher has answered them at the start of the run, so they are planned as that many
    more rows shaped like the labelled ones (their answers do not exist yet)."""
    source = config.distill.transfer if config.train.objective == "distill" else None
    if not source or not splits or not splits[0] or not Path(source).is_file():
        return splits, []
    count, train = len(read_prompt_rows(source).examples), splits[0]
    rows = train + [train[i % len(train)] for i in range(count)]
    return (rows, splits[1]), [f"distill.transfer: {count} prompts planned as rows like the labelled ones; "
                               "the teacher's answering them first is not timed"]


def data_stats(config: RunConfig, arch: Arch, splits: tuple[list, list] | None = None) -> DataStats:
    """Token counts of the training split, exactly as training will batch it."""
    args, batch_size = config.data, config.train.batch_size
    if splits is None:
        tokens = batch_size * args.max_length
        return DataStats(batch_size, tokens, tokens, tokens // 2, args.max_length,
                         BatchShape(batch_size, args.max_length, tokens // 2), "limits")
    items = splits[0]
    if not items:
        return DataStats(0, 0, 0, 0, 0, BatchShape(1, 1, 1), "data")
    batches = epoch_batches(items, batch_size, config.train.seed, 0)
    widths = [max(len(items[i].input_ids) for i in b) for b in batches]
    largest = max(range(len(batches)), key=lambda k: widths[k] * len(batches[k]))
    labelled = sum(items[i].trained_tokens for i in batches[largest])
    return DataStats(examples=len(items), tokens=sum(len(it.input_ids) for it in items),
                     padded_tokens=sum(w * len(b) for w, b in zip(widths, batches)),
                     trained_tokens=sum(it.trained_tokens for it in items), longest=max(widths),
                     largest_batch=BatchShape(len(batches[largest]), widths[largest], labelled), source="data")


def dataset_advice(examples: int) -> str:
    """The dataset's size against the seeds' guidance (50-100 minimum, 500-1000 optimal, >10K diminishing)."""
    if examples < 50:
        return f"{examples} examples: fewer than 50 — prompt engineering or few-shot is likely the better tool (seeds)"
    if examples < 100:
        return f"{examples} examples: at the 50-100 minimum for an effect; 500-1000 is the seeds' optimum"
    if examples < 500:
        return f"{examples} examples: workable; 500-1000 carefully checked examples is the seeds' optimum"
    if examples <= 1000:
        return f"{examples} examples: in the seeds' optimal range (500-1000); quality matters more than more rows"
    if examples <= 10_000:
        return f"{examples:,} examples: plenty; curating quality pays more than adding rows"
    return f"{examples:,} examples: more than 10K rarely yields proportional improvement (seeds); consider a curated subset"


def model_license(config: RunConfig) -> LicenseInfo:
    if config.model.path == EMBEDDED:
        return LicenseInfo("apache-2.0", "ok", "hone's embedded model, under the project's license")
    return read_license(resolve_model_path(config.model.path))


@functools.lru_cache(maxsize=8)
def measured_layer_overhead(model_type: str, method: str) -> float:
    """Seconds per decoder layer per training step that do not scale with FLOPs (op dispatch,
    autograd, adapters, optimizer): timed on a 2-layer, width-64 copy of the architecture with
    random weights (a 4-bit method is timed over an unquantised base: its `wrap` adds the same adapters)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        small = AutoConfig.for_model(model_type, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        model = apply_method(AutoModelForCausalLM.from_config(small), AdapterArgs(method=method))
    except (ValueError, TypeError, KeyError):  # an architecture that does not take these names: FLOPs alone then
        return 0.0
    setup = Setup(model, 0, torch.device("cpu"), torch.bfloat16, None)
    optimizer, _ = build_optimizer(model, TrainArgs(), total_steps=10)
    items = [Tokenized(list(range(5, 37)), list(range(5, 37))) for _ in range(2)]
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        train_step(setup, [items], optimizer, 1.0)
        seconds.append(time.perf_counter() - start)
    return sorted(seconds[1:])[1] / 2


@functools.lru_cache(maxsize=8)
def measured_flops_per_s(hidden: int, dtype: str = "bfloat16", seconds: float = 0.5) -> float:
    """Matmul FLOP/s of this machine in `dtype` (median of repeated square products, see
    hone.model.load.matmul_flops_per_s): on a shared machine the median tracks what a training
    run will get, the best does not. The product's side is sized by the machine within `seconds`
    and capped at 2048; the model's width can only lower that cap (a small model is timed near
    its own shapes, where rates are lower), never raise the work."""
    import torch

    return matmul_flops_per_s(getattr(torch, dtype), max_side=max(hidden, 1), budget_s=seconds)


def plan_command(config_path: str, overrides: list[str], as_json: bool, prices: list[str], hosted_price: float | None) -> int:
    config = load_config(config_path, overrides)
    parsed = {}
    for item in prices:
        name, _, value = item.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            raise HoneError(f"--price {item!r} is not NAME=USD_PER_HOUR", "e.g. --price A100=1.2") from None
    hosted = HOSTED if hosted_price is None else (HostedPrice("custom", hosted_price, "--hosted-price"),)
    plan = plan_run(config, gpus=with_prices(GPUS, parsed), hosted_prices=hosted)
    print(json.dumps(plan.to_dict(), indent=1, default=str) if as_json else plan.text())
    return 0


def print_plan(config: RunConfig, splits: tuple[list, list] | None = None) -> Plan | None:
    """What `hone train` and the quickstart print before training (the plan, or None when it could
    not be made); never stops a run. `splits`: the run's tokenized (train, eval) items."""
    try:
        plan = plan_run(config, splits=splits)
    except Exception as exc:  # a planning problem must not block training
        print(f"plan: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return None
    print(plan.text())
    return plan
