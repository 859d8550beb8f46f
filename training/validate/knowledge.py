"""What the model knows, checked before a candidate ships: greedy answers to short factual and
instruction prompts, each right when it contains an expected word. A taste for form alone can
teach a small model to say wrong things in the liked form (measured: a brevity adapter whose
answers users liked 43 points more often answered 5 of 64 fact prompts fewer right), and the
drift bound on general prompts did not see it (KL 0.05 against a limit of 1.0).

These prompts are the validation gate's own; bench/prompts.py's PROBES, which measure general
ability after the fact, are a different set, so the gate is not tuned on its own yardstick."""

from __future__ import annotations

import re
from collections.abc import Sequence

KNOWLEDGE_PROMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of Russia?", ("moscow",)),
    ("What is the capital of China?", ("beijing",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Greece?", ("athens",)),
    ("How many wheels does a bicycle have?", ("two", "2")),
    ("How many legs does a dog have?", ("four", "4")),
    ("How many seconds are in a minute?", ("60", "sixty")),
    ("How many days are in a leap year?", ("366",)),
    ("What is 3 times 4?", ("12", "twelve")),
    ("What is 100 divided by 10?", ("10", "ten")),
    ("What is 6 plus 7?", ("13", "thirteen")),
    ("Which planet do we live on?", ("earth",)),
    ("What do cows drink?", ("water",)),
    ("What is the main language spoken in Mexico?", ("spanish",)),
    ("Who was the first person to walk on the Moon?", ("armstrong",)),
    ("Which animal has a trunk?", ("elephant",)),
    ("What colour is snow?", ("white",)),
    ("What is the hottest planet in our solar system?", ("venus",)),
    ("What metal is liquid at room temperature?", ("mercury",)),
    ("Which bird is a symbol of peace?", ("dove",)),
    ("What is the opposite of 'day'?", ("night",)),
    ("What do you call a baby cat?", ("kitten",)),
    ("What is the largest country in the world by area?", ("russia",)),
    ("Translate 'water' into Spanish.", ("agua",)),
    ("Translate 'good night' into French.", ("bonne nuit",)),
    ("Write the word 'sun' in capital letters.", ("SUN",)),
    ("Give the plural of 'mouse'.", ("mice",)),
    ("Give the past tense of 'eat'.", ("ate",)),
    ("Spell the number 3 as a word.", ("three",)),
    ("Name a primary colour.", ("red", "blue", "yellow")),
    ("Name a vegetable that is orange.", ("carrot", "pumpkin", "sweet potato")),
)


def contains_expected(answer: str, words: Sequence[str]) -> bool:
    """Whether the answer contains one of the words at the start of a word (case-insensitive,
    except all-capital words, which must appear as written); a number must also end there, so
    '10' is not found in '100'."""
    for w in words:
        text = answer if w.isupper() else answer.lower()
        end = r"(?!\d)" if w[-1].isdigit() else ""
        if re.search(rf"(?<!\w){re.escape(w)}{end}", text):
            return True
    return False


def right_answers(answers: Sequence[str]) -> list[int]:
    """1 or 0 per KNOWLEDGE_PROMPTS answer (in order): whether it has an expected word."""
    return [
        int(contains_expected(a, words))
        for a, (_, words) in zip(answers, KNOWLEDGE_PROMPTS, strict=True)
    ]
