"""Retrieval end to end on Milvus Lite and on a real Milvus server: ingest, re-ingest, replace,
delete, search (hybrid where the server has BM25), the embedder check, and unreachable servers."""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import config as config_mod
from assistant.retrieval.embedder import Embedder, load_embedder
from assistant.retrieval.ingest import (
    delete_source,
    ensure_sample_docs,
    ingest_paths,
    list_sources,
    reindex,
)
from assistant.retrieval.retriever import Retriever, open_retriever
from errors import RetrievalError
from tests.milvus_server import MilvusServer, start_milvus_server

REPO = Path(__file__).resolve().parents[2]


class CachingEmbedder:
    """The real embedder, remembering vectors: tests ingest the same texts on two backends."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.cache = inner, {}
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens

    def embed(self, texts):
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        self.cache.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else self.inner.embed([])

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


@functools.cache
def shared_embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once per test session (other modules import this)."""
    return CachingEmbedder(load_embedder("all-MiniLM-L6-v2", REPO))


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One real Milvus server for the session, started on free loopback ports, data in tmp."""
    server = start_milvus_server(tmp_path_factory.mktemp("milvus-server"))
    yield server
    server.stop()


def make_cfg(tmp_path: Path, **retrieval: object) -> config_mod.Config:
    """The shipped config with its data dir in `tmp_path` and some retrieval settings changed."""
    cfg = config_mod.load_config(
        REPO / "config.toml", overrides={"server": {"data_dir": str(tmp_path / "data")}}
    )
    return config_mod.with_overrides(cfg, retrieval=dict(retrieval)) if retrieval else cfg


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def retriever(
    request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder
) -> Iterator[Retriever]:
    """A fresh, empty retriever on Milvus Lite, or on the session's server (own collection)."""
    if request.param == "lite":
        cfg = make_cfg(tmp_path)
    else:
        server = request.getfixturevalue("milvus_server")
        cfg = make_cfg(tmp_path, uri=server.uri, collection=f"t_{uuid.uuid4().hex[:12]}")
    retriever = open_retriever(cfg, embedder=embedder)
    yield retriever
    retriever.close()


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garden.md").write_text(
        "# Gardening\n\nTomatoes need full sun and regular watering. Stake the plants when they "
        "reach knee height.\n\n## Pests\n\nAphids are controlled with a soap spray. The orchard "
        "error code ZQX-4471 means the irrigation valve is stuck open.\n"
    )
    (folder / "kitchen.txt").write_text(
        "Bread dough rises best in a warm kitchen. Knead it for ten minutes until smooth.\n\n"
        "Sourdough needs a starter fed with flour and water every day.\n"
    )
    (folder / "space.html").write_text(
        "<html><head><title>x</title><script>var secret = 1;</script></head><body>"
        "<h1>Planets</h1><p>Mars is the red planet; its thin atmosphere is mostly carbon "
        "dioxide.</p><h2>Moons</h2><p>Jupiter has dozens of moons, the largest is Ganymede."
        "</p></body></html>"
    )
    return folder


def sources_of(passages: list) -> list[str]:
    return [Path(p.source).name for p in passages]


def test_ingest_then_search_finds_the_right_document(retriever: Retriever, tmp_path: Path):
    docs = write_docs(tmp_path / "docs")
    seen: list[tuple[int, int, str]] = []
    report = ingest_paths(retriever, [docs], progress=lambda *a: seen.append(a))
    assert [Path(o.source).name for o in report.added] == ["garden.md", "kitchen.txt", "space.html"]
    assert not report.failed and report.chunks >= 4
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    assert "added 3" in report.summary()

    passages = retriever.search("How long should I knead bread dough?")
    assert passages and sources_of(passages)[0] == "kitchen.txt"
    top = passages[0]
    assert top.chunk_id and top.score >= retriever.config.score_threshold
    assert "Knead" in top.text
    assert sources_of(retriever.search("Which moon of Jupiter is the biggest?"))[0] == "space.html"
    assert all("secret" not in p.text for p in retriever.search("javascript secret variable"))
    # A heading trail opens each chunk, so a passage alone says what it is about.
    pests = retriever.search("How do I get rid of aphids?")[0]
    assert pests.text.startswith("Gardening > Pests")

    stats = retriever.stats()
    assert stats["sources"] == 3 and stats["chunks"] == report.chunks
    assert stats["embedder"] == "all-MiniLM-L6-v2" and retriever.healthy()
    listed = list_sources(retriever)
    assert [Path(s.source).name for s in listed] == ["garden.md", "kitchen.txt", "space.html"]
    assert all(s.embedder == "all-MiniLM-L6-v2" and len(s.content_hash) == 64 for s in listed)


def test_reingest_skips_unchanged_and_replaces_changed(retriever: Retriever, tmp_path: Path):
    docs = write_docs(tmp_path / "docs")
    first = ingest_paths(retriever, [docs])
    again = ingest_paths(retriever, [docs])
    assert len(again.skipped) == 3 and again.chunks == 0
    assert all(o.reason.startswith("unchanged since") for o in again.skipped)

    (docs / "kitchen.txt").write_text("Pasta is boiled in salted water for nine minutes.\n")
    changed = ingest_paths(retriever, [docs])
    assert [Path(o.source).name for o in changed.replaced] == ["kitchen.txt"]
    assert len(changed.skipped) == 2
    assert retriever.stats()["chunks"] == first.chunks - first.added[1].chunks + 1
    assert sources_of(retriever.search("How long do I boil pasta?"))[0] == "kitchen.txt"
    assert not any("Knead" in p.text for p in retriever.search("knead bread dough", top_k=10))


def test_delete_source_removes_its_chunks(retriever: Retriever, tmp_path: Path):
    docs = write_docs(tmp_path / "docs")
    report = ingest_paths(retriever, [docs])
    garden = report.added[0]
    assert delete_source(retriever, garden.source) == garden.chunks
    assert "garden.md" not in sources_of(retriever.search("tomatoes sun watering", top_k=10))
    assert delete_source(retriever, str(docs / "space.html")) > 0  # by path as typed
    assert delete_source(retriever, "no/such/source.md") == 0
    assert [Path(s.source).name for s in list_sources(retriever)] == ["kitchen.txt"]


def test_keyword_search_where_the_server_has_bm25(retriever: Retriever, tmp_path: Path):
    ingest_paths(retriever, [write_docs(tmp_path / "docs")])
    stats = retriever.stats()
    if stats["uri"].endswith(".db"):
        assert stats["hybrid"] is True
    else:  # the 2.3 server of the milvus wheel has no BM25: dense only, and it says why
        assert stats["hybrid"] is False and "2.5" in stats["hybrid_note"]
    passages = retriever.search("ZQX-4471", top_k=3)
    assert passages and "ZQX-4471" in passages[0].text
    assert retriever.search("   ") == [] and retriever.search("tomatoes", top_k=0) == []


def test_sample_docs_are_ingested_once(tmp_path: Path, embedder: Embedder):
    with open_retriever(make_cfg(tmp_path), embedder=embedder) as retriever:
        first = ensure_sample_docs(retriever)
        assert len(first.added) >= 6 and not first.failed
        assert all(o.source.startswith("guide/") for o in first.added)
        second = ensure_sample_docs(retriever)
        assert second.chunks == 0 and len(second.skipped) == len(first.added)
        passages = retriever.search("How does the canary rollout decide to promote?", top_k=3)
        assert "guide/04-learning-loop.md" in [p.source for p in passages]


def test_sample_docs_stay_deleted_when_the_operator_removed_them(
    tmp_path: Path, embedder: Embedder
):
    with open_retriever(make_cfg(tmp_path), embedder=embedder) as retriever:
        ensure_sample_docs(retriever)
        ingest_paths(retriever, [write_docs(tmp_path / "docs")])
        for source in [s.source for s in list_sources(retriever)]:
            if source.startswith("guide/"):
                delete_source(retriever, source)
        assert ensure_sample_docs(retriever).outcomes == []
    with open_retriever(make_cfg(tmp_path, sample_docs=False), embedder=embedder) as retriever:
        assert ensure_sample_docs(retriever).outcomes == []


class HashEmbedder:
    """Another embedder (same dimension): bag-of-words hashed into 384 dimensions."""

    name, dim, max_tokens = "hash-embedder", 384, 256

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, hash(word) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def count_tokens(self, text):
        return len(text.split())


def test_a_changed_embedder_asks_for_a_reindex(tmp_path: Path, embedder: Embedder):
    cfg = make_cfg(tmp_path)
    with open_retriever(cfg, embedder=HashEmbedder()) as old:
        ingest_paths(old, [write_docs(tmp_path / "docs")])
    with pytest.raises(RetrievalError, match=r"'hash-embedder'.*main.py ingest --reindex"):
        open_retriever(cfg, embedder=embedder)
    with open_retriever(cfg, embedder=embedder, for_reindex=True) as retriever:
        with pytest.raises(RetrievalError, match="--reindex"):
            retriever.search("bread")
        report = reindex(retriever)
        assert len(report.replaced) == 3
        assert (
            sources_of(retriever.search("How long should I knead bread dough?"))[0] == "kitchen.txt"
        )
    with open_retriever(cfg, embedder=embedder) as retriever:  # no complaint any more
        assert retriever.stats()["indexed_with"] == "all-MiniLM-L6-v2"


def _silent_port() -> tuple[socket.socket, int]:
    """A loopback port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[object] = []
    threading.Thread(
        target=lambda: [held.append(sock.accept()) for _ in range(16)], daemon=True
    ).start()
    return sock, sock.getsockname()[1]


def test_a_server_that_does_not_answer_fails_within_the_timeout(tmp_path: Path, embedder: Embedder):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    silent, silent_port = _silent_port()
    try:
        for port in (dead_port, silent_port):
            cfg = make_cfg(tmp_path, uri=f"http://127.0.0.1:{port}", timeout_s=1.0)
            started = time.monotonic()
            with pytest.raises(RetrievalError, match="did not answer within 1s"):
                open_retriever(cfg, embedder=embedder)
            assert time.monotonic() - started < 10  # bounded, never a hang
    finally:
        silent.close()


def test_a_bad_lite_uri_says_how_to_fix_it(tmp_path: Path, embedder: Embedder):
    with pytest.raises(RetrievalError, match="must end in .db"):
        open_retriever(make_cfg(tmp_path, uri="vectors"), embedder=embedder)


@pytest.mark.milvus_server
def test_search_fails_fast_when_the_server_goes_down(tmp_path: Path, embedder: Embedder):
    server = start_milvus_server(tmp_path / "server")
    try:
        cfg = make_cfg(tmp_path, uri=server.uri, timeout_s=2.0)
        retriever = open_retriever(cfg, embedder=embedder)
        ingest_paths(retriever, [write_docs(tmp_path / "docs")])
        assert retriever.search("bread dough")
        server.stop(grace_s=0.5)
        started = time.monotonic()
        with pytest.raises(RetrievalError):
            retriever.search("bread dough")
        assert time.monotonic() - started < 15
        assert retriever.healthy() is False
        retriever.close()
    finally:
        server.stop(grace_s=0.5)
