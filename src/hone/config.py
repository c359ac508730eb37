"""Run configuration: small dataclasses, one per concern, validated when built.

YAML only overrides their defaults; `section.key=value` on the command line overrides YAML.
An unknown key, a value of the wrong type or a number out of its range is a `HoneError` that
names the key. A field's range rides in its metadata (`bounded(default, range)`) and every
section checks its ranges when built (`__post_init__`), from YAML or in code alike.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from hone.errors import HoneError

EMBEDDED = "embedded"  # the model path that means "hone's own pre-trained base model"


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows: `low`/`high` bounds (None: unbounded), each closed unless `*_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """`>= 1`, `> 0` or `in [0, 1)`."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_ONE = Range(1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)  # a share that must leave something over: [0, 1)
UNIT = Range(0, 1)
PROBABILITY_MASS = Range(0, 1, low_open=True)


def bounded(default: Any, allowed: Range):
    """A dataclass field whose value must lie in `allowed` (None always passes: "not set")."""
    return field(default=default, metadata={"range": allowed})


def check_ranges(args: Any) -> None:
    """Raise a HoneError naming `section.key` and its range for the first field of `args` out of range."""
    for spec in dataclasses.fields(args):
        allowed, value = spec.metadata.get("range"), getattr(args, spec.name)
        # Types are `build`'s to check; a bool is not a number here.
        if allowed is None or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if value not in allowed:
            key = f"{args.SECTION}.{spec.name}"
            raise HoneError(f"config key {key}: {value!r} is out of range (allowed: {allowed.describe()})",
                            f"set {key} to a value {allowed.describe()}")


@dataclass
class ModelArgs:
    path: str = EMBEDDED
    """Local folder in Hugging Face format, an explicit hub id, or `embedded`."""
    tokenizer: str | None = None
    """Tokenizer folder or id when it differs from `path`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Compute dtype. `auto` picks what the device multiplies fastest (measured once on CPU)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    trust_remote_code: bool = False
    """Run Python code shipped with a model. Off unless you trust the model's author."""
    allow_pickle: bool = False
    """Load `.bin`/`.pt` pickle weights. Pickles can execute code on load; prefer safetensors."""
    from_scratch: bool = False
    """Initialise random weights from `config.json` instead of loading weights (pre-training)."""
    chat_template: str | None = None
    """A Jinja chat template (or a file holding one) that replaces the tokenizer's."""


@dataclass
class DataArgs:
    SECTION: ClassVar[str] = "data"  # its YAML section, which range errors name

    train: str | None = None
    """Training data file (chat JSONL, prompt/completion JSONL, or .txt for pretrain)."""
    eval: str | None = None
    """Held-out file; when absent a seeded `eval_fraction` of `train` is held out, near-duplicates
    kept on one side as `hone split` keeps them (hone.data.split.split_examples)."""
    eval_fraction: float = bounded(0.1, FRACTION)
    max_eval_examples: int = bounded(500, NON_NEGATIVE)
    max_length: int = bounded(512, AT_LEAST_ONE)
    """Longest example in tokens; see `overlength`."""
    overlength: Literal["drop", "truncate"] = "drop"
    """What happens to longer examples: dropped whole, or cut at `max_length`."""
    block_size: int = bounded(256, AT_LEAST_ONE)
    """Pre-training only: tokens per training sequence."""
    check: bool = True
    """Run the data checks before training and refuse error-level findings."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class AdapterArgs:
    SECTION: ClassVar[str] = "adapter"  # its YAML section, which range errors name

    method: str = "lora"
    """A fine-tuning method of hone.model.methods: `lora`, `qlora`, `full`, `ia3`, `prompt_tuning`,
    `prefix_tuning`, `bottleneck` or `freeze` (or one registered there); an unknown name is a
    one-line error naming this key when the run starts. LoRA's variants are the keys below."""
    lora_rank: int = bounded(8, AT_LEAST_ONE)
    lora_alpha: float = bounded(16.0, POSITIVE)
    lora_dropout: float = bounded(0.0, FRACTION)
    target_modules: str | list[str] = "all-linear"
    """Module names to adapt; `all-linear` means every linear layer except the output head."""
    use_dora: bool = False
    """LoRA/QLoRA: DoRA, a trained magnitude per output row beside the low-rank direction."""
    use_rslora: bool = False
    """LoRA/QLoRA: rank-stabilised scaling, lora_alpha / sqrt(lora_rank) instead of / lora_rank."""
    loraplus_lr_ratio: float = bounded(0.0, NON_NEGATIVE)
    """LoRA/QLoRA: LoRA+, the B matrices train at learning_rate x this (the paper: 16); 0 is off."""
    init: Literal["default", "pissa", "olora"] = "default"
    """LoRA: how the adapter starts. `pissa` (principal singular vectors) and `olora` (QR) move
    that part of the base weights into the adapter; saved runs are plain LoRA over the original base."""
    lr_ratio: float | None = bounded(None, POSITIVE)
    """The method's parameters train at train.learning_rate x this; unset: the method's own
    default (10 for prompt and prefix tuning, 0.1 for freeze, 1 otherwise)."""
    num_virtual_tokens: int | None = bounded(None, AT_LEAST_ONE)
    """prompt_tuning / prefix_tuning: trained vectors placed before every example; unset: the
    method's own default (100 for prompt tuning, 20 for prefix tuning)."""
    bottleneck_size: int = bounded(64, AT_LEAST_ONE)
    """bottleneck: width of the down-projection."""
    bottleneck_placement: Literal["pfeiffer", "houlsby"] = "pfeiffer"
    """bottleneck: `pfeiffer` after each MLP; `houlsby` after each attention block and each MLP."""
    bottleneck_activation: Literal["relu", "silu", "gelu"] = "relu"
    """bottleneck: the nonlinearity between the two projections."""
    train_layers: int = bounded(2, NON_NEGATIVE)
    """freeze: how many of the top decoder layers train (the rest stay as loaded)."""
    train_patterns: list[str] = field(default_factory=list)
    """freeze: regular expressions; parameters whose names match one also train (e.g. `norm.weight$`)."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class TrainArgs:
    SECTION: ClassVar[str] = "train"  # its YAML section, which range errors name

    output_dir: str = "runs/hone"
    objective: str = "causal_lm"
    """What is optimised: a name registered in `hone.train.objectives` (causal_lm: next-token
    cross-entropy over the labelled tokens, for SFT and pre-training)."""
    epochs: float = bounded(3.0, POSITIVE)
    max_steps: int | None = bounded(None, AT_LEAST_ONE)
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int = bounded(8, AT_LEAST_ONE)
    gradient_accumulation_steps: int = bounded(1, AT_LEAST_ONE)
    learning_rate: float = bounded(2e-4, POSITIVE)
    weight_decay: float = bounded(0.0, NON_NEGATIVE)
    warmup_ratio: float = bounded(0.05, FRACTION)
    min_lr_ratio: float = bounded(0.1, UNIT)
    """Cosine decay ends at `learning_rate * min_lr_ratio`."""
    max_grad_norm: float = bounded(1.0, NON_NEGATIVE)
    """Clip the gradient norm to this; 0 turns clipping off."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input during the forward pass and recompute the rest in the
    backward pass: activation memory drops to about one layer's worth, for ~1/3 more compute."""
    eval_every: int = bounded(50, AT_LEAST_ONE)
    save_every: int = bounded(100, AT_LEAST_ONE)
    keep_checkpoints: int = bounded(2, AT_LEAST_ONE)
    seed: int = 42
    progress: bool = True
    packing: bool = True
    """Concatenate each micro-batch's examples into one row with no padding; positions
    restart and attention stays within each example, so the loss is the same as padded
    batches (tested) but no compute is spent on padding. `false`: padded, length-grouped batches."""
    max_row_tokens: int = bounded(1536, NON_NEGATIVE)
    """Packing only: a micro-batch's examples go into rows of at most this many tokens (an
    example longer than that gets a row of its own). Activation memory grows with the
    row, so this caps peak memory; the loss is unchanged (it is normalised over the whole
    step, and attention never crosses examples). 0: one row per micro-batch. Longer rows
    are faster: each row reads every weight three times, ~50 ms of fixed cost per row on
    the benchmark model. Rows are rounded up to a multiple of 128 tokens (see
    `hone.data.collate.row_length`), which keeps the matmul library's per-shape kernel
    cache small enough that rows of 1536 peak no higher than rows of 1024 did at 64."""
    compile: bool = False
    """`torch.compile` the decoder layers. On CPU it measured slower than hone's fused
    layers (compiling takes minutes; see docs/engine.md), so it is off by default."""
    spike_factor: float = bounded(3.0, NON_NEGATIVE)
    """Divergence guard: a step loss above this many times the recent average (or NaN/inf) rolls
    back to the last good state and lowers the learning rate. 0 turns spike detection off."""
    lr_backoff: float = bounded(0.5, PROBABILITY_MASS)
    """Learning-rate multiplier applied at each rollback."""
    max_retries: int = bounded(3, NON_NEGATIVE)
    """Rollbacks allowed before the run stops with an error saying what to change."""
    guard_every: int = 10
    """Steps between in-memory copies of the last good state (the rollback target)."""
    early_stopping_patience: int = bounded(0, NON_NEGATIVE)
    """Stop after this many evaluations without an eval-loss improvement, restoring the best
    weights (its checkpoint is kept and marked `checkpoints/best`). 0 turns it off."""
    early_stopping_min_delta: float = bounded(0.0, NON_NEGATIVE)
    """How much lower an eval loss must be to count as an improvement."""
    nproc: int = bounded(1, AT_LEAST_ONE)
    """Training processes on this machine: above 1, `hone train` starts itself under torchrun
    (`--standalone --nproc-per-node N`). Under an outer `torchrun` the launcher's count wins."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """With several processes: `ddp` (each rank holds the model, gradients are averaged) or
    `fsdp` (FSDP2 `fully_shard`: weights, gradients and optimizer state sharded over the ranks).
    `batch_size` is per rank: the global batch is batch_size x ranks x gradient_accumulation_steps."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that get the metrics.jsonl scalars, the resolved config and the report
    (rank 0 only): any of `tensorboard`, `mlflow`, `trackio` (each an optional extra)."""
    tracking_dir: str | None = None
    """Where trackers write: TensorBoard events and the MLflow file store (default: the run folder's
    `tensorboard/` and `mlruns/`). An `http(s)://` or `sqlite:` MLflow URI is passed to MLflow as is."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class PreferenceArgs:
    """Settings of the preference objectives (`train.objective`: dpo, simpo, orpo, kto, reward)."""

    SECTION: ClassVar[str] = "preference"  # its YAML section, which range errors name

    beta: float = bounded(0.1, POSITIVE)
    """Strength of the preference signal: DPO/KTO's KL weight (0.1 is usual), SimPO's reward scale
    (about 2), ORPO's odds-ratio weight (0.1)."""
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """DPO's loss: sigmoid (DPO), ipo (squared, per-token-normalised), hinge, robust (noisy labels)."""
    label_smoothing: float = bounded(0.0, Range(0, 0.5, high_open=True))
    """robust DPO / SimPO: the assumed share of pairs whose labels are flipped."""
    sft_weight: float = bounded(0.0, NON_NEGATIVE)
    """DPO/SimPO: weight of an extra next-token loss on the chosen answer (mean over its tokens)."""
    gamma: float = bounded(0.5, NON_NEGATIVE)
    """SimPO: target reward margin between chosen and rejected (TRL's simpo_gamma)."""
    desirable_weight: float = bounded(1.0, POSITIVE)
    """KTO: weight of the desirable answers' loss."""
    undesirable_weight: float = bounded(1.0, POSITIVE)
    """KTO: weight of the undesirable answers' loss."""
    margin: float = bounded(0.0, NON_NEGATIVE)
    """reward: the margin the chosen reward must clear (Bradley-Terry on `r_chosen - r_rejected - margin`)."""
    center_rewards: float = bounded(0.0, NON_NEGATIVE)
    """reward: weight of the reward-centering term `mean((r_chosen + r_rejected)^2)` (0.01 is usual)."""
    reference: Literal["precompute", "live"] = "precompute"
    """DPO/KTO's reference model: `precompute` scores every pair once with the starting model
    before training and keeps the values in the run folder (`reference_logps.safetensors`, reused
    on resume); `live` (adapters only) scores each batch with the adapter switched off (PEFT
    `disable_adapter()`): the base, no second copy, no file."""
    init_from: str | None = None
    """A finished LoRA run folder (e.g. the SFT quickstart's `run`): its adapter is the starting
    point that trains, and the model it makes is the reference."""
    share_prompt: bool = True
    """DPO/SimPO/ORPO with packing: compute each pair's prompt once, the rejected answer
    attending to the chosen sequence's prompt rows (hone's packed attention; off where
    flash-attention runs, which cannot express it). Same numbers, fewer tokens per step."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class DistillArgs:
    """Settings of `train.objective: distill` (knowledge distillation from a teacher model)."""

    SECTION: ClassVar[str] = "distill"  # its YAML section, which range errors name

    teacher_path: str | None = None
    """The teacher: a model folder, a hub id, `embedded`, or a hone run folder (its adapter is
    merged in). Logit distillation needs the student's vocabulary (checked before anything runs)."""
    mode: Literal["logits", "sequence"] = "logits"
    """`logits`: match the teacher's next-token distribution on every answer token. `sequence`:
    the teacher answers the training prompts once (greedy, KV cache), the answers go through the
    data doctor and the student learns them by plain cross-entropy (any vocabulary)."""
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    """The divergence: forward_kl KL(teacher || student) (mean-seeking, the classic), reverse_kl
    KL(student || teacher) (mode-seeking), jsd the generalised Jensen-Shannon with `beta`."""
    beta: float = bounded(0.5, UNIT)
    """jsd: the mixture `beta * teacher + (1 - beta) * student`; 0 is forward KL, 1 reverse KL
    (TRL's GKD convention)."""
    temperature: float = bounded(1.0, POSITIVE)
    """Both distributions are softened by this before the divergence (the cross-entropy is not);
    above 1 shows the student more of the teacher's ranking of the wrong tokens."""
    weight: float = bounded(0.5, UNIT)
    """loss = weight * divergence + (1 - weight) * cross-entropy on the labelled answer tokens; at 0
    (and no on-policy share) the run is cross-entropy alone and the teacher's top-k is not computed
    (with `transfer`: learning the teacher's answers)."""
    top_k: int = bounded(64, NON_NEGATIVE)
    """>0: the teacher's top-k log-probabilities (plus the rest of its mass as one bucket) are
    computed once before training and cached in the run folder (`teacher_topk/`); the teacher is
    then unloaded. 0: the teacher runs live, each step, over the full vocabulary."""
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16", "nf4"] = "auto"
    """How the teacher is held (it never trains): `auto` is the cheapest dtype the device
    multiplies fast; `nf4` is 4-bit (bitsandbytes, a CUDA device)."""
    on_policy_ratio: float = bounded(0.0, UNIT)
    """GKD's lambda: the share of micro-batches where the student answers the prompts itself
    (sampled) and the teacher scores those answers, against teacher-forced data. Needs top_k=0."""
    max_new_tokens: int = bounded(128, AT_LEAST_ONE)
    """sequence mode and on-policy samples: longest generated answer."""
    generation_batch_size: int = bounded(16, AT_LEAST_ONE)
    """Prompts answered together (left-padded, KV cache)."""
    transfer: str | None = None
    """A JSONL file of more prompts than `data.train` has answers for (a transfer set): SFT rows
    (their answers are not used) or prompt-only rows (`{"prompt": ...}`, or `messages` ending in
    a user turn). The teacher answers them once, the data doctor checks the answers, and they
    join the training data; the labelled rows keep their own answers (logits mode: the
    teacher's top-k on every row). Prompts also in the eval set are left out."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class RLArgs:
    """Settings of the online RL objectives (`train.objective`: grpo, rloo; `hone.train.rl`).
    Each optimizer step samples `group_size` completions per prompt, scores them with `rewards`
    and moves the policy towards the completions that beat their group."""

    SECTION: ClassVar[str] = "rl"  # its YAML section, which range errors name

    group_size: int = bounded(8, Range(2))
    """Completions sampled per prompt (TRL's num_generations); advantages compare within a group."""
    max_new_tokens: int = bounded(64, AT_LEAST_ONE)
    """Longest completion in tokens; one that runs into it without ending is `truncated` in the log."""
    temperature: float = bounded(1.0, POSITIVE)
    """Sampling temperature; the loss scores completions at the same temperature, as TRL does."""
    top_p: float = bounded(1.0, PROBABILITY_MASS)
    beta: float = bounded(0.04, NON_NEGATIVE)
    """Weight of the KL term to the reference, the model with the adapter switched off (no second
    copy): the base, or the starting model with `init_from`. grpo: k3 estimator per token, added to
    the loss; rloo: summed per completion and subtracted from its reward. 0 skips the reference pass."""
    epsilon: float = bounded(0.2, POSITIVE)
    """PPO clipping of the probability ratio to [1 - epsilon, 1 + epsilon]."""
    loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo"
    """grpo's normalisation: `grpo` each completion's mean over its tokens, then the mean over
    completions (per-sequence); `bnpo` the mean over all completion tokens of the batch (per-token);
    `dr_grpo` the sum over tokens / (completions x max_new_tokens) (Dr. GRPO, no length bias)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """grpo: advantages are reward - group mean, divided by the group's (`group`) or the batch's
    (`batch`) standard deviation, or not divided (`none`, as Dr. GRPO recommends)."""
    normalize_advantages: bool = False
    """rloo: scale the leave-one-out advantages to mean 0 and standard deviation 1 over the batch."""
    rewards: list[dict] = field(default_factory=lambda: [{"name": "json_valid", "weight": 1.0}])
    """What is rewarded, a weighted sum: entries `{name, weight, args}`; a name is a built-in
    (json_valid, json_schema with args.schema, field_match, regex with args.pattern,
    length_penalty with args.max_chars), `reward_model` with args.path (a `train.objective:
    reward` run) or `module:function` (`function(completion, reference, **args) -> float`).
    See `hone.train.rewards`."""
    init_from: str | None = None
    """A finished LoRA run folder (e.g. a short SFT run) whose adapter is the starting point that
    trains. It is merged into the base weights for the run, so the KL reference (adapter off) is
    the starting model; the run saves one LoRA adapter holding both (their ranks side by side)."""
    length_warning: float = bounded(2.0, Range(1, low_open=True))
    """Warn when the mean completion length grows past this many times its first steps' mean
    (or half the completions run into max_new_tokens): a sign the reward is being gamed."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class ReplayArgs:
    SECTION: ClassVar[str] = "replay"  # its YAML section, which range errors name

    data: str | None = None
    """General text or chat data mixed into training against catastrophic forgetting: a .txt
    (or .txt.gz) holds documents separated by `<|endoftext|>` when it contains one, else one
    document per non-empty line; or chat/text JSONL (hone.data.replay.read_replay_examples)."""
    fraction: float = bounded(0.1, FRACTION)
    """Share of the trained examples that come from `data`, chosen by seed."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class EvalArgs:
    """How a model is evaluated and compared with its base (`hone eval`, `hone compare`, end of `hone train`)."""

    SECTION: ClassVar[str] = "eval"  # its YAML section, which range errors name

    compare: bool = True
    """Compare the tuned model with its base at the end of `hone train` (report.html + report.json)."""
    data: str | None = None
    """Evaluation file; default: `data.eval`, else the held-out split of `data.train`."""
    limit: int | None = bounded(None, AT_LEAST_ONE)
    """Evaluate at most this many examples (the first ones)."""
    max_new_tokens: int = bounded(64, AT_LEAST_ONE)
    temperature: float = bounded(0.0, NON_NEGATIVE)
    """0 means greedy decoding (deterministic); above 0 samples with `top_p`."""
    top_p: float = bounded(1.0, PROBABILITY_MASS)
    batch_size: int = bounded(16, AT_LEAST_ONE)
    """Prompts generated together (left-padded, with a KV cache)."""
    schema: str | None = None
    """JSON-schema file that answers must satisfy (`schema_valid`)."""
    regex: str | None = None
    """Regular expression every answer should fully match (`regex_match`)."""
    metrics: list[str] = field(default_factory=list)
    """Custom metrics as `module:function`; `function(prediction, reference) -> float | dict[str, float]`."""
    general: str | None = "default"
    """General text for the forgetting check: a .txt/.txt.gz file (documents separated by
    `<|endoftext|>` lines), `default` for the embedded corpus's held-out slice, or null to skip."""
    general_max_tokens: int = bounded(32768, AT_LEAST_ONE)
    """Tokens of `general` scored (the start of the file); bounds the check's time."""
    forgetting_threshold: float = bounded(0.10, NON_NEGATIVE)
    """Flag forgetting when general-text perplexity rises by more than this fraction."""
    judge: str | None = None
    """Optional judge model (path or hub id) for pairwise LLM-as-judge preference; null to skip."""
    judge_rubric: str | None = None
    """Rubric text (or a file holding it) for the judge; a short default is used when null."""
    reward_model: str | None = None
    """Reward model folder (a one-label sequence-classification model, or a SEQ_CLS adapter, as
    `train.objective: reward` saves it) that judges tuned's answers against base's: the report's
    win rate with a bootstrap CI; null to skip."""
    bootstrap_samples: int = bounded(2000, AT_LEAST_ONE)
    seed: int = 0
    """Seeds the bootstrap, the permutation test and sampled decoding."""
    primary_metric: str | None = None
    """The metric the verdict leads with (e.g. `chrf`); default `field_exact_match` for JSON
    answers, else `token_f1`. `hone adapters combine` holds each specialist to it."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class RunConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    adapter: AdapterArgs = field(default_factory=AdapterArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    replay: ReplayArgs = field(default_factory=ReplayArgs)
    preference: PreferenceArgs = field(default_factory=PreferenceArgs)
    rl: RLArgs = field(default_factory=RLArgs)
    distill: DistillArgs = field(default_factory=DistillArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> RunConfig:
    """Build a RunConfig from defaults <- `base` <- YAML file <- `key.sub=value` overrides."""
    raw: dict[str, Any] = {}
    if base:
        _merge(raw, base)
    if path is not None:
        _merge(raw, read_yaml(path))
    for item in overrides:
        _merge(raw, parse_override(item))
    return build(RunConfig, raw, prefix="")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HoneError(f"config file not found: {path}", "check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise HoneError(f"{path}{line}: malformed YAML: {problem}", "fix the YAML syntax at that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HoneError(f"{path}: expected a mapping of sections (model:, data:, ...), got {type(data).__name__}")
    return data


def parse_override(item: str) -> dict[str, Any]:
    """`train.learning_rate=1e-4` -> {"train": {"learning_rate": 1e-4}} (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise HoneError(f"override {item!r} is not of the form section.key=value", "e.g. train.learning_rate=1e-4")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def build(cls, raw: Any, prefix: str):
    """Instantiate dataclass `cls` from a dict, checking every key and type."""
    name = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise HoneError(f"{name}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise HoneError(f"unknown config key {prefix}{unknown[0]}", f"valid keys under {name}: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Return `value` if it fits `hint` (int widens to float), else raise naming the key."""
    ok, out = _fits(value, hint)
    if not ok:
        raise HoneError(f"config key {key}: {value!r} is not {_describe(hint)}", f"set {key} to {_describe(hint)}")
    return out


def _fits(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, out = _fits(value, arm)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return value in typing.get_args(hint), value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, None
        results = [_fits(v, item) for v in value]
        return all(ok for ok, _ in results), [out for _, out in results]
    if hint is type(None):
        return value is None, None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + "/".join(map(str, typing.get_args(hint)))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
