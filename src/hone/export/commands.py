"""The export commands' printing: what was written, and the parity verdict."""

from __future__ import annotations

from pathlib import Path

from hone.errors import HoneError
from hone.export.gguf_export import export_gguf


def gguf_export_command(run: str, out: str, gguf_type: str, modelfile: bool, parity_examples: int) -> int:
    result = export_gguf(run, out, gguf_type, modelfile, parity_examples)
    size_mb = result.gguf_path.stat().st_size / 1e6
    types = ", ".join(f"{count} {name}" for name, count in sorted(result.tensor_types.items()))
    print(f"GGUF written to {result.gguf_path} ({size_mb:.1f} MB; tensors: {types})")
    if result.modelfile:
        print(f"Ollama Modelfile: {result.modelfile}  (ollama create NAME -f {result.modelfile})")
    print(result.parity.line())
    report = Path(out) / "parity.json"
    if not result.parity.passed:
        raise HoneError(f"the exported model does not tokenize as training did: {'; '.join(result.parity.failures)}",
                        f"see {report} for the first differences")
    print(f"(parity report: {report})")
    return 0
