"""Peak training memory and FLOPs from a model's config.json alone: pure arithmetic, no weights.

`describe_model` reads the architecture (shapes are taken from a model built on the `meta`
device, which allocates nothing); `estimate_memory` adds up what a training step keeps alive
at its high-water mark under explicit `MemorySettings`. hone's own loop maps to settings via
`hone_settings`; other recipes (e.g. torchtune's) are described by setting the fields directly.
What depends on the method (whether the base trains or is 4-bit, its parameter counts) is read
from its entry in hone.model.methods, never from its name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hone.model.methods import Method, get, lora_params  # noqa: F401  (lora_params: LoRA's count, kept importable here)

GIB = 2**30
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Bytes per 4-bit NF4 weight with double quantisation: two weights per byte, one 8-bit absmax
per block of 64, one fp32 constant per 256 absmax values (QLoRA paper, section 3)."""
LOSS_CHUNK_ROWS = 2048  # hone.train.loss.CHUNK_ROWS, repeated to keep this module import-light


@dataclass
class Arch:
    """What memory and compute depend on, read from config.json."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    total_params: int
    layer_linear_params: int
    """Weights of the linear layers inside the decoder blocks (what 4-bit quantises)."""
    largest_param: int
    lora_pairs: dict[str, tuple[int, int, int]]
    """Linear module name -> (in_features, out_features, how many) inside the decoder blocks."""
    parameters: dict[str, int] = field(default_factory=dict)
    """Every parameter's name (as the loaded model names it) -> its element count: what a
    method that trains chosen base weights (freeze) counts."""


@dataclass
class MemorySettings:
    """How a recipe stores things. Bytes are per element."""

    method: str
    """A name in hone.model.methods.METHODS: the entry says what trains, what is stored how, and its counts."""
    weight_bytes: float = 2.0
    """Storage of the (non-quantised) weights: 4 for fp32 master weights, 2 for bf16."""
    compute_bytes: float = 2.0
    adapter_bytes: float = 4.0
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit"] = "adamw"
    """AdamW keeps m and v in the parameter's dtype; 8-bit keeps 2 bytes; paged lives in host memory."""
    optimizer_in_backward: bool = False
    """Step each parameter as its gradient arrives: only one gradient is alive at a time."""
    gradient_checkpointing: bool = False
    loss: Literal["labelled_chunks", "all_positions_chunks"] = "labelled_chunks"
    """hone: logits only for labelled positions, 2048 rows at a time, recomputed in backward.
    torchtune CEWithChunkedOutputLoss: bf16 logits for every position, upcast 1/8 at a time."""
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("all-linear",)
    foreach_step: bool = True
    """torch's default multi-tensor AdamW makes one temporary copy of the state for sqrt(v)."""
    quantized_head: bool = False
    """QLoRA also stores the output projection in 4-bit (torchtune does; PEFT/bitsandbytes do not)."""
    backward_layers: float = 2.0
    """Layers' worth of activations alive while one layer is differentiated (its saved tensors
    plus their gradients). Measured 4 on CPU (fp32 gradients, glibc keeps freed blocks); 2 on CUDA's caching allocator."""
    runtime_bytes: float = 0.0
    """Fixed cost of the runtime (CPU: thread pools, oneDNN kernels, autograd engine: ~50 MiB measured)."""
    adapter: Any = None
    """The run's AdapterArgs (hone.config): the sizes of methods beyond LoRA's rank and targets
    (virtual tokens, bottleneck width, trained layers, DoRA); None: AdapterArgs' defaults."""


@dataclass
class BatchShape:
    """The largest micro-batch of the run."""

    batch_size: int
    seq_len: int
    labelled: int
    """Positions with a label in that micro-batch (what hone's loss projects to the vocabulary)."""


@dataclass
class MemoryBreakdown:
    """Bytes alive at the peak of a training step, by what holds them."""

    weights: float
    adapter: float
    gradients: float
    optimizer_state: float
    activations: float
    activations_without_checkpointing: float
    activations_with_checkpointing: float
    logits: float
    temporaries: float
    """Autocast's low-precision copies of fp32 weights, the optimizer's scratch, de-quantised layers."""
    peak: float

    def gib(self) -> dict[str, float]:
        return {key: round(value / GIB, 3) for key, value in asdict(self).items()}


def describe_model(config) -> Arch:
    """Shapes of a transformers config's model, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = getattr(config, "text_config", None) or config
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    pairs: dict[str, tuple[int, int, int]] = {}
    linear_params = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            short = name.rsplit(".", 1)[-1]
            n_in, n_out, count = pairs.get(short, (module.in_features, module.out_features, 0))
            pairs[short] = (n_in, n_out, count + 1)
            linear_params += module.weight.numel()
    params = list(model.parameters())
    named = {name: p.numel() for name, p in model.named_parameters()}
    return Arch(vocab=text.vocab_size, hidden=hidden, layers=text.num_hidden_layers, heads=heads,
                kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
                intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
                total_params=sum(p.numel() for p in params), layer_linear_params=linear_params,
                largest_param=max(p.numel() for p in params), lora_pairs=pairs, parameters=named)


def parameter_counts(arch: Arch, settings: MemorySettings) -> tuple[int, int]:
    """(trainable, total) parameters from the method's `size`, as hone.model.adapters.count_parameters
    reports them: the total includes what the method adds beside the base."""
    sizing = get(settings.method).size(arch, settings)
    return sizing.trainable, arch.total_params + sizing.added


def fp32_stream(settings: MemorySettings) -> bool:
    """Whether the residual stream and norms stay fp32: a trained base kept in fp32 master weights."""
    return get(settings.method).trains_base and settings.weight_bytes == 4


def base_weight_bytes(arch: Arch, settings: MemorySettings, method: Method) -> float:
    """The base model's weights: a trained base at `weight_bytes`; a frozen one in the compute
    dtype, its decoder linears (and with `quantized_head` the output head) in 4-bit NF4 when quantised."""
    if method.trains_base:
        return arch.total_params * settings.weight_bytes
    if method.quantize_4bit:
        quantized = arch.layer_linear_params + (arch.vocab * arch.hidden if settings.quantized_head else 0)
        return quantized * NF4_BYTES + (arch.total_params - quantized) * settings.compute_bytes
    return arch.total_params * settings.compute_bytes


def layer_activation_bytes(arch: Arch, settings: MemorySettings) -> float:
    """Bytes one decoder layer saves for backward, per token.

    Counted with `torch.autograd.graph.saved_tensors_hooks` on transformers' Llama layer under
    hone's loop (bf16 autocast, SDPA attention): with fp32 master weights (full) the residual
    stream and the norms stay fp32 (27 bytes per hidden unit); with a bf16 base (LoRA/QLoRA)
    they are bf16 (21), plus each adapted linear's rank-r input. The MLP keeps gate, up and
    their product (8 bytes per intermediate unit); attention keeps q, k, v, output and the
    log-sum-exp (no T x T matrix: SDPA's fused kernels recompute it).
    """
    h, f = arch.hidden, arch.intermediate
    q_width, kv_width = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    # 10.35 values per hidden unit, 3.3 of them the residual stream and norms (fp32 with fp32 master weights)
    stream = 4 if fp32_stream(settings) else settings.compute_bytes
    per_hidden = (10.35 - 3.3) * settings.compute_bytes + 3.3 * max(stream, settings.compute_bytes)
    adapter = get(settings.method).size(arch, settings).saved_per_token
    scale = settings.compute_bytes / 2  # the counts below are for 2-byte compute
    return per_hidden * h + scale * (8 * f + 4 * q_width + 5 * kv_width + 4 * arch.heads + adapter) + 10


def activation_bytes(arch: Arch, settings: MemorySettings, batch: BatchShape, checkpointing: bool) -> float:
    """Saved activations at the start of backward, plus the gradients of one layer's activations
    that exist while it is being differentiated (or recomputed, with checkpointing)."""
    tokens = batch.batch_size * batch.seq_len
    layer = layer_activation_bytes(arch, settings) * tokens
    if checkpointing:  # each layer keeps only its input; one layer is recomputed at a time
        stream_bytes = 4 if fp32_stream(settings) else settings.compute_bytes
        return arch.layers * stream_bytes * arch.hidden * tokens + settings.backward_layers * layer
    return (arch.layers + settings.backward_layers - 1) * layer


def logits_bytes(arch: Arch, settings: MemorySettings, batch: BatchShape) -> float:
    """Peak bytes of the output projection and cross-entropy."""
    if settings.loss == "labelled_chunks":
        rows = min(batch.labelled, LOSS_CHUNK_ROWS)
        # hone.train.loss.HeadLoss: one chunk's logits in fp32, turned into their gradient in
        # place, and that gradient cast to the compute dtype (nothing is recomputed in backward)
        return rows * arch.vocab * (4 + settings.compute_bytes) + batch.labelled * arch.hidden * 4
    tokens = batch.batch_size * batch.seq_len
    # every position's logits kept in bf16; one chunk of 8 upcast to fp32 with its softmax
    return tokens * arch.vocab * settings.compute_bytes + tokens / 8 * arch.vocab * 8


def optimizer_bytes_per_param(settings: MemorySettings, param_bytes: float) -> float:
    return {"adamw": 2 * param_bytes, "adamw8bit": 2.0, "paged_adamw8bit": 0.0}[settings.optimizer]


def estimate_memory(arch: Arch, settings: MemorySettings, batch: BatchShape) -> MemoryBreakdown:
    """What is alive at the high-water mark of a training step (bytes)."""
    method = get(settings.method)
    sizing = method.size(arch, settings)
    weights = base_weight_bytes(arch, settings, method)
    trainable = sizing.trainable
    # a trained base steps its own weights; anything else steps parameters stored like adapters
    param_bytes = settings.weight_bytes if method.trains_base else settings.adapter_bytes
    adapter = sizing.added * param_bytes
    # stepping inside backward frees each gradient at once: only the largest is ever alive
    grads = (min(arch.largest_param, trainable) if settings.optimizer_in_backward else trainable) * param_bytes
    state = trainable * optimizer_bytes_per_param(settings, param_bytes)
    acts = activation_bytes(arch, settings, batch, settings.gradient_checkpointing)
    acts_plain = activation_bytes(arch, settings, batch, False)
    acts_checkpointed = activation_bytes(arch, settings, batch, True)
    logits = logits_bytes(arch, settings, batch)
    casts = temporary_weight_bytes(arch, settings, method)
    step_scratch = trainable * param_bytes if settings.foreach_step and settings.optimizer == "adamw" and not settings.optimizer_in_backward else 0
    # Backward starts with every activation, the logits chunk and the autocast weight copies
    # alive; the optimizer step holds every gradient and its scratch. The peak is the larger.
    during_backward = acts + logits + casts + (grads if settings.optimizer_in_backward or not method.trains_base else 0)
    during_step = grads + step_scratch
    peak = settings.runtime_bytes + weights + adapter + state + max(during_backward, during_step)
    return MemoryBreakdown(weights=weights, adapter=adapter, gradients=grads, optimizer_state=state, activations=acts,
                           activations_without_checkpointing=acts_plain,
                           activations_with_checkpointing=acts_checkpointed, logits=logits,
                           temporaries=max(casts, step_scratch), peak=peak)


def temporary_weight_bytes(arch: Arch, settings: MemorySettings, method: Method) -> float:
    """Weights alive in a second copy during a pass: one de-quantised linear layer at a time
    (4-bit), or autocast's compute-dtype copies of the layers' higher-precision weights."""
    if method.quantize_4bit and settings.compute_bytes >= 4:
        # measured (hone.plan.measure, AVX-512 CPU without bf16): in fp32 the 4-bit layers' de-quantised
        # weights stay alive for backward, about one fp32 copy of every decoder linear
        return arch.layer_linear_params * settings.compute_bytes
    if method.quantize_4bit:
        return max(n_in * n_out for n_in, n_out, _ in arch.lora_pairs.values()) * settings.compute_bytes
    if method.trains_base and settings.weight_bytes > settings.compute_bytes:
        return arch.layer_linear_params * settings.compute_bytes
    return 0


def step_flops(arch: Arch, settings: MemorySettings, tokens: int, labelled: int, seq_len: int) -> float:
    """FLOPs of one optimizer step's forward and backward over `tokens` (padded) tokens.

    Forward: 2 x layer weights per token, the output head only on labelled positions (hone's
    loss), attention scores and mixing 4 x T x width per token per layer. Backward: twice the
    forward when the method trains the base (input and weight gradients); through a frozen
    base (LoRA/QLoRA) only input gradients flow (1x); added parameters cost 6 FLOPs per token
    each. Checkpointing adds one more forward.
    """
    width = arch.heads * arch.head_dim
    attention = 4 * seq_len * width * arch.layers * tokens
    forward = 2 * arch.layer_linear_params * tokens + attention + 2 * arch.hidden * arch.vocab * labelled
    method = get(settings.method)
    adapters = 6 * method.size(arch, settings).added * tokens
    backward = 2 * forward if method.trains_base else forward
    recompute = forward if settings.gradient_checkpointing else 0
    return forward + backward + recompute + adapters
