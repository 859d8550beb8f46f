"""The bench's prompt set: factual questions, explanations, instructions, how-to tasks,
multi-sentence questions and questions about the bundled guide (docs/guide/), shuffled once
with a fixed seed so training traffic and fresh evaluation prompts are disjoint slices."""

from __future__ import annotations

import random

from training.validate.knowledge import contains_expected

TOPICS = [
    "photosynthesis",
    "the water cycle",
    "volcanoes",
    "the moon",
    "black holes",
    "vaccines",
    "the internet",
    "electricity",
    "bees",
    "the Roman empire",
    "rainbows",
    "earthquakes",
    "coffee",
    "chess",
    "the heart",
    "glaciers",
    "recycling",
    "magnets",
    "tides",
    "bread",
    "the piano",
    "satellites",
    "deserts",
    "sleep",
    "bicycles",
    "tea",
    "the stock market",
    "clouds",
    "dinosaurs",
    "the printing press",
    "solar panels",
    "penguins",
    "the human eye",
    "wind turbines",
    "honey",
    "the Olympic games",
    "antibiotics",
    "coral reefs",
    "thunderstorms",
    "the alphabet",
    "compasses",
    "submarines",
    "cheese",
    "the Great Wall of China",
    "fireworks",
    "owls",
    "batteries",
    "maps",
    "the seasons",
    "rice",
    "the violin",
    "yoga",
    "trains",
    "spiders",
    "snow",
    "the Eiffel Tower",
    "paper",
    "the brain",
    "comets",
    "bamboo",
    "lighthouses",
]
TEMPLATES = [
    "What is {}?",
    "Tell me about {}.",
    "Explain {} to a child.",
    "Why does {} matter?",
    "Give me a short overview of {}.",
    "List three facts about {}.",
    "Describe {} in simple words.",
    "What should everyone know about {}?",
    "I am preparing a school presentation on {}. What are the key points I should cover?",
    "My friend thinks {} is boring. How would you convince them otherwise?",
]
HOW_TO = [
    "boil an egg",
    "make a cup of tea",
    "plant a tree",
    "tie a tie",
    "change a bike tire",
    "write a thank-you note",
    "save money each month",
    "learn a new language",
    "fall asleep faster",
    "clean a laptop keyboard",
    "start running",
    "bake bread",
    "prepare for a job interview",
    "organise my desk",
    "take better photos with a phone",
    "remember names",
    "make a budget",
    "wash a wool sweater",
    "keep houseplants alive",
    "write a short poem",
    "study for an exam",
    "cook rice",
    "back up my files",
    "pack a suitcase",
    "stay focused while working",
    "make a paper airplane",
    "brew coffee without a machine",
    "choose a good password",
    "read faster",
    "reduce food waste",
]
GUIDE = [
    "How do I rate an answer in the chat?",
    "What happens after I click thumbs down?",
    "Can I correct an answer the assistant gave me?",
    "How does the assistant learn from my ratings?",
    "What is a canary rollout?",
    "How do I open the operator console?",
    "Where are my conversations stored?",
    "How do I add my own documents?",
    "What does the learning loop do each cycle?",
    "How can I delete my data?",
    "Why did the assistant answer without sources?",
    "How do I change the model's temperature?",
    "What is an adapter?",
    "How do I roll back a bad adapter?",
    "Which file holds every setting?",
    "How often does training run?",
    "What does validation check before a new adapter goes live?",
    "How do I use the API with an OpenAI client?",
    "What personal data is removed before training?",
    "What should I do if the server says it is busy?",
]


def all_prompts() -> list[str]:
    """Every bench prompt, in a fixed shuffled order (seed 12)."""
    prompts = [t.format(topic) for t in TEMPLATES for topic in TOPICS]
    prompts += [f"How do I {task}?" for task in HOW_TO]
    prompts += [f"Give me step-by-step instructions to {task}." for task in HOW_TO]
    prompts += GUIDE
    random.Random(12).shuffle(prompts)
    return prompts


def split_prompts(n_eval: int, n_train: int, cycles: int) -> tuple[list[str], list[list[str]]]:
    """Fresh evaluation prompts and one disjoint slice of training prompts per cycle."""
    prompts = all_prompts()
    need = n_eval + n_train * cycles
    if need > len(prompts):
        raise SystemExit(f"only {len(prompts)} distinct prompts: lower --n, --eval or --cycles")
    train = [prompts[n_eval + k * n_train : n_eval + (k + 1) * n_train] for k in range(cycles)]
    return prompts[:n_eval], train


# A fixed probe of general ability: (prompt, words one of which a right answer contains).
PROBES = [
    # factual
    ("What is the capital of France?", ("paris",)),
    ("How many days are in a week?", ("seven", "7")),
    ("What is 12 times 12?", ("144",)),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("Translate 'thank you' into Spanish.", ("gracias",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the boiling point of water in Celsius?", ("100",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Name the opposite of 'hot'.", ("cold",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("Write the word 'cat' in capital letters.", ("CAT",)),
    ("What is 7 plus 8?", ("15", "fifteen")),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What is the freezing point of water in Celsius?", ("0", "zero")),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of England?", ("london",)),
    ("How many months are in a year?", ("twelve", "12")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("How many minutes are in an hour?", ("60", "sixty")),
    ("What is 10 plus 10?", ("20", "twenty")),
    ("What is 9 minus 3?", ("6", "six")),
    ("What is 5 times 5?", ("25", "twenty-five", "twenty five")),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the closest star to the Earth?", ("sun",)),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("What colour are bananas when they are ripe?", ("yellow",)),
    ("What colour is grass?", ("green",)),
    ("Which ocean is the largest?", ("pacific",)),
    ("What is the chemical symbol for water?", ("h2o",)),
    ("Which organ pumps blood around the body?", ("heart",)),
    ("How many continents are there?", ("seven", "7")),
    ("Who painted the Mona Lisa?", ("vinci", "leonardo")),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the largest mammal in the world?", ("whale",)),
    ("What is the tallest animal in the world?", ("giraffe",)),
    ("Which gas do humans need to breathe to live?", ("oxygen",)),
    ("What is the currency of the United States?", ("dollar",)),
    ("How many sides does a triangle have?", ("three", "3")),
    ("How many sides does a square have?", ("four", "4")),
    ("What do caterpillars turn into?", ("butterfl", "moth")),
    ("Which season comes after winter?", ("spring",)),
    ("What is the opposite of 'up'?", ("down",)),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    # instructions
    ("Translate 'hello' into French.", ("bonjour", "salut")),
    ("Translate 'cat' into Spanish.", ("gato",)),
    ("Write the word 'dog' in capital letters.", ("DOG",)),
    ("Write the number twelve in digits.", ("12",)),
    ("Write the number 7 as a word.", ("seven",)),
    ("Complete the sequence: 2, 4, 6, 8, ...", ("10", "ten")),
    ("Give the plural of 'child'.", ("children",)),
    ("Give the past tense of 'go'.", ("went",)),
    (
        "Name a colour of the rainbow.",
        ("red", "orange", "yellow", "green", "blue", "indigo", "violet"),
    ),
    ("Name a fruit that is red.", ("apple", "strawberr", "cherr", "raspberr", "tomato")),
    (
        "Name a day of the week.",
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ),
    (
        "Name a month with 31 days.",
        ("january", "march", "may", "july", "august", "october", "december"),
    ),
    (
        "Give a word that rhymes with 'cat'.",
        ("hat", "bat", "mat", "rat", "sat", "fat", "pat", "flat"),
    ),
    ("Give the opposite of 'big'.", ("small", "little", "tiny")),
    ("How many letters are in the English alphabet?", ("26", "twenty-six", "twenty six")),
    (
        "Name an animal that can fly.",
        (
            "bird",
            "bat",
            "eagle",
            "owl",
            "pigeon",
            "parrot",
            "sparrow",
            "crow",
            "duck",
            "bee",
            "butterfl",
        ),
    ),
]


def probe_correct(answer: str, words: tuple[str, ...]) -> bool:
    """A probe answer is right when it contains one of the words (the validation gate's rule,
    training.validate.knowledge.contains_expected, on a different prompt set)."""
    return contains_expected(answer, words)
