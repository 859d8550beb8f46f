"""Retrieval: the public entry for searching the operator's documents and managing the index.

`open_retriever(cfg)` joins an embedder and a vector store; `Retriever.search` returns
`ServedPassage`s (chunk id, source, text, cosine score) for the chat to cite and log. Ingestion
(`ingest_paths`, `delete_source`, `list_sources`, `ensure_sample_docs`, `reindex`) lives in
`assistant.retrieval.ingest`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.retrieval.embedder import Embedder, load_embedder
from assistant.retrieval.vectorstore import MilvusStore, VectorStore, is_server_uri
from config import Config, RetrievalConfig
from core.domain import ServedPassage
from errors import InputError, RetrievalError

Passage = ServedPassage


@dataclass
class Retriever:
    """An embedder and the vector store it filled, with the retrieval settings."""

    config: RetrievalConfig
    embedder: Embedder
    store: VectorStore

    def check_embedder(self) -> None:
        """Raise RetrievalError when the index was built by another embedder than ours."""
        indexed_with = self.store.indexed_with
        if indexed_with is not None and (
            indexed_with != self.embedder.name or self.store.dim != self.embedder.dim
        ):
            raise RetrievalError(
                f"the document index was built with the embedder {indexed_with!r} "
                f"({self.store.dim} dimensions) but retrieval.embedder is "
                f"{self.embedder.name!r} ({self.embedder.dim}); its vectors are not comparable. "
                "Run `main.py ingest --reindex` to re-embed the stored chunks, or set "
                f"retrieval.embedder back to {indexed_with!r}"
            )

    def search(self, query: str, top_k: int | None = None) -> list[ServedPassage]:
        """The passages most relevant to `query`, best first, scoring at least the threshold.

        Dense (cosine) search, fused with BM25 keyword search by reciprocal rank fusion where
        the collection has a keyword index (`stats()["hybrid"]`). `score` is always the cosine
        similarity of query and passage, which `retrieval.score_threshold` applies to. Raises
        RetrievalError when Milvus fails or does not answer within `retrieval.timeout_s`.
        """
        k = self.config.top_k if top_k is None else top_k
        if k < 0:
            raise InputError(f"top_k = {k}: must be 0 or more")
        query = query.strip()
        if not query or k == 0:
            return []
        self.check_embedder()
        vector = self.embedder.embed([query])[0]
        # Ask for more than k so the threshold can drop weak ones and still leave k.
        hits = self.store.search(vector, query, limit=max(k * 3, 10), hybrid=self.config.hybrid)
        kept = [h for h in hits if h.score >= self.config.score_threshold][:k]
        return [ServedPassage(h.chunk_id, h.source, h.text, round(h.score, 4)) for h in kept]

    def healthy(self) -> bool:
        """Whether the vector store answers within the timeout (never raises)."""
        return self.store.healthy()

    def stats(self) -> dict[str, Any]:
        """Figures for the operator console: chunks, sources, embedder, uri, hybrid or not."""
        sources = {row["source"] for row in self.store.first_rows()}
        return {
            "chunks": self.store.count(),
            "sources": len(sources),
            "embedder": self.embedder.name,
            "indexed_with": self.store.indexed_with,
            "uri": self.store.uri,
            "collection": self.config.collection,
            "hybrid": bool(self.config.hybrid and self.store.hybrid),
            "hybrid_note": self.store.hybrid_note,
        }

    def close(self) -> None:
        """Release the vector store (for Milvus Lite: the database file)."""
        self.store.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_uri(cfg: Config) -> str:
    """The Milvus URI: a server URL as configured, or the Lite file under the data dir."""
    uri = cfg.retrieval.uri
    if is_server_uri(uri):
        return uri
    if "://" in uri:
        raise RetrievalError(
            f"retrieval.uri = {uri!r}: use http(s)://host:port for a Milvus "
            "server or a file name ending in .db for Milvus Lite"
        )
    if not uri.endswith(".db"):
        raise RetrievalError(
            f"retrieval.uri = {uri!r}: a Milvus Lite file name must end in .db (e.g. 'milvus.db')"
        )
    path = Path(uri)
    path = path if path.is_absolute() else cfg.data_dir / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def open_retriever(
    cfg: Config, *, embedder: Embedder | None = None, for_reindex: bool = False
) -> Retriever:
    """Load the embedder and open (or create) the collection described by `cfg.retrieval`.

    A server that does not answer raises RetrievalError within `retrieval.timeout_s`. An index
    built by another embedder raises RetrievalError asking for a re-index, unless
    `for_reindex` (then pass the retriever to `reindex`). `embedder` replaces loading one
    (tests share one across a session).
    """
    rc = cfg.retrieval
    embedder = embedder or load_embedder(rc.embedder, Path(cfg.root))
    uri = store_uri(cfg)
    token = os.environ.get(rc.token_env) or None
    store = MilvusStore(
        uri,
        rc.collection,
        embedder.dim,
        embedder.name,
        token=token,
        timeout_s=rc.timeout_s,
        hybrid=rc.hybrid,
    )
    retriever = Retriever(rc, embedder, store)
    if not for_reindex:
        try:
            retriever.check_embedder()
        except RetrievalError:
            retriever.close()
            raise
    return retriever
