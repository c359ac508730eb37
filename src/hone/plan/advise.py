"""`hone advise`: should you fine-tune at all, and how. The seeds' decision framework as a pure function.

The order the seeds insist on is prompt engineering -> few-shot -> RAG -> fine-tuning:
fine-tuning changes how a model behaves (style, format, terminology, reliability), not what it
knows, and it is not suitable for new or changing knowledge, rarely used features, tasks
without clear examples, or complex reasoning. `advise` walks that flowchart in order; each
rule is one row of `RULES` (first match wins) so a test can cover every branch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from hone.model.load import ASSETS
from hone.model.methods import get as get_method

GOALS = ("behaviour", "style", "format", "terminology", "knowledge", "general")
BEHAVIOUR_GOALS = ("behaviour", "style", "format", "terminology")


@dataclass
class Answers:
    """What the advisor asks. Unknowns default to the cautious answer."""

    needs_current_knowledge: bool = False
    """Does the task need current information or internal documents the model has not seen?"""
    frequently_changing: bool = False
    """Does that information change often (prices, inventory, policies, news)?"""
    goal: Literal["behaviour", "style", "format", "terminology", "knowledge", "general"] = "general"
    """What should change: behaviour, style/tone, output format, domain terminology, knowledge, or nothing specific."""
    prompt_works: bool = False
    """Does a good prompt (instructions, maybe a few examples) already give acceptable results?"""
    n_examples: int = 0
    """Good input -> output examples you have (or `dataset`, counted with hone's data checks)."""
    dataset: str | None = None
    clear_examples: bool = True
    """Can you write down the correct answer for a typical input?"""
    complex_reasoning: bool = False
    """Does the task depend on long multi-step reasoning (maths, planning, chain-of-thought)?"""
    rarely_used: bool = False
    """Will the feature be used rarely (a handful of calls a day)?"""
    gpu_memory_gb: float = 0.0
    """Memory of the largest GPU you can use; 0 = CPU only."""
    model_params_b: float = 7.0
    """Size of the base model you have in mind, in billions of parameters."""
    low_latency: bool = False
    """Must answers be fast or cheap per call (a smaller specialised model, no retrieval step)?"""
    low_budget: bool = True
    """Is the training budget tight (one consumer GPU, no multi-GPU runs)?"""
    license_allows: bool = True
    """Does the base model's license allow your intended use (e.g. commercial)?"""
    many_tasks: bool = False
    """Will one base serve many tasks (or customers), each with its own small adapter to store and switch?"""
    keep_lower_layers: bool = False
    """Is the task close to what the base already does, so its lower layers should stay as they are
    (the transfer-learning picture: only the top layers adapt)?"""
    lora_underfits: bool = False
    """Did a LoRA run underfit: held-out loss stuck well above what you need while a full run does better?"""


@dataclass
class Advice:
    recommendation: Literal["prompt engineering", "few-shot", "RAG", "fine-tuning", "RAG + fine-tuning", "revisit requirements"]
    reasons: list[str]
    next_steps: list[str]
    rule: str
    """Which row of the decision table decided (for tests and --json)."""
    method: str | None = None
    """LoRA, QLoRA, full or distillation, when fine-tuning."""
    config_yaml: str | None = None
    """A starting config `hone train` accepts, when fine-tuning."""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the advice or its config cannot do yet, one line each."""

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [f"recommendation: {self.recommendation}" + (f" ({self.method})" if self.method else "")]
        lines += ["why:"] + [f"  - {r}" for r in self.reasons]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"note: {n}" for n in self.notes]
        lines += ["next steps:"] + [f"  {i}. {s}" for i, s in enumerate(self.next_steps, 1)]
        if self.config_yaml:
            lines += ["starting config (save as run.yaml, then `hone plan run.yaml` and `hone train run.yaml`):", self.config_yaml]
        return "\n".join(lines)


def _needs_rag(a: Answers) -> bool:
    return a.needs_current_knowledge or a.frequently_changing or a.goal == "knowledge"


def _wants_behaviour(a: Answers) -> bool:
    return a.goal in BEHAVIOUR_GOALS


Rule = tuple[str, Callable[[Answers], bool], Callable[[Answers], Advice]]


def _prompt(a: Answers) -> Advice:
    return Advice("prompt engineering", ["a good prompt already gives acceptable results: fine-tuning would add cost "
                                         "(data, compute, retraining on every base-model update) for no gain"],
                  ["write the prompt down as a versioned template", "collect 20-50 real inputs with expected outputs as a test set",
                   "re-check with `hone eval` when the base model changes"], "prompt_works")


def _rag(a: Answers) -> Advice:
    reasons = []
    if a.frequently_changing:
        reasons.append("the information changes often: a fine-tuned model would be out of date after each change (seeds)")
    if a.needs_current_knowledge or a.goal == "knowledge":
        reasons.append("the task needs knowledge the model does not have: fine-tuning handles factual knowledge injection poorly; retrieval adds it at query time")
    return Advice("RAG", reasons, ["index your documents (chunks of ~200-500 tokens) in a search index or vector store",
                                   "put the top few passages into the prompt with instructions to answer only from them",
                                   "measure answer accuracy on 50 real questions before considering anything else"], "needs_knowledge")


def _rag_ft(a: Answers) -> Advice:
    advice = _fine_tune(a)
    advice.recommendation = "RAG + fine-tuning"
    advice.rule = "knowledge_and_behaviour"
    advice.reasons = _rag(a).reasons + [f"and the goal ({a.goal}) is about how the model answers, which fine-tuning is for: "
                                        "RAG for knowledge, fine-tuning for style (seeds)"] + advice.reasons[1:]
    advice.next_steps = ["build retrieval first (index documents, pass the top passages in the prompt)"] + \
        [s.replace("your examples", "your examples (with retrieved passages in the prompt)") for s in advice.next_steps]
    return advice


def _few_shot(a: Answers) -> Advice:
    reason = (f"only {a.n_examples} good examples: fewer than 50 is too few to fine-tune (seeds); "
              "a handful of them in the prompt usually teaches the pattern")
    return Advice("few-shot", [reason], ["put 3-8 of your best, most varied examples in the prompt",
                                         "keep collecting: at 50-100 clear examples fine-tuning starts to pay, 500-1000 is the optimum",
                                         "run `hone advise` again when you have them"], "too_few_examples")


def _no_examples(a: Answers) -> Advice:
    return Advice("prompt engineering", ["you cannot write down correct answers, so there is no dataset to fine-tune on (seeds)"],
                  ["describe the desired output in the prompt with a rubric", "collect outputs you judge good to build examples later"],
                  "no_clear_examples")


def _reasoning(a: Answers) -> Advice:
    return Advice("prompt engineering", ["the task depends on complex reasoning: fine-tuning may degrade chain-of-thought (seeds)",
                                         "a stronger base model with step-by-step prompting is the safer lever"],
                  ["prompt for step-by-step reasoning and a final answer in a fixed format",
                   "try a larger base model before training one", "add few-shot worked examples"], "complex_reasoning")


def _rarely(a: Answers) -> Advice:
    return Advice("few-shot", ["the feature is rarely used: training and maintenance costs are not justified by the usage (seeds)"],
                  ["use a prompt with a few examples on a general model", "revisit if usage grows"], "rarely_used")


def _revisit(a: Answers) -> Advice:
    return Advice("revisit requirements", ["prompting is not good enough, but the goal is neither behaviour, style, format nor "
                                           "terminology: fine-tuning changes how a model behaves, not what it knows (seeds)"],
                  ["state what exactly is wrong with the prompted outputs (format? tone? facts? reasoning?)",
                   "then run `hone advise` again with that goal"], "revisit")


def _fine_tune(a: Answers) -> Advice:
    method, why = choose_method(a)
    reasons = [f"the goal ({a.goal}) is about how the model answers, prompting is not enough, and you have "
               f"{a.n_examples} examples: this is what fine-tuning is for (seeds)", why]
    warnings = []
    if a.n_examples < 500:
        warnings.append(f"{a.n_examples} examples is workable; 500-1000 carefully checked examples is the seeds' optimum")
    if a.n_examples > 10_000:
        warnings.append("more than 10K examples rarely yields proportional improvement: curate quality first")
    if not a.license_allows:
        warnings.append("the base model's license does not allow your use: pick a permissively licensed base (e.g. Apache-2.0)")
    steps = ["check your examples: `hone check DATA.jsonl`", "save the config below and estimate the run: `hone plan run.yaml`",
             "train: `hone train run.yaml`", "compare against the base model on held-out data before shipping"]
    notes = [DISTILLATION_NOTE.format(size=a.model_params_b)] if method == "distillation" else []
    reasons += [line for line in [measured_row(method)] if line]
    return Advice("fine-tuning", reasons, steps, "fine_tune", method=method, config_yaml=starting_config(a, method),
                  warnings=warnings, notes=notes)


MEASURED = ASSETS / "methods.json"
"""The methods table measured on the demo task (written by bench/methods.py with docs/methods.md)."""


def measured_row(method: str, path: Path = MEASURED) -> str | None:
    """The recommended method's measured row of docs/methods.md, as one line; None when unmeasured."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    row = next((r for r in table.get("rows", []) if r.get("method") == method and "error" not in r), None)
    if row is None:
        return None
    peft = row.get("peft", {}).get("tokens_per_s")
    quality = f"field exact match {row['field_exact_match']:.3f}" if row.get("field_exact_match") is not None else ""
    forgetting = f", forgetting {row['forgetting']:+.1%}" if row.get("forgetting") is not None else ""
    speed = f"{row['tokens_per_s']:.0f} tok/s" + (f" (plain PEFT {peft:.0f})" if peft else "")
    return (f"measured on hone's demo task ({'smoke run, ' if table.get('quick') else ''}docs/methods.md): {method} trains "
            f"{row['trainable']:,} parameters at {speed}, peak {row['peak_rss_mb']:.0f} MiB, {quality}{forgetting}")


# The student needs the teacher's tokenizer for logit distillation: say how to get one.
DISTILLATION_NOTE = ("the config below distils: model.path is the small student (a 1-3B model with the {size:g}B "
                     "teacher's tokenizer, or one cut from the teacher: `hone derive TEACHER --keep N --out student`), "
                     "distill.teacher_path the {size:g}B teacher; with another tokenizer set distill.mode=sequence")


def choose_method(a: Answers) -> tuple[str, str]:
    """LoRA, QLoRA, full or distillation from hardware and goals (the seeds' method table)."""
    need_lora = a.model_params_b * 2 * 1.15 + 1  # bf16 weights + ~15% adapter/activation headroom, GB
    need_full = a.model_params_b * 18  # fp32 master weights, grads, AdamW (16 B/param) + activations
    if a.low_latency and a.model_params_b > 3:
        return "distillation", (f"you need fast, cheap answers: train a smaller model (1-3B) on a larger model's outputs "
                                f"(knowledge distillation) instead of serving a {a.model_params_b:g}B model")
    special = _special_method(a, fits_bf16=a.gpu_memory_gb <= 0 or a.gpu_memory_gb >= need_lora)
    if special:
        return special
    if a.gpu_memory_gb <= 0:
        return "lora", ("no GPU: LoRA on a small model (hone's embedded model or a ~0.5B one) trains on a CPU; "
                        f"a {a.model_params_b:g}B model needs a GPU")
    if a.gpu_memory_gb >= need_full and a.n_examples >= 5000 and not a.low_budget:
        return "full", f"{a.gpu_memory_gb:g} GB holds full fine-tuning of {a.model_params_b:g}B, and thousands of examples justify it"
    if a.gpu_memory_gb >= need_lora:
        return "lora", f"{a.gpu_memory_gb:g} GB holds a {a.model_params_b:g}B model in bf16 plus LoRA adapters (LoRA on 7B needs ~16 GB, seeds)"
    return "qlora", (f"{a.gpu_memory_gb:g} GB is too small for {a.model_params_b:g}B in bf16 (~{need_lora:.0f} GB): "
                     "QLoRA keeps the base in 4-bit, about a quarter of the memory")


def _special_method(a: Answers, fits_bf16: bool) -> tuple[str, str] | None:
    """The adapter family's cases (issue 24), each where its reason applies; None: the memory table decides."""
    if a.many_tasks:
        if a.model_params_b >= 10:
            return "prompt_tuning", ("many tasks on one base: prompt tuning stores ~20 vectors per task (tens of KB, "
                                     "nothing in the weights), and at 10B+ it matches full fine-tuning (Lester et al.)")
        return "ia3", ("many tasks on one base: IA3 trains one scale per key, value and MLP unit, about 0.01% of the "
                       "weights (KB to a few MB per task), and it merges into the base like LoRA; prompt tuning only "
                       "catches up on 10B+ models")
    if a.lora_underfits:
        base = "lora" if fits_bf16 else "qlora"
        return "dora", (f"LoRA underfits: DoRA ({base} + adapter.use_dora) trains each weight's magnitude apart from its "
                        "direction, closer to full fine-tuning's updates at LoRA's memory (plus one vector per layer)")
    if a.keep_lower_layers and fits_bf16:
        return "freeze", ("the task is close to the base's own: full fine-tuning of the top layers only keeps the lower "
                          "layers' general features as they are, with no gradient, optimizer state or activations kept below them")
    return None


VARIANT_OF = {"distillation": "lora", "dora": "lora"}
"""Advice names that train as another method (with the keys `method_keys` writes)."""


def method_keys(a: Answers, method: str) -> list[str]:
    """The `adapter` lines a recommended method needs beyond its name."""
    if method == "dora":
        return ["  use_dora: true"]
    if method == "freeze":
        return ["  train_layers: 4  # the top 4 decoder layers train; lower ones stay as loaded"]
    if method == "prompt_tuning":
        return ["  num_virtual_tokens: 100  # its default; trains at 10x train.learning_rate (adapter.lr_ratio)"]
    return []


def starting_config(a: Answers, method: str) -> str:
    """YAML for `hone train`: conservative defaults scaled to the data size."""
    train_method = VARIANT_OF.get(method, method)  # the student trains with LoRA; DoRA is LoRA with a key
    if method == "dora" and 0 < a.gpu_memory_gb < a.model_params_b * 2 * 1.15 + 1:
        train_method = "qlora"
    trains_base = get_method(train_method).trains_base
    data = a.dataset or "train.jsonl"
    epochs = 3 if a.n_examples < 1000 else 2 if a.n_examples < 5000 else 1
    lr = "2.0e-5" if trains_base else "2.0e-4"  # moving every weight calls for a 10x smaller step
    model = "embedded" if a.gpu_memory_gb <= 0 else "PATH/TO/BASE_MODEL  # a local Hugging Face folder or org/name"
    lines = [
        "model:", f"  path: {model}",
        "data:", f"  train: {data}", "  max_length: 512",
        "adapter:", f"  method: {train_method}",
    ]
    if get_method(train_method).size is get_method("lora").size:  # LoRA's family: its rank and scale
        lines += ["  lora_rank: 16" if a.n_examples >= 1000 else "  lora_rank: 8", "  lora_alpha: 16.0"]
    lines += method_keys(a, method)
    lines += ["train:", "  output_dir: runs/advised", f"  epochs: {epochs}", "  batch_size: 8", f"  learning_rate: {lr}",
              f"  gradient_checkpointing: {'true' if a.gpu_memory_gb and a.gpu_memory_gb < 24 else 'false'}"]
    if method == "distillation":
        lines[1] = "  path: PATH/TO/STUDENT  # 1-3B, the teacher's tokenizer (or `hone derive TEACHER --keep N --out DIR`)"
        lines += ["  objective: distill", "distill:", "  teacher_path: PATH/TO/TEACHER  # the large model, or a hone run folder",
                  "  top_k: 64  # the teacher's top-64 log-probabilities, computed once and cached in the run folder",
                  "  weight: 0.5  # half divergence from the teacher, half cross-entropy on the answers"]
    return "\n".join(lines) + "\n"


RULES: list[Rule] = [
    ("prompt_works", lambda a: a.prompt_works and not _needs_rag(a), _prompt),
    ("knowledge_and_behaviour", lambda a: _needs_rag(a) and _wants_behaviour(a) and a.n_examples >= 50 and a.clear_examples, _rag_ft),
    ("needs_knowledge", _needs_rag, _rag),
    ("no_clear_examples", lambda a: not a.clear_examples, _no_examples),
    ("complex_reasoning", lambda a: a.complex_reasoning, _reasoning),
    ("rarely_used", lambda a: a.rarely_used, _rarely),
    ("revisit", lambda a: not _wants_behaviour(a), _revisit),
    ("too_few_examples", lambda a: a.n_examples < 50, _few_shot),
    ("fine_tune", lambda a: True, _fine_tune),
]
"""The seeds' flowchart, in order. First match wins."""


def advise(answers: Answers) -> Advice:
    """One recommendation for `answers`, with reasons and next steps (pure: no I/O)."""
    for _, applies, decide in RULES:
        if applies(answers):
            advice = decide(answers)
            if not answers.license_allows and "license" not in " ".join(advice.warnings):
                advice.warnings.append("the base model's license does not allow your use: choose another base model")
            return advice
    raise AssertionError("the last rule always applies")
