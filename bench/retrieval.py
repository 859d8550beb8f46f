"""Retrieval benchmark: ingestion rate, search latency and index recall on Milvus Lite and a
Milvus server, side by side with exact numpy search over the same vectors in the same run.

    .venv/bin/python bench/retrieval.py [--sizes 10000,100000] [--backends lite,server]

1. Ingestion: a corpus of real, varied English (the docstrings of ~40 standard-library modules,
   written as Markdown files) goes through `ingest_paths` on each backend: chunks/s end to end.
   The embedding vectors are captured; the server run reuses them, so its figure is the store's.
2. Search at each size: rows are written with `MilvusStore.upsert`, flushed, and searched once
   the index is built. Sizes above the real corpus are filled with vectors derived from the
   real ones (a random mix of three real chunk vectors plus 10% noise, renormalised), since
   embedding 100k chunks takes an hour on two CPU cores. Queries are real questions, embedded.
   Reported: embedding p50, search p50/p95, embed+search p50/p95, numpy exact over the same
   matrix, and recall@5 of the index against exact.
3. Milvus Lite at the smallest size is also timed before the flush (rows still in its memtable)
   and after the flush before its background index build ends: what the product's flush after
   ingestion and explicit HNSW index are for.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import config as config_mod  # noqa: E402
from assistant.retrieval.embedder import load_embedder  # noqa: E402
from assistant.retrieval.ingest import ingest_paths  # noqa: E402
from assistant.retrieval.retriever import open_retriever  # noqa: E402
from assistant.retrieval.vectorstore import ChunkRow, MilvusStore  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODULES = (
    "os",
    "re",
    "json",
    "collections",
    "asyncio",
    "email",
    "http.client",
    "argparse",
    "logging",
    "unittest",
    "subprocess",
    "pathlib",
    "datetime",
    "decimal",
    "fractions",
    "statistics",
    "random",
    "shutil",
    "tarfile",
    "zipfile",
    "csv",
    "sqlite3",
    "socket",
    "ssl",
    "threading",
    "multiprocessing",
    "functools",
    "itertools",
    "typing",
    "dataclasses",
    "enum",
    "inspect",
    "pickle",
    "xml.etree.ElementTree",
    "html.parser",
    "urllib.request",
    "textwrap",
    "string",
    "difflib",
    "calendar",
    "locale",
    "gettext",
    "codecs",
    "io",
    "tempfile",
    "glob",
    "heapq",
    "bisect",
    "contextlib",
    "abc",
)


class RecordingEmbedder:
    """Wraps the real embedder and keeps every vector it computed, by text."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, {}
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens
        self.embed_seconds = 0.0

    def embed(self, texts):
        missing = list(dict.fromkeys(t for t in texts if t not in self.seen))
        started = time.perf_counter()
        self.seen.update(zip(missing, self.inner.embed(missing), strict=True))
        self.embed_seconds += time.perf_counter() - started
        return np.stack([self.seen[t] for t in texts]) if texts else self.inner.embed([])

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


def write_corpus(folder: Path, max_words: int) -> int:
    """Markdown files of standard-library docstrings, about `max_words` words in all."""
    words = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        parts = [f"# The {name} module\n\n{inspect.getdoc(module) or ''}"]
        for attr, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if not attr.startswith("_") else None
            if doc and (inspect.isclass(obj) or inspect.isfunction(obj)) and len(doc) > 80:
                parts.append(f"## {name}.{attr}\n\n{doc}")
        text = "\n\n".join(parts)
        (folder / f"{name}.md").write_text(text)
        words += len(text.split())
        if words >= max_words:
            break
    return words


def questions(texts: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """Real questions from the labelled set, topped up with phrases taken from the corpus."""
    import json

    labelled = (REPO / "tests" / "assistant" / "retrieval_set.jsonl").read_text().splitlines()
    out = [json.loads(line)["question"] for line in labelled if line]
    for i in rng.choice(len(texts), size=max(0, count - len(out)), replace=True):
        body = texts[i].split("\n\n", 1)[-1].split()
        start = int(rng.integers(0, max(1, len(body) - 10)))
        out.append("What about " + " ".join(body[start : start + 8]) + "?")
    return out[:count]


def derived(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` vectors: the real ones first, then mixes of three real vectors plus 10% noise."""
    if n <= len(real):
        return real[:n].copy()
    extra = n - len(real)
    picks = rng.integers(0, len(real), size=(extra, 3))
    weights = rng.dirichlet([1.0, 1.0, 1.0], size=extra).astype(np.float32)
    mix = np.einsum("nk,nkd->nd", weights, real[picks])
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    noise = rng.standard_normal(mix.shape).astype(np.float32)
    mix += 0.1 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    return np.vstack([real, mix]).astype(np.float32)


def lite_wait_for_index(store: MilvusStore) -> None:
    """Block until Milvus Lite's background compaction and index build are done.

    Milvus Lite (3.x, pure Python, in this process) builds segment indexes on a background
    thread after a flush and its describe_index reports 'Finished' before that; this reaches
    into the in-process engine, which is fine for a benchmark and nowhere else.
    """
    from milvus_lite.server_manager import server_manager_instance

    _, db, _ = server_manager_instance._servers[store._lite_path]  # noqa: SLF001
    db.get_collection(store.collection)._wait_for_bg()  # noqa: SLF001


def server_wait_for_index(store: MilvusStore, rows: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = store._client.describe_index(store.collection, "vector")  # noqa: SLF001
        if int(info.get("indexed_rows", 0)) >= rows and not int(info.get("pending_index_rows", 0)):
            return
        time.sleep(1.0)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def time_search(
    store: MilvusStore, qvecs: np.ndarray, qtexts: list[str], k: int = 5, hybrid: bool = False
) -> tuple[list[float], list[list[str]]]:
    for i in range(min(5, len(qvecs))):  # warm-up
        store.search(qvecs[i], qtexts[i], k, hybrid)
    times, ids = [], []
    for vec, text in zip(qvecs, qtexts, strict=True):
        started = time.perf_counter()
        hits = store.search(vec, text, k, hybrid)
        times.append(time.perf_counter() - started)
        ids.append([h.chunk_id for h in hits])
    return times, ids


def exact_search(
    matrix: np.ndarray, qvecs: np.ndarray, k: int = 5
) -> tuple[list[float], list[list[int]]]:
    times, ids = [], []
    for vec in qvecs:
        started = time.perf_counter()
        scores = matrix @ vec
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - started)
        ids.append(top.tolist())
    return times, ids


def fill(store: MilvusStore, vectors: np.ndarray, batch: int = 2000) -> None:
    for start in range(0, len(vectors), batch):
        store.upsert(
            [
                ChunkRow(
                    f"{i:032x}",
                    "bench",
                    "0" * 32,
                    i,
                    1,
                    "0" * 64,
                    0,
                    "bench",
                    f"chunk {i}",
                    vectors[i].tolist(),
                )
                for i in range(start, min(len(vectors), start + batch))
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--backends", default="lite,server", help="lite, server or both")
    parser.add_argument(
        "--corpus-words",
        type=int,
        default=120_000,
        help="words of real text to ingest (about 1 chunk per 150 words)",
    )
    parser.add_argument("--queries", type=int, default=100, help="timed queries per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    server = None
    if "server" in backends:
        from tests.milvus_server import start_milvus_server

        started = time.perf_counter()
        server = start_milvus_server(work / "server")
        print(f"milvus server {server.uri} ready in {time.perf_counter() - started:.1f}s")
    try:
        run(args, sizes, backends, rng, work, server.uri if server else None)
    finally:
        if server:
            server.stop()


def run(
    args: argparse.Namespace,
    sizes: list[int],
    backends: list[str],
    rng: np.random.Generator,
    work: Path,
    server_uri: str | None,
) -> None:
    embedder = RecordingEmbedder(load_embedder("all-MiniLM-L6-v2", REPO))
    corpus = work / "corpus"
    corpus.mkdir()
    words = write_corpus(corpus, args.corpus_words)
    base = config_mod.load_config(
        REPO / "config.toml", overrides={"server": {"data_dir": str(work / "data")}}
    )

    def cfg_for(backend: str, collection: str) -> config_mod.Config:
        uri = server_uri if backend == "server" else f"{backend}-{collection}.db"
        return config_mod.with_overrides(
            base, retrieval={"uri": uri, "collection": collection, "timeout_s": 60.0}
        )

    print(
        f"\n== ingestion: {words} words of stdlib docstrings in {len(list(corpus.iterdir()))} "
        "Markdown files, ingest_paths end to end =="
    )
    for backend in backends:
        with open_retriever(cfg_for(backend, "ingest"), embedder=embedder) as retriever:
            before = embedder.embed_seconds
            report = ingest_paths(retriever, [corpus])
            embed_s = embedder.embed_seconds - before
            note = (
                f"embedding {embed_s:.1f}s of it"
                if embed_s > 0.5
                else "vectors reused from the first run: store and chunking only"
            )
            print(
                f"{backend:6s}: {report.chunks} chunks in {report.seconds:.1f}s = "
                f"{report.chunks / report.seconds:.1f} chunks/s ({note}); "
                f"hybrid={retriever.stats()['hybrid']}"
            )
            if backend == "lite":
                lite_wait_for_index(retriever.store)
    texts = list(embedder.seen)
    real = np.stack([embedder.seen[t] for t in texts]).astype(np.float32)
    qtexts = questions(texts, args.queries, rng)
    started = time.perf_counter()
    qvecs = embedder.inner.embed(qtexts)
    embed_times = []
    for q in qtexts[:30]:
        t0 = time.perf_counter()
        embedder.inner.embed([q])
        embed_times.append(time.perf_counter() - t0)
    e50, e95 = percentiles(embed_times)
    print(
        f"query embedding: p50 {e50:.1f} ms, p95 {e95:.1f} ms "
        f"({len(qtexts)} queries embedded in {time.perf_counter() - started:.1f}s)"
    )

    if "lite" in backends:
        with open_retriever(cfg_for("lite", "ingest"), embedder=embedder) as retriever:
            for hybrid in (False, True):
                times, _ = time_search(retriever.store, qvecs, qtexts, hybrid=hybrid)
                p50, p95 = percentiles(times)
                print(
                    f"lite on the {len(real)} real chunks, {'hybrid' if hybrid else 'dense '}"
                    f": search p50 {p50:.1f} ms, p95 {p95:.1f} ms"
                )

    header = (
        f"\n{'size':>7} {'backend':8} {'search p50':>10} {'p95':>7} {'embed+search p50':>16}"
        f" {'p95':>7} {'x numpy p50':>11} {'recall@5':>8}"
    )
    print(f"\n== search at each size ({len(real)} real vectors, the rest derived) ==" + header)
    for size in sizes:
        matrix = derived(real, size, rng)
        ex_times, ex_ids = exact_search(matrix, qvecs)
        n50, n95 = percentiles(ex_times)
        print(
            f"{size:>7} {'numpy':8} {n50:>10.2f} {n95:>7.2f} {e50 + n50:>16.1f} "
            f"{e95 + n95:>7.1f} {1.0:>11.1f} {1.0:>8.3f}"
        )
        for backend in backends:
            store = open_retriever(cfg_for(backend, f"size{size}"), embedder=embedder).store
            started = time.perf_counter()
            fill(store, matrix)
            if backend == "lite" and size == min(sizes):
                memtable, _ = time_search(store, qvecs[:20], qtexts[:20])
            store.flush()
            if backend == "lite" and size == min(sizes):
                unindexed, _ = time_search(store, qvecs[:20], qtexts[:20])
            (
                lite_wait_for_index(store)
                if backend == "lite"
                else server_wait_for_index(store, size)
            )
            load_s = time.perf_counter() - started
            times, ids = time_search(store, qvecs, qtexts)
            recall = np.mean(
                [
                    len({int(i, 16) for i in got} & set(want)) / 5
                    for got, want in zip(ids, ex_ids, strict=True)
                ]
            )
            s50, s95 = percentiles(times)
            print(
                f"{size:>7} {backend:8} {s50:>10.2f} {s95:>7.2f} {e50 + s50:>16.1f} "
                f"{e95 + s95:>7.1f} {s50 / n50:>11.1f} {recall:>8.3f}   "
                f"(written + indexed in {load_s:.0f}s)"
            )
            if backend == "lite" and size == min(sizes):
                print(
                    f"{'':>7} {'':8} before flush (memtable) p50 "
                    f"{percentiles(memtable)[0]:.1f} ms; after flush, index not built yet "
                    f"p50 {percentiles(unindexed)[0]:.1f} ms"
                )
            store._client.drop_collection(store.collection)  # noqa: SLF001  (free the memory)
            store.close()


if __name__ == "__main__":
    main()
