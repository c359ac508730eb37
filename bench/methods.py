"""Which method? Every entry of the methods table (and the LoRA variants, which are keys of
`adapter`) trained on the demo task in one run on one machine, writing docs/methods.md.

    python bench/methods.py            # full: the quickstart recipe's 6 epochs per method
    python bench/methods.py --quick    # smoke run: 30 steps per method, 24 held-out tickets

For each method: trainable parameters, peak memory (the training process's resident set),
training tokens per second (labelled tokens, as `hone train` counts them), held-out field
exact match with its 95% bootstrap interval, the held-out reference answers' perplexity, chrF
of the generated answers with the 95% interval of its change from the base, and the
forgetting delta (general-text perplexity, tuned against base). Replay is off so the forgetting column is the method's own.
For each method PEFT also runs (its `wrap` returns a PeftModel), a plain transformers + PEFT
loop (padded batches, AdamW, the same model, data, PEFT config, batch size and dtype) trains
the same number of steps in its own process, and its tokens/s stands beside hone's.

Writes docs/methods.md, docs/methods.json and the copy the advisor quotes,
src/hone/assets/methods.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "src" / "hone" / "assets" / "quickstart.yaml"
DEMO = ROOT / "src" / "hone" / "assets" / "demo"
LORA_VARIANTS = [  # (label, adapter keys): each only where AdapterArgs has the key
    ("dora", {"use_dora": "true"}), ("rslora", {"use_rslora": "true"}), ("lora_plus", {"loraplus_lr_ratio": "16"}),
    ("pissa", {"init": "pissa"}), ("olora", {"init": "olora"}),
]


def variants() -> list[tuple[str, list[str]]]:
    """(label, overrides) for every registered method, then each LoRA variant hone exposes."""
    from hone.config import AdapterArgs
    from hone.model.methods import METHODS

    keys = {f.name for f in dataclasses.fields(AdapterArgs)}
    out = [(name, [f"adapter.method={name}"]) for name in METHODS]
    for label, extra in LORA_VARIANTS:
        if set(extra) <= keys:
            out.append((label, ["adapter.method=lora", *(f"adapter.{k}={v}" for k, v in extra.items())]))
    return out


def train_hone(label: str, overrides: list[str], out: Path, steps: int | None, limit: int | None) -> dict:
    """`hone train` on the demo task in its own process; the row of the table from its files."""
    run = out / label
    cmd = [sys.executable, "-m", "hone", "train", str(RECIPE), *overrides, f"train.output_dir={run}", f"data.train={DEMO / 'train.jsonl'}",
           f"data.eval={DEMO / 'eval.jsonl'}", f"eval.schema={DEMO / 'schema.json'}", "replay.data=null",
           "train.progress=false", "train.save_every=100000", "data.check=false"]
    cmd += [f"train.max_steps={steps}"] if steps else []
    cmd += [f"eval.limit={limit}"] if limit else []
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"method": label, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads((run / "report.json").read_text())
    field = report["deltas"].get("field_exact_match", {})
    forgetting = report.get("forgetting") or {}
    return {"method": label, "overrides": overrides, "trainable": summary["trainable_parameters"],
            "peak_rss_mb": summary["peak_rss_mb"], "tokens_per_s": summary["trained_tokens"] / summary["train_seconds"],
            "steps": summary["steps"], "field_exact_match": report["tuned"].get("field_exact_match"),
            "field_ci": field.get("tuned_ci"), "base_field_exact_match": report["baseline"].get("field_exact_match"),
            "forgetting": forgetting.get("relative_change"), "seconds": time.perf_counter() - started,
            "perplexity": report["tuned"].get("perplexity"), "base_perplexity": report["baseline"].get("perplexity"),
            "chrf": report["tuned"].get("chrf"), "chrf_delta_ci": _ci(report["deltas"].get("chrf", {})),
            "base_chrf": report["baseline"].get("chrf")}


def _ci(delta: dict) -> list[float] | None:
    """The 95% interval of tuned - base, as `hone compare` reports it."""
    return [delta["ci_low"], delta["ci_high"]] if "ci_low" in delta else None


def peft_config_of(overrides: list[str]):
    """The PEFT config hone's entry builds for these overrides, or None when it builds no PeftModel."""
    from peft import PeftModel

    from hone.config import load_config
    from hone.model.load import load_model
    from hone.model.methods import get

    config = load_config(RECIPE, overrides + [f"data.train={DEMO / 'train.jsonl'}"])
    model = get(config.adapter.method).wrap(load_model(config.model), config.adapter)
    return (config, model.peft_config["default"]) if isinstance(model, PeftModel) else (config, None)


def train_peft(overrides: list[str], steps: int) -> dict:
    """The plain loop, run in a child process (`--peft-child`) so its peak memory is its own."""
    done = subprocess.run([sys.executable, __file__, "--peft-child", json.dumps(overrides), str(steps)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peft_child(overrides: list[str], steps: int) -> None:
    """transformers + PEFT, no hone in the step: padded batches, AdamW, the recipe's batch size and lr."""
    import torch
    from peft import get_peft_model

    from hone.data.dataset import read_examples, require_clean
    from hone.data.render import IGNORE, render_example
    from hone.model.load import load_model, load_tokenizer
    from hone.model.methods import get

    config, peft_config = peft_config_of(overrides)
    tokenizer = load_tokenizer(config.model)
    path = str(DEMO / "train.jsonl")
    items = [render_example(tokenizer, e) for e in require_clean(read_examples(path), path)]
    # The base as hone's entry loads it (4-bit NF4 for QLoRA): transformers' from_pretrained either way.
    base = load_model(config.model, quantize_4bit=get(config.adapter.method).quantize_4bit)
    model = get_peft_model(base, peft_config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.train.learning_rate)
    size, tokens, seconds = config.train.batch_size, 0, 0.0
    for step in range(steps):
        batch = [items[(step * size + i) % len(items)] for i in range(size)]
        width = max(len(b.input_ids) for b in batch)
        ids = torch.tensor([b.input_ids + [tokenizer.pad_token_id] * (width - len(b.input_ids)) for b in batch])
        labels = torch.tensor([b.labels + [IGNORE] * (width - len(b.labels)) for b in batch])
        mask = torch.tensor([[1] * len(b.input_ids) + [0] * (width - len(b.input_ids)) for b in batch])
        started = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step pays for allocation and kernel choice, as hone's warm-up does
            seconds += time.perf_counter() - started
            tokens += int((labels != IGNORE).sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": tokens / max(seconds, 1e-9), "peak_rss_mb": peak, "steps": steps}))


def table(rows: list[dict]) -> str:
    lines = ["| method | trainable params | peak memory (MiB) | hone tok/s | PEFT loop tok/s | hone / PEFT | "
             "field exact match [95% CI] | held-out answer perplexity | chrF (tuned - base [95% CI]) | forgetting (general ppl) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | | | | | |")
            continue
        peft = r.get("peft", {})
        peft_speed = f"{peft['tokens_per_s']:.0f}" if "tokens_per_s" in peft else ("n/a (no PEFT format)" if not peft else "failed")
        ratio = f"{r['tokens_per_s'] / peft['tokens_per_s']:.2f}x" if "tokens_per_s" in peft else ""
        ci = f" [{r['field_ci'][0]:.3f}, {r['field_ci'][1]:.3f}]" if r.get("field_ci") else ""
        fem = f"{r['field_exact_match']:.3f}{ci}" if r.get("field_exact_match") is not None else "n/a"
        forget, ppl = _fmt(r.get("forgetting"), "+.1%"), _fmt(r.get("perplexity"), ".2f")
        chrf = "n/a"
        if r.get("chrf") is not None:
            ci = r.get("chrf_delta_ci")
            chrf = f"{r['chrf']:.3f} ({r['chrf'] - r['base_chrf']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}])" if ci else ")")
        lines.append(f"| {r['method']} | {r['trainable']:,} | {r['peak_rss_mb']:.0f} | {r['tokens_per_s']:.0f} | "
                     f"{peft_speed} | {ratio} | {fem} | {ppl} | {chrf} | {forget} |")
    return "\n".join(lines)


def write_docs(rows: list[dict], machine: str, quick: bool, seconds: float, note: str) -> None:
    command = "python bench/methods.py" + (" --quick" if quick else "")
    base = next((r["base_field_exact_match"] for r in rows if r.get("base_field_exact_match") is not None), None)
    base_ppl = next((r["base_perplexity"] for r in rows if r.get("base_perplexity") is not None), None)
    base_chrf = next((r["base_chrf"] for r in rows if r.get("base_chrf") is not None), None)
    doc = f"""# Which method? Measured on the demo task

Produced by one command, `{command}`, in one run on one machine ({seconds / 60:.0f} min):

    {machine}
{note}
Each method trains the quickstart recipe (LoRA rank 16 where the method has a rank, batch 16,
learning rate 3e-3 times the method's own ratio) on the demo task (600 support tickets ->
JSON) {"for 30 steps and is scored on 24 held-out tickets (`--quick`: a smoke run, not a ranking)" if quick else "for 6 epochs and is scored on the 120 held-out tickets"}, with replay
off so that the forgetting column is the method's own. Base model's field exact match: {base if base is not None else 'n/a'};
its held-out answer perplexity {_fmt(base_ppl, '.1f')} and chrF {_fmt(base_chrf, '.3f')}. Field exact match needs every
character of a field right; perplexity (of the reference answers) and chrF (character n-grams of
the generated answer) show a method that moves the model towards the task before it gets fields exact.
Peak memory is the training process's resident set (the model, the data, Python); tokens/s
counts labelled tokens per second of training. The PEFT loop is plain transformers + PEFT
(padded batches, AdamW, same model, data, PEFT config, batch size and dtype) in its own
process; "n/a" marks methods PEFT has no format for.

{table(rows)}

Numbers for the advisor: `src/hone/assets/methods.json` (written by the same command);
`hone advise` quotes the recommended method's row.
"""
    (ROOT / "docs" / "methods.md").write_text(doc)
    data = {"command": command, "machine": machine, "quick": quick, "note": note.strip(), "rows": rows}
    for path in (ROOT / "docs" / "methods.json", ROOT / "src" / "hone" / "assets" / "methods.json"):
        path.write_text(json.dumps(data, indent=1) + "\n")


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 steps per method, 24 held-out tickets")
    parser.add_argument("--only", nargs="+", metavar="METHOD", help="measure only these labels")
    parser.add_argument("--note", default="", help="a line for the doc, e.g. that the machine was shared")
    parser.add_argument("--peft-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peft_child:
        return peft_child(json.loads(args.peft_child[0]), int(args.peft_child[1]))
    from hone.engine.tiers import machine_line

    machine = machine_line()
    print(machine)
    steps, limit = (30, 24) if args.quick else (None, None)
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in variants():
            if args.only and label not in args.only:
                continue
            row = train_hone(label, overrides, Path(tmp), steps, limit)
            if "error" not in row and peft_config_of(overrides)[1] is not None:
                row["peft"] = train_peft(overrides, row["steps"])
            rows.append(row)
            print(json.dumps(row))
            # rewritten after each method, so an interrupted run still leaves what it measured
            write_docs(rows, machine, args.quick, time.perf_counter() - started, f"\n{args.note}\n" if args.note else "")
    print(table(rows))


if __name__ == "__main__":
    main()
