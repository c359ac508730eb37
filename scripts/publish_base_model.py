"""Copy a finished `hone pretrain` run into src/hone/assets/base_model as the embedded model.

Weights are stored in bfloat16 (half the size; training upcasts what it trains), with a
generation config that stops at either end token and a model card stating the license.

    python scripts/publish_base_model.py runs/pretrain-embedded
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ASSET = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets" / "base_model"
CARD = """---
license: apache-2.0
language: en
pipeline_tag: text-generation
---
# hone embedded base model

A {params:,}-parameter Llama-architecture model that hone pre-trains itself
(`hone pretrain examples/pretrain_embedded.yaml`) on its bundled, generated corpus
(`scripts/make_corpus.py`; every word produced by hone's own code, so the data is as
free as the code). Held-out loss after pre-training: {eval_loss:.4f} over {tokens:,} tokens.
It is the default model of `hone quickstart`: small enough to fine-tune in minutes on a CPU,
far too small to be useful beyond demonstrations and tests.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    tensors = load_file(args.run / "model.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, ASSET / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((args.run / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (ASSET / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # Chat replies end with <|im_end|> (id 2); plain text with <|endoftext|> (id 0).
    generation = {"eos_token_id": [0, 2], "pad_token_id": 3, "do_sample": False}
    (ASSET / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    summary = json.loads((args.run / "summary.json").read_text())
    params = sum(t.numel() for t in tensors.values())  # tied embeddings are stored once
    card = CARD.format(params=params, eval_loss=summary["final_eval_loss"], tokens=summary["trained_tokens"])
    (ASSET / "README.md").write_text(card)
    print(f"published {args.run} -> {ASSET} ({(ASSET / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
