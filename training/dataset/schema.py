"""The ONE dataset schema: examples, labels, splits, file names and the manifest, with the one
writer (`write_dataset` / `write_examples`) and the one verifying reader (`load_dataset`) that
curation, training, validation and the test fixtures all use.

A dataset is a self-describing folder: `train.jsonl`, `heldout.jsonl` and a `manifest.json`
that records what is inside, how it was made and the sha256 of every file.

A dataset folder is written once, atomically (a hidden temp folder renamed into place), so a
crash never leaves half a dataset where training would pick it up; `load_dataset` refuses a
folder whose files no longer match their manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from errors import TrainingError

FORMAT_VERSION = 2  # 2: lines may carry `synthetic` (best-of-n examples from the taste model)
READABLE_VERSIONS = (1, 2)  # a dataset with no synthetic example is still written as version 1
MANIFEST_FILE = "manifest.json"
SPLIT_FILES: dict[str, str] = {"train": "train.jsonl", "heldout": "heldout.jsonl"}

Label = Literal["desirable", "undesirable"]
Split = Literal["train", "heldout"]
LABELS: tuple[str, ...] = get_args(Label)
SPLITS: tuple[str, ...] = get_args(Split)
_LINE_KEYS = ("turn_id", "conversation_id", "messages", "target", "label", "split", "voters")
_OPTIONAL_KEYS = ("synthetic",)  # omitted when False, so vote-only datasets stay version 1


def question_key(text: str) -> str:
    """A question as compared with others: case and spacing ignored."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Example:
    """One training example: the chat messages as served (scrubbed) and the assistant reply to
    learn (`desirable`) or to push away from (`undesirable`). A 👎 turn with a correction gives
    two examples with the same turn_id: the correction and the original answer, a natural
    preference pair. `synthetic` marks an answer sampled from the model and labelled by the
    taste model (best-of-n), not by a user: it is only ever in the train split, and its
    best/worst candidates to one question share a turn_id (a pair, see training.dataset.pairs)."""

    turn_id: str
    conversation_id: str
    messages: list[dict[str, str]]
    target: str
    label: Label
    split: Split
    voters: int
    synthetic: bool = False

    @property
    def desirable(self) -> bool:
        """True for a reply to learn, False for one to push away from."""
        return self.label == "desirable"

    @property
    def question(self) -> str:
        """The user message the target answers (the last one)."""
        return self.messages[-1]["content"]

    @property
    def question_key(self) -> str:
        """The question as examples are grouped by it: case and spacing ignored."""
        return question_key(self.question)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one dataset line."""
        line = {key: getattr(self, key) for key in _LINE_KEYS}
        if self.synthetic:
            line["synthetic"] = True
        return line

    @classmethod
    def from_json(cls, data: object, where: str) -> Example:
        """Parse one dataset line; the error starts with `where` (e.g. "train.jsonl line 4")."""
        fix = "rebuild the dataset with `main.py curate`"
        if not isinstance(data, dict):
            raise TrainingError(f"{where} is not a JSON object: {fix}")
        missing = [k for k in _LINE_KEYS if k not in data]
        if missing:
            raise TrainingError(f"{where} lacks the key(s) {', '.join(missing)}: {fix}")
        extra = sorted(set(data) - set(_LINE_KEYS) - set(_OPTIONAL_KEYS))
        if extra:
            raise TrainingError(f"{where} has unknown key(s) {', '.join(extra)}: {fix}")
        if data["label"] not in LABELS:
            raise TrainingError(
                f"{where} has label {data['label']!r} (must be 'desirable' or 'undesirable'): {fix}"
            )
        if data["split"] not in SPLITS:
            raise TrainingError(
                f"{where} has split {data['split']!r} (must be 'train' or 'heldout'): {fix}"
            )
        if (
            not all(isinstance(data[k], str) for k in ("turn_id", "conversation_id", "target"))
            or not isinstance(data["voters"], int)
            or isinstance(data["voters"], bool)
        ):
            raise TrainingError(f"{where} has a field of the wrong type: {fix}")
        if not isinstance(data.get("synthetic", False), bool):
            raise TrainingError(f"{where} has 'synthetic' that is not true/false: {fix}")
        if data.get("synthetic") and data["split"] != "train":
            raise TrainingError(
                f"{where} is a synthetic example in the {data['split']!r} split "
                f"(synthetic examples are for training only): {fix}"
            )
        messages = data["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict)
                and set(m) == {"role", "content"}
                and all(isinstance(v, str) for v in m.values())
                for m in messages
            )
            or messages[-1]["role"] != "user"
        ):
            raise TrainingError(
                f"{where} has 'messages' that is not a non-empty list of "
                f"{{role, content}} objects ending with the user's question: {fix}"
            )
        if not data["target"].strip():
            raise TrainingError(f"{where} has an empty target answer: {fix}")
        return cls(**data)


@dataclass(frozen=True)
class DatasetManifest:
    """What `manifest.json` says about a dataset folder (`path` is where it was found).

    `counts` is split -> label -> examples, `dropped` reason -> count, `scrubbed` PII kind ->
    placeholders written, `curation` the settings and seed used, `sha256` file name -> hex
    digest of its bytes (a tool that rewrites a split file, e.g. to forget a user, must update
    `sha256` and `counts`)."""

    dataset_id: str
    created_at: str
    format_version: int
    counts: dict[str, dict[str, int]]
    dropped: dict[str, int]
    scrubbed: dict[str, int]
    curation: dict[str, Any]
    source: dict[str, Any]
    sha256: dict[str, str]
    path: Path

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to `manifest.json` (everything but the path)."""
        data = dataclasses.asdict(self)
        del data["path"]
        return data


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset folder read back and verified against its manifest."""

    manifest: DatasetManifest
    train: list[Example]
    heldout: list[Example]

    @property
    def folder(self) -> Path:
        return self.manifest.path

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_lines(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _counts(examples: list[Example]) -> dict[str, dict[str, int]]:
    counts = {split: dict.fromkeys(LABELS, 0) for split in SPLITS}
    for example in examples:
        counts[example.split][example.label] += 1
    return counts


class Curated(Protocol):
    """What the writer needs of a curation result (training.dataset.curate.CurationResult)."""

    @property
    def examples(self) -> list[Example]: ...
    @property
    def drop_counts(self) -> dict[str, int]: ...
    @property
    def scrub_counts(self) -> dict[str, int]: ...
    @property
    def config(self) -> Any: ...
    @property
    def seed(self) -> int: ...
    @property
    def turns_in(self) -> int: ...


def write_dataset(
    result: Curated, out_dir: Path, *, dataset_id: str, source_description: dict[str, Any]
) -> DatasetManifest:
    """Write a curation result as the dataset folder `out_dir` (which must not exist yet).

    `source_description` (JSON-serialisable: e.g. the time window and turn count the store query
    covered) is recorded verbatim in the manifest. The folder appears complete or not at all.
    """
    if not result.examples:
        raise TrainingError(
            "no examples survived curation (see the drop reasons); collect more "
            "rated turns before building a dataset"
        )
    return write_examples(
        result.examples,
        out_dir,
        dataset_id=dataset_id,
        source=source_description,
        dropped=dict(result.drop_counts),
        scrubbed=dict(result.scrub_counts),
        curation={
            **dataclasses.asdict(result.config),
            "seed": result.seed,
            "turns_in": result.turns_in,
        },
    )


def write_examples(
    examples: Sequence[Example],
    out_dir: Path,
    *,
    dataset_id: str,
    source: dict[str, Any],
    dropped: dict[str, int] | None = None,
    scrubbed: dict[str, int] | None = None,
    curation: dict[str, Any] | None = None,
) -> DatasetManifest:
    """Write examples (each carrying its split) as the dataset folder `out_dir`, atomically."""
    out_dir = Path(out_dir)
    examples = list(examples)
    if not dataset_id or not isinstance(dataset_id, str):
        raise TrainingError("write_dataset needs a non-empty dataset_id")
    if out_dir.exists():
        raise TrainingError(
            f"dataset folder {out_dir} already exists: datasets are never "
            "overwritten; write to a new folder or remove the old one"
        )
    try:
        json.dumps(source)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"source_description must be JSON-serialisable: {exc}") from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {}
        for split, name in SPLIT_FILES.items():
            _write_lines(tmp / name, [e for e in examples if e.split == split])
            files[name] = file_sha256(tmp / name)
        manifest = DatasetManifest(
            dataset_id=dataset_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            format_version=FORMAT_VERSION if any(e.synthetic for e in examples) else 1,
            counts=_counts(examples),
            dropped=dict(dropped or {}),
            scrubbed=dict(scrubbed or {}),
            curation=dict(curation or {}),
            source=source,
            sha256=files,
            path=out_dir,
        )
        with (tmp / MANIFEST_FILE).open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest.to_json(), ensure_ascii=False, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, out_dir)  # atomic on POSIX; fails if out_dir appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out_dir.parent)
    return manifest


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename already happened
    finally:
        os.close(fd)


def _broken(path: Path, problem: str) -> TrainingError:
    return TrainingError(
        f"dataset {path} is broken: {problem}; rebuild it with curate "
        "(a dataset folder must not be edited by hand)"
    )


def load_dataset(path: Path, *, trainable: bool = False) -> LoadedDataset:
    """Read a dataset folder, verifying its manifest, the sha256 of each file and the counts.
    `trainable` also requires a desirable example in the train split (what train and validate
    need)."""
    path = Path(path)
    if not path.is_dir():
        raise TrainingError(
            f"dataset folder {path} does not exist: run `main.py curate` first "
            "or pass the folder it wrote"
        )
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise TrainingError(
            f"{path} is not a dataset folder ({MANIFEST_FILE} is missing); pass "
            "a folder written by curate"
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _broken(path, f"{MANIFEST_FILE} is not valid JSON ({exc})") from None
    fields = [f.name for f in dataclasses.fields(DatasetManifest) if f.name != "path"]
    if not isinstance(data, dict) or set(data) != set(fields):
        raise _broken(path, f"{MANIFEST_FILE} must hold exactly the keys {', '.join(fields)}")
    if data["format_version"] not in READABLE_VERSIONS:
        raise TrainingError(
            f"dataset {path} has format version {data['format_version']!r}; this "
            f"version reads {READABLE_VERSIONS}: rebuild it with this curate"
        )
    manifest = DatasetManifest(**data, path=path)
    splits: dict[str, list[Example]] = {}
    for split, name in SPLIT_FILES.items():
        file = path / name
        if not file.is_file():
            raise TrainingError(
                f"{file} does not exist: the dataset folder is incomplete; "
                "rebuild it with `main.py curate`"
            )
        examples = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            where = f"{file} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _broken(path, f"{where} is not valid JSON ({exc.msg})") from None
            example = Example.from_json(record, where)
            if example.split != split:
                raise _broken(path, f"{where} belongs to split {example.split!r}")
            examples.append(example)
        splits[split] = examples
    if trainable and not any(e.desirable for e in splits["train"]):
        raise TrainingError(
            f"{path / SPLIT_FILES['train']} has no desirable examples: rate "
            "more answers 👍 (or correct 👎 ones) before training"
        )
    for name in SPLIT_FILES.values():  # after the lines, so a bad line is named first
        if manifest.sha256.get(name) != file_sha256(path / name):
            raise _broken(
                path,
                f"{name} does not match the sha256 in {MANIFEST_FILE} (changed "
                "or truncated since it was written)",
            )
    if _counts(splits["train"] + splits["heldout"]) != manifest.counts:
        raise _broken(path, f"the examples do not add up to the counts in {MANIFEST_FILE}")
    return LoadedDataset(manifest, splits["train"], splits["heldout"])
