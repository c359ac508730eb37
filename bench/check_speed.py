"""How fast is `hone check`? Synthetic chat rows, 10K and 100K, without and with the token checks.

    PYTHONPATH=src python bench/check_speed.py [--sizes 10000 100000] [--model PATH]

Each measurement runs in a fresh process so its peak memory (max RSS) is its own. Prints
wall time, CPU time, peak memory and the 10K -> 100K scaling (10.0x = linear).
Targets (issue 3): 100K rows < 60 s without the tokenizer, < 120 s with it, < 2 GB peak.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ("order refund ship login error password invoice delivery account upgrade cancel billing late broken "
         "screen battery charge app crash update email phone help please thanks today yesterday week again "
         "still not working since the my a an to for with on of is was it this that").split()
PRODUCTS = ("laptop", "phone", "router", "watch", "tablet", "camera")
URGENCY = ("low", "medium", "high")
SYSTEM = "You turn support tickets into JSON with product, category, urgency and summary."


def make_rows(count: int, seed: int = 0) -> list[dict]:
    """Support-ticket chat rows; ~1% exact duplicates and ~1% near-duplicates, like real exports."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        if i > 10 and rng.random() < 0.01:
            rows.append(rows[rng.randrange(i)])
            continue
        ticket = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 70))) + f" ticket {i}"
        if i > 10 and rng.random() < 0.01:
            ticket = rows[rng.randrange(i)]["messages"][1]["content"] + " thanks"
        answer = {"product": rng.choice(PRODUCTS), "category": rng.choice(WORDS[:12]), "urgency": rng.choice(URGENCY),
                  "summary": " ".join(rng.choice(WORDS) for _ in range(8))}
        rows.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ticket},
                                  {"role": "assistant", "content": json.dumps(answer)}]})
    return rows


def measure(path: str, model: str | None) -> dict:
    """Runs in the child: check one file, report wall/CPU seconds and peak RSS."""
    import resource
    import time

    from hone.data.check import check_files

    tokenizer = None
    if model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
    wall, cpu = time.perf_counter(), time.process_time()
    report = check_files(path, tokenizer=tokenizer, max_length=512)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_mb": round(peak_mb), "findings": len(report.findings)}


def default_model(folder: Path) -> str:
    """The embedded model when installed, else a tiny test tokenizer (slower: more tokens per word)."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from hone.model.load import EMBEDDED_MODEL

    if (EMBEDDED_MODEL / "tokenizer_config.json").is_file():
        return str(EMBEDDED_MODEL)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from tiny import make_tokenizer

    make_tokenizer(folder / "tokenizer")
    return str(folder / "tokenizer")


def machine_line() -> str:
    """hone.engine.tiers.machine_line, imported in the parent only: it loads torch, which would
    count in a child's measured peak memory."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from hone.engine.tiers import machine_line as line

    return line()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--model", help="tokenizer for the token checks (default: embedded, else a tiny one)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1] if args.child[1] != "-" else None)))
        return
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or default_model(folder)
        results = {}
        for size in args.sizes:
            path = folder / f"rows_{size}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in make_rows(size)))
            for label, tokenizer in (("no tokenizer", "-"), ("tokenizer", model)):
                out = subprocess.run([sys.executable, __file__, "--child", str(path), tokenizer], capture_output=True, text=True,
                                     env={"PYTHONPATH": str(HERE.parent / "src"), "PATH": "/usr/bin:/bin"})
                if out.returncode:
                    raise SystemExit(out.stderr)
                results[(size, label)] = json.loads(out.stdout.strip().splitlines()[-1])
                r = results[(size, label)]
                print(f"{size:>7,} rows, {label:<12}: {r['wall_s']:>6.1f} s wall, {r['cpu_s']:>6.1f} s CPU, "
                      f"peak {r['peak_mb']:>5,} MB, {r['findings']} findings", flush=True)
        small, large = min(args.sizes), max(args.sizes)
        if small != large:
            for label in ("no tokenizer", "tokenizer"):
                ratio = results[(large, label)]["cpu_s"] / max(0.01, results[(small, label)]["cpu_s"])
                print(f"scaling {small:,} -> {large:,} rows ({label}): {ratio:.1f}x CPU time for {large / small:.1f}x rows")
        print(f"tokenizer: {model}")


if __name__ == "__main__":
    main()
