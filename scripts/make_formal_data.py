"""Generate hone's second demo task: a casual support message -> the same message in a formal
company voice.

One of the seeds' reasons to fine-tune is a consistent voice ("a model tuned to always answer
in our company's tone"). The rewrite is a function of the message, so a tiny model can learn
it and chrF against the reference measures the voice and the details it must carry over:

- the opening and closing lines are fixed ("Dear Support Team," ... "Kind regards,");
- the issue (one of make_demo_data.ISSUES, said casually) becomes its one formal sentence,
  with the product name copied;
- an order number, when the message gives one, is restated as "The order number is N.";
- the urgency (one casual phrase) becomes its formal request;
- the sender's first name, when given, signs the letter.

It shares the first demo task's products and issues, so the two tasks read the same kind of
ticket and differ in what the system prompt asks for: the setting in which combining a
"JSON" adapter with a "voice" adapter is worth measuring (`hone adapters combine`).

Usage: python scripts/make_formal_data.py [--out src/hone/assets/formal] [--seed 1]
"""

import argparse
import random
from pathlib import Path

from make_demo_data import ISSUES, NAMES, PRODUCTS, write_jsonl

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets" / "formal"
TRAIN_ROWS, EVAL_ROWS = 600, 120
SYSTEM_PROMPT = "Rewrite the customer's message as a formal letter in our company voice."

# The formal sentence of each issue (keyed by the first task's summary); {product} is copied.
FORMAL = {
    "charged twice for order": "I have been charged twice for my {product} order.",
    "refund not received": "I have not yet received the refund for my returned {product}.",
    "wrong amount on invoice": "The invoice for my {product} states an incorrect amount.",
    "billed after cancelling subscription": "I was billed again after cancelling my {product} subscription.",
    "crashes on startup": "My {product} crashes whenever it starts.",
    "battery drains too fast": "The battery of my {product} drains unusually fast.",
    "cannot connect to wifi": "My {product} is unable to connect to the wireless network.",
    "app shows error code": "The {product} application displays an error code.",
    "screen freezes during use": "The screen of my {product} freezes during use.",
    "password reset email missing": "I have not received the password reset email for my {product} account.",
    "account locked after logins": "My {product} account has been locked after several login attempts.",
    "change account email address": "I would like to change the email address of my {product} account.",
    "delete my account": "I would like my {product} account and its data to be deleted.",
    "package has not arrived": "My {product} order has not yet arrived.",
    "item arrived damaged": "My {product} arrived damaged.",
    "wrong item delivered": "I received a different item instead of the {product} I ordered.",
    "change delivery address": "I would like to change the delivery address of my {product} order.",
    "add dark mode": "I would welcome a dark mode in the {product} application.",
    "offer more colors": "I would welcome the {product} in more colours.",
    "add scheduling timer": "I would welcome a scheduling timer for the {product}.",
    "export data to spreadsheet": "I would welcome an option to export {product} data to a spreadsheet.",
}
FORMAL_URGENCY = {
    "high": "I would be grateful for an urgent reply.",
    "medium": "I would appreciate a reply within the next few days.",
    "low": "There is no urgency; a reply at your convenience is welcome.",
}
CASUAL_URGENCY = {
    "high": ["need this fixed asap!!", "pls hurry, this is urgent", "help me out right now pls",
             "really urgent, sorry"],
    "medium": ["would be cool if u could check this week", "pls look at it soonish",
               "getting annoying tbh, check soon?"],
    "low": ["no rush tho", "whenever u have time", "not a big deal, just fyi", "no hurry at all"],
}
OPENERS = ["hey", "hi", "yo", "hiya", "hey folks", "hello", "sup", ""]
CLOSERS = ["thx", "cheers", "ty", "thanks!!", "ta", "later"]
ORDER_BITS = ["order {order}", "order #{order}", "(order nr {order})", "my order was {order}"]


def casual(sentence: str, rng: random.Random) -> str:
    """The first task's phrasing said casually: lower case, dropped full stop, maybe a 'lol'."""
    text = sentence[0].lower() + sentence[1:]
    text = text.rstrip(".") + rng.choice(["", "!", "!!", " lol", " :("])
    return text.replace("I am ", "i'm ").replace("I ", "i ").replace("do not", "don't").replace("has not", "hasn't")


def make_message(rng: random.Random) -> tuple[str, str]:
    """One casual message and its formal rewrite; every part of the rewrite is fixed by the message."""
    _, summary, phrasings = rng.choice(ISSUES)
    product, urgency = rng.choice(PRODUCTS), rng.choice(sorted(FORMAL_URGENCY))
    order = f"{rng.randint(10000, 99999)}" if rng.random() < 0.5 else None
    name = rng.choice(NAMES).split()[0] if rng.random() < 0.7 else None
    slots = {"product": product, "code": rng.randint(10, 99)}
    parts = [casual(rng.choice(phrasings), rng)]
    if order:
        parts.insert(rng.randint(0, 1), rng.choice(ORDER_BITS).format(order=order))
    parts.append(rng.choice(CASUAL_URGENCY[urgency]))
    opener = rng.choice(OPENERS)
    message = (f"{opener} " if opener else "") + ", ".join(parts).format(**slots)
    if name:
        message += f"\n{rng.choice(CLOSERS)} {name.lower() if rng.random() < 0.5 else name}"
    letter = ["Dear Support Team,", "", FORMAL[summary].format(product=product)]
    if order:
        letter[-1] += f" The order number is {order}."
    letter[-1] += " " + FORMAL_URGENCY[urgency]
    letter += ["", "Kind regards," + (f"\n{name}" if name else "")]
    return message, "\n".join(letter)


def make_rows(seed: int, count: int) -> list[dict]:
    """`count` chat rows with distinct messages, in generation order."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        message, letter = make_message(rng)
        if message in seen:
            continue
        seen.add(message)
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": message},
            {"role": "assistant", "content": letter},
        ]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # One stream of distinct messages split in two, so no eval message appears in train.
    rows = make_rows(args.seed, TRAIN_ROWS + EVAL_ROWS)
    write_jsonl(args.out / "train.jsonl", rows[:TRAIN_ROWS])
    write_jsonl(args.out / "eval.jsonl", rows[TRAIN_ROWS:])
    print(f"wrote {TRAIN_ROWS} train and {EVAL_ROWS} eval rows -> {args.out}")


if __name__ == "__main__":
    main()
