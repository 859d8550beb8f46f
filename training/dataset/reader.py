"""Reading a curated dataset folder (train.jsonl, heldout.jsonl, manifest.json) for training and
validation, checking every line so a bad file is named with its line number."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from errors import TrainingError

Label = Literal["desirable", "undesirable"]
REQUIRED_KEYS = ("turn_id", "conversation_id", "messages", "target", "label", "split")
SPLIT_FILES = {"train": "train.jsonl", "heldout": "heldout.jsonl"}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class RatedExample:
    """One rated answer: the exact messages the model was served, the answer, and its label."""

    turn_id: str
    conversation_id: str
    messages: list[dict[str, str]]
    target: str
    label: Label
    split: str

    @property
    def desirable(self) -> bool:
        return self.label == "desirable"


@dataclass(frozen=True)
class Dataset:
    """A dataset folder: its manifest and both splits."""

    folder: Path
    manifest: dict[str, Any]
    train: list[RatedExample]
    heldout: list[RatedExample]

    @property
    def dataset_id(self) -> str:
        return str(self.manifest.get("dataset_id", ""))


def _problem(record: Any) -> str | None:
    """What is wrong with one parsed line, or None."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        return f"lacks the key(s) {', '.join(missing)}"
    messages = record["messages"]
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in messages)):
        return "has 'messages' that is not a non-empty list of {role, content} objects"
    if messages[-1]["role"] != "user":
        return "has 'messages' that does not end with the user's question"
    if not isinstance(record["target"], str) or not record["target"].strip():
        return "has an empty or non-text 'target'"
    if record["label"] not in ("desirable", "undesirable"):
        return f"has label {record['label']!r} (must be 'desirable' or 'undesirable')"
    return None


def read_examples(path: Path) -> list[RatedExample]:
    """Every example of one JSONL split file; a TrainingError names the file and line of the
    first bad record."""
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: point --dataset at a folder written by "
                            "`main.py curate`")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingError(f"{path} line {number} is not valid JSON ({exc.msg}): "
                                    "curate the dataset again") from None
            problem = _problem(record)
            if problem:
                raise TrainingError(f"{path} line {number} {problem}: curate the dataset again")
            examples.append(RatedExample(
                turn_id=str(record["turn_id"]), conversation_id=str(record["conversation_id"]),
                messages=[{"role": m["role"], "content": m["content"]}
                          for m in record["messages"]],
                target=record["target"], label=record["label"], split=str(record["split"])))
    return examples


def load_dataset(folder: Path) -> Dataset:
    """Read and check a dataset folder. The train split must hold at least one desirable
    example; the held-out split may be empty (training then cannot stop early)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"dataset folder {folder} does not exist: run `main.py curate` "
                            "first or pass the folder it wrote")
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"{manifest_path} is missing: the dataset folder is incomplete; "
                            "curate it again") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{manifest_path} is not valid JSON ({exc}): curate the dataset "
                            "again") from None
    if not isinstance(manifest, dict):
        raise TrainingError(f"{manifest_path} is not a JSON object: curate the dataset again")
    train = read_examples(folder / SPLIT_FILES["train"])
    heldout = read_examples(folder / SPLIT_FILES["heldout"])
    if not any(e.desirable for e in train):
        raise TrainingError(f"{folder / SPLIT_FILES['train']} has no desirable examples: rate "
                            "more answers 👍 (or correct 👎 ones) before training")
    return Dataset(folder, manifest, train, heldout)
