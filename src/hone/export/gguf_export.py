"""`hone export RUN --format gguf --out DIR`: the run's merged model as one GGUF file for
llama.cpp (and Ollama, LM Studio, ...), an Ollama Modelfile beside it, and the parity check
of the two against training, written to DIR/parity.json. A failed check fails the export.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import gguf

from hone.data.render import RenderError, render_conversation
from hone.errors import HoneError
from hone.export import ollama
from hone.export.gguf_model import FILE_TYPES, family_of, write_hparams, write_tensors
from hone.export.gguf_vocab import adds_around, portable_template, write_vocab
from hone.export.merge import merged_model
from hone.export.parity import Parity, check_parity, sample_examples, taught_end_of_turn

K_QUANTS = {"q2_k": "Q2_K", "q3_k_m": "Q3_K_M", "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M",
            "q5_k_s": "Q5_K_S", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}
"""Types llama.cpp's own `llama-quantize` makes from an f16 file (gguf-py has no k-quantizer)."""
GGUF_TYPES = [*FILE_TYPES, *K_QUANTS]


@dataclass
class GGUFExport:
    gguf_path: Path
    modelfile: Path | None
    parity: Parity
    tensor_types: dict[str, int]


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template closes an assistant turn with (what training taught the
    model to stop on), found by rendering a probe conversation the way training does."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        probe = render_conversation(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}])
    except RenderError:
        return None
    ends = taught_end_of_turn(probe)
    return next(iter(ends)) if len(ends) == 1 else None


def write_gguf(path: Path, model, tokenizer, file_type: str, end_of_turn: int | None, name: str) -> dict[str, int]:
    family = family_of(model.config)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[family.arch])
    writer.add_name(name)
    write_hparams(writer, model.config, family, file_type)
    write_vocab(writer, tokenizer, model.config.vocab_size, end_of_turn)
    counts = write_tensors(writer, model, family, file_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def k_quantize(source: Path, target: Path, gguf_type: str) -> None:
    binary = shutil.which("llama-quantize")
    if binary is None:
        raise HoneError(f"--gguf-type {gguf_type} needs llama.cpp's llama-quantize on PATH (gguf-py writes no k-quants)",
                        "build llama.cpp (cmake --build build --target llama-quantize) and put it on PATH, or use q8_0")
    done = subprocess.run([binary, str(source), str(target), K_QUANTS[gguf_type]], capture_output=True, text=True)
    if done.returncode != 0:
        raise HoneError(f"llama-quantize failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}",
                        "run it by hand on the f16 file to see the whole error")


def plan_modelfile(tokenizer, examples) -> tuple[ollama.TurnFormat, str | None, str]:
    """Decide the Modelfile before anything is written: an untranslatable template fails fast."""
    bos = tokenizer.bos_token or ""
    fmt = ollama.match_format(portable_template(tokenizer.chat_template), bos, drop_bos=adds_around(tokenizer)[0])
    system, why = ollama.trained_system_prompt(examples)
    return fmt, system, why


def export_gguf(run_dir: str | Path, out_dir: str | Path, gguf_type: str = "f16", modelfile: bool = True,
                parity_examples: int = 64, engine: str = "auto") -> GGUFExport:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if gguf_type not in GGUF_TYPES:
        raise HoneError(f"unknown --gguf-type {gguf_type}", f"choose one of {', '.join(GGUF_TYPES)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HoneError(f"{out_dir} exists and is not empty", "choose a new --out folder")
    model, tokenizer, config = merged_model(run_dir, "float32", whole_runs=True)
    family_of(model.config)  # an unsupported model is refused before anything is written
    examples = sample_examples(config, parity_examples)
    plan = plan_modelfile(tokenizer, examples) if modelfile and tokenizer.chat_template else None
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.resolve().name
    path = out_dir / f"{name}-{gguf_type}.gguf"
    end_of_turn = end_of_turn_id(tokenizer)
    if gguf_type in K_QUANTS:
        unquantized = out_dir / f"{name}-f16.gguf"
        counts = write_gguf(unquantized, model, tokenizer, "f16", end_of_turn, name)
        k_quantize(unquantized, path, gguf_type)
        unquantized.unlink()
        counts = {K_QUANTS[gguf_type]: sum(counts.values())}
    else:
        counts = write_gguf(path, model, tokenizer, gguf_type, end_of_turn, name)
    modelfile_path = stops = None
    if plan is not None:
        fmt, system, _ = plan
        stops = [tokenizer.convert_ids_to_tokens(i) for i in sorted({tokenizer.eos_token_id, end_of_turn} - {None})]
        modelfile_path = out_dir / "Modelfile"
        modelfile_path.write_text(ollama.modelfile_text(path.name, fmt, stops, system))
        stops = ollama.read_stops(modelfile_path.read_text())
    parity = check_parity(path, config, tokenizer, stops, parity_examples, engine)
    if plan is not None:
        parity.notes.append(f"Modelfile: {plan[0].name} turn format; system prompt: {plan[2]}")
    (out_dir / "parity.json").write_text(json.dumps(parity.as_dict(), indent=2) + "\n")
    return GGUFExport(path, modelfile_path, parity, counts)
