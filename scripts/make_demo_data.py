"""Generate hone's demo fine-tuning task: support tickets -> one fixed JSON structure.

This is the seeds' textbook use case for fine-tuning ("a model tuned to always reply in a
specific format, e.g. JSON"). Every answer field can be read off the ticket, so even a
tiny model can learn it and the score measures format and extraction, not world facts:

- product: one of PRODUCTS, written verbatim in the ticket;
- category: fixed by the issue the ticket describes (each issue belongs to one category);
- urgency: fixed by the one urgency phrase the ticket contains;
- summary: the issue's canonical 3-6 word phrase.

Usage: python scripts/make_demo_data.py [--out src/hone/assets/demo] [--seed 0]
"""

import argparse
import json
import random
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets" / "demo"
TRAIN_ROWS, EVAL_ROWS = 600, 120
SYSTEM_PROMPT = ("Turn the customer support ticket into JSON with the keys product, category, "
                 "urgency and summary. Reply with JSON only.")

# Invented names (none appear in the pre-training corpus) so the base model has no head start.
PRODUCTS = ["Kestrel Router", "Lumio Lamp", "Fernbrook Blender", "Quillpad Tablet",
            "Tidewater Kettle", "Solvane Heater", "Marlow Headphones", "Zephyr Fan",
            "Cinder Camera", "Brightwave Speaker"]
CATEGORIES = ["billing", "bug", "account", "shipping", "feature_request"]
URGENCIES = ["low", "medium", "high"]

# (category, summary, phrasings). A phrasing must contain {product}; the summary reuses
# its key words where English allows, so the answer is close to copying.
ISSUES = [
    ("billing", "charged twice for order", [
        "I was charged twice for my {product} order.",
        "My card shows two payments for the same {product}, so I was charged twice.",
        "You charged me twice when I bought the {product}."]),
    ("billing", "refund not received", [
        "I sent the {product} back weeks ago and my refund has still not been received.",
        "Where is my refund for the {product}? I have not received it yet.",
        "The refund for my returned {product} was never received."]),
    ("billing", "wrong amount on invoice", [
        "The invoice for my {product} shows the wrong amount.",
        "I was billed the wrong amount on the invoice for the {product}.",
        "My {product} invoice has an amount that is higher than the price I paid."]),
    ("billing", "billed after cancelling subscription", [
        "I cancelled the {product} subscription but I was billed again this month.",
        "After cancelling my {product} plan, the subscription fee was billed again."]),
    ("bug", "crashes on startup", [
        "The {product} crashes every time I switch it on.",
        "My {product} crashes on startup and then restarts by itself.",
        "Each time it starts up, the {product} crashes after a few seconds."]),
    ("bug", "battery drains too fast", [
        "The battery of my {product} drains too fast, it is empty after an hour.",
        "My {product} battery drains much faster than it should."]),
    ("bug", "cannot connect to wifi", [
        "My {product} cannot connect to the wifi network at home.",
        "The {product} will not connect to wifi, even after a reset.",
        "Since the last update the {product} cannot connect to my wifi."]),
    ("bug", "app shows error code", [
        "The {product} app shows error code E{code} whenever I open the settings.",
        "I keep getting error code E{code} in the app for my {product}."]),
    ("bug", "screen freezes during use", [
        "The screen on my {product} freezes while I am using it.",
        "During use the {product} screen freezes and nothing responds."]),
    ("account", "password reset email missing", [
        "I asked for a password reset for my {product} account but the email never came.",
        "The password reset email for the {product} app is missing from my inbox."]),
    ("account", "account locked after logins", [
        "My {product} account is locked after too many failed logins.",
        "I tried to log in to the {product} app a few times and now my account is locked."]),
    ("account", "change account email address", [
        "How do I change the email address on my {product} account?",
        "I need to change the email address linked to my {product} account."]),
    ("account", "delete my account", [
        "Please delete my account, I no longer use the {product}.",
        "I want you to delete my {product} account and all my data."]),
    ("shipping", "package has not arrived", [
        "My package with the {product} has not arrived yet.",
        "The {product} I ordered has not arrived and the delivery date has passed.",
        "I am still waiting for my {product}; the package never arrived."]),
    ("shipping", "item arrived damaged", [
        "The {product} arrived damaged, the box was crushed.",
        "My {product} arrived today with a cracked side. The item is damaged."]),
    ("shipping", "wrong item delivered", [
        "I ordered the {product} but a different item was delivered.",
        "You delivered the wrong item. I was expecting the {product}."]),
    ("shipping", "change delivery address", [
        "Can I change the delivery address for my {product} order? I moved last week.",
        "Please change the delivery address for the {product} before it ships."]),
    ("feature_request", "add dark mode", [
        "It would be great if the {product} app had a dark mode.",
        "Please add a dark mode to the {product} app, the white screen is too bright at night."]),
    ("feature_request", "offer more colors", [
        "Could you offer the {product} in more colors? Green or navy would be nice.",
        "I would love to see more colors for the {product}."]),
    ("feature_request", "add scheduling timer", [
        "I would like a scheduling timer so the {product} can switch on by itself.",
        "Please add a timer to the {product} for scheduling when it turns on."]),
    ("feature_request", "export data to spreadsheet", [
        "It would help if I could export my {product} data to a spreadsheet.",
        "Please let us export the data from the {product} app to a spreadsheet."]),
]

# Exactly one of these goes into each ticket and decides its urgency.
URGENCY_PHRASES = {
    "high": ["This is urgent, please help right away.", "I need this fixed immediately.",
             "Please treat this as urgent.", "This is critical for my business, please hurry.",
             "I need an answer as soon as possible."],
    "medium": ["Please look into it this week.", "I would appreciate a reply in the next few days.",
               "It is becoming a problem, so please check soon.", "A fix soon would be nice."],
    "low": ["No rush at all.", "Whenever you have time is fine.",
            "It is not a big problem, just letting you know.", "This is low priority for me."],
}

GREETINGS = ["Hi,", "Hello,", "Hello support team,", "Dear team,", "Hey there,", "Good morning,",
             "Hi there,", "Dear customer service,", ""]
SIGN_OFFS = ["Thanks,", "Thank you,", "Best regards,", "Kind regards,", "Cheers,", "Many thanks,", "Regards,"]
NAMES = ["Ana Ruiz", "Ben Carter", "Chloe Martin", "Daniel Osei", "Elena Petrova", "Farid Khan",
         "Grace Liu", "Hiro Sato", "Isabel Costa", "Jonah Weiss", "Keira Walsh", "Liam Byrne",
         "Maria Rossi", "Nikhil Rao", "Olivia Brown", "Pedro Alves", "Rosa Jimenez", "Sam Taylor",
         "Tom Novak", "Yuki Mori", "Zainab Bello", "Marta Nowak", "Lucas Meyer", "Amy Chen"]
CONTEXT_LINES = ["I bought it {months} months ago.", "I have had it since {month}.",
                 "I use it every day at work.", "It was a gift from my sister.",
                 "I ordered it online from your shop.", "It is my second one from you."]
ORDER_LINES = ["My order number is {order}.", "Order number: {order}.", "The order is #{order}.",
               "(order {order})"]
SUBJECTS = ["Problem with my {product}", "{product}", "Question about the {product}", "Help please",
            "About order {order}", "{product} issue"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def make_ticket(rng: random.Random) -> tuple[str, dict[str, str]]:
    """One ticket and its answer; every answer field is determined by what was inserted."""
    category, summary, phrasings = rng.choice(ISSUES)
    product, urgency = rng.choice(PRODUCTS), rng.choice(URGENCIES)
    name = rng.choice(NAMES)
    slots = {"product": product, "order": f"{rng.randint(10000, 99999)}", "code": rng.randint(10, 99),
             "months": rng.randint(2, 11), "month": rng.choice(MONTHS)}
    body = [rng.choice(phrasings)]
    if rng.random() < 0.5:
        body.append(rng.choice(CONTEXT_LINES))
    if category in ("billing", "shipping") or rng.random() < 0.2:
        body.insert(rng.randint(0, len(body)), rng.choice(ORDER_LINES))
    urgency_line = rng.choice(URGENCY_PHRASES[urgency])
    body.insert(rng.choice([0, len(body)]) if urgency == "high" else len(body), urgency_line)
    lines = []
    if rng.random() < 0.4:
        lines += [f"Subject: {rng.choice(SUBJECTS)}", ""]
    greeting = rng.choice(GREETINGS)
    lines += [greeting, ""] if greeting else []
    lines.append(" ".join(body))
    if rng.random() < 0.8:
        lines += ["", rng.choice(SIGN_OFFS), name.split()[0] if rng.random() < 0.5 else name]
    ticket = "\n".join(lines).format(**slots)
    answer = {"product": product, "category": category, "urgency": urgency, "summary": summary}
    return ticket, answer


def make_rows(seed: int, count: int) -> list[dict]:
    """`count` chat rows with distinct ticket texts, in generation order."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        ticket, answer = make_ticket(rng)
        if ticket in seen:
            continue
        seen.add(ticket)
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": ticket},
            {"role": "assistant", "content": json.dumps(answer)},
        ]})
    return rows


def answer_schema() -> dict:
    """JSON Schema of the assistant's answer, used by eval to check structure."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Support ticket triage",
        "type": "object",
        "properties": {
            "product": {"type": "string", "enum": PRODUCTS},
            "category": {"type": "string", "enum": CATEGORIES},
            "urgency": {"type": "string", "enum": URGENCIES},
            "summary": {"type": "string", "minLength": 1, "maxLength": 60},
        },
        "required": ["product", "category", "urgency", "summary"],
        "additionalProperties": False,
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # One stream of distinct tickets split in two, so no eval ticket appears in train.
    rows = make_rows(args.seed, TRAIN_ROWS + EVAL_ROWS)
    write_jsonl(args.out / "train.jsonl", rows[:TRAIN_ROWS])
    write_jsonl(args.out / "eval.jsonl", rows[TRAIN_ROWS:])
    schema_text = json.dumps(answer_schema(), indent=2) + "\n"
    (args.out / "schema.json").write_text(schema_text, encoding="utf-8")
    print(f"wrote {TRAIN_ROWS} train and {EVAL_ROWS} eval rows, and schema.json -> {args.out}")


if __name__ == "__main__":
    main()
