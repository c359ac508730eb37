"""Generate hone's demo preference task from the demo tickets: the right JSON over a plausible wrong one.

Each demo ticket (`src/hone/assets/demo/`) becomes one pair in TRL's conversational
`prompt / chosen / rejected` form: the prompt is the ticket's system and user turns, chosen
the correct JSON answer, rejected the same JSON with one plausible fault:

- wrong_urgency: another urgency level (the ticket's urgency phrase says otherwise);
- wrong_category: the category of a different issue;
- wrong_product: another product of the catalogue;
- unfaithful_summary: the summary of a different issue in the same category;
- rambling_summary: the ticket's own sentences pasted in as the summary (longer);
- vague_summary: a summary that says nothing ("customer has a problem"; shorter).

Faults are drawn so that chosen is the longer answer in about half of the pairs: a
preference set whose chosen answers are mostly longer teaches length, not quality. The same
pairs unpaired (`prompt / completion / label`, chosen as label true, rejected as false) are
written for KTO. Train pairs come from the demo's train tickets, held-out pairs from its eval
tickets, so no held-out prompt is trained on.

Usage: python scripts/make_preference_data.py [--demo src/hone/assets/demo] [--out src/hone/assets/preference] [--seed 0]
"""

import argparse
import json
import random
from pathlib import Path

from make_demo_data import PRODUCTS, URGENCIES, write_jsonl  # the tickets' own catalogue (this folder)

ASSETS = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets"
VAGUE_SUMMARIES = ["problem", "customer issue", "needs help", "see ticket", "an issue"]


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def summaries_by_category(rows: list[dict]) -> dict[str, list[str]]:
    """Every distinct summary of the demo, grouped by category, in first-seen order."""
    table: dict[str, list[str]] = {}
    for row in rows:
        answer = json.loads(row["messages"][-1]["content"])
        summaries = table.setdefault(answer["category"], [])
        if answer["summary"] not in summaries:
            summaries.append(answer["summary"])
    return table


def ticket_body(ticket: str) -> str:
    """The ticket's longest paragraph: what a rambling summary copies."""
    return max(ticket.split("\n"), key=len).strip()


def faults(answer: dict, ticket: str, summaries: dict[str, list[str]], rng: random.Random) -> dict[str, dict]:
    """Every fault of `answer` by name; each differs from it in one field."""
    category = answer["category"]
    others = [s for s in summaries[category] if s != answer["summary"]]
    return {
        "wrong_urgency": {**answer, "urgency": rng.choice([u for u in URGENCIES if u != answer["urgency"]])},
        "wrong_category": {**answer, "category": rng.choice([c for c in summaries if c != category])},
        "wrong_product": {**answer, "product": rng.choice([p for p in PRODUCTS if p != answer["product"]])},
        "unfaithful_summary": {**answer, "summary": rng.choice(others)},
        "rambling_summary": {**answer, "summary": ticket_body(ticket)},
        "vague_summary": {**answer, "summary": rng.choice(VAGUE_SUMMARIES)},
    }


def pick_fault(candidates: dict[str, str], chosen: str, longer: int, shorter: int, rng: random.Random) -> str:
    """A fault drawn at random among those that keep chosen-longer and chosen-shorter pairs balanced."""
    def side(text: str) -> int:  # +1: chosen is longer than this rejected answer
        return (len(chosen) > len(text)) - (len(chosen) < len(text))
    wanted = 0 if longer == shorter else (-1 if longer > shorter else 1)
    names = sorted(candidates)
    fitting = [name for name in names if side(candidates[name]) == wanted or wanted == 0]
    return rng.choice(fitting or names)


def make_pairs(rows: list[dict], summaries: dict[str, list[str]], seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs, longer, shorter = [], 0, 0
    for row in rows:
        system, user, assistant = row["messages"]
        answer = json.loads(assistant["content"])
        candidates = {name: json.dumps(value) for name, value in faults(answer, user["content"], summaries, rng).items()}
        name = pick_fault(candidates, assistant["content"], longer, shorter, rng)
        rejected = candidates[name]
        longer += len(assistant["content"]) > len(rejected)
        shorter += len(assistant["content"]) < len(rejected)
        pairs.append({"prompt": [system, user], "chosen": [assistant],
                      "rejected": [{"role": "assistant", "content": rejected}], "fault": name})
    return pairs


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's form: each pair as a desirable and an undesirable completion of its prompt."""
    rows = []
    for pair in pairs:
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ASSETS / "demo", help="folder with the demo's train.jsonl and eval.jsonl")
    parser.add_argument("--out", type=Path, default=ASSETS / "preference", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train_rows, eval_rows = read_rows(args.demo / "train.jsonl"), read_rows(args.demo / "eval.jsonl")
    summaries = summaries_by_category(train_rows + eval_rows)
    for split, rows, seed in (("train", train_rows, args.seed), ("eval", eval_rows, args.seed + 1)):
        pairs = make_pairs(rows, summaries, seed)
        # `fault` names what is wrong with the rejected answer; readers ignore keys they do not know.
        write_jsonl(args.out / f"{split}.jsonl", pairs)
        write_jsonl(args.out / f"kto_{split}.jsonl", unpaired(pairs))
        longer = sum(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in pairs)
        print(f"{split}: {len(pairs)} pairs ({longer} with the longer answer chosen), "
              f"{2 * len(pairs)} unpaired rows -> {args.out}")


if __name__ == "__main__":
    main()
