"""`hone derive TEACHER --keep N | --layers 0,3 --out DIR`: a smaller student cut from a teacher.

DistilBERT-style: the student keeps the teacher's embeddings, a subset of its decoder layers
(renumbered in order), the final norm and the output head, so it starts close to the teacher
and shares its tokenizer (what logit distillation needs). A hone run folder is merged first
(its trained weights folded into the base). The folder written is a plain Hugging Face model
(safetensors, config.json with the new layer count, tokenizer) that any loader reads.

What it costs: the cut is a copy (seconds, memory for the teacher once); the student answers
worse than the teacher until it is trained (distillation or SFT), and its forward pass costs
about (kept layers / teacher layers) of the teacher's in the decoder, the head unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hone.errors import HoneError
from hone.model.teacher import load_whole


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` layer indices out of `total`, first and last included (keep 1: the first)."""
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def parse_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HoneError(f"--layers {text!r} is not a comma-separated list of layer numbers", "e.g. --layers 0,3") from None


def choose_layers(total: int, layers: list[int] | None, keep: int | None) -> list[int]:
    """The teacher layers the student keeps, checked against the teacher's `total`."""
    if (layers is None) == (keep is None):
        raise HoneError("hone derive needs exactly one of --layers and --keep", "e.g. --keep 2, or --layers 0,3")
    if keep is not None:
        if not 1 <= keep < total:
            raise HoneError(f"--keep {keep}: the teacher has {total} layers", f"keep between 1 and {total - 1}")
        return evenly_spaced(total, keep)
    bad = [i for i in layers if not 0 <= i < total]
    if bad or not layers or len(set(layers)) != len(layers):
        raise HoneError(f"--layers {','.join(map(str, layers))}: the teacher has layers 0..{total - 1}",
                        "name each kept layer once, in range")
    return sorted(layers)


def cut_layers(model, kept: list[int]):
    """`model` with only the decoder layers `kept` (in place), renumbered for the KV cache."""
    decoder = model.model
    decoder.layers = torch.nn.ModuleList([decoder.layers[i] for i in kept])
    for index, layer in enumerate(decoder.layers):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    config = model.config
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in kept]
    config.num_hidden_layers = len(kept)
    return model


def parameters_and_bytes(model) -> tuple[int, int]:
    """(unique parameters, bytes they take): tied embeddings counted once."""
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in seen.values()), sum(p.numel() * p.element_size() for p in seen.values())


def derive(teacher: str, out: str | Path, layers: list[int] | None = None, keep: int | None = None,
           dtype: str = "float32") -> dict:
    """Write the student to `out`; returns what it kept and the sizes of both models."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise HoneError(f"{out} exists and is not empty", "choose a new --out folder")
    try:
        model, tokenizer, _ = load_whole(teacher, dtype)
    except HoneError as exc:
        raise HoneError(f"hone derive TEACHER: {exc.message}", "pass a model folder, hub id, `embedded` or hone run folder") from None
    total = model.config.num_hidden_layers
    kept = choose_layers(total, layers, keep)
    before = parameters_and_bytes(model)
    student = cut_layers(model, kept)
    after = parameters_and_bytes(student)
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {"teacher": str(teacher), "teacher_layers": total, "kept_layers": kept,
               "teacher_parameters": before[0], "student_parameters": after[0],
               "teacher_bytes": before[1], "student_bytes": after[1], "dtype": dtype}
    (out / "derived_from.json").write_text(json.dumps(summary, indent=1))
    return summary


def derive_command(args) -> int:
    layers = parse_layers(args.layers) if args.layers else None
    summary = derive(args.teacher, args.out, layers, args.keep, args.dtype)
    print(f"student: layers {summary['kept_layers']} of the teacher's {summary['teacher_layers']}")
    print(f"  teacher {summary['teacher_parameters']:,} parameters, {summary['teacher_bytes'] / 2**20:.1f} MiB ({args.dtype})")
    print(f"  student {summary['student_parameters']:,} parameters, {summary['student_bytes'] / 2**20:.1f} MiB "
          f"({summary['student_parameters'] / summary['teacher_parameters']:.0%} of the teacher)")
    print(f"written to {args.out}; train it with train.objective=distill distill.teacher_path={args.teacher}")
    return 0
