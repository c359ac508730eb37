"""Word lists for make_corpus.py, all written by hand for hone.

Every word the corpus generator emits comes from these lists, from the templates in
make_corpus.py, or from the syllable tables below (invented names). Keeping the lists
in their own module lets the generator read as templates and lets tests count words.
"""


def _words(text: str) -> list[str]:
    """Split a block of whitespace-separated words, keeping order, dropping repeats."""
    return list(dict.fromkeys(text.split()))


def _lines(text: str) -> list[str]:
    """Split a block into one entry per non-empty line (for multi-word entries)."""
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def _pairs(text: str) -> list[tuple[str, str]]:
    """Parse 'base past' pairs, one per line: verbs carry their own past tense."""
    return [tuple(line.split()) for line in _lines(text)]


FIRST_NAMES = _words("""
Ada Abel Agnes Alba Alan Alice Amos Anna Arlo Asha Basil Bea Benny Bram Bruno Cara
Carmen Cecil Clara Cleo Colin Dara Dean Della Diego Dora Edgar Edith Eli Elsa Emil
Enzo Esme Ezra Faye Felix Fern Finn Flora Frida Gemma Gideon Gil Greta Gus Hana Hal
Hazel Hector Ida Igor Ines Iris Ivan Ivy Jack Jade Jasper Joel June Juno Kai Kamal
Kara Karl Kit Lara Leo Levi Lila Linus Lola Lou Luca Lydia Mabel Maya Milo Mina Mira
Nadia Nate Nell Nico Nina Noah Nora Odin Olga Omar Opal Oscar Otto Paige Pablo Petra
Pia Quentin Quinn Rafa Rana Remy Rhea Rosa Rowan Ruby Rufus Sami Sara Saul Selma Silas
Sofia Sven Tara Teo Tess Theo Toby Uma Una Vera Victor Vida Wade Wanda Wren Xavier
Yara Yusuf Zara Zeke Zoe Mateo Priya Ravi Lena Mei Kofi Amara Tomas Ingrid Hugo Elif
Sana Dmitri Aiko Kenji Lucia Marco Femi Ayla Bodhi Cyrus Dalia Elio Freya Goran Helga
Isak Jonas Kiri Lorna Magnus Niamh Orla Pavel Rosalind Stellan Tilda Ulla Vilma Wilbur
""")

SURNAMES = _words("""
Abbott Baker Barlow Becker Bishop Blake Bright Brook Carter Castle Chase Cole Cooper
Crane Dale Dalton Drake Dunn Ellis Fisher Fletcher Ford Foster Frost Garner Gray Hale
Hardy Hayes Hill Holt Hunter Irving Keane Kemp Lane Lark Marsh Mason Meadows Miller
Moss Nash North Oakley Page Parker Pike Porter Quill Reed Rivers Rowe Sawyer Shaw
Sharp Stone Stroud Swift Tanner Thorne Turner Vance Wade Ward Weaver West Winter Wood
Wright Young Novak Okafor Haddad Ortega Lindqvist Moreau Tanaka Varga Kowal Petrov
""")

ANIMALS = _words("""
fox rabbit bear wolf owl hedgehog badger mouse squirrel deer otter beaver frog toad
turtle lizard snake duck goose swan heron crow raven sparrow robin finch pigeon eagle
hawk falcon parrot penguin seal whale dolphin shark crab lobster octopus snail slug
worm beetle ant bee wasp butterfly moth spider ladybird cricket goat sheep cow horse
donkey pig hen rooster cat dog kitten puppy lamb calf pony mole bat raccoon skunk lynx
moose camel llama zebra giraffe elephant lion tiger leopard monkey gorilla panda koala
kangaroo sloth walrus pelican flamingo stork tortoise salmon trout eel jellyfish
""")

PLACES = _words("""
forest meadow river lake pond hill mountain valley beach harbor island village town
city market garden orchard farm barn field bridge castle tower cave cliff desert
jungle swamp marsh glacier canyon library school museum bakery kitchen attic cellar
workshop station airport park playground stadium theater cafe hospital
lighthouse mill stable cottage palace temple square street alley riverbank shore
""")

OBJECTS = _words("""
ball basket bell book bottle bowl box brush bucket button candle cap chair clock
coat coin comb cup curtain desk doll door drum envelope fan feather flag flashlight
fork glove hammer hat helmet jar jacket kettle key kite knife ladder lamp lantern
letter lock map marble mirror mug nail necklace needle notebook pan paper pen pencil
pillow pipe plate pot purse radio ribbon ring rope ruler sack saw scarf scissors
shell shoe shovel sock spoon stamp stick stool string suitcase table telescope thread
ticket toothbrush towel toy tray trumpet umbrella vase wagon wallet watch whistle
window blanket compass backpack camera guitar violin piano flute harp kettle teapot
sandal boot belt bracelet puzzle jigsaw sled bicycle skateboard canoe raft tent
""")

# Countable foods take "a"/plurals ("three pears"); mass foods take "some" ("some rice").
FOODS_COUNTABLE = _words("""
apple apricot banana bean beet berry carrot cherry cracker cucumber egg fig grape
lemon lentil lime mango melon mushroom noodle nut olive onion orange pea peach pear
pepper pickle pie plum potato pumpkin radish raisin sandwich strawberry tomato turnip
walnut almond biscuit muffin pancake waffle cake dumpling pretzel cookie
""")
FOODS_MASS = _words("""
bread butter cheese chocolate corn honey jam milk pasta rice salad soup yogurt barley
porridge lettuce spinach broccoli cabbage squash flour sugar oatmeal cream
""")
SPICES = _words("salt cinnamon ginger vanilla basil parsley mint garlic nutmeg thyme")
FOODS = FOODS_COUNTABLE + FOODS_MASS

ADJECTIVES = _words("""
big small tiny huge tall short long wide narrow thick thin heavy light soft hard
smooth rough warm cold hot cool wet dry clean dirty old new young ancient modern
bright dark pale shiny dull loud quiet noisy silent fast slow quick lazy busy calm
brave shy bold clever wise silly gentle kind cruel friendly proud humble curious
careful careless happy sad angry sleepy hungry thirsty tired cheerful grumpy lonely
lucky nervous patient polite rude strange odd ordinary famous secret hidden empty
full fresh stale sweet sour bitter salty spicy tasty plain fancy simple busy cozy
crowded peaceful wild tame fierce strong weak healthy sick rich poor cheap expensive
beautiful ugly pretty handsome tidy messy sharp blunt deep shallow steep flat round
square crooked straight golden silver wooden stone woolen striped spotted fluffy
furry scaly feathered muddy sandy snowy rainy sunny windy foggy stormy frozen
gentle graceful clumsy sturdy fragile precious useful useless helpful honest
generous grateful jolly merry restless eager glad anxious hopeful sleepy rusty dusty
""")

COLORS = _words("""
red orange yellow green blue purple pink brown black white gray silver gold violet
crimson scarlet amber teal turquoise navy indigo beige cream ivory olive maroon
""")

# Verbs that take a direct object; the second word is the past tense.
TRANSITIVE_VERBS = _pairs("""
carry carried
find found
lose lost
open opened
close closed
fix fixed
wash washed
build built
paint painted
clean cleaned
drop dropped
throw threw
catch caught
borrow borrowed
buy bought
sell sold
hide hid
bring brought
fold folded
mend mended
polish polished
pack packed
fill filled
empty emptied
lift lifted
pull pulled
push pushed
hold held
drag dragged
share shared
count counted
measure measured
weigh weighed
draw drew
sketch sketched
wrap wrapped
return returned
deliver delivered
collect collected
gather gathered
plant planted
water watered
cook cooked
bake baked
chop chopped
stir stirred
taste tasted
smell smelled
study studied
read read
write wrote
sign signed
check checked
guard guarded
follow followed
chase chased
feed fed
visit visited
greet greeted
thank thanked
help helped
""")

# Verbs used without an object; the second word is the past tense.
INTRANSITIVE_VERBS = _pairs("""
walk walked
run ran
laugh laughed
sleep slept
dance danced
sing sang
wait waited
smile smiled
jump jumped
swim swam
climb climbed
shout shouted
whisper whispered
rest rested
sigh sighed
nod nodded
wander wandered
hurry hurried
stumble stumbled
giggle giggled
yawn yawned
shiver shivered
listen listened
wave waved
cheer cheered
frown frowned
blink blinked
tiptoe tiptoed
""")

PROFESSIONS = _words("""
baker farmer fisher teacher doctor nurse builder carpenter painter potter tailor
weaver sailor pilot driver gardener librarian musician singer dancer writer poet
artist sculptor chef cook grocer butcher miller blacksmith jeweler plumber
electrician mechanic engineer scientist chemist astronomer geologist botanist
dentist vet pharmacist judge lawyer clerk banker shopkeeper mayor ranger guard
firefighter shepherd beekeeper brewer cobbler barber courier mapmaker inventor
""")

MATERIALS = _words("""
wood stone iron steel copper brass tin clay glass leather cotton wool silk linen
paper cardboard rubber plastic wax bamboo straw rope marble granite slate sand
""")

BODY_PARTS = _words("""
head ears eyes nose mouth teeth tongue neck shoulders back tail legs paws claws
wings feathers fur whiskers beak horns hooves scales fins shell belly spots stripes
""")

HABITATS = _words("""
woodlands grasslands wetlands highlands lowlands riverbanks hillsides coastlines
mountains deserts swamps meadows forests valleys marshes dunes reefs caves cliffs
""")

EMOTIONS = _words("""
joy fear anger surprise pride shame relief worry delight wonder hope sorrow
excitement gratitude boredom envy calm courage curiosity comfort
""")

WEATHER = _words("""
sunny cloudy rainy windy snowy foggy stormy humid chilly mild freezing drizzly
""")

TIMES_OF_DAY = _lines("""
morning
afternoon
evening
night
dawn
dusk
midnight
noon
""")

DAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")

MONTHS = _words("""
January February March April May June July August September October November December
""")

SEASONS = _words("spring summer autumn winter")

CLOTHES = _words("""
shirt skirt dress trousers shorts sweater cardigan hoodie vest apron cloak gown
uniform pajamas slippers sneakers mittens earmuffs beret bonnet tie
""")

FURNITURE = _words("""
sofa bed bench cupboard wardrobe shelf dresser armchair rug cabinet bookcase
""")

HOBBIES = _lines("""
painting
knitting
fishing
hiking
swimming
cycling
reading
chess
gardening
baking
birdwatching
photography
pottery
sailing
rowing
juggling
woodwork
singing
dancing
running
stargazing
""")

SCHOOL_SUBJECTS = _words("""
mathematics history geography biology chemistry physics music art literature
grammar spelling drawing astronomy botany
""")

NATURE = _words("""
tree leaf branch root flower seed grass moss stone pebble rock cloud rain snow
wind sun moon star sky wave tide sea ocean stream puddle rainbow thunder lightning
mist dew frost ice sand soil mud twig acorn pine oak maple willow birch fern
reed thistle daisy tulip rose lily clover
""")

VEHICLES = _words("""
car bus train tram truck van boat ship ferry plane helicopter scooter tractor
cart carriage submarine rocket
""")

SHAPES = [
    ("triangle", 3), ("square", 4), ("rectangle", 4), ("pentagon", 5),
    ("hexagon", 6), ("heptagon", 7), ("octagon", 8),
]

NUMBER_WORDS = _words("""
zero one two three four five six seven eight nine ten eleven twelve thirteen
fourteen fifteen sixteen seventeen eighteen nineteen twenty
""")

TENS_WORDS = _words("twenty thirty forty fifty sixty seventy eighty ninety")

# Antonym pairs feed question-answer documents ("What is the opposite of hot?").
OPPOSITES = _pairs("""
hot cold
big small
up down
open closed
early late
light dark
fast slow
happy sad
full empty
wet dry
loud quiet
old new
high low
inside outside
push pull
begin end
win lose
first last
give take
near far
thick thin
heavy light
strong weak
day night
left right
""")

# Short glossary entries for chat and encyclopedic answers; written for hone.
DEFINITIONS = [
    ("map", "a drawing that shows where places are and how to get between them"),
    ("clock", "a device that shows the time of day"),
    ("bridge", "a structure that lets people cross over a river, road or valley"),
    ("harbor", "a sheltered stretch of water where boats can stay safely"),
    ("orchard", "a piece of land where fruit trees are grown"),
    ("library", "a place where books are kept so people can read or borrow them"),
    ("recipe", "a list of ingredients and steps for making a dish"),
    ("seed", "the small part of a plant from which a new plant can grow"),
    ("compass", "a tool with a needle that points north"),
    ("calendar", "a chart that shows the days, weeks and months of a year"),
    ("thermometer", "an instrument that measures temperature"),
    ("glacier", "a huge, slow river of ice"),
    ("volcano", "a mountain that can send out hot melted rock, ash and gas"),
    ("island", "a piece of land with water all around it"),
    ("desert", "a dry place that gets very little rain"),
    ("fossil", "the remains or print of a plant or animal from long ago, kept in rock"),
    ("habit", "something a person does often, almost without thinking"),
    ("noun", "a word that names a person, place, thing or idea"),
    ("verb", "a word that describes an action or a state"),
    ("adjective", "a word that describes a noun"),
    ("fraction", "a number that stands for part of a whole, such as one half"),
    ("triangle", "a flat shape with three straight sides"),
    ("evaporation", "the change of a liquid into a gas, as when a puddle dries"),
    ("shadow", "a dark shape made when something blocks the light"),
    ("echo", "a sound that bounces back so you hear it again"),
    ("budget", "a plan for how much money to spend and save"),
    ("list", "a set of items written one after another"),
    ("paragraph", "a group of sentences about one idea"),
    ("umbrella", "a folding cover that keeps the rain off"),
    ("lighthouse", "a tower with a bright light that guides ships at night"),
    ("season", "one of the four parts of the year: spring, summer, autumn and winter"),
    ("neighbor", "a person who lives near you"),
    ("journey", "a trip from one place to another"),
    ("harvest", "the time when crops are gathered from the fields"),
    ("magnet", "an object that pulls iron and steel toward it"),
    ("planet", "a large round body that travels around a star"),
    ("orbit", "the curved path one object takes around another in space"),
    ("telescope", "a tube with lenses that makes faraway things look closer"),
    ("poem", "a piece of writing that uses rhythm and sound to share a feeling"),
    ("kilometer", "a distance of one thousand meters"),
]

# Syllables for invented proper names (places, animals, tools) so encyclopedic text
# describes things that exist only in this corpus and teaches no false facts.
NAME_ONSETS = _words("b br c ch d dr f fl g gr h j k kl l m n p pr r s st sh t tr v w z")
NAME_VOWELS = _words("a e i o u ai ea oo ou ia")
NAME_CODAS = _words("n r l s th m nd rk st x ck ll rn")
PLACE_SUFFIXES = _words("ford ton by wick dale mere haven field moor stead bury holm")
