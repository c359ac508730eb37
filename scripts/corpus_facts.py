"""Structured documents for the corpus: question-answer pairs, arithmetic, JSON records.

Every answer here is computed from the question (arithmetic, counting, list lookups),
so the corpus teaches skills that are checkable rather than trivia.
"""

import json
import random

import corpus_words as W
from corpus_text import article, capitalize, invented_word, number_in_words, person_name
from corpus_text import place_name, plural

COLOR_OF = {
    "the sky on a clear day": "blue", "fresh grass": "green", "snow": "white", "a ripe banana": "yellow",
    "a ripe tomato": "red", "coal": "black", "a carrot": "orange", "milk": "white",
    "a lemon": "yellow", "a plum": "purple", "chocolate": "brown", "a lime": "green",
}
SOUND_OF = {
    "dog": "barks", "cat": "meows", "cow": "moos", "sheep": "bleats", "duck": "quacks",
    "owl": "hoots", "horse": "neighs", "pig": "oinks", "lion": "roars", "bee": "buzzes",
    "frog": "croaks", "rooster": "crows", "snake": "hisses", "wolf": "howls", "mouse": "squeaks",
}


def qa_opposite(rng):
    word, other = rng.choice(W.OPPOSITES)
    if rng.random() < 0.5:
        word, other = other, word
    return f"What is the opposite of \"{word}\"?", f"The opposite of \"{word}\" is \"{other}\"."


def qa_plural(rng):
    noun = rng.choice(W.ANIMALS + W.OBJECTS + W.FOODS_COUNTABLE)
    return f"What is the plural of \"{noun}\"?", f"The plural of \"{noun}\" is \"{plural(noun)}\"."


def qa_color(rng):
    thing = rng.choice(list(COLOR_OF))
    return f"What color is {thing}?", f"{capitalize(thing)} is {COLOR_OF[thing]}."


def qa_sound(rng):
    animal = rng.choice(list(SOUND_OF))
    return f"What sound does {article(animal)} make?", f"{capitalize(article(animal))} {SOUND_OF[animal]}."


def qa_next_in_sequence(rng):
    names, what = rng.choice([(W.DAYS, "day"), (W.MONTHS, "month"), (W.SEASONS, "season")])
    index = rng.randrange(len(names))
    after = names[(index + 1) % len(names)]
    return f"Which {what} comes after {names[index]}?", f"{after} comes after {names[index]}."


def qa_shape(rng):
    shape, sides = rng.choice(W.SHAPES)
    return f"How many sides does {article(shape)} have?", f"{capitalize(article(shape))} has {sides} sides."


def qa_letters(rng):
    word = rng.choice(W.ANIMALS + W.FOODS + W.PLACES)
    if rng.random() < 0.5:
        return f"How many letters are in the word \"{word}\"?", f"The word \"{word}\" has {len(word)} letters."
    return f"What is the first letter of \"{word}\"?", f"The first letter of \"{word}\" is \"{word[0]}\"."


def qa_definition(rng):
    word, meaning = rng.choice(W.DEFINITIONS)
    return f"What is {article(word)}?", f"{capitalize(article(word))} is {meaning}."


def qa_arithmetic(rng):
    a, b = rng.randint(1, 50), rng.randint(1, 50)
    op, result = rng.choice([("plus", a + b), ("times", a * b), ("minus", a - b)])
    return f"What is {a} {op} {b}?", f"{a} {op} {b} is {result}."


def qa_bigger(rng):
    a, b = rng.sample(range(0, 1000), 2)
    return f"Which is bigger, {a} or {b}?", f"{max(a, b)} is bigger than {min(a, b)}."


QA_MAKERS = [qa_opposite, qa_plural, qa_color, qa_sound, qa_next_in_sequence, qa_shape,
             qa_letters, qa_definition, qa_arithmetic, qa_bigger]


def make_reading_qa(rng: random.Random) -> list[tuple[str, str]]:
    """A tiny passage and questions answered by looking back at it."""
    name, place, thing = rng.choice(W.FIRST_NAMES), rng.choice(W.PLACES), rng.choice(W.OBJECTS)
    count, food, day = rng.randint(2, 9), rng.choice(W.FOODS_COUNTABLE), rng.choice(W.DAYS)
    passage = (f"On {day}, {name} went to the {place} with {article(thing)}. "
               f"There {name} bought {count} {plural(food)}.")
    pairs = [(f"Where did {name} go?", f"{name} went to the {place}."),
             (f"What did {name} take?", f"{name} took {article(thing)}."),
             (f"How many {plural(food)} did {name} buy?", f"{name} bought {count} {plural(food)}."),
             (f"On which day did this happen?", f"It happened on {day}.")]
    return [("Read the text and answer the questions.", passage)] + rng.sample(pairs, rng.randint(2, 4))


def make_qa(rng: random.Random) -> str:
    """A page of question-answer pairs in one of a few formats."""
    q_mark, a_mark = rng.choice([("Q:", "A:"), ("Question:", "Answer:"), ("Q.", "A.")])
    if rng.random() < 0.25:
        (head, passage), *pairs = make_reading_qa(rng)
        lines = [head, "", passage, ""]
    else:
        pairs = [rng.choice(QA_MAKERS)(rng) for _ in range(rng.randint(3, 8))]
        lines = []
    for question, answer in pairs:
        lines += [f"{q_mark} {question}", f"{a_mark} {answer}", ""]
    return "\n".join(lines).strip()


def arithmetic_lines(rng: random.Random) -> list[str]:
    """One block of facts: sums, products, counting, number words or a word problem."""
    kind = rng.choice(["sums", "times", "count", "words", "story", "parity", "half"])
    if kind == "sums":
        pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(rng.randint(3, 8))]
        return [f"{a} + {b} = {a + b}" if rng.random() < 0.6 else f"{a + b} - {b} = {a}" for a, b in pairs]
    if kind == "times":
        n = rng.randint(2, 12)
        return [f"The {n} times table:"] + [f"{n} x {k} = {n * k}" for k in range(1, 11)]
    if kind == "count":
        start, step = rng.randint(0, 90), rng.choice([1, 2, 3, 5, 10])
        numbers = ", ".join(str(start + step * k) for k in range(rng.randint(5, 12)))
        return [f"Counting by {step} from {start}: {numbers}."]
    if kind == "words":
        return [f"{n} is written as {number_in_words(n)}." for n in rng.sample(range(1000), rng.randint(3, 6))]
    if kind == "parity":
        return [f"{n} is an {'even' if n % 2 == 0 else 'odd'} number." for n in rng.sample(range(200), 5)]
    if kind == "half":
        return [f"Half of {2 * n} is {n}." for n in rng.sample(range(1, 100), rng.randint(3, 6))]
    name, food = rng.choice(W.FIRST_NAMES), plural(rng.choice(W.FOODS_COUNTABLE))
    have, eat = rng.randint(5, 30), rng.randint(1, 5)
    return [f"{name} has {have} {food}. {capitalize(name)} gives away {eat} of them.",
            f"How many {food} are left? {have} - {eat} = {have - eat}. {name} has {have - eat} {food} left."]


def make_arithmetic(rng: random.Random) -> str:
    blocks = ["\n".join(arithmetic_lines(rng)) for _ in range(rng.randint(1, 3))]
    return "\n\n".join(blocks)


# JSON record builders, one per schema. None of them may use the demo task's keys
# (product, category, urgency, summary): the base model must not have seen that shape.
def record_person(rng):
    return {"name": person_name(rng, with_surname=True), "age": rng.randint(4, 90),
            "city": place_name(rng), "job": rng.choice(W.PROFESSIONS),
            "hobbies": rng.sample(W.HOBBIES, rng.randint(1, 3))}


def record_weather(rng):
    return {"city": place_name(rng), "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "condition": rng.choice(W.WEATHER), "temperature_c": rng.randint(-15, 38),
            "wind_kmh": rng.randint(0, 80), "rain_mm": round(rng.random() * 20, 1)}


def record_inventory(rng):
    return {"item": rng.choice(W.OBJECTS), "sku": f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}",
            "quantity": rng.randint(0, 500), "price": round(rng.uniform(0.5, 99), 2),
            "in_stock": rng.random() < 0.8, "shelf": rng.randint(1, 40)}


def record_recipe(rng):
    foods = rng.sample(W.FOODS, rng.randint(2, 5))
    return {"title": f"{capitalize(foods[0])} {rng.choice(['soup', 'pie', 'salad', 'stew'])}",
            "servings": rng.randint(1, 8), "minutes": rng.choice([10, 20, 30, 45, 60]),
            "ingredients": [{"name": f, "grams": rng.randint(5, 500)} for f in foods],
            "vegetarian": rng.random() < 0.6}


def record_event(rng):
    return {"event": f"{capitalize(rng.choice(W.SEASONS))} {rng.choice(['fair', 'concert', 'race', 'market'])}",
            "place": place_name(rng), "day": rng.choice(W.DAYS), "start": f"{rng.randint(8, 20)}:00",
            "guests": rng.randint(5, 400), "tickets": rng.random() < 0.5}


def record_book(rng):
    return {"title": f"The {capitalize(rng.choice(W.ADJECTIVES))} {capitalize(rng.choice(W.OBJECTS))}",
            "author": person_name(rng, with_surname=True), "pages": rng.randint(40, 900),
            "year": rng.randint(1900, 2024), "genres": rng.sample(["mystery", "poetry", "history", "travel",
                                                                  "cooking", "science", "adventure"], 2)}


def record_animal(rng):
    return {"species": invented_word(rng, 2), "habitat": rng.choice(W.HABITATS),
            "diet": rng.sample(W.FOODS, 2), "length_cm": rng.randint(2, 300),
            "color": rng.choice(W.COLORS), "nocturnal": rng.random() < 0.4}


def record_trip(rng):
    return {"from": place_name(rng), "to": place_name(rng), "by": rng.choice(W.VEHICLES),
            "departs": f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}",
            "hours": rng.randint(1, 12), "seats_left": rng.randint(0, 60)}


def record_grades(rng):
    subjects = rng.sample(W.SCHOOL_SUBJECTS, 3)
    return {"student": person_name(rng), "class": rng.randint(1, 12),
            "grades": {s: rng.randint(40, 100) for s in subjects}}


def record_sensor(rng):
    return {"sensor_id": f"s-{rng.randint(1, 999)}", "room": rng.choice(W.PLACES),
            "readings": [round(rng.uniform(15, 30), 1) for _ in range(rng.randint(2, 5))],
            "unit": "celsius", "ok": rng.random() < 0.9}


def record_todo(rng):
    tasks = [f"{verb} the {rng.choice(W.OBJECTS)}" for verb, _ in rng.sample(W.TRANSITIVE_VERBS, 3)]
    return {"owner": rng.choice(W.FIRST_NAMES), "day": rng.choice(W.DAYS),
            "tasks": [{"text": t, "done": rng.random() < 0.5} for t in tasks]}


def record_contact(rng):
    first = rng.choice(W.FIRST_NAMES)
    return {"first_name": first, "last_name": rng.choice(W.SURNAMES),
            "email": f"{first.lower()}@{invented_word(rng, 2)}.org",
            "phone": f"555-{rng.randint(1000, 9999)}", "favorite_color": rng.choice(W.COLORS)}


def record_match(rng):
    home, away = place_name(rng), place_name(rng)
    return {"sport": rng.choice(["football", "chess", "rowing", "tennis"]), "home": home,
            "away": away, "score": [rng.randint(0, 5), rng.randint(0, 5)], "month": rng.choice(W.MONTHS)}


def record_garden(rng):
    return {"plot": rng.randint(1, 60), "gardener": rng.choice(W.FIRST_NAMES),
            "plants": [{"plant": f, "rows": rng.randint(1, 6)} for f in rng.sample(W.FOODS_COUNTABLE, 2)],
            "season": rng.choice(W.SEASONS)}


def record_song(rng):
    return {"song": f"{capitalize(rng.choice(W.COLORS))} {capitalize(rng.choice(W.NATURE))}",
            "singer": person_name(rng, with_surname=True), "seconds": rng.randint(90, 400),
            "instruments": rng.sample(["guitar", "violin", "piano", "flute", "harp", "drum"], 2)}


RECORD_MAKERS = [record_person, record_weather, record_inventory, record_recipe, record_event,
                 record_book, record_animal, record_trip, record_grades, record_sensor, record_todo,
                 record_contact, record_match, record_garden, record_song]
FORBIDDEN_KEYS = {"product", "category", "urgency", "summary"}


def make_json_record(rng: random.Random) -> str:
    """One JSON object or a small array of same-schema objects, sometimes with a caption."""
    maker = rng.choice(RECORD_MAKERS)
    value = maker(rng) if rng.random() < 0.7 else [maker(rng) for _ in range(rng.randint(2, 4))]
    text = json.dumps(value, indent=rng.choice([None, None, 2]))
    if rng.random() < 0.4:
        noun = maker.__name__.removeprefix("record_")
        caption = rng.choice([f"Here is the {noun} data as JSON:", f"JSON for the {noun} record:",
                              f"The {noun} entry is stored like this:"])
        text = f"{caption}\n{text}"
    return text
