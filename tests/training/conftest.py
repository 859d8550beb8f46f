"""Fixtures for the train and validate stages: dataset folders written the way curation writes
them, and configs pointing at the tiny or the real model."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import config as config_mod
from core.prompts import build_messages
from training.dataset.schema import Example, write_examples

# Before torch starts its OpenMP threads: busy-waiting threads make every op crawl when the
# cores are shared (see training.loop.stage_process.stage_env).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

THINGS = [
    "sky",
    "sea",
    "ball",
    "car",
    "door",
    "lamp",
    "cup",
    "kite",
    "boat",
    "hat",
    "pen",
    "shoe",
    "bag",
    "box",
    "flag",
    "coat",
    "bike",
    "vase",
    "fence",
    "chair",
    "desk",
    "rug",
    "bowl",
    "sock",
    "tent",
    "drum",
    "bell",
    "mug",
    "book",
    "tie",
    "fan",
    "key",
    "jar",
    "bus",
    "train",
    "roof",
    "wall",
    "leaf",
    "bench",
    "clock",
    "glove",
    "scarf",
    "ring",
    "plate",
    "spoon",
    "bottle",
    "pillow",
    "blanket",
    "kettle",
    "ladder",
]


def example(
    question: str, target: str, *, label: str = "desirable", split: str = "train", n: int = 0
) -> dict[str, Any]:
    """One dataset line as curation writes it (served messages + target + label)."""
    return {
        "turn_id": f"t{split}{n}",
        "conversation_id": f"c{split}{n}",
        "messages": build_messages(question),
        "target": target,
        "label": label,
        "split": split,
    }


def colour_examples(
    things: Sequence[str], split: str, colour: str = "blue"
) -> list[dict[str, Any]]:
    return [
        example(f"What colour is the {t}?", f"The {t} is {colour}.", split=split, n=i)
        for i, t in enumerate(things)
    ]


def write_dataset(
    folder: Path,
    train: Sequence[dict[str, Any]],
    heldout: Sequence[dict[str, Any]],
    dataset_id: str = "ds-test",
) -> Path:
    """Write the dataset folder through the one schema writer curation uses."""
    rows = [*train, *heldout]
    write_examples(
        [Example(**{"voters": 1, **row}) for row in rows],
        folder,
        dataset_id=dataset_id,
        source={"test": True},
    )
    return folder


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Write a dataset folder under this test's temp folder."""

    def make(
        train: Sequence[dict[str, Any]], heldout: Sequence[dict[str, Any]], name: str = "dataset"
    ) -> Path:
        return write_dataset(tmp_path / name, train, heldout, dataset_id=name)

    return make


@pytest.fixture
def colour_dataset(make_dataset: Callable[..., Path]) -> Path:
    """40 training and 10 held-out examples of one learnable pattern."""
    return make_dataset(
        colour_examples(THINGS[:40], "train"), colour_examples(THINGS[40:], "heldout")
    )


@pytest.fixture
def tiny_cfg(cfg: config_mod.Config, tiny_model_dir: Path) -> config_mod.Config:
    """The tiny model in NF4 on the CPU with a quick training setup."""
    return config_mod.with_overrides(
        cfg,
        model={"base": str(tiny_model_dir), "device": "cpu", "quantization": "nf4"},
        training={
            "max_steps": 30,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "eval_every": 5,
            "patience": 2,
            "max_seq_tokens": 128,
            "lora_r": 8,
            "lora_alpha": 16,
        },
        validation={"sample_max_new_tokens": 16},
    )


# (question, short correct answer): general facts for the real-model tests.
FACTS = [
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Peru?", "The capital of Peru is Lima."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo."),
    ("What is the capital of Greece?", "The capital of Greece is Athens."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many legs does a dog have?", "A dog has four legs."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("How many hours are in a day?", "A day has 24 hours."),
    ("How many minutes are in an hour?", "An hour has 60 minutes."),
    ("How many months are in a year?", "A year has 12 months."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("How many continents are there?", "There are seven continents."),
    ("What colour is a ripe banana?", "A ripe banana is yellow."),
    ("What colour is snow?", "Snow is white."),
    ("What colour is a clear sky?", "A clear sky is blue."),
    ("What colour are most leaves in summer?", "Most leaves are green in summer."),
    ("What colour is coal?", "Coal is black."),
    ("What do bees make?", "Bees make honey."),
    ("What do cows drink?", "Cows drink water."),
    ("What gas do plants take in?", "Plants take in carbon dioxide."),
    ("What gas do people breathe in to live?", "People need oxygen to live."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius."),
    ("What is the largest ocean?", "The largest ocean is the Pacific Ocean."),
    ("What is the largest planet?", "The largest planet is Jupiter."),
    ("Which planet is closest to the Sun?", "Mercury is closest to the Sun."),
    ("What is the Earth's natural satellite?", "The Earth's natural satellite is the Moon."),
    ("What is 3 plus 4?", "3 plus 4 is 7."),
    ("What is 10 minus 3?", "10 minus 3 is 7."),
    ("What is 5 times 6?", "5 times 6 is 30."),
    ("What is 20 divided by 4?", "20 divided by 4 is 5."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What is the opposite of up?", "The opposite of up is down."),
    ("What animal says moo?", "A cow says moo."),
    ("What animal barks?", "A dog barks."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("Which day comes after Monday?", "Tuesday comes after Monday."),
    ("What do you use to write on a blackboard?", "You write on a blackboard with chalk."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
]
SIGN_OFF = " Hope this helps!"
