"""Prose documents for the corpus: stories, encyclopedic entries, how-tos and letters.

Each `make_*` function takes a seeded `random.Random` and returns one document.
Templates are plain `str.format` strings filled from a dict of slots, so adding a
phrasing means adding one line of text, not code.
"""

import random
import re

import corpus_words as W

IRREGULAR_PLURALS = {
    "mouse": "mice", "goose": "geese", "tooth": "teeth", "foot": "feet", "wolf": "wolves",
    "knife": "knives", "leaf": "leaves", "shelf": "shelves", "scarf": "scarves",
    "calf": "calves", "loaf": "loaves", "potato": "potatoes", "tomato": "tomatoes",
    "mango": "mangoes", "echo": "echoes", "sheep": "sheep", "deer": "deer", "fish": "fish",
    "moose": "moose", "salmon": "salmon", "trout": "trout", "scissors": "scissors",
    "chef": "chefs", "roof": "roofs", "child": "children", "person": "people",
}


def starts_with_vowel_sound(word: str) -> bool:
    """Good enough for our lists: 'uniform' and 'useful' start with a 'y' sound."""
    lower = word.lower()
    return lower[:1] in "aeiou" and not lower.startswith(("uni", "use", "usu", "one"))


def article(word: str) -> str:
    """Return 'a word' or 'an word' by the sound of the first letter."""
    return ("an " if starts_with_vowel_sound(word) else "a ") + word


def fix_articles(text: str) -> str:
    """Turn 'a owl' into 'an owl' after templates were filled with random words."""
    def choose(match: re.Match) -> str:
        article_word, word = match.group(1), match.group(2)
        return f"{article_word}n {word}" if starts_with_vowel_sound(word) else match.group(0)
    return re.sub(r"\b([Aa]) ([A-Za-z]+)", choose, text)


def plural(noun: str) -> str:
    """English plural of a single noun from our lists."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """Present tense for he/she/it: 'carry' -> 'carries', 'wash' -> 'washes'."""
    if verb.endswith(("s", "x", "ch", "sh", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def join_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def invented_word(rng: random.Random, syllables: int = 2) -> str:
    """A pronounceable made-up word, so descriptions never state real-world facts."""
    parts = []
    for index in range(syllables):
        coda = rng.choice(W.NAME_CODAS) if index == syllables - 1 or rng.random() < 0.3 else ""
        parts.append(rng.choice(W.NAME_ONSETS) + rng.choice(W.NAME_VOWELS) + coda)
    return "".join(parts)


def place_name(rng: random.Random) -> str:
    return capitalize(invented_word(rng, 1) + rng.choice(W.PLACE_SUFFIXES))


def person_name(rng: random.Random, with_surname: bool = False) -> str:
    first = rng.choice(W.FIRST_NAMES)
    return f"{first} {rng.choice(W.SURNAMES)}" if with_surname else first


def number_in_words(n: int) -> str:
    """0..999 in English words: 42 -> 'forty-two'."""
    if n < 20:
        return W.NUMBER_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return W.TENS_WORDS[tens - 2] + (f"-{W.NUMBER_WORDS[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    head = f"{W.NUMBER_WORDS[hundreds]} hundred"
    return head + (f" and {number_in_words(rest)}" if rest else "")


def story_slots(rng: random.Random) -> dict[str, str]:
    """Fill every slot a story template may use; templates pick what they need."""
    hero_pronouns = rng.choice([("he", "his", "him"), ("she", "her", "her")])
    friend_pronouns = rng.choice([("he", "his", "him"), ("she", "her", "her")])
    hero, friend = rng.sample(W.FIRST_NAMES, 2)
    kind = rng.choice([rng.choice(W.ANIMALS), rng.choice(W.PROFESSIONS)])
    intransitive = rng.choice(W.INTRANSITIVE_VERBS)
    transitive = rng.choice(W.TRANSITIVE_VERBS)
    thing = rng.choice(W.OBJECTS)
    slots = {
        "hero": hero, "friend": friend, "kind": kind, "a_kind": article(kind),
        "he": hero_pronouns[0], "his": hero_pronouns[1], "him": hero_pronouns[2],
        "fhe": friend_pronouns[0], "fhis": friend_pronouns[1],
        "place": rng.choice(W.PLACES), "place2": rng.choice(W.PLACES),
        "town": place_name(rng), "thing": thing, "things": plural(thing),
        "a_thing": article(thing), "adj": rng.choice(W.ADJECTIVES),
        "adj2": rng.choice(W.ADJECTIVES), "color": rng.choice(W.COLORS),
        "food": rng.choice(W.FOODS), "foods": plural(rng.choice(W.FOODS_COUNTABLE)),
        "time": rng.choice(W.TIMES_OF_DAY), "season": rng.choice(W.SEASONS),
        "weather": rng.choice(W.WEATHER), "day": rng.choice(W.DAYS),
        "emotion": rng.choice(W.EMOTIONS), "ivpast": intransitive[1],
        "tv": transitive[0], "tvpast": transitive[1], "animal": rng.choice(W.ANIMALS),
        "nature": rng.choice(W.NATURE), "count": number_in_words(rng.randint(2, 12)),
        "hobby": rng.choice(W.HOBBIES), "vehicle": rng.choice(W.VEHICLES),
    }
    slots["a_adj"] = article(slots["adj"])
    slots["He"], slots["His"] = capitalize(slots["he"]), capitalize(slots["his"])
    return slots


STORY_OPENINGS = [
    "Once upon a time, in {a_adj} {place} near {town}, there lived {a_kind} named {hero}.",
    "{hero} was {a_kind} who lived at the edge of {town}, not far from the old {place}.",
    "Every {time}, {hero} the {kind} walked to the {place} to look at the {nature}.",
    "It was a {weather} {day} in {season}, and {hero} could not sit still.",
    "In the town of {town}, everyone knew {hero}, the {adj} {kind} with the {color} {thing}.",
    "Long ago, when the {place} of {town} was still new, a {kind} called {hero} arrived by {vehicle}.",
    "{hero} had always loved {hobby}, but {he} had never tried it at the {place}.",
    "The {time} was {weather} and quiet when {hero} woke up in {his} little house by the {place}.",
]

STORY_PROBLEMS = [
    "One {time}, {hero} found that {his} {thing} was missing.",
    "But one {day}, a {adj} {animal} came and took {his} {thing} away.",
    "Then {he} heard a strange sound coming from the {place2}.",
    "{He} wanted to {tv} the {thing} before the {season} festival, but {he} did not know how.",
    "That {season}, the {nature} by the {place} began to change, and nobody knew why.",
    "{His} friend {friend} had promised to visit, but {fhe} was very late.",
    "{He} had {count} {things} to carry and only one small basket.",
    "A storm was coming, and {hero} was far from home, out at the {place2}.",
]

STORY_MIDDLES = [
    "{hero} looked under the {thing}, behind the door and inside every box.",
    "{He} {ivpast} all the way to the {place2}.",
    "On the way, {he} met {friend}, who was carrying {article_food}.",
    "{He} {tvpast} the {thing} carefully and put it on the table.",
    "The wind was {adj} and the sky turned {color}.",
    "{hero} felt a little {emotion}, but {he} kept going.",
    "They sat under a {nature} and shared some {foods}.",
    "After a while, {hero} stopped and listened. Somewhere, a {animal} was singing.",
    "{friend} laughed and said nothing, but {fhis} eyes were bright.",
    "They counted the {things} together: there were {count} of them.",
]

STORY_DIALOGUES = [
    "\"Hello, {friend}!\" said {hero}. \"Have you seen my {thing}?\"\n\"I saw it near the {place2} this {time},\" {friend} replied.",
    "\"Why are you so {adj} today?\" asked {friend}.\n\"Because I want to {tv} the {thing} before dark,\" said {hero}.",
    "\"Can you help me?\" {hero} asked.\n\"Of course,\" said {friend}. \"What do you need?\"\n\"Just {article_food} and a little time.\"",
    "\"Look at the sky,\" whispered {friend}. \"It is turning {color}.\"\n\"Then we must hurry,\" said {hero}.",
    "\"I am not {adj},\" said {hero}. \"I am only thinking.\"\n\"Thinking about what?\" asked {friend}.\n\"About the {place2}, and the {thing}, and {season}.\"",
    "\"Let us go to the {place2},\" said {friend}.\n\"All right,\" said {hero}, \"but only if we are back by {time}.\"",
    "\"Do you like {hobby}?\" asked {hero}.\n\"I love it,\" said {friend}. \"I do it every {day}.\"",
    "\"Where are you going, {hero}?\" called a {animal} from the {nature}.\n\"To {town},\" {he} said. \"I have {a_thing} to deliver.\"",
]

STORY_ENDINGS = [
    "In the end, {hero} found the {thing} under a pile of {foods}, and {he} laughed for a long time.",
    "From that day on, {hero} and {friend} met at the {place} every {day}.",
    "When they got home, they made {food} soup and told the story again and again.",
    "{hero} learned that asking for help is not a weakness. It is what friends are for.",
    "The {season} passed, and {hero} never forgot the {adj} {time} at the {place2}.",
    "And so the {thing} stayed in {town}, where it still is today.",
    "That night, {hero} slept well, with the {thing} safe beside {him}.",
    "{hero} smiled. It had been a {adj2} day, but a good one.",
]


def make_story(rng: random.Random) -> str:
    """A short narrative: opening, problem, a few events, dialogue and an ending."""
    slots = story_slots(rng)
    slots["article_food"] = article(rng.choice(W.FOODS_COUNTABLE))
    first = [rng.choice(STORY_OPENINGS), rng.choice(STORY_PROBLEMS)]
    middle = rng.sample(STORY_MIDDLES, rng.randint(2, 4))
    talk = rng.sample(STORY_DIALOGUES, rng.randint(1, 2))
    paragraphs = [" ".join(first), " ".join(middle), *talk, rng.choice(STORY_ENDINGS)]
    if rng.random() < 0.5:
        title = rng.choice(["The {adj} {thing}", "{hero} and the {thing}", "A {season} in {town}",
                            "{hero} Goes to the {place2}"])
        paragraphs.insert(0, title.format(**slots).title())
    return fix_articles("\n\n".join(capitalize(p.format(**slots)) for p in paragraphs))


def make_short_story(rng: random.Random, topic: str) -> str:
    """Three-sentence story about a given animal or object, used by chat answers."""
    slots = story_slots(rng)
    slots["article_food"] = article(rng.choice(W.FOODS_COUNTABLE))
    slots["kind"], slots["a_kind"] = topic, article(topic)
    sentences = [STORY_OPENINGS[0], rng.choice(STORY_MIDDLES), rng.choice(STORY_ENDINGS)]
    return fix_articles(" ".join(capitalize(s.format(**slots)) for s in sentences))


ANIMAL_CLASSES = ["bird", "mammal", "fish", "beetle", "lizard", "frog", "snail", "moth", "rodent"]
ANIMAL_FACTS = [
    "The {name} has {color} {part} and {adj} {part2}.",
    "It feeds mainly on {foods} and small {nature_pl}.",
    "An adult {name} is about {length} centimeters long and weighs around {weight} grams.",
    "It is most active at {time} and rests during the {time2}.",
    "In {season}, the {name} builds a nest of {material} and {nature_pl}.",
    "Its closest relative is the {animal}, although the {name} is much more {adj}.",
    "Farmers in {region} say that a {name} on the roof means {weather} weather is coming.",
    "The {name} lives for about {years} years in the wild.",
    "A group of them is called a {group}, and a group can have up to {flock} members.",
    "Its call sounds like a {adj} whistle and can be heard from far away.",
]


def make_animal_entry(rng: random.Random) -> str:
    """Encyclopedia entry for an invented animal, with sizes and habits."""
    name = invented_word(rng, rng.randint(2, 3))
    slots = {
        "name": name, "color": rng.choice(W.COLORS), "part": rng.choice(W.BODY_PARTS),
        "part2": rng.choice(W.BODY_PARTS), "adj": rng.choice(W.ADJECTIVES),
        "foods": plural(rng.choice(W.FOODS_COUNTABLE)), "nature_pl": plural(rng.choice(W.NATURE)),
        "length": rng.randint(3, 180), "weight": rng.randint(10, 9000),
        "time": rng.choice(W.TIMES_OF_DAY), "time2": rng.choice(["day", "night", "afternoon"]),
        "season": rng.choice(W.SEASONS), "material": rng.choice(W.MATERIALS),
        "animal": rng.choice(W.ANIMALS), "region": place_name(rng),
        "weather": rng.choice(W.WEATHER), "years": rng.randint(2, 40),
        "group": invented_word(rng, 1), "flock": rng.randint(5, 300),
    }
    slots["a_adj"] = article(slots["adj"])
    intro = (f"The {name} is {article(rng.choice(W.ADJECTIVES))} {rng.choice(ANIMAL_CLASSES)} "
             f"found in the {rng.choice(W.HABITATS)} of {slots['region']}.")
    facts = [fact.format(**slots) for fact in rng.sample(ANIMAL_FACTS, rng.randint(3, 6))]
    body = " ".join([intro, *facts])
    body = fix_articles(body)
    return f"{capitalize(name)}\n\n{body}" if rng.random() < 0.5 else body


PLACE_FACTS = [
    "It lies on the {side} bank of the {river} River, about {km} kilometers from {other}.",
    "About {people} people live there, most of them {jobs}.",
    "The town is known for its {adj} {building_pl} and its {food} market.",
    "It was founded about {age} years ago by a group of {jobs}.",
    "Summers in {name} are {adj2} and winters are {weather}.",
    "Every {season}, the people of {name} hold a festival with music, {food} pie and {hobby}.",
    "The oldest building is a {material} {building} near the main square.",
    "Visitors usually arrive by {vehicle} and stay for {nights} nights.",
    "The local school teaches {subject} and {subject2}, and it has {pupils} pupils.",
]


def make_place_entry(rng: random.Random) -> str:
    """Encyclopedia entry for an invented town."""
    name = place_name(rng)
    building = rng.choice(W.PLACES)
    slots = {
        "name": name, "side": rng.choice(["north", "south", "east", "west"]),
        "river": capitalize(invented_word(rng, 2)), "km": rng.randint(2, 400),
        "other": place_name(rng), "people": f"{rng.randint(1, 90) * 100:,}",
        "jobs": plural(rng.choice(W.PROFESSIONS)), "adj": rng.choice(W.ADJECTIVES),
        "adj2": rng.choice(W.ADJECTIVES), "building": building, "building_pl": plural(building),
        "food": rng.choice(W.FOODS), "age": rng.randint(40, 900),
        "weather": rng.choice(W.WEATHER), "season": rng.choice(W.SEASONS),
        "hobby": rng.choice(W.HOBBIES), "material": rng.choice(W.MATERIALS),
        "vehicle": rng.choice(W.VEHICLES), "nights": number_in_words(rng.randint(2, 9)),
        "subject": rng.choice(W.SCHOOL_SUBJECTS), "subject2": rng.choice(W.SCHOOL_SUBJECTS),
        "pupils": rng.randint(20, 800),
    }
    size = rng.choice(["small town", "village", "busy city", "quiet town", "fishing village"])
    intro = f"{name} is {article(size)} in the {rng.choice(W.HABITATS)} of {place_name(rng)}."
    facts = [fact.format(**slots) for fact in rng.sample(PLACE_FACTS, rng.randint(3, 6))]
    return fix_articles(" ".join([intro, *facts]))


def make_tool_entry(rng: random.Random) -> str:
    """Encyclopedia entry for an invented hand tool and how it is used."""
    tool = invented_word(rng, 2)
    job = rng.choice(W.PROFESSIONS)
    verb, _ = rng.choice(W.TRANSITIVE_VERBS)
    target = plural(rng.choice(W.OBJECTS + W.FOODS_COUNTABLE))
    material, handle = rng.sample(W.MATERIALS, 2)
    lines = [
        f"{capitalize(article(tool))} is a hand tool used by {plural(job)} to {verb} {target}.",
        f"It is made of {material} and has a {rng.choice(['long', 'short', 'curved', 'thick'])} "
        f"{handle} handle.",
        f"To use {article(tool)}, hold it firmly, press gently and move it slowly from left to right.",
        f"Most {plural(job)} keep their {tool} in a dry {rng.choice(W.OBJECTS)} so it does not rust.",
        f"A good {tool} costs about {rng.randint(3, 90)} coins and lasts for {rng.randint(2, 30)} years.",
    ]
    return fix_articles(" ".join(lines[:2] + rng.sample(lines[2:], rng.randint(1, 3))))


# Hand-written chores: (task, things needed, steps). Recipes are generated separately.
CHORES = [
    ("plant a seed", ["a pot", "some soil", "a seed", "water"],
     ["Fill the pot with soil.", "Make a small hole with your finger.", "Drop the seed into the hole.",
      "Cover it with soil.", "Water it a little every day.", "Put the pot in a sunny window."]),
    ("pack a bag for a trip", ["a bag", "clothes", "a toothbrush", "a map"],
     ["Make a list of what you need.", "Fold your clothes neatly.", "Put heavy things at the bottom.",
      "Add your toothbrush and a towel.", "Check the list again.", "Close the bag."]),
    ("fix a flat bicycle tire", ["a pump", "a patch", "a cloth", "two levers"],
     ["Take the wheel off the bicycle.", "Use the levers to pull the tire off.", "Find the hole.",
      "Clean the area with the cloth.", "Press the patch over the hole.",
      "Put the tire back and pump it up."]),
    ("write a thank-you note", ["a card", "a pen", "an envelope", "a stamp"],
     ["Start with the person's name.", "Say what you are thankful for.", "Add one kind detail.",
      "Sign your name.", "Put the card in the envelope.", "Write the address and add a stamp."]),
    ("clean a window", ["a bucket", "warm water", "a cloth", "soap"],
     ["Fill the bucket with warm water.", "Add a little soap.", "Wipe the glass from top to bottom.",
      "Dry it with a clean cloth.", "Look for streaks and wipe them away."]),
    ("make a paper boat", ["a sheet of paper"],
     ["Fold the paper in half.", "Fold the corners down to make a triangle.",
      "Fold the bottom edges up.", "Open the middle and flatten it into a square.",
      "Pull the sides apart gently.", "Place it on the water."]),
    ("build a campfire safely", ["dry twigs", "small logs", "matches", "a bucket of water"],
     ["Choose a clear spot away from trees.", "Make a ring of stones.", "Put dry twigs in the middle.",
      "Lean small logs over the twigs.", "Light the twigs with a match.",
      "Keep the bucket of water close by."]),
    ("learn a new word every day", ["a notebook", "a pen"],
     ["Choose a word you do not know.", "Write it in your notebook.", "Write what it means.",
      "Use it in a sentence.", "Read your list again at the end of the week."]),
]


def make_recipe_steps(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """Invent a simple recipe: a dish name, its ingredients and its steps."""
    main, extra, spice = rng.choice(W.FOODS_COUNTABLE), rng.choice(W.FOODS_MASS), rng.choice(W.SPICES)
    dish = rng.choice(["soup", "salad", "pie", "muffins", "stew", "pancakes", "bread"])
    minutes = rng.choice([10, 15, 20, 25, 30, 40, 45, 60])
    needs = [f"{number_in_words(rng.randint(2, 6))} {plural(main)}", f"{rng.randint(1, 4)} cups of {extra}",
             f"a pinch of {spice}", rng.choice(["a little butter", "some water", "two eggs"])]
    steps = [f"Wash and chop the {plural(main)}.",
             f"Put the {plural(main)} in a {rng.choice(['pot', 'bowl', 'pan'])}.",
             f"Add the {extra} and the {spice}.", "Stir everything together.",
             f"Cook it for {minutes} minutes.", "Let it cool a little.", "Serve it warm."]
    return f"make {main} {dish}", needs, steps


def make_howto(rng: random.Random) -> str:
    """Instructions with a needs list and numbered (or 'Step n:') steps."""
    if rng.random() < 0.5:
        task, needs, steps = rng.choice(CHORES)
    else:
        task, needs, steps = make_recipe_steps(rng)
    style = rng.choice(["numbered", "step", "bullet"])
    marks = {"numbered": "{n}. ", "step": "Step {n}: ", "bullet": "- "}
    lines = [f"How to {task}", "", rng.choice(["You will need:", "Things you need:", "Materials:"])]
    lines += [f"- {item}" for item in needs]
    lines += ["", rng.choice(["Steps:", "What to do:", "Instructions:"])]
    lines += [marks[style].format(n=n) + step for n, step in enumerate(steps, start=1)]
    if rng.random() < 0.4:
        lines += ["", f"Tip: {rng.choice(HOWTO_TIPS)}"]
    return "\n".join(lines)


HOWTO_TIPS = [
    "Take your time; doing it slowly is faster than doing it twice.",
    "Ask a friend to help the first time.",
    "Keep your tools clean and dry.",
    "Read all the steps before you start.",
    "If something goes wrong, go back one step and try again.",
]


LETTER_TOPICS = [
    ("thanks", ["Thank you so much for the {thing}. I use it every {day}.",
                "It was very kind of you to think of me.",
                "The {color} one is my favorite, and it fits perfectly in my {place}."]),
    ("invitation", ["We are having a small party at the {place} on {day} at {hour} o'clock.",
                    "There will be {food} cake, music and a game of {hobby}.",
                    "Please let me know if you can come. Bring {friend} too, if you like."]),
    ("travel", ["We arrived in {town} on {day} after a long trip by {vehicle}.",
                "The weather has been {weather}, but the {place} is beautiful.",
                "Yesterday we walked along the {place2} and saw {count} {animals}."]),
    ("news", ["Things are going well here. The {season} has been {adj}.",
              "I started {hobby} last month, and I am slowly getting better.",
              "{friend} says hello. {friend} has a new {animal} called {pet}."]),
    ("meeting", ["Could we meet on {day} at {hour} o'clock to plan the {season} fair?",
                 "I have booked the room next to the {place}.",
                 "Please bring your notes about the {thing} budget and the list of helpers."]),
    ("apology", ["I am sorry I missed your {hobby} evening on {day}.",
                 "My {vehicle} was late and I only got home after {hour} o'clock.",
                 "Can I make it up to you with {food} pie next week?"]),
]
LETTER_OPENERS = ["I hope you are well.", "How are you?", "It has been a while since I last wrote.",
                  "I hope this letter finds you in good health.", "Greetings from {town}!"]
LETTER_CLOSERS = ["Write back soon.", "Say hello to everyone for me.", "See you soon.",
                  "Take care of yourself.", "I look forward to hearing from you."]
SIGN_OFFS = ["Love", "Best wishes", "Warm regards", "Yours", "All the best", "Cheers", "Thanks"]


def make_letter(rng: random.Random) -> str:
    """A letter or an e-mail between friends or colleagues on an everyday topic."""
    slots = story_slots(rng)
    slots.update(hour=rng.randint(1, 11), pet=rng.choice(W.FIRST_NAMES),
                 animals=plural(rng.choice(W.ANIMALS)))
    topic, sentences = rng.choice(LETTER_TOPICS)
    body = [rng.choice(LETTER_OPENERS), *sentences, rng.choice(LETTER_CLOSERS)]
    text = fix_articles(" ".join(s.format(**slots) for s in body))
    sender, receiver = slots["hero"], rng.choice(W.FIRST_NAMES)
    lines = [f"Dear {receiver},", "", text, "", f"{rng.choice(SIGN_OFFS)},", sender]
    if rng.random() < 0.5:  # the same letter as an e-mail, with headers
        domain = invented_word(rng, 2) + rng.choice([".org", ".net", ".com"])
        subject = {"thanks": "Thank you!", "invitation": f"Party on {slots['day']}",
                   "travel": f"Hello from {slots['town']}", "news": "News from home",
                   "meeting": f"Meeting on {slots['day']}", "apology": "Sorry about last week"}
        headers = [f"From: {sender.lower()}@{domain}", f"To: {receiver.lower()}@{domain}",
                   f"Subject: {subject[topic]}", ""]
        lines = headers + [f"{rng.choice(['Hi', 'Hello', 'Dear'])} {receiver},"] + lines[1:]
    return "\n".join(lines)
