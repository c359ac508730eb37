"""Multi-turn chat transcripts in ChatML, so the base model already knows the chat format.

A transcript is `<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn, exactly what the
tokenizer's chat template renders; fine-tuning then only has to teach the task.
"""

import json
import random

import corpus_words as W
from corpus_facts import QA_MAKERS, record_contact, record_person, record_weather
from corpus_text import CHORES, article, capitalize, join_list, make_short_story, plural

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a friendly assistant. Keep answers short.",
    "You are a patient teacher who explains things simply.",
    "You answer questions clearly and politely.",
    "You are a careful assistant. When asked for JSON, reply with JSON only.",
]


def chat_fact(rng):
    return rng.choice(QA_MAKERS)(rng)


def chat_greeting(rng):
    user = rng.choice(["Hi!", "Hello there.", "Good morning!", "Hey, are you there?"])
    reply = rng.choice(["Hello! How can I help you today?", "Hi! What can I do for you?",
                        "Good to see you. What would you like to talk about?"])
    return user, reply


def chat_list(rng):
    pools = {"fruits or vegetables": W.FOODS_COUNTABLE, "animals": W.ANIMALS, "colors": W.COLORS,
             "jobs": W.PROFESSIONS, "hobbies": W.HOBBIES, "things you find in a house": W.OBJECTS}
    topic = rng.choice(list(pools))
    n = rng.randint(2, 5)
    items = rng.sample(pools[topic], n)
    if rng.random() < 0.5:
        return f"Name {n} {topic}.", f"Here are {n} {topic}: {join_list(items)}."
    return (f"Give me a numbered list of {n} {topic}.",
            "\n".join(f"{i}. {capitalize(item)}" for i, item in enumerate(items, start=1)))


def chat_sort(rng):
    numbers = rng.sample(range(100), rng.randint(3, 7))
    order = rng.choice(["smallest to largest", "largest to smallest"])
    ordered = sorted(numbers, reverse=order.startswith("largest"))
    return (f"Sort these numbers from {order}: {', '.join(map(str, numbers))}",
            ", ".join(map(str, ordered)))


def chat_story(rng):
    topic = rng.choice(W.ANIMALS)
    return f"Tell me a very short story about {article(topic)}.", make_short_story(rng, topic)


def chat_howto(rng):
    task, _, steps = rng.choice(CHORES)
    answer = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    return f"How do I {task}?", f"Here is how to {task}:\n{answer}"


def chat_to_json(rng):
    """Turn a sentence of facts into JSON: the general skill behind structured output."""
    record = rng.choice([record_person, record_weather, record_contact])(rng)
    flat = {k: v for k, v in record.items() if not isinstance(v, (list, dict))}
    facts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in flat.items())
    ask = rng.choice(["Write this as JSON:", "Convert to a JSON object:", "Give me JSON for:"])
    return f"{ask} {facts}", json.dumps(flat)


def chat_rewrite(rng):
    noun = rng.choice(W.ANIMALS + W.OBJECTS)
    adj = rng.choice(W.ADJECTIVES)
    return (f"Rewrite in the plural: The {adj} {noun} is here.",
            f"The {adj} {plural(noun)} are here.")


CHAT_MAKERS = [chat_fact, chat_fact, chat_greeting, chat_list, chat_sort, chat_story,
               chat_howto, chat_to_json, chat_rewrite]
FOLLOW_UPS = [("Thank you!", "You're welcome!"), ("Thanks, that helps.", "Glad I could help."),
              ("Great, thanks.", "Any time. Is there anything else?")]


def render_chatml(turns: list[tuple[str, str]]) -> str:
    return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)


def make_chat(rng: random.Random) -> str:
    """A 1-3 exchange conversation, with a system turn about half the time."""
    turns = [("system", rng.choice(SYSTEM_PROMPTS))] if rng.random() < 0.5 else []
    for _ in range(rng.choices([1, 2, 3], weights=[5, 3, 2])[0]):
        user, assistant = rng.choice(CHAT_MAKERS)(rng)
        turns += [("user", user), ("assistant", assistant)]
    if rng.random() < 0.2:
        turns += list(zip(("user", "assistant"), rng.choice(FOLLOW_UPS)))
    return render_chatml(turns).rstrip("\n")
